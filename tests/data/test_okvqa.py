"""OK-VQA v1.1 files read by the VQAv2 reader as they are (no multiple_choice_answer), and scored by the
official VQA metric."""

import json
from pathlib import Path

from sit_vqa.data.vqav2 import read_annotations, read_questions
from sit_vqa.metrics.vqa import evaluate_vqa

DATA = Path(__file__).resolve().parents[2] / "data"
OKVQA = DATA / "okvqa_sample"
ANNOTATIONS = OKVQA / "mscoco_val2014_annotations.json"


def okvqa_annotation(question_id, answers):
    """An annotation in the OK-VQA v1.1 layout: raw_answer beside the stemmed answer, a confidence, no
    multiple_choice_answer."""
    return {
        "image_id": 1, "answer_type": "other", "question_type": "eight", "question_id": question_id,
        "answers": [{"answer_id": i + 1, "raw_answer": a.capitalize(), "answer_confidence": "yes", "answer": a}
                    for i, a in enumerate(answers)],
        "confidence": 3,
    }


def test_the_most_frequent_answer_stands_in_with_the_tie_rule(tmp_path):
    document = {"data_subtype": "val2014", "annotations": [
        okvqa_annotation(10, ["plum"] * 2 + ["grape"] * 6 + ["wine"] * 2),  # grape: 6 of 10
        okvqa_annotation(11, ["cherry"] * 4 + ["apple"] * 4 + ["plum"] * 2),  # tie 4-4: "apple" < "cherry"
    ]}
    path = tmp_path / "mscoco_val2014_annotations.json"
    path.write_text(json.dumps(document))
    table = read_annotations(path).table
    assert table.column("answer").to_pylist() == ["grape", "apple"]
    assert table.column("question_type").to_pylist() == ["eight", "eight"]
    assert table.column("answers").to_pylist()[1] == ["cherry"] * 4 + ["apple"] * 4 + ["plum"] * 2


def test_the_sample_reads_and_asks_about_the_bundled_images():
    questions = read_questions(OKVQA / "OpenEnded_mscoco_val2014_questions.json").table
    annotations = read_annotations(ANNOTATIONS).table
    assert questions.column("question_id").to_pylist() == annotations.column("question_id").to_pylist()
    assert set(annotations.column("answer_type").to_pylist()) == {"other"}
    for image_id in set(questions.column("image_id").to_pylist()):
        assert (DATA / "sample" / "val2014" / f"COCO_val2014_{image_id:012d}.jpg").is_file()
    raw = json.loads(ANNOTATIONS.read_text())["annotations"]
    assert all("multiple_choice_answer" not in a and "confidence" in a for a in raw)
    assert all({"raw_answer", "answer_confidence"} <= set(x) for a in raw for x in a["answers"])


def test_the_official_metric_scores_okvqa_files():
    raw = json.loads(ANNOTATIONS.read_text())
    chosen = read_annotations(ANNOTATIONS).table.column("answer").to_pylist()
    results = [{"question_id": a["question_id"], "answer": answer} for a, answer in zip(raw["annotations"], chosen)]
    report = evaluate_vqa(None, raw, results)
    assert set(report["perQuestionType"]) <= {"eight", "nine"} and report["overall"] > 50
