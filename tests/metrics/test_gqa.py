"""GQA accuracy (sit_vqa/metrics/gqa.py): hand-worked cases of the official eval.py definition, the stated
--normalize option, the input policy, and the command line on bad input."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sit_vqa.metrics.gqa import (
    GQAMetricError,
    normalize_gqa_answer,
    score_gqa,
    score_gqa_files,
)

REPO = Path(__file__).resolve().parents[2]
GQA_QUESTIONS = REPO / "data" / "gqa_sample" / "testdev_balanced_questions.json"
XGQA = REPO / "data" / "xgqa_sample"
VQA_QUESTIONS = REPO / "data" / "sample" / "v2_OpenEnded_mscoco_val2014_questions.json"


def question(answer, structural, semantic, balanced=True):
    return {"imageId": "n1", "question": "?", "answer": answer, "fullAnswer": "", "isBalanced": balanced,
            "types": {"structural": structural, "semantic": semantic, "detailed": "x"}, "groups": {"global": None}}


QUESTIONS = {
    "1": question("red", "query", "attr"),
    "2": question("yes", "verify", "attr"),
    "3": question("blue", "choose", "attr"),
    "4": question("no", "logical", "obj"),
    "5": question("red", "query", "attr", balanced=False),  # eval.py scores balanced questions only
}
PREDICTIONS = [
    {"questionId": "1", "prediction": "red"},  # exact: 1
    {"questionId": "2", "prediction": "Yes"},  # exact: 0 (case); normalized: 1
    {"questionId": "3", "prediction": " blue."},  # exact: 0; normalized: 1
    {"questionId": "4", "prediction": "yes"},  # 0 either way
    {"questionId": "5", "prediction": "green"},  # not balanced: not scored
]


def test_exact_match_as_official():
    report = score_gqa(QUESTIONS, PREDICTIONS)
    assert report["accuracy"] == 100 * 1 / 4  # questions 1-4; only 1 is right
    assert report["open"] == 100.0  # structural "query": question 1
    assert report["binary"] == 0.0  # the others: 2, 3, 4
    assert report["accuracyPerStructuralType"] == {
        "choose": {"accuracy": 0.0, "questions": 1}, "logical": {"accuracy": 0.0, "questions": 1},
        "query": {"accuracy": 100.0, "questions": 1}, "verify": {"accuracy": 0.0, "questions": 1},
    }
    assert report["accuracyPerSemanticType"] == {
        "attr": {"accuracy": 100 * 1 / 3, "questions": 3}, "obj": {"accuracy": 0.0, "questions": 1},
    }
    assert report["perQuestion"] == {"1": 1.0, "2": 0.0, "3": 0.0, "4": 0.0}
    assert report["normalize"] is False and "official" in report["matching"]


def test_normalize_is_a_stated_option():
    report = score_gqa(QUESTIONS, PREDICTIONS, normalize=True)
    assert report["accuracy"] == 100 * 3 / 4  # 1, 2 and 3 right
    assert report["binary"] == 100 * 2 / 3
    assert report["accuracyPerSemanticType"]["attr"] == {"accuracy": 100.0, "questions": 3}
    assert report["normalize"] is True and "not official" in report["matching"]


@pytest.mark.parametrize("text, expected", [
    (" Yes. ", "yes"), ("Red", "red"), ("yes..", "yes."), ("u.s.", "u.s"), ("no .", "no"), ("a dog", "a dog"),
])
def test_normalize_answer(text, expected):
    assert normalize_gqa_answer(text) == expected


def test_integer_question_ids_are_read_as_their_digits():
    predictions = [{"questionId": int(p["questionId"]), "prediction": p["prediction"]} for p in PREDICTIONS]
    assert score_gqa(QUESTIONS, predictions)["accuracy"] == 25.0


def test_unknown_duplicate_and_missing_predictions_are_errors():
    with pytest.raises(GQAMetricError, match="not in the questions file, e.g. 99"):
        score_gqa(QUESTIONS, PREDICTIONS + [{"questionId": "99", "prediction": "x"}])
    with pytest.raises(GQAMetricError, match="more than one prediction, e.g. 2"):
        score_gqa(QUESTIONS, PREDICTIONS + [{"questionId": "2", "prediction": "no"}])
    with pytest.raises(GQAMetricError, match="no prediction for 1 of the balanced questions, e.g. 4"):
        score_gqa(QUESTIONS, PREDICTIONS[:3] + PREDICTIONS[4:])


def test_allow_missing_scores_the_answered_questions():
    report = score_gqa(QUESTIONS, PREDICTIONS[:2], allow_missing=True)
    assert report["accuracy"] == 50.0 and report["questions"] == 2 and report["skipped"] == 2


def test_an_unbalanced_question_needs_no_prediction():
    assert score_gqa(QUESTIONS, PREDICTIONS[:4])["accuracy"] == 25.0


def test_sample_files_score_100_with_the_answers(tmp_path):
    questions = json.loads(GQA_QUESTIONS.read_text())
    results = tmp_path / "predictions.json"
    results.write_text(json.dumps([{"questionId": qid, "prediction": q["answer"]} for qid, q in questions.items()]))
    assert score_gqa_files(GQA_QUESTIONS, results)["accuracy"] == 100.0
    german = XGQA / "testdev_balanced_questions_de.json"
    assert score_gqa_files(german, results, english=XGQA / "testdev_balanced_questions_en.json")["accuracy"] == 100.0


# ---------------------------------------------------------------------------------------------------------------
# Command line: bad input gives exit code 2 and a message, never a traceback
# ---------------------------------------------------------------------------------------------------------------


def run_cli(module, *args):
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True, cwd=REPO)


@pytest.fixture
def answers_file(tmp_path):
    questions = json.loads(GQA_QUESTIONS.read_text())
    records = [{"questionId": qid, "prediction": q["answer"]} for qid, q in questions.items()]
    path = tmp_path / "predictions.json"
    path.write_text(json.dumps(records))
    return path, records


def test_cli_scores_and_writes_the_report(answers_file, tmp_path):
    path, _ = answers_file
    done = run_cli("sit_vqa.metrics.gqa", "--questions", GQA_QUESTIONS, "--results", path, "--out", tmp_path / "r.json")
    assert done.returncode == 0, done.stderr
    assert "Accuracy: 100.00%" in done.stdout
    assert json.loads((tmp_path / "r.json").read_text())["accuracy"] == 100.0


def write(tmp_path, name, content):
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")
    return path


def bad_inputs(tmp_path, records):
    """(name, --questions, --results, extra args, what the message must say)"""
    vqa_results = write(tmp_path, "vqa.json", [{"question_id": 1, "answer": "yes"}])
    english = XGQA / "testdev_balanced_questions_en.json"
    fewer = json.loads(english.read_text())
    dropped = next(iter(fewer))
    del fewer[dropped]
    return [
        ("VQAv2 questions as GQA questions", VQA_QUESTIONS, None, [], "looks like a VQAv2-style questions file"),
        ("VQAv2 results as GQA predictions", GQA_QUESTIONS, vqa_results, [], "looks like VQAv2 results"),
        ("unknown id", GQA_QUESTIONS, write(tmp_path, "u.json", records + [{"questionId": "1", "prediction": "x"}]),
         [], "not in the questions file, e.g. 1"),
        ("duplicate", GQA_QUESTIONS, write(tmp_path, "d.json", records + records[:1]), [], "more than one prediction"),
        ("missing", GQA_QUESTIONS, write(tmp_path, "m.json", records[1:]), [], "--allow-missing"),
        ("ids differ from English", write(tmp_path, "de.json", fewer), None, ["--english", english],
         f"1 of {english.name} are missing from it (e.g. {dropped})"),
        ("not JSON", GQA_QUESTIONS, write(tmp_path, "bad.json", "[{"), [], "not valid JSON"),
        ("no such file", tmp_path / "nope.json", None, [], "not found"),
    ]


def test_cli_bad_inputs_exit_2_without_traceback(answers_file, tmp_path):
    path, records = answers_file
    for name, questions, results, extra, message in bad_inputs(tmp_path, records):
        done = run_cli("sit_vqa.metrics.gqa", "--questions", questions, "--results", results or path, *extra)
        assert done.returncode == 2, (name, done.stdout, done.stderr)
        assert "Traceback" not in done.stderr, name
        assert done.stderr.startswith("error: ") and message in done.stderr, (name, done.stderr)


def test_vqa_cli_names_a_gqa_file(tmp_path):
    results = write(tmp_path, "r.json", [{"question_id": 1, "answer": "yes"}])
    annotations = REPO / "data" / "sample" / "v2_mscoco_val2014_annotations.json"
    done = run_cli("sit_vqa.metrics.vqa", "--questions", GQA_QUESTIONS, "--annotations", annotations,
                   "--results", results)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "looks like a GQA questions file" in done.stderr, done.stderr
