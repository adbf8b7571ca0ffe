"""evaluate.py end to end on the tiny models and the bundled sample: the four files, the official scorer's
numbers, zero-shot and T5 paths, prompts, --compare, and exit status 2 with a message on bad input."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import evaluate
from sit_vqa.data.prompts import BASELINE_TASK, SIT_TASK, parse_sit_output
from sit_vqa.evaluation.vqa import load_eval_records
from sit_vqa.metrics.vqa import question_accuracy
from tests.evaluation.test_evaluation import REPO, SAMPLE, ids, sample_data, write_tiny_checkpoint

QUESTIONS = SAMPLE / "v2_OpenEnded_mscoco_val2014_questions.json"
ANNOTATIONS = SAMPLE / "v2_mscoco_val2014_annotations.json"
REPORT_KEYS = {"overall", "perAnswerType", "perQuestionType", "answer_marker_rate", "description_marker_rate",
               "outputs_without_answer_marker", "num_questions", "dropped", "question_set_sha256", "metric", "settings"}
SETTINGS_KEYS = {"name", "checkpoint", "config", "split", "prompt", "limit", "num_beams", "max_new_tokens", "metric"}
PREDICTION_KEYS = {"question_id", "question", "prompt", "generation", "description", "answer", "has_answer_marker",
                   "gt_answers", "answer_type", "question_type", "accuracy"}


@pytest.fixture(autouse=True)
def _repo_cwd(monkeypatch):
    monkeypatch.chdir(REPO)  # the configs name data/sample/... relative to the repository


@pytest.fixture(scope="module")
def sit_checkpoint(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("sit") / "final", mode="sit")


def run_main(*argv: str) -> int:
    return evaluate.main(["--config", str(REPO / "tests" / "configs" / "bundled_sample.yaml"), "--no-progress", *argv])


def read_outputs(out: Path):
    results = json.loads((out / "results.json").read_text())
    predictions = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    report = json.loads((out / "report.json").read_text())
    return results, predictions, report


def test_evaluates_a_checkpoint_end_to_end(sit_checkpoint, tmp_path, capsys):
    out = tmp_path / "eval"
    assert run_main("--checkpoint", str(sit_checkpoint), "--limit", "8", "--out", str(out)) == 0
    assert sorted(p.name for p in out.iterdir()) == ["predictions.jsonl", "report.json", "report.md", "results.json"]
    results, predictions, report = read_outputs(out)

    expected_ids = ids(load_eval_records(sample_data(), prompt="sit", limit=8, seed=42).dataset)
    assert [r["question_id"] for r in results] == [p["question_id"] for p in predictions] == expected_ids
    assert all(set(r) == {"question_id", "answer"} and isinstance(r["answer"], str) for r in results)

    for prediction, result in zip(predictions, results):
        assert PREDICTION_KEYS <= set(prediction)
        assert prediction["prompt"].startswith(SIT_TASK)  # trained in mode sit -> asked with the SIT prompt
        assert prediction["answer"] == result["answer"] == parse_sit_output(prediction["generation"]).answer
        assert prediction["accuracy"] == question_accuracy(prediction["answer"], prediction["gt_answers"])
        assert len(prediction["gt_answers"]) == 10

    assert REPORT_KEYS <= set(report) and SETTINGS_KEYS <= set(report["settings"])
    assert report["num_questions"] == 8
    marked = sum(bool(re.search(r"answer\s*:", p["generation"], re.IGNORECASE)) for p in predictions)
    assert report["answer_marker_rate"] == marked / 8
    assert report["outputs_without_answer_marker"] == 8 - marked
    assert report["settings"]["prompt"] == "sit" and report["settings"]["checkpoint"] == str(sit_checkpoint)
    assert report["settings"]["max_new_tokens"] == 64 and report["settings"]["num_beams"] == 1
    assert report["settings"]["name"] == sit_checkpoint.parent.name
    assert report["dropped"] == {"no_annotation": 0, "no_caption": 0, "image_missing": 0, "image_unreadable": 0}
    accuracy = sum(p["accuracy"] for p in predictions) / 8
    assert report["overall"] == round(100 * accuracy, 2)
    assert f"VQA accuracy {report['overall']:.2f} on 8 questions" in capsys.readouterr().out
    assert "| **overall** | 8 |" in (out / "report.md").read_text()


def test_report_equals_the_official_scorer_on_results_json(sit_checkpoint, tmp_path):
    out = tmp_path / "eval"
    assert run_main("--checkpoint", str(sit_checkpoint), "--limit", "12", "--out", str(out), "--batch-size", "5") == 0
    scored = tmp_path / "official.json"
    subprocess.run(
        [sys.executable, "-m", "sit_vqa.metrics.vqa", "--questions", str(QUESTIONS), "--annotations",
         str(ANNOTATIONS), "--results", str(out / "results.json"), "--allow-missing", "--out", str(scored)],
        check=True, capture_output=True, cwd=REPO,
    )
    official = json.loads(scored.read_text())
    _, predictions, report = read_outputs(out)
    assert report["settings"]["batch_size"] == 5
    for key in ("overall", "perAnswerType", "perQuestionType"):
        assert report[key] == official[key], key
    for prediction in predictions:
        assert round(100 * prediction["accuracy"], 2) == official["perQuestion"][str(prediction["question_id"])]


def test_zero_shot_uses_the_base_model_and_the_baseline_prompt(tmp_path):
    out = tmp_path / "zs"
    assert run_main("--zero-shot", "--limit", "4", "--out", str(out), "--max-new-tokens", "6") == 0
    _, predictions, report = read_outputs(out)
    assert report["settings"]["zero_shot"] is True and report["settings"]["checkpoint"] is None
    assert report["settings"]["prompt"] == "baseline" and report["settings"]["name"] == "zero-shot-bundled_sample"
    assert all(p["prompt"].startswith(BASELINE_TASK) for p in predictions)
    assert all(len(p["generation"].split()) <= 6 for p in predictions)
    # leaving --checkpoint out is the same zero-shot row
    assert run_main("--limit", "4", "--out", str(tmp_path / "plain"), "--max-new-tokens", "6") == 0
    assert read_outputs(tmp_path / "plain")[0] == read_outputs(out)[0]


def test_t5_checkpoint_trained_as_baseline(tmp_path):
    checkpoint = write_tiny_checkpoint(tmp_path / "t5" / "checkpoint-2", "--tiny_model", "t5", mode="baseline")
    out = tmp_path / "eval"
    assert run_main("--checkpoint", str(tmp_path / "t5"), "--limit", "4", "--out", str(out),
                    "--max-new-tokens", "5", "--num-beams", "2") == 0
    _, predictions, report = read_outputs(out)
    assert report["settings"]["checkpoint"] == str(checkpoint)  # the run directory's latest checkpoint
    assert report["settings"]["prompt"] == "baseline" and report["settings"]["num_beams"] == 2
    assert report["settings"]["name"] == "t5-checkpoint-2"
    assert all(len(p["generation"].split()) <= 5 for p in predictions)  # decoder ids only, no prompt echo


def test_prompt_override_and_legacy_metric(sit_checkpoint, tmp_path):
    out = tmp_path / "eval"
    assert run_main("--checkpoint", str(sit_checkpoint), "--limit", "3", "--out", str(out), "--prompt", "baseline",
                    "--legacy-metric", "--max-new-tokens", "4") == 0
    _, predictions, report = read_outputs(out)
    assert all(p["prompt"].startswith(BASELINE_TASK) for p in predictions)
    assert report["settings"]["prompt"] == "baseline" and report["settings"]["prompt_requested"] == "baseline"
    assert report["metric"] == "vqav2-legacy-lavis"
    for prediction in predictions:
        assert prediction["accuracy"] == question_accuracy(prediction["answer"], prediction["gt_answers"], legacy=True)


def test_default_output_directory_and_config_overrides(sit_checkpoint, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default output goes under ./runs/eval
    argv = ["--config", str(REPO / "tests" / "configs" / "bundled_sample.yaml"), "--checkpoint", str(sit_checkpoint),
            "--limit", "2", "--no-progress", "--max-new-tokens", "3"]
    for key in ("questions", "annotations", "captions", "image_dir"):
        argv += [f"--eval_{key}", str(getattr(sample_data(), f"eval_{key}"))]
    argv += ["--train_questions", str(QUESTIONS), "--train_annotations", str(ANNOTATIONS),
             "--train_captions", str(SAMPLE / "captions_val2014.json"), "--train_image_dir", str(SAMPLE / "val2014")]
    assert evaluate.main(argv) == 0
    out = tmp_path / "runs" / "eval" / f"{sit_checkpoint.parent.name}-val-limit2"
    assert (out / "report.json").is_file()
    assert evaluate.main([*argv, "--split", "train", "--out", "train-split"]) == 0
    assert json.loads((tmp_path / "train-split" / "report.json").read_text())["settings"]["split"] == "train"


def test_compare_two_evaluations(sit_checkpoint, tmp_path, capsys):
    for name, extra in (("zs", ["--zero-shot"]), ("sit", ["--checkpoint", str(sit_checkpoint)])):
        assert run_main(*extra, "--limit", "4", "--out", str(tmp_path / name), "--max-new-tokens", "8") == 0
    capsys.readouterr()
    assert evaluate.main(["--compare", str(tmp_path / "zs"), str(tmp_path / "sit"), "--names", "zero-shot", "sit",
                          "--out", str(tmp_path / "cmp")]) == 0
    printed = capsys.readouterr().out
    comparison = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    reference, row = comparison["rows"]
    sit_report = json.loads((tmp_path / "sit" / "report.json").read_text())
    zs_report = json.loads((tmp_path / "zs" / "report.json").read_text())
    assert row["overall"] == sit_report["overall"]
    assert row["delta"]["overall"] == round(sit_report["overall"] - zs_report["overall"], 2)
    assert f"| zero-shot | {zs_report['overall']:.2f} |" in printed
    assert f"| sit | {sit_report['overall']:.2f} ({row['delta']['overall']:+.2f}) |" in printed
    assert (tmp_path / "cmp" / "compare.md").read_text() in printed


def test_compare_refuses_runs_on_different_questions(sit_checkpoint, tmp_path, capsys):
    for name, limit in (("four", "4"), ("five", "5")):
        assert run_main("--zero-shot", "--limit", limit, "--out", str(tmp_path / name), "--max-new-tokens", "2") == 0
    capsys.readouterr()
    assert evaluate.main(["--compare", str(tmp_path / "four"), str(tmp_path / "five")]) == 2
    assert "scored on different questions" in capsys.readouterr().err


def test_bad_input_exits_2_with_a_message(tmp_path, capsys):
    assert run_main("--checkpoint", str(tmp_path), "--limit", "2") == 2
    assert "is not a sit-vqa checkpoint" in capsys.readouterr().err
    no_eval_data = tmp_path / "no_eval.yaml"
    no_eval_data.write_text("model_type: instructblip\ntiny_model: decoder\n")
    assert evaluate.main(["--config", str(no_eval_data), "--limit", "2", "--out", str(tmp_path / "x")]) == 2
    assert "no val data in the config: set eval_questions" in capsys.readouterr().err
    assert run_main("--limit", "2", "--no_such_key", "1") == 2
    assert "no_such_key" in capsys.readouterr().err
    assert evaluate.main(["--compare", str(tmp_path / "missing")]) == 2
    assert "missing not found" in capsys.readouterr().err
    for argv in (["--limit", "2"], ["--config", str(REPO / "tests" / "configs" / "bundled_sample.yaml"), "--zero-shot", "--checkpoint", str(tmp_path)]):
        with pytest.raises(SystemExit) as exit_info:
            evaluate.main(argv)
        assert exit_info.value.code == 2


def test_script_runs_as_a_command(tmp_path):
    for name, overall in (("a", 10.0), ("b", 12.5)):
        (tmp_path / name).mkdir()
        report = {"overall": overall, "perAnswerType": {"yes/no": overall}, "num_questions": 3,
                  "question_set_sha256": "same", "metric": "vqav2-official-2021", "settings": {"name": name}}
        (tmp_path / name / "report.json").write_text(json.dumps(report))
    done = subprocess.run([sys.executable, "evaluate.py", "--compare", str(tmp_path / "a"), str(tmp_path / "b"),
                           "--out", str(tmp_path)], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert "| b | 12.50 (+2.50) | 12.50 (+2.50) |" in done.stdout
    assert (tmp_path / "compare.md").is_file() and (tmp_path / "compare.json").is_file()


def test_reports_and_compare_carry_the_sit_figures(sit_checkpoint, tmp_path, capsys):
    """report.json / report.md / --compare hold the SIT figures of the run's own predictions, the descriptions
    scored against every caption of the image (the captions file the config names)."""
    from sit_vqa.data.coco import load_captions
    from sit_vqa.metrics.sit import sit_figures

    out = tmp_path / "sit"
    assert run_main("--checkpoint", str(sit_checkpoint), "--limit", "12", "--out", str(out)) == 0
    _, predictions, report = read_outputs(out)
    references = load_captions(SAMPLE / "captions_val2014.json").by_image
    assert report["sit"] == sit_figures(predictions, references)
    figures = report["sit"]
    assert figures["questions_answer_in_description"] + figures["questions_answer_not_in_description"] == 12
    assert "## Describe, then answer (SIT figures)" in (out / "report.md").read_text()
    capsys.readouterr()
    assert evaluate.main(["--compare", str(out), str(out), "--names", "a", "b", "--out", str(tmp_path / "cmp")]) == 0
    printed = capsys.readouterr().out
    assert "SIT figures (describe, then answer):" in printed and "| answers found in the model's own" in printed
    assert json.loads((tmp_path / "cmp" / "compare.json").read_text())["rows"][0]["sit"] == figures


def test_held_out_phrasings_ask_every_question_with_an_unseen_instruction(sit_checkpoint, tmp_path, capsys):
    from sit_vqa.config import DEFAULT_INSTRUCTION_POOL
    from sit_vqa.data.prompts import load_instruction_pool

    held_out = load_instruction_pool(DEFAULT_INSTRUCTION_POOL).held_out_of("sit")
    out = tmp_path / "held"
    assert run_main("--checkpoint", str(sit_checkpoint), "--limit", "6", "--prompt-variant", "held-out",
                    "--out", str(out)) == 0
    _, predictions, report = read_outputs(out)
    assert [p["prompt"] for p in predictions] == [held_out[i % len(held_out)].format(question=p["question"])
                                                  for i, p in enumerate(predictions)]
    assert report["settings"]["prompt_variant"] == "held-out"
    capsys.readouterr()
    assert run_main("--zero-shot", "--task", "gqa", "--task-data", "data/gqa_sample/testdev_balanced_questions.json",
                    "--image-dir", "data/gqa_sample/images", "--prompt-variant", "held-out") == 2
    assert "has no instruction pool" in capsys.readouterr().err


def test_a_finished_evaluation_is_never_replaced_by_one_with_other_settings(sit_checkpoint, tmp_path, capsys):
    out = tmp_path / "eval"
    assert run_main("--checkpoint", str(sit_checkpoint), "--limit", "3", "--out", str(out)) == 0
    before = (out / "report.json").read_text()
    capsys.readouterr()
    assert run_main("--checkpoint", str(sit_checkpoint), "--limit", "3", "--out", str(out),
                    "--prompt-variant", "held-out") == 2
    error = capsys.readouterr().err
    assert f"{out} holds a finished evaluation made with other settings" in error
    assert 'prompt_variant: "trained" there, "held-out" now' in error and "Pass another --out" in error
    assert (out / "report.json").read_text() == before
    assert sorted(p.name for p in out.iterdir()) == ["predictions.jsonl", "report.json", "report.md", "results.json"]
    # the same settings again may rewrite it (a rerun)
    assert run_main("--checkpoint", str(sit_checkpoint), "--limit", "3", "--out", str(out)) == 0


def test_default_folders_keep_the_prompt_variants_apart(sit_checkpoint, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = str(REPO / "tests" / "configs" / "bundled_sample.yaml")
    argv = ["--config", config, "--checkpoint", str(sit_checkpoint), "--limit", "2", "--no-progress",
            "--max-new-tokens", "3", "--eval_questions", str(QUESTIONS), "--eval_annotations", str(ANNOTATIONS),
            "--eval_captions", str(SAMPLE / "captions_val2014.json"), "--eval_image_dir", str(SAMPLE / "val2014")]
    assert evaluate.main(argv) == 0
    assert evaluate.main([*argv, "--prompt-variant", "held-out"]) == 0
    name = sit_checkpoint.parent.name
    plain = json.loads((tmp_path / "runs" / "eval" / f"{name}-val-limit2" / "report.json").read_text())
    held = json.loads((tmp_path / "runs" / "eval" / f"{name}-val-held-out-limit2" / "report.json").read_text())
    assert (plain["settings"]["prompt_variant"], held["settings"]["prompt_variant"]) == ("trained", "held-out")


def test_a_second_evaluation_into_a_locked_out_refuses_naming_the_holder(tmp_path):
    """The lock is an flock on OUT/evaluation.lock holding the pid: a real second process (this one) holds it."""
    import fcntl
    import os

    out = tmp_path / "eval"
    out.mkdir()
    with (out / "evaluation.lock").open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        held.write(f"{os.getpid()}\n")
        held.flush()
        done = subprocess.run([sys.executable, "evaluate.py", "--config", "tests/configs/bundled_sample.yaml",
                               "--zero-shot", "--limit", "2", "--no-progress", "--out", str(out)],
                              capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert f"{out} is being written by another evaluation (process {os.getpid()}" in done.stderr
    assert "pass another --out" in done.stderr
    assert not (out / "partial").exists() and not (out / "report.json").exists()
    # the holder gone, the same command runs, and leaves no lock file behind
    done = subprocess.run([sys.executable, "evaluate.py", "--config", "tests/configs/bundled_sample.yaml",
                           "--zero-shot", "--limit", "2", "--no-progress", "--out", str(out)],
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert sorted(p.name for p in out.iterdir()) == ["predictions.jsonl", "report.json", "report.md", "results.json"]


def test_a_limit_above_the_question_count_records_what_was_scored(tmp_path, caplog):
    out = tmp_path / "all"
    with caplog.at_level("WARNING"):
        assert run_main("--zero-shot", "--limit", "5000", "--out", str(out), "--max-new-tokens", "2") == 0
    _, predictions, report = read_outputs(out)
    questions = len(json.loads(QUESTIONS.read_text())["questions"])
    assert report["num_questions"] == len(predictions) == questions < 5000
    assert report["settings"]["limit"] is None and report["settings"]["limit_requested"] == 5000
    assert report["settings"]["subset_seed"] is None
    assert "--limit 5000 is more than the set holds" in caplog.text
