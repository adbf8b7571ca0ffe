"""FSDP through the Trainer (fsdp: true + fsdp_config), 2 CPU processes with gloo under a real torchrun: the tiny
InstructBLIP (frozen ViT and LLM sharded, the Q-Former trains) and the tiny causal LM (every weight trains, sharded)
train to the losses and weights of a one-process run, write the same trainable-only checkpoints (gathered whole,
written once), which load and evaluate in one process as the unsharded run's do, and resume under FSDP; the
settings that cannot work stop with a message and exit 2 (sit_vqa.training.sharding).

Tolerance: a 2-process step sums the gradients of its two halves of the batch in another order than one process
does, so losses and weights agree to float32 rounding (rel 1e-5 / atol 1e-6 here), not bit for bit."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import evaluate
from sit_vqa.config import load_config
from sit_vqa.modeling import checkpoint as ckpt
from sit_vqa.modeling.builders_for_tests import save_chat_replica
from sit_vqa.modeling.checkpoint import load_checkpoint
from sit_vqa.training.run import run_training
from tests.training.test_training import logged_losses

REPO = Path(__file__).resolve().parents[2]
SMALL_CONFIG = REPO / "tests" / "configs" / "bundled_sample.yaml"
TEXT_CONFIG = REPO / "tests" / "configs" / "text_lora.yaml"
CHAT_CONFIG = REPO / "tests" / "configs" / "chat_vlm_sample.yaml"
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
INSTRUCTBLIP_LAYERS = ["LlamaDecoderLayer", "InstructBlipEncoderLayer", "InstructBlipQFormerLayer"]
STEPS = 4  # checkpoints at 2 and 4; the resume test continues from 2
RTOL, ATOL = 1e-5, 1e-6


@pytest.fixture(autouse=True)
def _repo_cwd(monkeypatch):
    monkeypatch.chdir(REPO)  # the configs name data/sample/... relative to the repository


def run_args(out: Path, per_device_batch: int, config: Path = SMALL_CONFIG, *extra: str) -> list[str]:
    """A short run; 2 processes x per_device_batch 2 see the same 4 samples per step as 1 process x 4."""
    common = ["--config", str(config), "--output_dir", str(out), "--max_steps", str(STEPS), "--save_steps", "2",
              "--logging_steps", "1", "--per_device_train_batch_size", str(per_device_batch), "--report_to", "none",
              "--prepared_cache_dir", str(out.parent / "cache"), "--learning_rate", "1e-2", *extra]
    if config == SMALL_CONFIG:
        return [*common, "--subset_questions", "24", "--train_all", "false"]
    if config == TEXT_CONFIG:
        return [*common, "--use_lora", "false"]  # the causal LM: every weight trains (and is sharded)
    return [*common, "--subset_questions", "16"]


def fsdp_config_file(directory: Path, layers: list[str]) -> Path:
    path = directory / "fsdp_config.json"
    path.write_text(json.dumps({"transformer_layer_cls_to_wrap": layers}))
    return path


def torchrun(args: list[str], *, nproc: int = 2) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
               "train.py", *args, "--ddp_backend", "gloo"]
    return subprocess.run(command, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)


def fsdp_run(out: Path, layers: list[str], config: Path = SMALL_CONFIG, *extra: str) -> subprocess.CompletedProcess:
    out.parent.mkdir(parents=True, exist_ok=True)
    return torchrun([*run_args(out, 2, config, *extra), "--fsdp", "true",
                     "--fsdp_config", str(fsdp_config_file(out.parent, layers))])


def one_process_run(out: Path, config: Path = SMALL_CONFIG, *extra: str) -> Path:
    args = run_args(out, 4, config, *extra)
    return run_training(load_config(args[1], args[2:]))


@pytest.fixture(scope="module")
def instructblip_runs(tmp_path_factory):
    """(the FSDP run's directory, the one-process run's directory): the same 4 steps."""
    root = tmp_path_factory.mktemp("instructblip")
    done = fsdp_run(root / "fsdp" / "run", INSTRUCTBLIP_LAYERS)
    assert done.returncode == 0, done.stderr[-4000:]
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(REPO)
        one_process_run(root / "single" / "run")
    return root / "fsdp" / "run", root / "single" / "run"


def assert_same_training(sharded: Path, single: Path) -> dict[str, torch.Tensor]:
    """Same losses at every step, same trained tensors in every checkpoint (returns the final ones)."""
    losses, expected = logged_losses(sharded), logged_losses(single)
    assert sorted(losses) == list(range(1, STEPS + 1))
    for step in expected:
        assert losses[step] == pytest.approx(expected[step], rel=RTOL), step
    for name in ("checkpoint-2", "checkpoint-4", "final"):
        got, want = load_file(sharded / name / ckpt.WEIGHTS_NAME), load_file(single / name / ckpt.WEIGHTS_NAME)
        assert set(got) == set(want), name
        for key in want:
            torch.testing.assert_close(got[key], want[key], rtol=RTOL, atol=ATOL, msg=f"{name}: {key}")
    return got


@pytest.mark.slow  # several processes (torchrun)
def test_instructblip_under_fsdp_trains_as_one_process_and_checkpoints_the_trained_weights(instructblip_runs):
    sharded, single = instructblip_runs
    final = assert_same_training(sharded, single)
    assert final and all(name.startswith(("qformer.", "query_tokens", "language_projection.")) for name in final)
    initial = load_file(single / "checkpoint-2" / ckpt.WEIGHTS_NAME)
    assert any(not torch.equal(final[name], initial[name]) for name in final), "nothing trained after step 2"

    checkpoint = sharded / "checkpoint-2"
    files = {path.name for path in checkpoint.iterdir()}
    # the trainable-only weights, the manifest, each process's RNG and running loss, written once
    for name in (ckpt.WEIGHTS_NAME, ckpt.MANIFEST_NAME, "optimizer.bin", "scheduler.pt", "trainer_state.json",
                 "rng_state_0.pth", "rng_state_1.pth", "running_loss_0.json", "running_loss_1.json"):
        assert name in files, name
    # no whole model (the Trainer's pytorch_model_fsdp.bin), no per-process shards
    assert not [name for name in files if "fsdp" in name or name.startswith(("model", "pytorch_model"))], files
    assert not (sharded / ".checkpoint-staging").exists() or not any((sharded / ".checkpoint-staging").iterdir())
    # the optimizer's state, gathered whole: the trained parameters only (the frozen ones have none)
    state = torch.load(checkpoint / "optimizer.bin", weights_only=True)
    assert set(state["state"]) == set(load_file(checkpoint / ckpt.WEIGHTS_NAME))
    assert ckpt.resume_problem(checkpoint) is None


@pytest.mark.slow  # several processes (torchrun)
def test_a_checkpoint_written_under_fsdp_evaluates_in_one_process_as_the_unsharded_one(instructblip_runs, tmp_path):
    sharded, single = instructblip_runs
    model, _, manifest = load_checkpoint(sharded / "final")
    assert manifest.global_step == STEPS and not any(type(p).__name__ == "DTensor" for p in model.parameters())
    predictions = {}
    for name, run in (("sharded", sharded), ("single", single)):
        out = tmp_path / name
        assert evaluate.main(["--config", str(SMALL_CONFIG), "--checkpoint", str(run / "final"), "--limit", "8",
                              "--batch-size", "4", "--max-new-tokens", "12", "--device", "cpu", "--no-progress",
                              "--out", str(out)]) == 0
        predictions[name] = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(predictions["single"]) == 8
    assert predictions["sharded"] == predictions["single"]


@pytest.mark.slow  # several processes (torchrun)
def test_resume_under_fsdp_continues_to_the_uninterrupted_run(instructblip_runs, tmp_path):
    sharded, _ = instructblip_runs
    cut = tmp_path / "cut" / "run"
    shutil.copytree(sharded, cut)
    for name in ("checkpoint-4", "final"):  # the run stopped after checkpoint-2 was published
        shutil.rmtree(cut / name)
    done = fsdp_run(cut, INSTRUCTBLIP_LAYERS, SMALL_CONFIG, "--resume")
    assert done.returncode == 0, done.stderr[-4000:]
    assert logged_losses(cut) == pytest.approx(logged_losses(sharded), rel=RTOL)
    got, want = load_file(cut / "final" / ckpt.WEIGHTS_NAME), load_file(sharded / "final" / ckpt.WEIGHTS_NAME)
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=RTOL, atol=ATOL, msg=key)


@pytest.mark.slow  # several processes (torchrun)
def test_the_causal_lm_under_fsdp_trains_every_weight_as_one_process(tmp_path):
    done = fsdp_run(tmp_path / "fsdp" / "run", ["LlamaDecoderLayer"], TEXT_CONFIG)
    assert done.returncode == 0, done.stderr[-4000:]
    one_process_run(tmp_path / "single" / "run", TEXT_CONFIG)
    final = assert_same_training(tmp_path / "fsdp" / "run", tmp_path / "single" / "run")
    assert "model.embed_tokens.weight" in final and any(".layers.1." in name for name in final)


@pytest.mark.slow  # several processes (torchrun)
def test_a_chat_vlm_under_fsdp_trains_its_whole_language_model_as_one_process(tmp_path):
    base = save_chat_replica("llava", tmp_path / "base")
    chat = ("--model_name_or_path", str(base), "--freeze_language_model", "false")
    done = fsdp_run(tmp_path / "fsdp" / "run", ["LlamaDecoderLayer", "CLIPEncoderLayer"], CHAT_CONFIG, *chat)
    assert done.returncode == 0, done.stderr[-4000:]
    one_process_run(tmp_path / "single" / "run", CHAT_CONFIG, *chat)
    final = assert_same_training(tmp_path / "fsdp" / "run", tmp_path / "single" / "run")
    assert any("language_model" in name and ".layers.1." in name for name in final)
    assert not any("vision_tower" in name for name in final)  # frozen: sharded, never written


# ------------------------------------------------------------------------------------- settings that cannot work


def test_fsdp_on_one_process_exits_2_with_the_launch_command(tmp_path):
    done = subprocess.run([sys.executable, "train.py", *run_args(tmp_path / "run", 4), "--fsdp", "true"],
                          cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "fsdp is set but this run has one process" in done.stderr and "torchrun --nproc_per_node" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "run").exists(), "a refused run wrote into its output_dir"


@pytest.mark.slow  # several processes (torchrun)
def test_a_wrapping_policy_naming_no_layer_of_the_model_exits_2_naming_its_layers(tmp_path):
    done = fsdp_run(tmp_path / "run", ["LlamaDecoderLayer", "NoSuchLayer"])
    assert done.returncode != 0
    message = "transformer_layer_cls_to_wrap names NoSuchLayer, which InstructBlipForConditionalGeneration does not have"
    assert message in done.stderr, done.stderr[-3000:]
    assert "InstructBlipQFormerLayer" in done.stderr  # the layer classes it has
    assert "exitcode  : 2" in done.stderr  # each process stopped with the message, not a traceback


@pytest.mark.parametrize("setting, message", [
    ({"quantization_bit": 4}, "the installed stack cannot shard a bitsandbytes LLM"),
    ({"eval_vqa_steps": 2}, "set eval_vqa_steps: 0 and score the checkpoints with evaluate.py"),
    ({"fsdp_config": {"version": 1}}, "sit-vqa shards with FSDP2"),
    ({"fsdp_config": {"state_dict_type": "SHARDED_STATE_DICT"}}, "drop state_dict_type from fsdp_config"),
])
def test_settings_fsdp_cannot_work_with_exit_2_before_anything_loads(tmp_path, setting, message):
    model_dir = tmp_path / "model"  # quantization_bit needs a model by path; refused before it is read
    model_dir.mkdir()
    text = SMALL_CONFIG.read_text().replace("tiny_model: decoder", f"model_name_or_path: {model_dir}")
    config = tmp_path / "fsdp.yaml"
    config.write_text(text + "".join(f"{key}: {json.dumps(value)}\n" for key, value in {"fsdp": True, **setting}.items()))
    done = subprocess.run([sys.executable, "train.py", "--config", str(config), "--output_dir", str(tmp_path / "run"),
                           "--train_all", "false"], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr[-3000:]
    assert message in done.stderr and "Traceback" not in done.stderr
