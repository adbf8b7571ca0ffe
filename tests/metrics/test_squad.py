"""SQuAD v1.1 exact match and F1 (sit_vqa/metrics/squad.py): hand-worked cases of the official
evaluate-v1.1.py definition, the input policy, and the command line on bad input."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sit_vqa.metrics.squad import (
    SquadMetricError,
    exact_match_score,
    f1_score,
    normalize_answer,
    score_squad,
    score_squad_files,
)

REPO = Path(__file__).resolve().parents[2]
XQUAD = REPO / "data" / "xquad_sample"


@pytest.mark.parametrize("text, expected", [
    ("The Cat!", "cat"),  # lower-case, punctuation, article
    ("an apple, a pear", "apple pear"),
    ("theater", "theater"),  # articles only as whole words
    ("“quoted”", "“quoted”"),  # non-ASCII quotes are not in string.punctuation
    ("«Ja», sagte er.", "«ja» sagte er"),
    ("1,000 m", "1000 m"),  # the comma is deleted, not replaced by a space
    ("  red \n  circle ", "red circle"),
    ("O'Neil's", "oneils"),
])
def test_normalize_answer(text, expected):
    assert normalize_answer(text) == expected


def test_exact_match_after_normalisation():
    assert exact_match_score("The Red circle.", "red circle")
    assert not exact_match_score("red circles", "red circle")


def test_f1_over_token_multisets():
    # prediction red big circle, reference big red square: 2 shared, P = R = 2/3, F1 = 2/3
    assert f1_score("the red big circle", "big red square") == pytest.approx(2 / 3)
    # repeated tokens count once per match: prediction red red, reference red: overlap 1, P = 1/2, R = 1, F1 = 2/3
    assert f1_score("red red", "red") == pytest.approx(2 / 3)
    # a multiset: red red circle against red red shares 2 tokens (a set would share 1): P = 2/3, R = 1, F1 = 0.8
    assert f1_score("red red circle", "red red") == pytest.approx(0.8)
    assert f1_score("blue", "red") == 0.0
    assert f1_score("the", "a") == 0.0  # both normalise to nothing


def test_score_takes_the_best_reference_and_reports_percent():
    answers = {"q1": ["red circle"], "q2": ["a blue square", "green"]}
    predictions = {"q1": "Red circle", "q2": "blue circle"}
    report = score_squad(answers, predictions)
    # q1: EM 1, F1 1. q2: against "blue square": overlap 1, P = R = 1/2, F1 1/2; against "green": 0. EM 0.
    assert report["exact_match"] == 100 * (1 + 0) / 2
    assert report["f1"] == 100 * (1 + 0.5) / 2
    assert report["perQuestion"]["q2"] == {"exact_match": 0.0, "f1": 0.5}


def test_input_policy():
    answers = {"q1": ["red"], "q2": ["blue"], "q3": ["green"]}
    with pytest.raises(SquadMetricError, match="not in the data file, e.g. q9"):
        score_squad(answers, {"q1": "red", "q2": "blue", "q3": "green", "q9": "x"})
    with pytest.raises(SquadMetricError, match="no prediction for 1 of the 3 questions, e.g. q3"):
        score_squad(answers, {"q1": "red", "q2": "blue"})
    report = score_squad(answers, {"q1": "red", "q2": "blue"}, allow_missing=True)
    assert report["exact_match"] == 100 * 2 / 3 and report["missing"] == 1  # the official script scores it 0


def reference_predictions(language):
    document = json.loads((XQUAD / f"xquad.{language}.json").read_text(encoding="utf-8"))
    return {qa["id"]: qa["answers"][0]["text"]
            for article in document["data"] for paragraph in article["paragraphs"] for qa in paragraph["qas"]}


def test_sample_files_score_100_with_the_answers(tmp_path):
    path = tmp_path / "p.json"
    path.write_text(json.dumps(reference_predictions("de"), ensure_ascii=False), encoding="utf-8")
    report = score_squad_files(XQUAD / "xquad.de.json", path, english=XQUAD / "xquad.en.json")
    assert (report["exact_match"], report["f1"]) == (100.0, 100.0)


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "sit_vqa.metrics.squad", *map(str, args)],
                          capture_output=True, text=True, cwd=REPO)


def test_cli_scores_and_writes_the_report(tmp_path):
    path = tmp_path / "p.json"
    path.write_text(json.dumps(reference_predictions("en")))
    done = run_cli("--data", XQUAD / "xquad.en.json", "--predictions", path, "--out", tmp_path / "r.json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-2]) == {"exact_match": 100.0, "f1": 100.0}


def test_cli_bad_inputs_exit_2_without_traceback(tmp_path):
    predictions = reference_predictions("en")
    first = next(iter(predictions))
    text = json.dumps(predictions)
    fewer = json.loads((XQUAD / "xquad.de.json").read_text(encoding="utf-8"))
    dropped = fewer["data"][0]["paragraphs"][0]["qas"].pop(0)["id"]

    def write(name, content):
        path = tmp_path / name
        path.write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")
        return path

    good = write("good.json", predictions)
    gqa = REPO / "data" / "gqa_sample" / "testdev_balanced_questions.json"
    cases = [  # (name, --data, --predictions, extra, message)
        ("unknown id", XQUAD / "xquad.en.json", write("u.json", {**predictions, "zzz": "x"}), [], "e.g. zzz"),
        ("repeated key", XQUAD / "xquad.en.json", write("d.json", text[:-1] + f', "{first}": "x"}}'), [],
         f"question id {first!r} has more than one prediction"),
        ("missing", XQUAD / "xquad.en.json", write("m.json", dict(list(predictions.items())[1:])), [],
         "--allow-missing"),
        ("not a string", XQUAD / "xquad.en.json", write("n.json", {**predictions, first: 3}), [], "is int 3"),
        ("data file as predictions", XQUAD / "xquad.en.json", XQUAD / "xquad.en.json", [],
         "looks like a SQuAD-format file"),
        ("GQA file as data", gqa, good, [], "looks like a GQA questions file"),
        ("ids differ from English", write("de.json", fewer), good, ["--english", XQUAD / "xquad.en.json"],
         f"1 of xquad.en.json are missing from it (e.g. {dropped})"),
        ("no such file", tmp_path / "nope.json", good, [], "not found"),
    ]
    for name, data, path, extra, message in cases:
        done = run_cli("--data", data, "--predictions", path, *extra)
        assert done.returncode == 2, (name, done.stdout, done.stderr)
        assert "Traceback" not in done.stderr, name
        assert done.stderr.startswith("error: ") and message in done.stderr, (name, done.stderr)
