"""evaluate.py past one process and past a crash: a 2-process gloo torchrun run writes the files of a 1-process
run, and a run killed with SIGKILL is continued by the same command into the files of an uninterrupted run."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import evaluate
from sit_vqa.evaluation.reports import REPORT_FILES
from sit_vqa.evaluation.sharded import PARTIAL_DIR, batches_of
from tests.evaluation.test_evaluation import REPO, write_tiny_checkpoint

LIMIT, BATCH = 40, 4
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(autouse=True)
def _repo_cwd(monkeypatch):
    monkeypatch.chdir(REPO)  # the configs name data/sample/... relative to the repository


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("sit") / "final", mode="sit")


def eval_args(checkpoint, out: Path, *extra: str) -> list[str]:
    # a repeated option (in `extra`) overrides the one before it, as argparse does
    return ["--config", "quickstart.yaml", "--checkpoint", str(checkpoint), "--limit", str(LIMIT),
            "--batch-size", str(BATCH), "--max-new-tokens", "24", "--device", "cpu", "--no-progress",
            "--out", str(out), *extra]


@pytest.fixture(scope="module")
def one_process(checkpoint, tmp_path_factory):
    """The files of an uninterrupted one-process run: {name: bytes}."""
    out = tmp_path_factory.mktemp("one")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(REPO)
        assert evaluate.main(eval_args(checkpoint, out)) == 0
    return read_files(out)


def read_files(out: Path) -> dict[str, bytes]:
    assert not (out / PARTIAL_DIR).exists(), "the partial outputs were left behind"
    return {name: (out / name).read_bytes() for name in REPORT_FILES}


@pytest.mark.slow
def test_two_processes_write_the_files_of_one(checkpoint, one_process, tmp_path):
    out = tmp_path / "two"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "evaluate.py", *eval_args(checkpoint, out)]
    done = subprocess.run(command, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("VQA accuracy") == 1  # one process reports
    two = read_files(out)
    report = json.loads(two["report.json"])
    assert report["num_questions"] == LIMIT
    assert two == one_process  # overall, per type, per question type, every prediction: byte for byte


def complete_batches(partial_file: Path) -> int:
    """Questions in whole batches on disk (what a rerun must not generate again)."""
    done = set()
    for line in partial_file.read_bytes().split(b"\n")[:-1]:
        done.add(json.loads(line)["index"])
    return sum(len(batch) for batch in batches_of(LIMIT, BATCH) if done.issuperset(batch))


@pytest.mark.slow
def test_a_killed_run_is_continued_into_the_uninterrupted_files(checkpoint, one_process, tmp_path, capsys):
    out = tmp_path / "killed"
    partial_file = out / PARTIAL_DIR / "rank-0.jsonl"
    process = subprocess.Popen([sys.executable, "evaluate.py", *eval_args(checkpoint, out)], cwd=REPO, env=ENV,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        while process.poll() is None and not (partial_file.exists() and partial_file.read_bytes().count(b"\n")
                                              >= BATCH):
            time.sleep(0.02)
        assert process.poll() is None, process.stderr.read().decode()[-3000:]
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == -signal.SIGKILL
    assert not (out / "report.json").exists()
    reused = complete_batches(partial_file)
    assert BATCH <= reused < LIMIT

    # other settings: refused, and the partial outputs are kept
    assert evaluate.main(eval_args(checkpoint, out, "--max-new-tokens", "23")) == 2
    error = capsys.readouterr().err
    assert "partial holds the predictions of an interrupted run" in error
    assert "max_new_tokens: 24 then, 23 now" in error and "--restart" in error
    assert complete_batches(partial_file) == reused

    assert evaluate.main(eval_args(checkpoint, out)) == 0
    assert f"continued an interrupted run: {reused} of {LIMIT} questions" in capsys.readouterr().out
    assert read_files(out) == one_process
