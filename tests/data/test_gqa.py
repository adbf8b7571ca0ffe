"""GQA / xGQA readers (sit_vqa/data/gqa.py) on the bundled samples and on broken copies of them."""

import json
from pathlib import Path

import pytest

from sit_vqa.data.gqa import read_gqa_questions, read_gqa_records, read_xgqa_records
from sit_vqa.data.vqav2 import read_questions
from sit_vqa.errors import DataError

DATA = Path(__file__).resolve().parents[2] / "data"
QUESTIONS = DATA / "gqa_sample" / "testdev_balanced_questions.json"
IMAGES = DATA / "gqa_sample" / "images"
XGQA = DATA / "xgqa_sample"
ENGLISH = XGQA / "testdev_balanced_questions_en.json"


def test_records_of_the_sample():
    records = read_gqa_records(QUESTIONS, IMAGES)
    document = json.loads(QUESTIONS.read_text())
    assert [r["question_id"] for r in records] == list(document)
    first_id, first = next(iter(document.items()))
    assert records[0] == {
        "question_id": first_id, "image_id": first["imageId"], "image_path": str(IMAGES / f"{first['imageId']}.jpg"),
        "question": first["question"], "answers": [first["answer"]], "answer": first["answer"],
        "full_answer": first["fullAnswer"], "structural_type": first["types"]["structural"],
        "semantic_type": first["types"]["semantic"], "detailed_type": first["types"]["detailed"], "is_balanced": True,
    }
    assert all(Path(r["image_path"]).is_file() for r in records)


@pytest.mark.parametrize("language", ["bn", "de", "id", "ko", "pt", "ru", "zh"])
def test_xgqa_language_files_match_the_english_one(language):
    records = read_xgqa_records(XGQA / f"testdev_balanced_questions_{language}.json", ENGLISH, IMAGES)
    english = read_gqa_records(ENGLISH, IMAGES)
    assert [r["question_id"] for r in records] == [r["question_id"] for r in english]
    assert [r["answer"] for r in records] == [r["answer"] for r in english]  # xGQA answers stay English
    assert all(r["question"] != e["question"] for r, e in zip(records, english))


def test_xgqa_ids_must_match_the_english_file(tmp_path):
    document = json.loads((XGQA / "testdev_balanced_questions_de.json").read_text(encoding="utf-8"))
    dropped = next(iter(document))
    del document[dropped]
    document["123"] = dict(next(iter(document.values())))
    path = tmp_path / "de.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    with pytest.raises(DataError, match=rf"1 of {ENGLISH.name} are missing from it \(e.g. {dropped}\); "
                                        r"1 are not in .* \(e.g. 123\)"):
        read_xgqa_records(path, ENGLISH, IMAGES)


def test_xgqa_same_ids_other_image_is_an_error(tmp_path):
    document = json.loads(ENGLISH.read_text())
    first = next(iter(document))
    document[first]["imageId"] = "n0"
    path = tmp_path / "de.json"
    path.write_text(json.dumps(document))
    with pytest.raises(DataError, match=f"question {first} is about image n0"):
        read_xgqa_records(path, ENGLISH, IMAGES)


def test_types_missing_from_a_translation_come_from_english(tmp_path):
    document = json.loads(ENGLISH.read_text())
    for question in document.values():
        del question["types"]
    path = tmp_path / "xx.json"
    path.write_text(json.dumps(document))
    assert read_gqa_records(path, IMAGES)[0]["structural_type"] is None
    records = read_xgqa_records(path, ENGLISH, IMAGES)
    assert [r["semantic_type"] for r in records] == [r["semantic_type"] for r in read_gqa_records(ENGLISH, IMAGES)]


def test_missing_images_are_named(tmp_path):
    with pytest.raises(DataError, match="images that .* asks about are missing, e.g. n7"):
        read_gqa_records(QUESTIONS, tmp_path)
    with pytest.raises(DataError, match="GQA image directory not found"):
        read_gqa_records(QUESTIONS, tmp_path / "nope")


def test_a_vqav2_file_where_gqa_belongs_and_the_reverse():
    with pytest.raises(DataError, match="looks like a VQAv2-style questions file .*, not the GQA questions file"):
        read_gqa_questions(DATA / "sample" / "v2_OpenEnded_mscoco_val2014_questions.json")
    with pytest.raises(DataError, match="looks like a GQA questions file .*, not the VQAv2 questions file"):
        read_questions(QUESTIONS)


def test_a_record_of_the_wrong_type_is_named(tmp_path):
    document = json.loads(QUESTIONS.read_text())
    first = next(iter(document))
    document[first]["answer"] = 3
    path = tmp_path / "q.json"
    path.write_text(json.dumps(document))
    with pytest.raises(DataError, match=rf"Expected `str`, got `int` - at `\$\[...\].answer`|{first}"):
        read_gqa_questions(path)
