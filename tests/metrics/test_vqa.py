"""Hand-worked cases for every rule of the official VQA accuracy (sit_vqa/metrics/vqa.py), odd ones included.

Each expected value is worked out by hand from the rules in the module docstring; the comment beside it shows
the working. (The module was also compared with the official script on random inputs; see docs/PERFORMANCE.md.)
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sit_vqa.metrics.vqa import (
    VQAMetricError,
    evaluate_vqa,
    load_annotations,
    main,
    normalize_answer,
    question_accuracy,
    score_files,
)

REPO = Path(__file__).resolve().parents[2]


def annotation(question_id, answers, answer_type="other", question_type="what is"):
    return {
        "question_id": question_id, "image_id": question_id // 10, "question_type": question_type,
        "answer_type": answer_type, "multiple_choice_answer": answers[0],
        "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": i + 1} for i, a in enumerate(answers)],
    }


def ten(*groups):
    """Ten annotator answers from (answer, count) pairs."""
    answers = [answer for answer, count in groups for _ in range(count)]
    assert len(answers) == 10
    return answers


# ---------------------------------------------------------------------------------------------------------------
# Rules 1-3: normalisation
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        # rule 1: newlines and tabs become spaces, then strip
        ("  yes\n", "yes"),
        ("red\twhite", "red white"),
        ("\r\xa0yes\xa0", "yes"),  # strip() takes every kind of whitespace
        # rule 2: a listed character is replaced by a space when it touches no space...
        ("black/white", "black white"),
        ("t-shirt", "t shirt"),
        ("yes!", "yes"),  # "yes " then split/join
        ("what?!", "what"),
        ("(none)", "0"),  # " none " -> "none" -> "0"
        # ...and deleted when the incoming text has it next to a space
        ("black / white", "black white"),
        ("hot dog -", "hot dog"),
        # per character: "," sits before a space (deleted), "-" does not (space); then "a" is an article
        ("a-b, c", "b c"),
        # digit-comma-digit anywhere: every listed character is deleted, even far away
        ("1,000", "1000"),
        ("x-ray 1,5", "xray 15"),
        # "." is deleted unless a digit follows it
        ("yes.", "yes"),
        ("3.5", "3.5"),
        ("5.", "5"),
        ("a.5", "a.5"),
        ("u.s.", "us"),
        # characters not on the list are kept
        ("10:30", "10:30"),
        ("don't", "don't"),
        ("50%", "50%"),
        ("#1", "#1"),
        ("black & white", "black & white"),
        # rule 3: lower case, number words, articles, contractions
        ("Yes", "yes"),
        ("two", "2"),
        ("Ten", "10"),
        ("none", "0"),
        ("eleven", "eleven"),
        ("twenty", "twenty"),
        ("two dogs", "2 dogs"),
        ("left one", "left 1"),
        ("none of the above", "0 of above"),
        ("the cat", "cat"),
        ("An apple", "apple"),
        ("a", ""),
        ("the the", ""),
        ("dont", "don't"),
        ("cant", "can't"),
        ("wont", "won't"),
        ("youre", "you're"),
        ("whats up", "what's up"),
        ("couldn'tve", "couldn't've"),
        ("ow's'at", "'ow's'at"),
        ("somebody'd", "somebodyd"),  # the official table maps this one backwards
        ("Im", "im"),  # its key "Im" can never match: words are lower-cased first
        ("  The   Two\tdogs ", "2 dogs"),
    ],
)
def test_normalize_answer(text, expected):
    assert normalize_answer(text) == expected


def test_at_most_32_periods_are_deleted():
    # The official call passes re.UNICODE (32) as Pattern.sub's count: only the first 32 lone periods go.
    assert normalize_answer("a" + "." * 32) == ""  # "a", then dropped as an article
    assert normalize_answer("a" + "." * 33) == "a."
    assert normalize_answer("end" + "." * 40) == "end" + "." * 8


def test_punctuation_is_decided_on_the_incoming_text():
    # "/" touches a space in the incoming text, so it is deleted everywhere, also in "b/c".
    assert normalize_answer("a / b/c") == "bc"
    # "-" does not touch a space, so it becomes one; "," touches one and goes.
    assert normalize_answer("x-y, z") == "x y z"


# ---------------------------------------------------------------------------------------------------------------
# Rule 5: leave-one-out average of min(1, matches / 3)
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "matching, percent",
    [
        (0, 0.0),
        (1, 30.0),  # the matching annotator sees 0 others (0), the 9 others see 1 (1/3): 9/3 / 10
        (2, 60.0),  # 2 annotators see 1 (1/3), 8 see 2 (2/3): (2/3 + 16/3) / 10
        (3, 90.0),  # 3 see 2 (2/3), 7 see 3 (1): (2 + 7) / 10
        (4, 100.0),  # everyone sees at least 3
        (10, 100.0),
    ],
)
def test_leave_one_out_accuracy_with_ten_answers(matching, percent):
    answers = ten(("cat", matching), ("dog", 10 - matching))
    assert round(100 * question_accuracy("cat", answers), 2) == percent


def test_leave_one_out_accuracy_with_other_answer_counts():
    assert question_accuracy("cat", ["cat"]) == 0.0  # the only annotator has no others to agree with
    assert question_accuracy("cat", ["cat", "cat"]) == pytest.approx(1 / 3)  # each sees 1 match
    assert question_accuracy("cat", ["cat", "cat", "dog"]) == pytest.approx(4 / 9)  # (1/3 + 1/3 + 2/3) / 3


# ---------------------------------------------------------------------------------------------------------------
# Rule 4: which answers are normalised, and when; 2021 against legacy
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "prediction, gt_answers, percent_2021, percent_legacy",
    [
        # all annotators agree: 2021 compares stripped strings as they are, legacy normalises the prediction
        ("yes", ["yes"] * 10, 100.0, 100.0),
        ("Yes", ["yes"] * 10, 0.0, 100.0),
        ("yes.", ["yes"] * 10, 0.0, 100.0),
        (" yes\n", ["yes"] * 10, 100.0, 100.0),
        # legacy lower-cases the prediction but never the ground truths: the right answer scores 0
        ("Yes", ["Yes"] * 10, 100.0, 0.0),
        # ground truths are stripped in 2021 only
        ("yes", ["yes "] * 10, 100.0, 0.0),
        # 2021 checks agreement after stripping: these agree, so "yes" is not lower-cased to match "Yes"
        ("yes", ten(("Yes", 5), ("Yes ", 5)), 0.0, 0.0),
        ("Yes", ten(("Yes", 5), ("Yes ", 5)), 100.0, 0.0),
        # annotators disagree: 2021 normalises the ground truths fully, legacy only strips their punctuation
        ("2", ten(("two", 3), ("2", 3), ("dog", 4)), 100.0, 90.0),  # legacy: "two" stays "two", 3 matches
        ("two", ten(("two", 3), ("2", 3), ("dog", 4)), 100.0, 90.0),  # the prediction becomes "2" in both
        ("cat", ten(("the cat", 2), ("cat", 2), ("dog", 6)), 100.0, 60.0),
        # legacy turns "yes!" into "yes " (a space, never stripped): 1 match instead of 3
        ("yes", ten(("yes!", 2), ("yes", 1), ("no", 7)), 90.0, 30.0),
    ],
)
def test_when_answers_are_normalised(prediction, gt_answers, percent_2021, percent_legacy):
    assert round(100 * question_accuracy(prediction, gt_answers), 2) == percent_2021
    assert round(100 * question_accuracy(prediction, gt_answers, legacy=True), 2) == percent_legacy


# ---------------------------------------------------------------------------------------------------------------
# Rule 6: reports and rounding
# ---------------------------------------------------------------------------------------------------------------


def small_set():
    annotations = [
        annotation(1, ten(("yes", 10)), "yes/no", "is the"),  # right: 100
        annotation(2, ten(("2", 1), ("3", 9)), "number", "how many"),  # "two" -> "2", one match: 30
        annotation(3, ten(("red", 6), ("blue", 4)), "other", "what color is the"),  # wrong: 0
        annotation(4, ten(("no", 2), ("yes", 8)), "yes/no", "is the"),  # two matches: 60
    ]
    results = [{"question_id": 1, "answer": "yes"}, {"question_id": 2, "answer": "two"},
               {"question_id": 3, "answer": "green"}, {"question_id": 4, "answer": "No"}]
    questions = [{"question_id": a["question_id"], "image_id": a["image_id"], "question": "?"} for a in annotations]
    return questions, annotations, results


def test_report_fields():
    report = evaluate_vqa(*small_set())
    assert report["perQuestion"] == {1: 100.0, 2: 30.0, 3: 0.0, 4: 60.0}
    assert report["overall"] == 47.5  # (100 + 30 + 0 + 60) / 4
    assert report["perAnswerType"] == {"yes/no": 80.0, "number": 30.0, "other": 0.0}
    assert list(report["perAnswerType"]) == ["yes/no", "number", "other"]  # first seen first, as official
    assert report["perQuestionType"] == {"is the": 80.0, "how many": 30.0, "what color is the": 0.0}


def test_aggregates_average_the_unrounded_accuracies():
    # q1: three annotators say "cat": each sees 2 matches, 2/3, so 66.666...% (reported 66.67). q2: 0.
    annotations = [annotation(1, ["cat"] * 3), annotation(2, ["dog"] * 3)]
    results = [{"question_id": 1, "answer": "cat"}, {"question_id": 2, "answer": "cat"}]
    report = evaluate_vqa(None, annotations, results)
    assert report["perQuestion"] == {1: 66.67, 2: 0.0}
    assert report["overall"] == 33.33  # round(33.333..., 2); averaging the rounded 66.67 would give 33.34


def test_rounding_sends_exact_ties_to_even():
    # 1 right of 800: 100 * 1 / 800 = 0.125 exactly; Python 3's round gives 0.12 (Python 2's gave 0.13).
    annotations = [annotation(i, ten(("cat", 10))) for i in range(1, 801)]
    results = [{"question_id": i, "answer": "cat" if i == 1 else "dog"} for i in range(1, 801)]
    assert evaluate_vqa(None, annotations, results)["overall"] == 0.12
    assert evaluate_vqa(None, annotations, results, precision=3)["overall"] == 0.125


def test_accepts_official_file_dicts_and_loaded_records(tmp_path):
    questions, annotations, results = small_set()
    as_files = evaluate_vqa({"questions": questions}, {"annotations": annotations}, results)
    paths = write_files(tmp_path, questions, annotations, results)
    as_records = evaluate_vqa(None, load_annotations(paths["annotations"]), results)
    assert as_files == as_records == evaluate_vqa(questions, annotations, results)


# ---------------------------------------------------------------------------------------------------------------
# Input policy and errors
# ---------------------------------------------------------------------------------------------------------------


def test_result_for_an_unknown_question_is_an_error():
    questions, annotations, results = small_set()
    with pytest.raises(VQAMetricError, match=r"1 results are for questions that are not in the annotations.*99"):
        evaluate_vqa(questions, annotations, results + [{"question_id": 99, "answer": "yes"}])


def test_two_results_for_one_question_is_an_error():
    questions, annotations, results = small_set()
    with pytest.raises(VQAMetricError, match=r"more than one result, e\.g\. 2\. Fix: keep one answer"):
        evaluate_vqa(questions, annotations, results + [{"question_id": 2, "answer": "3"}])


def test_missing_results_are_an_error_unless_allowed():
    questions, annotations, results = small_set()
    answered = [r for r in results if r["question_id"] != 3]
    with pytest.raises(VQAMetricError, match=r"no result for 1 of the 4 annotated questions, e\.g\. question_id 3"):
        evaluate_vqa(questions, annotations, answered)
    report = evaluate_vqa(questions, annotations, answered, allow_missing=True)
    assert report["perQuestion"] == {1: 100.0, 2: 30.0, 4: 60.0}
    assert report["overall"] == 63.33  # (100 + 30 + 60) / 3
    assert "other" not in report["perAnswerType"]


def test_nothing_to_score_is_an_error():
    questions, annotations, _ = small_set()
    with pytest.raises(VQAMetricError, match="no question to score"):
        evaluate_vqa(questions, annotations, [], allow_missing=True)


@pytest.mark.parametrize(
    "bad_result, message",
    [
        ({"question_id": 1, "answer": 7}, r"Expected `str`, got `int` - at `\$\[0\]\.answer`"),
        ({"question_id": 1, "answer": None}, r"Expected `str`, got `null` - at `\$\[0\]\.answer`"),
        ({"question_id": 1}, r"missing required field `answer` - at `\$\[0\]`"),
        ({"question_id": "1", "answer": "yes"}, r"Expected `int`, got `str` - at `\$\[0\]\.question_id`"),
    ],
)
def test_malformed_results_name_the_record_and_the_fix(bad_result, message):
    questions, annotations, results = small_set()
    with pytest.raises(VQAMetricError, match=message + r".*Fix: pass results in the official format"):
        evaluate_vqa(questions, annotations, [bad_result] + results[1:])


def test_annotation_problems_are_errors():
    questions, annotations, results = small_set()
    with pytest.raises(VQAMetricError, match="question ids 2 are annotated twice"):
        evaluate_vqa(None, annotations + [annotations[1]], results)
    repeated_id = annotation(1, ten(("yes", 10)))
    repeated_id["answers"][1]["answer_id"] = 1
    with pytest.raises(VQAMetricError, match=r"annotation 0 \(question_id 1\) repeats answer_id"):
        evaluate_vqa(None, [repeated_id] + annotations[1:], results)
    with pytest.raises(VQAMetricError, match=r"annotation 0 \(question_id 1\) has no answers"):
        evaluate_vqa(None, [{**annotations[0], "answers": []}] + annotations[1:], results)
    with pytest.raises(VQAMetricError, match=r"missing required field `answer_type` - at `\$\[3\]`"):
        evaluate_vqa(None, annotations[:3] + [{k: v for k, v in annotations[3].items() if k != "answer_type"}],
                     results)


def test_questions_must_cover_the_annotations():
    questions, annotations, results = small_set()
    with pytest.raises(VQAMetricError, match=r"1 annotated questions are not in the questions, e\.g\. question_id 4"):
        evaluate_vqa(questions[:3], annotations, results)


def test_question_accuracy_needs_answers():
    with pytest.raises(VQAMetricError, match="at least one ground-truth answer"):
        question_accuracy("yes", [])


# ---------------------------------------------------------------------------------------------------------------
# Files and the command line
# ---------------------------------------------------------------------------------------------------------------


def write_files(directory, questions, annotations, results):
    meta = {"info": {}, "license": {}, "data_subtype": "val2014", "data_type": "mscoco", "task_type": "Open-Ended"}
    contents = {"questions": {**meta, "questions": questions}, "annotations": {**meta, "annotations": annotations},
                "results": results}
    paths = {}
    for name, content in contents.items():
        paths[name] = directory / f"{name}.json"
        paths[name].write_text(json.dumps(content))
    return paths


def test_file_errors_name_the_file(tmp_path):
    questions, annotations, results = small_set()
    paths = write_files(tmp_path, questions, annotations, results)
    files = [paths["questions"], paths["annotations"]]
    with pytest.raises(VQAMetricError, match=r"results file not found: .*nope\.json"):
        score_files(*files, tmp_path / "nope.json")
    broken = tmp_path / "broken.json"
    broken.write_text('[{"question_id": 1, "answer": "yes"},\n {"question_id": 2 "answer": "no"}]')
    with pytest.raises(VQAMetricError, match=r"broken\.json: not valid JSON at line 2, column 20"):
        score_files(*files, broken)
    as_dict = tmp_path / "as_dict.json"
    as_dict.write_text(json.dumps({"results": results}))
    with pytest.raises(VQAMetricError, match=r"as_dict\.json: Expected `array`, got `object`"):
        score_files(*files, as_dict)
    bad_answer = tmp_path / "bad_answer.json"
    bad_answer.write_text(json.dumps(results[:2] + [{"question_id": 3, "answer": ["red"]}] + results[3:]))
    with pytest.raises(VQAMetricError, match=r"bad_answer\.json: Expected `str`, got `array` - at `\$\[2\]\.answer`"):
        score_files(*files, bad_answer)


def test_cli_prints_and_writes_the_report(tmp_path, capsys):
    paths = write_files(tmp_path, *small_set())
    out = tmp_path / "report" / "report.json"
    argv = ["--questions", str(paths["questions"]), "--annotations", str(paths["annotations"]),
            "--results", str(paths["results"]), "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "Overall Accuracy is: 47.50" in printed
    assert "yes/no : 80.00" in printed and "number : 30.00" in printed and "other : 0.00" in printed
    report = json.loads(out.read_text())
    assert list(report) == ["overall", "perAnswerType", "perQuestionType", "perQuestion"]
    assert report["perQuestion"] == {"1": 100.0, "2": 30.0, "3": 0.0, "4": 60.0}
    assert main(argv + ["--legacy"]) == 0  # legacy: "No" -> "no" as well; "two" -> "2" matches one "2"
    assert json.loads(out.read_text())["perQuestion"] == {"1": 100.0, "2": 30.0, "3": 0.0, "4": 60.0}


def test_cli_reports_skipped_questions_and_errors(tmp_path, capsys):
    questions, annotations, results = small_set()
    paths = write_files(tmp_path, questions, annotations, results[:3])
    argv = ["--questions", str(paths["questions"]), "--annotations", str(paths["annotations"]),
            "--results", str(paths["results"])]
    assert main(argv) == 2
    assert "error: " in capsys.readouterr().err
    assert main(argv + ["--allow-missing"]) == 0
    printed = capsys.readouterr().out
    assert "Scored 3 questions" in printed and "Skipped 1 annotated questions without a result" in printed


def test_module_runs_as_a_script(tmp_path):
    paths = write_files(tmp_path, *small_set())
    done = subprocess.run(
        [sys.executable, "-m", "sit_vqa.metrics.vqa", "--questions", str(paths["questions"]),
         "--annotations", str(paths["annotations"]), "--results", str(paths["results"]), "--legacy"],
        capture_output=True, text=True, cwd=REPO, check=True,
    )
    assert "Overall Accuracy is: 47.50" in done.stdout


@pytest.mark.parametrize("option, value, words", [
    ("--precision", "-1", "argument --precision: must be a whole number of decimals from 0 to 15, got -1"),
    ("--precision", "99", "got 99"),
    ("--out", "DIRECTORY", "argument --out: {out} is a directory; name a file in it, e.g. --out {out}/report.json"),
])
def test_bad_arguments_exit_2_before_any_score_is_printed(tmp_path, option, value, words):
    """--precision -1 printed the scores, then failed formatting them; --out naming a directory failed after
    scoring. Both are refused first, with a message, exit 2."""
    paths = write_files(tmp_path, *small_set())
    value = str(tmp_path) if value == "DIRECTORY" else value
    done = subprocess.run(
        [sys.executable, "-m", "sit_vqa.metrics.vqa", "--questions", str(paths["questions"]),
         "--annotations", str(paths["annotations"]), "--results", str(paths["results"]), option, value],
        capture_output=True, text=True, cwd=REPO,
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and done.stdout == "", (done.stdout, done.stderr)
    assert words.format(out=tmp_path) in done.stderr, done.stderr


def test_a_report_that_cannot_be_written_is_a_message(tmp_path):
    paths = write_files(tmp_path, *small_set())
    blocker = tmp_path / "not_a_directory"
    blocker.write_text("a file where the report's folder should be")
    done = subprocess.run(
        [sys.executable, "-m", "sit_vqa.metrics.vqa", "--questions", str(paths["questions"]),
         "--annotations", str(paths["annotations"]), "--results", str(paths["results"]),
         "--out", str(blocker / "report.json")],
        capture_output=True, text=True, cwd=REPO,
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and f"error: cannot write {blocker / 'report.json'}" in done.stderr, done.stderr
