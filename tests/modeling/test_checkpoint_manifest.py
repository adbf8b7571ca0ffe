"""The checkpoint manifest: one type, one reader, a version that is checked, and the checkpoints written before
the type existed keep loading.

tests/fixtures/checkpoint_format_1/ is a whole checkpoint written by train.py at main a69349d (before
CheckpointManifest), with:
    python train.py --config tests/configs/bundled_sample.yaml --output_dir /tmp/run --max_steps 1
        --per_device_train_batch_size 2 --save_steps 100 --logging_steps 1 --train_all false
        --tiny_hidden_size 16 --tiny_num_layers 1
(the run's final/, 296 KB: trained weights, processor files, its tiny base model in base_model/)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from sit_vqa.errors import CheckpointError
from sit_vqa.modeling import checkpoint as ckpt
from sit_vqa.modeling.checkpoint_manifest import MANIFEST_NAME, CheckpointManifest, read_manifest

REPO = Path(__file__).resolve().parents[2]
FIXTURE = REPO / "tests" / "fixtures" / "checkpoint_format_1"


def raw_manifest() -> dict:
    return json.loads((FIXTURE / MANIFEST_NAME).read_text(encoding="utf-8"))


def test_a_checkpoint_written_before_the_manifest_type_loads_with_its_trained_weights():
    loaded = ckpt.load_checkpoint(FIXTURE)
    manifest = loaded.manifest
    assert isinstance(manifest, CheckpointManifest)
    assert (manifest.model_type, manifest.version, manifest.global_step) == ("instructblip", 1, 1)
    assert (manifest.base_model, manifest.base_model_is_relative, manifest.frozen_dtype) == ("base_model", True, "float32")
    weights = load_file(FIXTURE / ckpt.WEIGHTS_NAME)
    assert set(manifest.trained_tensors) == set(weights) == set(ckpt.trainable_state_dict(loaded.model))
    params = dict(loaded.model.named_parameters())
    assert all(torch.equal(params[name], tensor) for name, tensor in weights.items())
    base = load_file(FIXTURE / "base_model" / "model.safetensors")
    frozen = [name for name in base if name in params and name not in weights]
    assert frozen and all(torch.equal(params[name], base[name]) for name in frozen)  # the base model it named
    trained = loaded.trained
    assert (trained.mode, trained.global_step, trained.prompt) == ("sit", 1, "sit")
    assert loaded.model.config.text_config.hidden_size == 16  # its config's tiny sizes, not today's defaults


def test_the_manifest_writes_back_what_it_read(tmp_path):
    manifest = read_manifest(FIXTURE)
    manifest.write(tmp_path)
    written = json.loads((tmp_path / MANIFEST_NAME).read_text(encoding="utf-8"))
    assert {key: written[key] for key in raw_manifest()} == raw_manifest()  # every field as the file had it
    assert read_manifest(tmp_path) == manifest


def test_a_version_1_manifest_loads_and_today_s_manifest_is_version_2(tmp_path):
    """Version 2 added `epoch`: the committed version 1 fixture has none; a version 1 manifest that carries one
    (main wrote those before the version was bumped) keeps it; what is written now says version 2 and reads back."""
    old = read_manifest(FIXTURE)
    assert (old.version, old.epoch) == (1, None)
    (tmp_path / "v1").mkdir()
    (tmp_path / "v1" / MANIFEST_NAME).write_text(json.dumps({**raw_manifest(), "epoch": 0.5}), encoding="utf-8")
    assert (read_manifest(tmp_path / "v1").version, read_manifest(tmp_path / "v1").epoch) == (1, 0.5)
    today = CheckpointManifest(model_type="instructblip", config=old.config).at_save(3, ["a"], epoch=1.25)
    today.write(tmp_path)
    assert json.loads((tmp_path / MANIFEST_NAME).read_text(encoding="utf-8"))["format"] == "sit-vqa-checkpoint/2"
    assert read_manifest(tmp_path) == today and today.version == 2 and today.epoch == 1.25


def test_a_save_adds_its_step_and_the_tensors_it_wrote():
    run = CheckpointManifest(model_type="instructblip", config={"mode": "sit"}, frozen_dtype="bfloat16")
    saved = run.at_save(7, ["b", "a"])
    assert (saved.global_step, saved.trained_tensors, saved.frozen_dtype) == (7, ("a", "b"), "bfloat16")
    assert run.global_step is None  # frozen: the run's manifest is not changed by a save


def test_fields_absent_from_an_older_manifest_get_the_defaults_it_was_written_with(tmp_path):
    raw = raw_manifest()
    for key in ("frozen_dtype", "trained_tensors", "model_type"):
        del raw[key]
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(raw), encoding="utf-8")
    manifest = read_manifest(tmp_path)
    assert (manifest.frozen_dtype, manifest.trained_tensors, manifest.model_type) == ("float32", None, "instructblip")


@pytest.mark.parametrize("change, message", [
    ({"format": "sit-vqa-checkpoint/3"}, r"'sit-vqa-checkpoint/3' is a manifest version this sit-vqa cannot read "
                                         r"\(it reads sit-vqa-checkpoint/1, sit-vqa-checkpoint/2\).*upgrade sit-vqa"),
    ({"format": "sit-vqa-checkpoint/one"}, r"cannot read"),
    ({"format": "llava-checkpoint/1"}, r"unknown checkpoint format 'llava-checkpoint/1'"),
    ({"quantization": "nf4"}, r"unknown field\(s\) quantization in a version 1 manifest"),
    ({"config": None}, r"no config object"),
])
def test_a_manifest_of_another_version_or_shape_is_refused_by_name(tmp_path, change, message):
    (tmp_path / MANIFEST_NAME).write_text(json.dumps({**raw_manifest(), **change}), encoding="utf-8")
    with pytest.raises(CheckpointError, match=message):
        read_manifest(tmp_path)


def test_the_command_line_says_so_and_exits_2(tmp_path):
    checkpoint = tmp_path / "final"
    shutil.copytree(FIXTURE, checkpoint)
    (checkpoint / MANIFEST_NAME).write_text(json.dumps({**raw_manifest(), "format": "sit-vqa-checkpoint/9"}))
    done = subprocess.run([sys.executable, "-m", "sit_vqa.apps.export", "--checkpoint", str(checkpoint),
                           "--out", str(tmp_path / "out")], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert f"{checkpoint / MANIFEST_NAME}: checkpoint format 'sit-vqa-checkpoint/9'" in done.stderr
