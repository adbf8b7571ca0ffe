"""One intra-op thread for small models on the CPU unless the user says otherwise (issue #28, item 8): the rule
on real models, and the thread count a real train.py process reports and uses."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sit_vqa.modeling.threads import SMALL_MODEL_PARAMETERS, cpu_threads_for

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def no_omp(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)


def test_a_tiny_model_on_the_cpu_gets_one_thread(tiny_decoder, no_omp):
    model, _ = tiny_decoder
    threads, why = cpu_threads_for(model, "cpu", None)
    assert threads == 1 and "small model" in why


def test_the_config_and_the_environment_win(tiny_decoder, monkeypatch):
    model, _ = tiny_decoder
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert cpu_threads_for(model, "cpu", None) == (None, "OMP_NUM_THREADS=2")
    assert cpu_threads_for(model, "cpu", 3)[0] == 3


def test_a_large_model_and_a_gpu_keep_pytorchs_default(no_omp):
    large = torch.nn.Linear(SMALL_MODEL_PARAMETERS // 1000 + 1, 1000, bias=False, device="meta")
    assert cpu_threads_for(large, "cpu", None)[0] is None
    assert cpu_threads_for(torch.nn.Linear(2, 2), "cuda:0", None)[0] is None


def _train_log(tmp_path: Path, env: dict, *extra: str) -> str:
    command = [sys.executable, "train.py", "--config", "tests/configs/bundled_sample.yaml", "--max_steps", "2",
               "--num_train_epochs", "1", "--save_steps", "100", "--report_to", "none", "--disable_tqdm", "true",
               "--output_dir", str(tmp_path / "run"), *extra]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stderr


@pytest.mark.parametrize("omp, extra, expected", [(None, (), 1), ("2", (), 2), (None, ("--cpu_threads", "2"), 2)])
def test_train_py_runs_on_the_threads_it_reports(tmp_path, omp, extra, expected):
    env = {key: value for key, value in os.environ.items() if key != "OMP_NUM_THREADS"}
    if omp:
        env["OMP_NUM_THREADS"] = omp
    log = _train_log(tmp_path, env, *extra)
    assert re.findall(r"CPU intra-op threads: (\d+)", log) == [str(expected)], log[-2000:]
