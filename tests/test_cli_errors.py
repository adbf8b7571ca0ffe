"""Every command line, driven with bad input, exits 2 with an "error: ..." message that names the problem, and
never with a traceback."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "data" / "sample"
VAL_QUESTIONS = SAMPLE / "v2_OpenEnded_mscoco_val2014_questions.json"
VAL_ANNOTATIONS = SAMPLE / "v2_mscoco_val2014_annotations.json"


def run(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def assert_clean_exit_2(result: subprocess.CompletedProcess, *words: str) -> None:
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    assert "error:" in result.stderr
    for word in words:
        assert word in result.stderr, (word, result.stderr[-2000:])


@pytest.fixture
def image_token_caption_config(tmp_path):
    """The quickstart with a COCO caption that holds the image token text."""
    data = tmp_path / "data"
    shutil.copytree(SAMPLE, data)
    captions_path = data / "captions_train2014.json"
    captions = json.loads(captions_path.read_text())
    captions["annotations"][0]["caption"] = "A red circle <image> on white."
    captions_path.write_text(json.dumps(captions))
    config = (REPO / "tests" / "configs" / "bundled_sample.yaml").read_text().replace("data/sample/", f"{data}/")
    path = tmp_path / "run.yaml"
    path.write_text(config + f"output_dir: {tmp_path / 'run'}\nprepared_cache_dir: {tmp_path / 'cache'}\n"
                    "caption_policy: all\nmax_steps: 1\n")
    return path


TRAIN_CASES = {
    "missing config": (["--config", "no_such.yaml"], ["no_such.yaml not found"]),
    "config is a directory": (["--config", "configs"], ["configs"]),
    "unknown key": (["--config", "quickstart.yaml", "--learning_rte", "1e-3"], ["learning_rte"]),
    "abbreviated key": (["--config", "quickstart.yaml", "--learning_rat", "1e-3"], ["learning_rat"]),
    "impossible subset": (["--config", "quickstart.yaml", "--subset_questions", "0"], ["subset_questions"]),
    "both subsets": (["--config", "quickstart.yaml", "--subset_questions", "2", "--subset_images", "2"], ["not both"]),
}


@pytest.mark.parametrize("case", TRAIN_CASES, ids=list(TRAIN_CASES))
def test_train_py_bad_input(case, tmp_path):
    args, words = TRAIN_CASES[case]
    assert_clean_exit_2(run("train.py", *args, "--output_dir", str(tmp_path / "run")), *words)


def test_train_py_refuses_a_caption_with_the_image_token(image_token_caption_config):
    result = run("train.py", "--config", str(image_token_caption_config))
    assert_clean_exit_2(result, "<image>", "question_id=")


EVALUATE_CASES = {
    "not a checkpoint": (["--checkpoint", "data"], ["not a sit-vqa checkpoint"]),
    "limit 0": (["--limit", "0"], ["limit must be a positive integer"]),
    "missing config": (["--config", "no_such.yaml"], ["no_such.yaml not found"]),
    "compare a missing run": (["--compare", "no_such_run"], ["no_such_run"]),
}


@pytest.mark.parametrize("case", EVALUATE_CASES, ids=list(EVALUATE_CASES))
def test_evaluate_py_bad_input(case, tmp_path):
    args, words = EVALUATE_CASES[case]
    config = [] if "--config" in args or "--compare" in args else ["--config", "quickstart.yaml"]
    assert_clean_exit_2(run("evaluate.py", *config, *args, "--out", str(tmp_path / "eval")), *words)


def test_prepare_bad_input(tmp_path):
    common = ["--captions", str(SAMPLE / "captions_val2014.json"), "--image-dir", str(SAMPLE / "val2014"),
              "--out", str(tmp_path / "out")]
    swapped = run("-m", "sit_vqa.prepare", "--questions", str(VAL_ANNOTATIONS), "--annotations", str(VAL_QUESTIONS),
                  *common)
    assert_clean_exit_2(swapped, "this is an annotations file", "check the --questions argument")
    missing = run("-m", "sit_vqa.prepare", "--questions", str(tmp_path / "nope.json"), "--annotations",
                  str(VAL_ANNOTATIONS), *common)
    assert_clean_exit_2(missing, "nope.json")
    bad_choice = run("-m", "sit_vqa.prepare", "--questions", str(VAL_QUESTIONS), "--annotations",
                     str(VAL_ANNOTATIONS), *common, "--mode", "both")
    assert_clean_exit_2(bad_choice, "--mode")


def test_metric_cli_bad_input(tmp_path):
    results = tmp_path / "results.json"
    results.write_text('[{"question_id": "one", "answer": "red"}]')
    result = run("-m", "sit_vqa.metrics.vqa", "--questions", str(VAL_QUESTIONS), "--annotations",
                 str(VAL_ANNOTATIONS), "--results", str(results))
    assert_clean_exit_2(result, str(results), "question_id")


def test_sample_generator_bad_input(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    assert_clean_exit_2(run("-m", "sit_vqa.data.sample", "--out", str(blocker)), str(blocker))
