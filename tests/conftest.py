"""Shared fixtures: the tiny offline models (built once per session) and small in-memory images.

Session models are for read-only use (forward, generate, transforms); tests that freeze, train or
load weights build their own with `build_tiny_instructblip` (a fraction of a second).
"""

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from PIL import Image

from sit_vqa.config import CACHE_ENV
from sit_vqa.modeling.tiny import build_tiny_causal_lm, build_tiny_instructblip


def pytest_configure(config):
    """A cache root of the session's own (generated samples, prepared datasets), for this process and the
    commands the tests start: never the user's ~/.cache/sit_vqa, never one shared with a parallel session.
    Set before any test module is imported, so environments copied at import time (ENV = {**os.environ})
    carry it too."""
    config.sit_vqa_cache = tempfile.mkdtemp(prefix="sit_vqa_cache_")
    os.environ[CACHE_ENV] = config.sit_vqa_cache


def pytest_unconfigure(config):
    shutil.rmtree(getattr(config, "sit_vqa_cache", ""), ignore_errors=True)


@pytest.fixture(scope="session")
def cache_root(pytestconfig) -> Path:
    return Path(pytestconfig.sit_vqa_cache)


@pytest.fixture(scope="session")
def tiny_decoder():
    """(model, processor) of the tiny InstructBLIP with a LLaMA (decoder-only) language model."""
    return build_tiny_instructblip("decoder")


@pytest.fixture(scope="session")
def tiny_t5():
    """(model, processor) of the tiny InstructBLIP with a T5 (encoder-decoder) language model."""
    return build_tiny_instructblip("t5")


@pytest.fixture(scope="session", params=["decoder", "t5"])
def tiny_instructblip(request):
    """Both tiny InstructBLIPs in turn: (lm_kind, model, processor)."""
    model, processor = request.getfixturevalue(f"tiny_{request.param}")
    return request.param, model, processor


@pytest.fixture(scope="session")
def tiny_causal_lm():
    """(model, tokenizer) of the tiny byte-level LLaMA for the text-only path."""
    return build_tiny_causal_lm()


@pytest.fixture
def red_image():
    return Image.new("RGB", (48, 40), (220, 40, 40))


@pytest.fixture
def blue_image():
    return Image.new("RGB", (48, 40), (40, 80, 220))


@pytest.fixture(scope="session")
def replica_dirs(tmp_path_factory):
    """{"vicuna-7b": DIR, "flan-t5-xl": DIR}: tiny replicas of the hub checkpoints' structure (sit_vqa.modeling.replicas),
    saved once per session with save_pretrained. Read-only: load them with load_instructblip(DIR)."""
    from sit_vqa.modeling.replicas import KINDS, save_replica

    root = tmp_path_factory.mktemp("replicas")
    return {kind: save_replica(kind, root / kind) for kind in KINDS}


@pytest.fixture(scope="session")
def quickstart_run(tmp_path_factory):
    """A run directory of the quickstart recipe, trained for a few steps (the demo and export tests' checkpoint)."""
    from sit_vqa.config import load_config
    from sit_vqa.training.run import run_training

    repo = Path(__file__).resolve().parent.parent
    out = tmp_path_factory.mktemp("quickstart_run")
    overrides = ["--output_dir", str(out / "run"), "--prepared_cache_dir", str(out / "cache"), "--report_to", "none",
                 "--max_steps", "6", "--save_steps", "6", "--subset_questions", "48", "--logging_steps", "3"]
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(repo)  # the config names data/sample/... relative to the repository
        run_training(load_config(repo / "tests" / "configs" / "bundled_sample.yaml", overrides))
    return out / "run"


@pytest.fixture(scope="session")
def learned_quickstart(tmp_path_factory):
    """(final checkpoint dir, RunConfig, what train.py printed) of the README's first command,
    `python train.py --config quickstart.yaml`, run once per session through train.py's own main into a
    temporary directory (its generated sample too): the quickstart test scores it, the demo test asks it."""
    import contextlib
    import io

    import train
    from sit_vqa.config import load_config

    repo = Path(__file__).resolve().parent.parent
    out = tmp_path_factory.mktemp("learned_quickstart")
    overrides = ["--output_dir", str(out / "run"), "--sample_dir", str(out / "data"), "--report_to", "none",
                 "--disable_tqdm", "true"]
    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(printed):
        patch.chdir(repo)
        final = train.main(["--config", "quickstart.yaml", *overrides])
    return final, load_config(repo / "configs" / "quickstart.yaml", overrides), printed.getvalue()
