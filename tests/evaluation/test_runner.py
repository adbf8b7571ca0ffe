"""The one runner for every set (sit_vqa.evaluation.runner): GQA through torchrun and past a SIGKILL, as VQAv2
(test_evaluate_scale.py); --base-model and --allow-partial-load the same for every set; where --compare writes;
the progress lines of a run whose stderr is not a terminal."""

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import evaluate
from sit_vqa.config import load_config
from sit_vqa.evaluation.sharded import PARTIAL_DIR, batches_of
from sit_vqa.modeling import checkpoint as ckpt
from sit_vqa.modeling.generation import GenerationSettings, generate_texts
from sit_vqa.modeling.loading import load_base_model, prepare_for_training
from tests.evaluation.test_tasks import (
    GQA,
    GQA_IMAGES,
    IMAGE_CONFIG,
    OKVQA,
    REPO,
    TEXT_CONFIG,
    XGQA,
    XQUAD,
)

LIMIT, BATCH = 28, 2  # every balanced question of the GQA sample, 14 batches
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
GQA_FILES = ("results.json", "predictions.jsonl", "report.json", "report.md")


@pytest.fixture(autouse=True)
def _repo_cwd(monkeypatch):
    monkeypatch.chdir(REPO)  # the configs name data/... relative to the repository


def gqa_args(out: Path, *extra: str) -> list[str]:
    return ["--config", IMAGE_CONFIG, "--zero-shot", "--task", "gqa", "--task-data", str(GQA), "--image-dir",
            str(GQA_IMAGES), "--limit", str(LIMIT), "--batch-size", str(BATCH), "--max-new-tokens", "24",
            "--device", "cpu", "--no-progress", "--out", str(out), *extra]


def read_files(out: Path) -> dict[str, bytes]:
    assert not (out / PARTIAL_DIR).exists(), "the partial outputs were left behind"
    return {name: (out / name).read_bytes() for name in GQA_FILES}


@pytest.fixture(scope="module")
def gqa_one_process(tmp_path_factory):
    out = tmp_path_factory.mktemp("gqa-one")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(REPO)
        assert evaluate.main(gqa_args(out)) == 0
    return read_files(out)


# ------------------------------------------------------------------------------------ GQA at scale


@pytest.mark.slow
def test_gqa_on_two_processes_writes_the_files_of_one(gqa_one_process, tmp_path):
    out = tmp_path / "two"
    torchrun = Path(sys.executable).with_name("torchrun")
    command = [str(torchrun), "--standalone", "--nproc_per_node", "2", "evaluate.py", *gqa_args(out)]
    done = subprocess.run(command, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("GQA accuracy") == 1  # one process reports
    two = read_files(out)
    assert json.loads(two["report.json"])["num_questions"] == LIMIT
    assert two == gqa_one_process  # every prediction and score, byte for byte


def done_questions(partial_file: Path) -> int:
    indices = {json.loads(line)["index"] for line in partial_file.read_bytes().split(b"\n")[:-1]}
    return sum(len(batch) for batch in batches_of(LIMIT, BATCH) if indices.issuperset(batch))


@pytest.mark.slow
def test_a_killed_gqa_run_is_continued_into_the_uninterrupted_files(gqa_one_process, tmp_path, capsys):
    out = tmp_path / "killed"
    partial_file = out / PARTIAL_DIR / "rank-0.jsonl"
    process = subprocess.Popen([sys.executable, "evaluate.py", *gqa_args(out)], cwd=REPO, env=ENV,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        while process.poll() is None and not (partial_file.exists()
                                              and partial_file.read_bytes().count(b"\n") >= BATCH):
            time.sleep(0.02)
        assert process.poll() is None, process.stderr.read().decode()[-3000:]
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == -signal.SIGKILL and not (out / "report.json").exists()
    reused = done_questions(partial_file)
    assert BATCH <= reused < LIMIT

    assert evaluate.main(gqa_args(out, "--max-new-tokens", "23")) == 2  # other settings: refused, files kept
    assert "max_new_tokens: 24 then, 23 now" in capsys.readouterr().err
    assert evaluate.main(gqa_args(out)) == 0
    assert f"continued an interrupted run: {reused} of {LIMIT} questions" in capsys.readouterr().out
    assert read_files(out) == gqa_one_process


# ------------------------------------------------------------------------ checkpoints, every set


def checkpoint_with_local_base(directory: Path, config_path: str, *overrides: str) -> Path:
    """A checkpoint whose base model is a save_pretrained directory beside it (named by its absolute path, as
    train.py names a local base model), its trained weights moved off their initial values."""
    config = load_config(config_path, ["--train_all", "false", *overrides] if "sample" in config_path
                         else list(overrides))
    base, processor = load_base_model(config.model)
    base_dir = directory.parent / "base"
    base.save_pretrained(base_dir)
    processor.save_pretrained(base_dir)
    model = prepare_for_training(base, config.model, torch.float32, quiet=True)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(0.01)
    manifest = ckpt.CheckpointManifest(model_type=config.model.model_type, config=config.to_dict(),
                                       base_model=str(base_dir.resolve()), base_model_is_local=True)
    ckpt.write_checkpoint(directory, model, processor, manifest, global_step=1)
    return directory


@pytest.fixture(scope="module")
def moved_checkpoints(tmp_path_factory):
    """{model type: (checkpoint whose base model was moved away, where it went)}."""
    root = tmp_path_factory.mktemp("moved")
    found = {}
    for kind, config in (("image", IMAGE_CONFIG), ("text", TEXT_CONFIG)):
        directory = checkpoint_with_local_base(root / kind / "final", config)
        moved = shutil.move(root / kind / "base", root / f"{kind}-base-elsewhere")
        found[kind] = (directory, Path(moved))
    return found


SETS = {  # set -> (model kind, config, its arguments)
    "vqa": ("image", IMAGE_CONFIG, []),
    "okvqa": ("image", IMAGE_CONFIG, ["--task-data", str(OKVQA)]),
    "gqa": ("image", IMAGE_CONFIG, ["--task-data", str(GQA), "--image-dir", str(GQA_IMAGES)]),
    "xgqa": ("image", IMAGE_CONFIG, ["--task-data", str(XGQA), "--image-dir", str(GQA_IMAGES), "--languages", "de"]),
    "xquad": ("text", TEXT_CONFIG, ["--task-data", str(XQUAD), "--languages", "de"]),
    "text": ("text", TEXT_CONFIG, []),
}


@pytest.mark.parametrize("task", SETS)
def test_base_model_is_honoured_by_every_set(task, moved_checkpoints, tmp_path, capsys):
    kind, config, argv = SETS[task]
    checkpoint, base = moved_checkpoints[kind]
    command = ["--config", config, "--checkpoint", str(checkpoint), "--task", task, *argv, "--limit", "2",
               "--max-new-tokens", "2", "--no-progress", "--out", str(tmp_path / "out")]
    assert evaluate.main(command) == 2
    assert "its base model is missing" in capsys.readouterr().err
    assert evaluate.main([*command, "--base-model", str(base)]) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["settings"]["task"] == task and report["settings"]["base_model"] == str(base)


def test_a_partial_load_is_warned_about_and_recorded_in_the_reports(moved_checkpoints, tmp_path, capsys, caplog):
    checkpoint, base = moved_checkpoints["image"]
    partial = shutil.copytree(checkpoint, tmp_path / "partial" / "final")
    tensors = load_file(partial / ckpt.WEIGHTS_NAME)
    dropped = sorted(tensors)[: len(tensors) // 2]
    save_file({name: value for name, value in tensors.items() if name not in dropped}, partial / ckpt.WEIGHTS_NAME)
    common = ["--config", IMAGE_CONFIG, "--task", "gqa", "--task-data", str(GQA), "--image-dir", str(GQA_IMAGES),
              "--limit", "2", "--max-new-tokens", "2", "--no-progress", "--base-model", str(base)]
    assert evaluate.main([*common, "--checkpoint", str(checkpoint), "--name", "whole",
                          "--out", str(tmp_path / "whole")]) == 0
    with caplog.at_level(logging.WARNING):
        assert evaluate.main([*common, "--checkpoint", str(partial), "--allow-partial-load", "--name", "part",
                              "--out", str(tmp_path / "part")]) == 0
    warning = f"{len(dropped)} of the {len(tensors)} trained tensors are missing"
    assert warning in caplog.text
    report = json.loads((tmp_path / "part" / "report.json").read_text())
    assert report["settings"]["partial_load"]["missing"] == len(dropped)
    assert report["settings"]["partial_load"]["expected"] == len(tensors)
    assert f"{len(dropped)} of the {len(tensors)} trained tensors were missing" in (tmp_path / "part" / "report.md").read_text()
    assert "(PARTIAL LOAD)" in capsys.readouterr().out
    assert json.loads((tmp_path / "whole" / "report.json").read_text())["settings"]["partial_load"] is None

    assert evaluate.main(["--compare", str(tmp_path / "whole"), str(tmp_path / "part")]) == 0
    printed = capsys.readouterr().out
    assert "| part (partial load) |" in printed and "| whole |" in printed
    # without --out: beside the first run, never the current directory
    written = tmp_path / "compare-whole-part"
    assert json.loads((written / "compare.json").read_text())["rows"][1]["partial_load"]["missing"] == len(dropped)
    assert not (REPO / "compare.md").exists()


def test_generation_logs_progress_lines_when_asked(caplog):
    config = load_config(IMAGE_CONFIG, data_roles=())
    model, processor = load_base_model(config.model)
    records = [{"instruction": "what is it?", "image_path": str(next(GQA_IMAGES.iterdir()))}] * 5
    settings = GenerationSettings(max_new_tokens=2, batch_size=2)
    with caplog.at_level(logging.INFO, logger="sit_vqa.modeling.generation"):
        generate_texts(model.eval(), processor, records, settings, progress=True, log_every=0.0)
    lines = [r.getMessage() for r in caplog.records if r.name == "sit_vqa.modeling.generation"]
    assert lines[-1].startswith("generated 5 of 5 records") and "ETA" in lines[0], lines
    assert len(lines) == 3  # one per batch at a 0 s interval


def test_the_split_is_named_by_the_files_not_by_the_config_keys(tmp_path):
    """eval_* keys pointed at the train2014 files: the report says train2014, never "the val split"."""
    sample = REPO / "data" / "sample"
    argv = ["--config", IMAGE_CONFIG, "--zero-shot", "--limit", "2", "--max-new-tokens", "2", "--no-progress",
            "--out", str(tmp_path / "out"),
            "--eval_questions", str(sample / "v2_OpenEnded_mscoco_train2014_questions.json"),
            "--eval_annotations", str(sample / "v2_mscoco_train2014_annotations.json"),
            "--eval_captions", str(sample / "captions_train2014.json"), "--eval_image_dir", str(sample / "train2014")]
    assert evaluate.main(argv) == 0
    settings = json.loads((tmp_path / "out" / "report.json").read_text())["settings"]
    assert settings["data_split"] == "train" and settings["data_subtype"] == "train2014"
    assert settings["config_keys"] == "eval_*"
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert "2 questions of train2014 (read through the eval_* keys)" in markdown and "val split" not in markdown
