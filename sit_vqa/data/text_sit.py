"""Text-only sequential instructions (SIT) from Alpaca-format data.

An Alpaca file is a JSON list of {"instruction": str, "input": str, "output": str} objects ("input" is
"" when the task needs none). `build_text_sit` turns each record into {"instruction", "target", "text_mode",
"source_index"}: "instruction" is the whole prompt the model sees (input included), "target" the text
it learns to produce. With I = the instruction, X = the input, O = the output, and i = I with its first
letter lower-cased (kept as is when the first word is all capitals: "I", "SQL", "NASA"):

    mode       instruction                                               target
    plain      "I\\nInput: X"                                            "O"
    repeat     "First repeat the input, then i\\nInput: X"               "Input: X\\nAnswer: O"
    translate  "First translate the input into English, then i\\n"      "Translation: X\\nAnswer: O"
               "Input: X'"   (X' = the same input in the other language)

Records without input stay as they are in every mode: instruction "I", target "O". Leading and trailing
whitespace of the three fields is stripped.

Why these texts: the prompt layout ("<task>\\nInput: ...") mirrors the image prompts ("<task>.\\nQuestion:
...", `prompts.py`), and the SIT targets name their first step and then use the same "Answer:" marker as
the image SIT target ("Description: ...\\nAnswer: ..."), so a model tuned on both mixes learns one way to
mark its final answer, and `prompts.parse_sit_output` splits either. Following Hu et al. (NAACL 2025),
the translate instruction stays in English whatever the input's language; only the input is shown
translated, and the target starts with the English input. The second file therefore needs the same
records in the same order (aligned by index) with the input translated; its instruction translation is
not used here (it keeps the file a complete Alpaca file), its outputs are ignored.

Usage:

    records = build_text_sit(load_alpaca("data/alpaca_sample/alpaca_en.json"), "translate",
                             translated=load_alpaca("data/alpaca_sample/alpaca_de.json"))
"""

from __future__ import annotations

import json
from pathlib import Path

from sit_vqa.data.prompts import ANSWER_MARKER
from sit_vqa.errors import DataError
from sit_vqa.files import read_bytes

TEXT_MODES = ("plain", "repeat", "translate")
FIELDS = ("instruction", "input", "output")

REPEAT_PREFIX = "First repeat the input, then "
TRANSLATE_PREFIX = "First translate the input into English, then "
INPUT_MARKER = "Input:"
TRANSLATION_MARKER = "Translation:"

_FIX = (
    'every record must be an object with string fields "instruction", "input" and "output" '
    '("input": "" when there is none)'
)


class TextSitError(DataError):
    """Alpaca-format data that cannot be turned into training records; the message says where and how to fix it."""


def load_alpaca(path: str | Path) -> list[dict]:
    """Read and validate an Alpaca-format JSON file: a list of {instruction, input, output} string objects."""
    path = Path(path)
    data = read_bytes(path, "Alpaca-format JSON file")
    try:
        document = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as error:
        raise TextSitError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start}); save it as UTF-8") from None
    except json.JSONDecodeError as error:
        raise TextSitError(
            f"{path}: not valid JSON ({error.msg} at line {error.lineno}, column {error.colno}); "
            f"an Alpaca file is one JSON list of records (convert JSON Lines with one record per line into a list)"
        ) from None
    check_records(document, str(path))
    return document


def check_records(records, source: str) -> None:
    """Raise TextSitError naming source and record index unless records is a list of valid Alpaca records."""
    if not isinstance(records, list):
        raise TextSitError(f"{source}: expected a JSON list of records, got {type(records).__name__}; {_FIX}")
    if not records:
        raise TextSitError(f"{source}: the list of records is empty: there is nothing to train on ({_FIX})")
    for index, record in enumerate(records):
        where = f"{source}: record {index}"
        if not isinstance(record, dict):
            raise TextSitError(f"{where}: expected an object, got {type(record).__name__}; {_FIX}")
        for field in FIELDS:
            if field not in record:
                raise TextSitError(f"{where}: missing field {field!r}; {_FIX}")
            if not isinstance(record[field], str):
                raise TextSitError(f"{where}: field {field!r} is {type(record[field]).__name__}, not a string; {_FIX}")
        if not record["instruction"].strip():
            raise TextSitError(f"{where}: empty instruction; write the task, or remove the record")


def build_text_sit(
    records: list[dict],
    mode: str,
    translated: list[dict] | None = None,
    *,
    sources: tuple[str, str] = ("records", "translated records"),
) -> list[dict]:
    """One {"instruction", "target", "text_mode", "source_index"} record per Alpaca record (see module doc).

    `translated` (the same records with the input in another language, aligned by index) is required
    for mode "translate"; given with another mode it is only checked for alignment. `sources` names the
    two inputs in error messages (e.g. their file paths).
    """
    if mode not in TEXT_MODES:
        raise TextSitError(f"unknown text SIT mode {mode!r}; choose one of {', '.join(TEXT_MODES)}")
    check_records(records, sources[0])
    if translated is not None:
        check_records(translated, sources[1])
        check_aligned(records, translated, sources)
    elif mode == "translate":
        raise TextSitError(
            "mode 'translate' needs the translated records (the same records with the input in another language)"
        )
    return [
        _build_one(record, mode, translated[index] if translated is not None else None, index)
        for index, record in enumerate(records)
    ]


def check_aligned(records: list[dict], translated: list[dict], sources: tuple[str, str]) -> None:
    """The two lists must hold the same records in the same order: same length, input in both or in neither."""
    if len(records) != len(translated):
        raise TextSitError(
            f"{sources[0]} has {len(records)} records but {sources[1]} has {len(translated)}; "
            f"the translated file must hold the same records in the same order"
        )
    for index, (original, other) in enumerate(zip(records, translated)):
        if _has_input(original) != _has_input(other):
            has, lacks = sources if _has_input(original) else sources[::-1]
            raise TextSitError(
                f"record {index} ({original['instruction'].strip()[:60]!r}) has an input in {has} but none in "
                f"{lacks}; the files are misaligned or the translation lost the input"
            )


def _has_input(record: dict) -> bool:
    return bool(record["input"].strip())


def _build_one(record: dict, mode: str, translated: dict | None, index: int) -> dict:
    instruction, text_input, output = (record[field].strip() for field in FIELDS)
    if not text_input:  # nothing to repeat or translate: the record stays as it is
        prompt, target = instruction, output
    elif mode == "plain":
        prompt, target = f"{instruction}\n{INPUT_MARKER} {text_input}", output
    elif mode == "repeat":
        prompt = f"{REPEAT_PREFIX}{continue_sentence(instruction)}\n{INPUT_MARKER} {text_input}"
        target = f"{INPUT_MARKER} {text_input}\n{ANSWER_MARKER} {output}"
    else:
        foreign_input = translated["input"].strip()
        prompt = f"{TRANSLATE_PREFIX}{continue_sentence(instruction)}\n{INPUT_MARKER} {foreign_input}"
        target = f"{TRANSLATION_MARKER} {text_input}\n{ANSWER_MARKER} {output}"
    return {"instruction": prompt, "target": target, "text_mode": mode, "source_index": index}


def continue_sentence(instruction: str) -> str:
    """The instruction as the continuation of "..., then": first letter lower-cased unless the first
    word is all capitals (an acronym or "I"). Proper nouns at the start ("Python ...") are lower-cased too."""
    first_word = instruction.split(maxsplit=1)[0]
    if first_word.isupper():
        return instruction
    return instruction[0].lower() + instruction[1:]
