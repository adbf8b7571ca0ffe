"""SQuAD / XQuAD reader (sit_vqa/data/squad.py) on the bundled sample and broken copies of it."""

import json
from pathlib import Path

import pytest

from sit_vqa.data.squad import read_squad, read_squad_records
from sit_vqa.errors import DataError

XQUAD = Path(__file__).resolve().parents[2] / "data" / "xquad_sample"
ENGLISH = XQUAD / "xquad.en.json"


@pytest.mark.parametrize("language", ["en", "de", "zh"])
def test_records_of_the_sample(language):
    path = XQUAD / f"xquad.{language}.json"
    records = read_squad_records(path, english=ENGLISH)
    document = json.loads(path.read_text(encoding="utf-8"))
    qas = [(p["context"], qa) for a in document["data"] for p in a["paragraphs"] for qa in p["qas"]]
    assert [r["id"] for r in records] == [qa["id"] for _, qa in qas]
    for record, (context, qa) in zip(records, qas):
        assert record["context"] == context and record["question"] == qa["question"]
        assert record["answers"] == [a["text"] for a in qa["answers"]]
        for answer in qa["answers"]:  # the sample's spans point at their text, as in SQuAD
            assert context[answer["answer_start"]:][: len(answer["text"])] == answer["text"]


def write(tmp_path, document):
    path = tmp_path / "x.json"
    path.write_text(json.dumps(document, ensure_ascii=False), encoding="utf-8")
    return path


def load_english():
    return json.loads(ENGLISH.read_text())


def test_ids_must_match_the_english_file(tmp_path):
    document = json.loads((XQUAD / "xquad.de.json").read_text(encoding="utf-8"))
    document["data"][1]["paragraphs"][0]["qas"][0]["id"] = "other"
    with pytest.raises(DataError, match=r"1 are not in xquad.en.json \(e.g. other\)"):
        read_squad_records(write(tmp_path, document), english=ENGLISH)


def test_repeated_ids_and_questions_without_answers(tmp_path):
    document = load_english()
    qas = document["data"][0]["paragraphs"][0]["qas"]
    qas[1]["id"] = qas[0]["id"]
    with pytest.raises(DataError, match=r"\$.data\[0\].paragraphs\[0\].qas\[1\] .* repeats a question id"):
        read_squad(write(tmp_path, document))
    document = load_english()
    document["data"][0]["paragraphs"][0]["qas"][0]["answers"] = []
    with pytest.raises(DataError, match="has no answers"):
        read_squad(write(tmp_path, document))


def test_a_gqa_file_where_squad_belongs():
    with pytest.raises(DataError, match="looks like a GQA questions file"):
        read_squad(XQUAD.parent / "gqa_sample" / "testdev_balanced_questions.json")
