"""VQAv2 questions/annotations reading: content, answer policies, and clear errors for bad files."""

import json
import random

import pytest

from sit_vqa.data.vqav2 import most_frequent_answer, read_annotations, read_questions
from sit_vqa.errors import DataError

from .conftest import QUESTIONS


def test_questions_are_read_in_file_order_with_their_split(official_files):
    questions = read_questions(official_files.questions)
    assert questions.data_subtype == "train2014"
    assert questions.table.column_names == ["question_id", "image_id", "question"]
    assert questions.table.to_pylist() == [
        {"question_id": qid, "image_id": image, "question": text} for qid, image, text, *_ in QUESTIONS
    ]


def test_annotations_keep_every_answer_and_the_types(official_files):
    annotations = read_annotations(official_files.annotations)
    rows = annotations.table.to_pylist()
    assert [row["question_id"] for row in rows] == [q[0] for q in QUESTIONS]
    for row, (_, image, _, consensus, answers, answer_type, question_type) in zip(rows, QUESTIONS, strict=True):
        assert row == {"question_id": row["question_id"], "image_id": image, "answer": consensus,
                       "answers": answers, "answer_type": answer_type, "question_type": question_type}
        assert len(row["answers"]) == 10


def test_answer_is_the_consensus_not_the_first_annotator(official_files):
    """Question 25000: first annotator 'tree', consensus 'leaves' (the released code took 'tree')."""
    for policy in ("multiple_choice_answer", "most_frequent"):
        rows = read_annotations(official_files.annotations, policy).table.to_pylist()
        row = next(row for row in rows if row["question_id"] == 25000)
        assert row["answers"][0] == "tree"
        assert row["answer"] == "leaves"


def test_most_frequent_policy_can_differ_from_multiple_choice_answer(official_data, write_official):
    annotation = official_data["annotations"]["annotations"][0]
    annotation["multiple_choice_answer"] = "broccoli"  # disagrees with the raw majority ("rice" x6)
    files = write_official(official_data)
    by_policy = {policy: read_annotations(files.annotations, policy).table["answer"][0].as_py()
                 for policy in ("multiple_choice_answer", "most_frequent")}
    assert by_policy == {"multiple_choice_answer": "broccoli", "most_frequent": "rice"}


def test_most_frequent_answer_breaks_ties_by_smallest_string_whatever_the_order():
    answers = ["no"] * 5 + ["yes"] * 5
    for seed in range(5):
        random.Random(seed).shuffle(answers)
        assert most_frequent_answer(answers) == "no"
    assert most_frequent_answer(["2", "3", "3", "2", "10"]) == "2"
    assert most_frequent_answer(["b", "a", "c", "c"]) == "c"
    assert most_frequent_answer(["only"]) == "only"
    with pytest.raises(ValueError):
        most_frequent_answer([])


def test_unknown_answer_policy_is_rejected(official_files):
    with pytest.raises(ValueError, match="answer policy"):
        read_annotations(official_files.annotations, "first_annotator")


def test_malformed_json_names_file_line_and_column(tmp_path):
    path = tmp_path / "questions.json"
    path.write_text('{"data_subtype": "train2014",\n "questions": [{"image_id": 1, "question": "x" "question_id": 2}]}')
    with pytest.raises(DataError) as error:
        read_questions(path)
    message = str(error.value)
    assert str(path) in message and "line 2" in message and "not valid JSON" in message


def test_wrong_type_names_the_record_and_shows_it(official_data, write_official):
    official_data["questions"]["questions"][1]["image_id"] = "nine"
    files = write_official(official_data)
    with pytest.raises(DataError) as error:
        read_questions(files.questions)
    message = str(error.value)
    assert str(files.questions) in message
    assert "$.questions[1].image_id" in message
    assert '"question_id":9001' in message.replace(" ", "")  # the offending record is shown
    assert "v2_OpenEnded_mscoco_<split>_questions.json" in message


def test_missing_answer_field_names_the_annotation(official_data, write_official):
    del official_data["annotations"]["annotations"][3]["answers"][2]["answer"]
    files = write_official(official_data)
    with pytest.raises(DataError, match=r"\$\.annotations\[3\]\.answers\[2\]"):
        read_annotations(files.annotations)


@pytest.mark.parametrize("key", ["questions", "annotations"])
def test_duplicate_question_ids_are_an_error(official_data, write_official, key):
    records = official_data[key][key]
    records.append(dict(records[1]))
    files = write_official(official_data)
    with pytest.raises(DataError) as error:
        read_questions(files.questions) if key == "questions" else read_annotations(files.annotations)
    message = str(error.value)
    assert "duplicate question id" in message and "question_id 9001" in message
    assert f"$.{key}[1]" in message and f"$.{key}[{len(records) - 1}]" in message


def test_annotation_without_answers_is_an_error(official_data, write_official):
    official_data["annotations"]["annotations"][2]["answers"] = []
    files = write_official(official_data)
    with pytest.raises(DataError, match=r"\$\.annotations\[2\] \(question_id 9002\) has no answers"):
        read_annotations(files.annotations)


def test_swapped_files_get_a_hint(official_files):
    with pytest.raises(DataError, match="did you swap --questions and --annotations"):
        read_annotations(official_files.questions)
    with pytest.raises(DataError, match="this is an annotations file"):
        read_questions(official_files.annotations)
    with pytest.raises(DataError, match="this is a COCO file"):
        read_questions(official_files.captions)


@pytest.mark.parametrize("key", ["questions", "annotations"])
def test_empty_lists_are_an_error(tmp_path, key):
    path = tmp_path / f"{key}.json"
    path.write_text(json.dumps({"data_subtype": "val2014", key: []}))
    reader = read_questions if key == "questions" else read_annotations
    with pytest.raises(DataError, match=f"{path}: the {key} list is empty"):
        reader(path)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(DataError, match="VQAv2 questions file .* not found: .*nope.json"):
        read_questions(tmp_path / "nope.json")
    with pytest.raises(DataError, match="is a directory"):
        read_annotations(tmp_path)


def test_split_is_optional(official_data, write_official):
    del official_data["questions"]["data_subtype"]
    files = write_official(official_data)
    assert read_questions(files.questions).data_subtype is None


@pytest.mark.parametrize("policy", ["multiple_choice_answer", "most_frequent"])
def test_the_chosen_answer_is_single_spaced_and_the_raw_answers_are_kept(official_data, write_official, policy):
    annotation = official_data["annotations"]["annotations"][0]
    annotation["multiple_choice_answer"] = "red\nand\twhite "
    for answer in annotation["answers"]:
        answer["answer"] = "red\nand\twhite "
    files = write_official(official_data)
    table = read_annotations(files.annotations, policy).table
    assert table["answer"][0].as_py() == "red and white"
    assert set(table["answers"][0].as_py()) == {"red\nand\twhite "}
