"""Text-only SIT: exact prompt/target texts per mode, alignment checks, and errors on malformed files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sit_vqa.data.prompts import parse_sit_output
from sit_vqa.data.text_sit import (
    TextSitError,
    build_text_sit,
    continue_sentence,
    load_alpaca,
)
from sit_vqa.errors import DataError

SAMPLE_DIR = Path(__file__).resolve().parents[2] / "data" / "alpaca_sample"

ENGLISH = [
    {"instruction": "Summarize the text.", "input": "The cat sat on the mat all day.", "output": "A cat rested."},
    {"instruction": "Name a primary color.", "input": "", "output": "Red."},
    {"instruction": "SQL: select every row.", "input": "Table: users", "output": "SELECT * FROM users;"},
]
GERMAN = [
    {
        "instruction": "Fasse den Text zusammen.",
        "input": "Die Katze saß den ganzen Tag auf der Matte.",
        "output": "A cat rested.",
    },
    {"instruction": "Nenne eine Grundfarbe.", "input": "", "output": "Red."},
    {"instruction": "SQL: wähle jede Zeile aus.", "input": "Tabelle: users", "output": "SELECT * FROM users;"},
]


def write_json(path: Path, document) -> Path:
    path.write_text(json.dumps(document, ensure_ascii=False), encoding="utf-8")
    return path


# ----------------------------------------------------------------------------- exact texts


def test_plain_keeps_the_alpaca_instruction_and_shows_the_input():
    built = build_text_sit(ENGLISH, "plain")
    assert built[0] == {
        "instruction": "Summarize the text.\nInput: The cat sat on the mat all day.",
        "target": "A cat rested.",
        "text_mode": "plain",
        "source_index": 0,
    }


def test_repeat_asks_for_the_input_first_then_the_answer():
    built = build_text_sit(ENGLISH, "repeat")
    assert built[0] == {
        "instruction": "First repeat the input, then summarize the text.\nInput: The cat sat on the mat all day.",
        "target": "Input: The cat sat on the mat all day.\nAnswer: A cat rested.",
        "text_mode": "repeat",
        "source_index": 0,
    }
    # an all-capitals first word is not lower-cased
    assert built[2]["instruction"] == "First repeat the input, then SQL: select every row.\nInput: Table: users"
    assert built[2]["target"] == "Input: Table: users\nAnswer: SELECT * FROM users;"


def test_translate_shows_the_foreign_input_and_targets_the_english_input_first():
    built = build_text_sit(ENGLISH, "translate", translated=GERMAN)
    assert built[0] == {
        "instruction": "First translate the input into English, then summarize the text.\n"
        "Input: Die Katze saß den ganzen Tag auf der Matte.",
        "target": "Translation: The cat sat on the mat all day.\nAnswer: A cat rested.",
        "text_mode": "translate",
        "source_index": 0,
    }
    assert built[2]["instruction"].endswith("\nInput: Tabelle: users")
    assert built[2]["target"] == "Translation: Table: users\nAnswer: SELECT * FROM users;"


@pytest.mark.parametrize("mode", ["plain", "repeat", "translate"])
def test_records_without_input_stay_as_they_are(mode):
    built = build_text_sit(ENGLISH, mode, translated=GERMAN)
    assert built[1] == {"instruction": "Name a primary color.", "target": "Red.", "text_mode": mode, "source_index": 1}


def test_sit_targets_split_with_the_shared_parser():
    # The text targets use the image SIT target's "Answer:" marker, so one parser serves both.
    for mode in ("repeat", "translate"):
        target = build_text_sit(ENGLISH, mode, translated=GERMAN)[0]["target"]
        assert parse_sit_output(target).answer == "A cat rested."


def test_surrounding_whitespace_is_stripped():
    record = {"instruction": "  Summarize the text.\n", "input": " Some text. \n", "output": "\nShort.  "}
    (built,) = build_text_sit([record], "repeat")
    assert built["instruction"] == "First repeat the input, then summarize the text.\nInput: Some text."
    assert built["target"] == "Input: Some text.\nAnswer: Short."


def test_whitespace_only_input_counts_as_no_input():
    (built,) = build_text_sit([{"instruction": "Say hi.", "input": "  \n", "output": "Hi."}], "repeat")
    assert (built["instruction"], built["target"]) == ("Say hi.", "Hi.")


@pytest.mark.parametrize(
    "instruction, expected",
    [("Give three tips.", "give three tips."), ("I need a title.", "I need a title."), ("NASA facts.", "NASA facts.")],
)
def test_continue_sentence(instruction, expected):
    assert continue_sentence(instruction) == expected


def test_translated_records_in_another_mode_are_checked_but_unused():
    assert build_text_sit(ENGLISH, "repeat", translated=GERMAN) == build_text_sit(ENGLISH, "repeat")
    with pytest.raises(TextSitError, match="records has 3 records but translated records has 2"):
        build_text_sit(ENGLISH, "repeat", translated=GERMAN[:2])


# ----------------------------------------------------------------------------- alignment and mode errors


def test_translate_needs_the_translated_records():
    with pytest.raises(TextSitError, match="needs the translated records"):
        build_text_sit(ENGLISH, "translate")


def test_unknown_mode_is_an_error():
    with pytest.raises(TextSitError, match="unknown text SIT mode 'swap'.*plain, repeat, translate"):
        build_text_sit(ENGLISH, "swap")


def test_different_lengths_are_an_error_naming_both_sources():
    with pytest.raises(TextSitError, match=r"en\.json has 3 records but de\.json has 2"):
        build_text_sit(ENGLISH, "translate", translated=GERMAN[:2], sources=("en.json", "de.json"))


def test_input_in_one_file_and_not_the_other_is_an_error():
    lost = [dict(r) for r in GERMAN]
    lost[2]["input"] = ""
    with pytest.raises(TextSitError, match=r"record 2 \('SQL: select every row\.'\) has an input in en\.json but none in de\.json"):
        build_text_sit(ENGLISH, "translate", translated=lost, sources=("en.json", "de.json"))
    extra = [dict(r) for r in GERMAN]
    extra[1]["input"] = "Rot"
    with pytest.raises(TextSitError, match=r"record 1 .* has an input in de\.json but none in en\.json"):
        build_text_sit(ENGLISH, "translate", translated=extra, sources=("en.json", "de.json"))


# ----------------------------------------------------------------------------- malformed files


def test_load_alpaca_reads_a_valid_file(tmp_path):
    assert load_alpaca(write_json(tmp_path / "en.json", ENGLISH)) == ENGLISH


@pytest.mark.parametrize(
    "document, message",
    [
        ({"instruction": "x", "input": "", "output": "y"}, r"bad\.json: expected a JSON list of records, got dict"),
        ([ENGLISH[0], "just text"], r"bad\.json: record 1: expected an object, got str"),
        ([ENGLISH[0], {"instruction": "x", "output": "y"}], r"bad\.json: record 1: missing field 'input'.*\"input\": \"\""),
        ([{"instruction": "x", "input": None, "output": "y"}], r"bad\.json: record 0: field 'input' is NoneType, not a string"),
        ([{"instruction": "x", "input": "", "output": 3}], r"bad\.json: record 0: field 'output' is int, not a string"),
        ([ENGLISH[0], ENGLISH[1], {"instruction": " ", "input": "", "output": "y"}], r"bad\.json: record 2: empty instruction"),
    ],
)
def test_load_alpaca_rejects_malformed_records(tmp_path, document, message):
    with pytest.raises(TextSitError, match=message):
        load_alpaca(write_json(tmp_path / "bad.json", document))


def test_load_alpaca_rejects_invalid_json_with_its_position(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('[{"instruction": "x", "input": "", "output": "y"},\n {"instruction": }]')
    with pytest.raises(TextSitError, match=r"broken\.json: not valid JSON \(.* line 2, column \d+\)"):
        load_alpaca(path)


def test_load_alpaca_rejects_json_lines_with_a_hint(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in ENGLISH))
    with pytest.raises(TextSitError, match="JSON Lines"):
        load_alpaca(path)


def test_load_alpaca_names_a_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"Alpaca-format JSON file not found: .*missing\.json"):
        load_alpaca(tmp_path / "missing.json")


def test_text_sit_errors_are_project_data_errors():
    assert issubclass(TextSitError, DataError) and issubclass(TextSitError, ValueError)


def test_load_alpaca_rejects_non_utf8(tmp_path):
    path = tmp_path / "latin1.json"
    path.write_bytes(json.dumps([{"instruction": "Grüße", "input": "", "output": "x"}], ensure_ascii=False).encode("latin-1"))
    with pytest.raises(TextSitError, match="not UTF-8"):
        load_alpaca(path)


# ----------------------------------------------------------------------------- the bundled sample


def test_bundled_sample_is_aligned_and_builds_in_every_mode():
    english = load_alpaca(SAMPLE_DIR / "alpaca_en.json")
    german = load_alpaca(SAMPLE_DIR / "alpaca_de.json")
    assert 30 <= len(english) <= 40
    with_input = [i for i, r in enumerate(english) if r["input"]]
    assert 0 < len(with_input) < len(english), "the sample should have records with and without input"
    assert [r["output"] for r in english] == [r["output"] for r in german], "outputs stay in English"
    assert all(english[i]["input"] != german[i]["input"] for i in with_input[:5])  # really translated
    for mode in ("plain", "repeat", "translate"):
        built = build_text_sit(english, mode, translated=german)
        assert [r["source_index"] for r in built] == list(range(len(english)))
    translated = build_text_sit(english, "translate", translated=german)
    for i in with_input:
        assert translated[i]["instruction"].endswith("\nInput: " + german[i]["input"])
        assert translated[i]["target"] == f"Translation: {english[i]['input']}\nAnswer: {english[i]['output']}"
