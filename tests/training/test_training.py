"""Training runs on the tiny model and the bundled sample: smoke, checkpoints, exact resume, NaN stop, DDP, text path."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

import train
from sit_vqa.modeling import checkpoint as ckpt
from sit_vqa.modeling.checkpoint import load_checkpoint
from sit_vqa.config import load_config
from sit_vqa.errors import ConfigError
from sit_vqa.modeling.tiny import build_tiny_instructblip
from sit_vqa.training.run import run_training
from sit_vqa.training.trainer import NonFiniteLossError

REPO = Path(__file__).resolve().parents[2]


SMALL_CONFIG = REPO / "tests" / "configs" / "bundled_sample.yaml"  # data/sample, the smallest tiny model
TEXT_LORA_CONFIG = REPO / "tests" / "configs" / "text_lora.yaml"  # the tiny causal LM with LoRA adapters


def quick_config(tmp_path, *overrides, config=SMALL_CONFIG):
    """The small test config, shrunk to a few steps on a few questions, writing under tmp_path."""
    base = [
        "--output_dir", str(tmp_path / "run"),
        "--prepared_cache_dir", str(tmp_path / "cache"),
        "--report_to", "none",
        "--per_device_train_batch_size", "4",
        "--logging_steps", "1",
        "--save_steps", "2",
        "--save_total_limit", "5",
    ]
    if config == SMALL_CONFIG:
        base += ["--subset_questions", "24", "--train_all", "false"]
    return load_config(config, [*base, *overrides])


def logged_losses(run_dir: Path) -> dict[int, float]:
    lines = (run_dir / "train_log.jsonl").read_text().splitlines()
    return {record["step"]: record["loss"] for record in map(json.loads, lines) if "loss" in record}


@pytest.fixture(autouse=True)
def _repo_cwd(monkeypatch):
    monkeypatch.chdir(REPO)  # the configs name data/sample/... relative to the repository


def test_smoke_run_trains_only_the_qformer_side(tmp_path):
    config = quick_config(tmp_path, "--max_steps", "4", "--learning_rate", "1e-2")
    final = run_training(config)

    losses = logged_losses(tmp_path / "run")
    assert sorted(losses) == [1, 2, 3, 4]
    assert all(torch.isfinite(torch.tensor(list(losses.values()))))

    initial, _ = build_tiny_instructblip("decoder", seed=0)
    trained, _, manifest = load_checkpoint(final)
    assert manifest.global_step == 4
    initial_params = dict(initial.named_parameters())
    changed = {name for name, p in trained.named_parameters() if not torch.equal(p, initial_params[name])}
    assert changed, "no weight changed"
    for name in changed:
        assert name.startswith(("qformer.", "query_tokens", "language_projection.")), name
    for name, p in trained.named_parameters():
        if name.startswith(("vision_model.", "language_model.")):
            assert torch.equal(p, initial_params[name]), f"frozen weight {name} changed"
    assert any(n.startswith("qformer.") for n in changed) and "query_tokens" in changed


def test_checkpoint_holds_only_trainable_weights_and_resume_state(tmp_path):
    config = quick_config(tmp_path, "--max_steps", "2")
    run_training(config)
    checkpoint_dir = tmp_path / "run" / "checkpoint-2"
    weights = load_file(checkpoint_dir / ckpt.WEIGHTS_NAME)
    model, _ = build_tiny_instructblip("decoder", seed=0)
    model_lib_trainable = {
        name for name, _ in model.named_parameters()
        if name.startswith(("qformer.", "query_tokens", "language_projection."))
    }
    assert set(weights) == model_lib_trainable
    for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json", ckpt.MANIFEST_NAME):
        assert (checkpoint_dir / name).is_file(), name
    assert not list(checkpoint_dir.glob("model*.safetensors")), "a full model was saved"
    manifest = ckpt.read_manifest(checkpoint_dir)
    assert manifest.config["mode"] == "sit"


class CrashAtStep(TrainerCallback):
    """Simulates a crash: raises when step `step` is about to start."""

    def __init__(self, step):
        self.step = step

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise KeyboardInterrupt(f"simulated crash before step {self.step + 1}")


def test_resume_repeats_the_uninterrupted_losses(tmp_path):
    steps = ["--max_steps", "6", "--learning_rate", "5e-3"]
    full = quick_config(tmp_path / "full", *steps)
    run_training(full)
    expected = logged_losses(tmp_path / "full" / "run")

    interrupted = quick_config(tmp_path / "cut", *steps)
    with pytest.raises(KeyboardInterrupt):
        run_training(interrupted, callbacks=[CrashAtStep(4)])
    assert ckpt.latest_checkpoint(tmp_path / "cut" / "run").name == "checkpoint-4"

    resumed = quick_config(tmp_path / "cut", *steps, "--resume")
    run_training(resumed)
    losses = logged_losses(tmp_path / "cut" / "run")
    assert sorted(losses) == [1, 2, 3, 4, 5, 6]
    for step in (5, 6):
        assert losses[step] == pytest.approx(expected[step], rel=1e-6, abs=1e-7), step


def test_a_save_cut_off_midway_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    config = quick_config(tmp_path, "--max_steps", "6")
    real_write = ckpt.write_checkpoint
    calls = []

    def write_then_die(directory, *args, **kwargs):  # the process dies after the weights, before the manifest
        calls.append(directory)
        if len(calls) == 2:

            ckpt.save_trainable_weights(args[0], Path(directory) / ckpt.WEIGHTS_NAME)
            raise KeyboardInterrupt("killed while saving")
        return real_write(directory, *args, **kwargs)

    monkeypatch.setattr(ckpt, "write_checkpoint", write_then_die)
    with pytest.raises(KeyboardInterrupt):
        run_training(config)
    run_dir = tmp_path / "run"
    assert not (run_dir / "checkpoint-4").exists()
    assert ckpt.latest_checkpoint(run_dir).name == "checkpoint-2"
    load_checkpoint(run_dir / "checkpoint-2")  # intact and loadable

    monkeypatch.setattr(ckpt, "write_checkpoint", real_write)
    final = run_training(quick_config(tmp_path, "--max_steps", "6", "--resume"))
    assert ckpt.read_manifest(final).global_step == 6
    assert not (run_dir / ".checkpoint-staging" / "checkpoint-4").exists()


class PoisonWeightsAtStep(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        if state.global_step == self.step:
            with torch.no_grad():
                model.query_tokens.fill_(float("nan"))


def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    config = quick_config(tmp_path, "--max_steps", "6")
    with pytest.raises(NonFiniteLossError, match=r"loss is nan at step 4.*checkpoint-2"):
        run_training(config, callbacks=[PoisonWeightsAtStep(3)])
    run_dir = tmp_path / "run"
    assert ckpt.latest_checkpoint(run_dir).name == "checkpoint-2"
    assert not (run_dir / "final").exists()
    weights = load_file(run_dir / "checkpoint-2" / ckpt.WEIGHTS_NAME)
    assert all(torch.isfinite(w).all() for w in weights.values())


def test_t5_tiny_model_trains(tmp_path):
    config = quick_config(tmp_path, "--tiny_model", "t5", "--max_steps", "2")
    final = run_training(config)
    losses = logged_losses(tmp_path / "run")
    assert all(map(torch.isfinite, torch.tensor(list(losses.values()))))
    model, _, _ = load_checkpoint(final)
    assert model.config.text_config.is_encoder_decoder


def test_text_only_path_trains_lora_through_the_same_trainer(tmp_path):
    config = quick_config(tmp_path, "--max_steps", "3", config=TEXT_LORA_CONFIG)
    final = run_training(config)
    losses = logged_losses(tmp_path / "run")
    assert len(losses) == 3 and all(map(torch.isfinite, torch.tensor(list(losses.values()))))
    weights = load_file(final / ckpt.WEIGHTS_NAME)
    assert weights and all("lora_" in name for name in weights)
    model, tokenizer, manifest = load_checkpoint(final)
    assert manifest.model_type == "causal_lm"
    prompt = tokenizer("First repeat the input, then answer.\nInput: hi", return_tensors="pt")
    output = model.generate(**prompt, max_new_tokens=4, do_sample=False)
    assert output.shape[1] == prompt["input_ids"].shape[1] + 4


def test_train_main_runs_the_quickstart_and_logs_to_tensorboard(tmp_path, capsys):
    final = train.main([
        "--config", str(SMALL_CONFIG), "--output_dir", str(tmp_path / "qs"), "--max_steps", "3",
        "--prepared_cache_dir", str(tmp_path / "cache"), "--subset_questions", "16",
    ])
    assert f"checkpoint: {final}" in capsys.readouterr().out
    assert (final / ckpt.MANIFEST_NAME).is_file()
    assert list((tmp_path / "qs").rglob("events.out.tfevents.*")), "no tensorboard log"
    load_checkpoint(final)


def first_step_loss(tmp_path, *overrides):
    run_training(quick_config(tmp_path, "--max_steps", "1", "--subset_questions", "32", *overrides))
    return logged_losses(tmp_path / "run")[1]


@pytest.mark.parametrize("lm_kind", ["decoder", "t5"])
def test_gradient_accumulation_gives_the_loss_of_the_whole_batch(tmp_path, lm_kind):
    """The T5 branch returns a mean loss; the Trainer must not treat it as a sum (it would be x4 here)."""
    whole = first_step_loss(tmp_path / "whole", "--tiny_model", lm_kind, "--per_device_train_batch_size", "4")
    accumulated = first_step_loss(tmp_path / "accumulated", "--tiny_model", lm_kind,
                                  "--per_device_train_batch_size", "1", "--gradient_accumulation_steps", "4")
    # T5 applies dropout in training mode, so the two runs differ by a little noise, not by a factor
    assert accumulated == pytest.approx(whole, rel=0.05)


class InfiniteGradientAtStep(TrainerCallback):
    """Makes the backward pass of step `step + 1` overflow although its loss is finite."""

    def __init__(self, step):
        self.step = step

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        if state.global_step == self.step:
            model.query_tokens.register_hook(lambda grad: grad * float("inf"))


def test_a_non_finite_gradient_stops_the_run_before_the_update(tmp_path):
    config = quick_config(tmp_path, "--max_steps", "6")
    with pytest.raises(NonFiniteLossError, match=r"gradient is not finite at step 3.*checkpoint-2"):
        run_training(config, callbacks=[InfiniteGradientAtStep(2)])
    run_dir = tmp_path / "run"
    assert ckpt.latest_checkpoint(run_dir).name == "checkpoint-2"
    weights = load_file(run_dir / "checkpoint-2" / ckpt.WEIGHTS_NAME)
    assert all(torch.isfinite(w).all() for w in weights.values())


def test_a_used_output_dir_needs_resume_or_overwrite(tmp_path):
    keep = ("--overwrite_output_dir", "false")  # the quickstart config itself overwrites (a demo)
    run_training(quick_config(tmp_path, "--max_steps", "2", *keep))
    with pytest.raises(ConfigError, match="already holds a run .*--resume.*--overwrite_output_dir"):
        run_training(quick_config(tmp_path, "--max_steps", "2", "--tiny_model_seed", "1", *keep))
    final = run_training(quick_config(tmp_path, "--max_steps", "2", "--tiny_model_seed", "1",
                                      "--overwrite_output_dir", "true"))
    fresh, _ = build_tiny_instructblip("decoder", seed=1)
    loaded, _, _ = load_checkpoint(final)  # the frozen weights are seed 1's, not the earlier run's
    assert torch.equal(loaded.language_model.lm_head.weight, fresh.language_model.lm_head.weight)
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert steps.count(1) == 1, "the earlier run's log was kept"


@pytest.mark.slow
@pytest.mark.parametrize("lm_kind", ["decoder", "t5"])
def test_two_process_ddp_run_on_cpu_matches_one_process(tmp_path, lm_kind):
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
        "train.py", "--config", str(SMALL_CONFIG), "--output_dir", str(tmp_path / "ddp"), "--max_steps", "3",
        "--save_steps", "2", "--logging_steps", "1", "--subset_questions", "32", "--per_device_train_batch_size", "2",
        "--prepared_cache_dir", str(tmp_path / "cache"), "--report_to", "none", "--ddp_backend", "gloo",
        "--tiny_model", lm_kind, "--train_all", "false",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = tmp_path / "ddp"
    state = json.loads((run_dir / "checkpoint-2" / "trainer_state.json").read_text())
    assert state["global_step"] == 2
    assert (run_dir / "checkpoint-2" / "rng_state_0.pth").is_file()
    assert (run_dir / "checkpoint-2" / "rng_state_1.pth").is_file()
    assert ckpt.read_manifest(run_dir / "final").global_step == 3
    # 2 processes x 2 samples = the same 4 samples as one process x 4: the same loss, not twice it
    single = first_step_loss(tmp_path / "single", "--tiny_model", lm_kind, "--per_device_train_batch_size", "4")
    assert logged_losses(run_dir)[1] == pytest.approx(single, rel=0.05)


def test_training_from_a_prepared_dataset_dir(tmp_path):
    from sit_vqa.data.join import JoinOptions
    from sit_vqa.data.prepared import prepare_dataset

    sample = REPO / "data" / "sample"
    prepared = tmp_path / "prepared"
    prepare_dataset(
        sample / "v2_OpenEnded_mscoco_train2014_questions.json", sample / "v2_mscoco_train2014_annotations.json",
        sample / "captions_train2014.json", sample / "train2014", prepared,
        JoinOptions(mode="baseline", subset_questions=12, subset_seed=3),
    )
    config = quick_config(tmp_path, "--max_steps", "2", "--train_dataset_dir", str(prepared))
    run_training(config)
    report = json.loads((tmp_path / "run" / "data_report.json").read_text())
    assert report["mode"] == "baseline" and report["records_total"] == 12
    assert not (tmp_path / "cache").exists(), "the raw files were joined although a prepared dataset was given"


def test_vqa_accuracy_is_scored_during_training(tmp_path):
    config = quick_config(tmp_path, "--max_steps", "4", "--eval_vqa_steps", "2", "--eval_subset_questions", "6",
                          "--generation_max_new_tokens", "8")
    run_training(config)
    log = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    scored = {record["step"]: record for record in log if "eval_vqa_accuracy" in record}
    assert sorted(scored) == [2, 4]
    for record in scored.values():
        assert 0.0 <= record["eval_vqa_accuracy"] <= 100.0
        assert 0.0 <= record["eval_vqa_answer_marker_rate"] <= 1.0


@pytest.mark.parametrize(("overrides", "frozen"), [
    ((), torch.float32),
    (("--bf16", "true", "--model_dtype", "bfloat16"), torch.bfloat16),
])
def test_the_frozen_dtype_a_run_trained_with_is_recorded_and_loaded_back(tmp_path, overrides, frozen):
    """One rule decides the frozen dtype (sit_vqa.modeling.precision); the checkpoint records it; evaluation, the demo
    and export load the base model in it, whatever device or config they run with."""
    final = run_training(quick_config(tmp_path, "--max_steps", "1", *overrides))
    assert ckpt.read_manifest(final).frozen_dtype == str(frozen).removeprefix("torch.")
    model, _, _ = load_checkpoint(final)
    assert {p.dtype for p in model.parameters() if not p.requires_grad} == {frozen}
    assert {p.dtype for p in model.parameters() if p.requires_grad} == {torch.float32}
    assert model.query_tokens.dtype == torch.float32
