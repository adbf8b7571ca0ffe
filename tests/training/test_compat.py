"""One test per private Trainer hook of sit_vqa.training.compat: each fails loudly when a transformers release
changes what the hook relies on. Real SitTrainer runs on the tiny model; nothing is mocked (the spies call
through to the real functions and only record where they write)."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import Trainer, TrainerCallback, TrainerState
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from sit_vqa import run_layout
from sit_vqa.config import load_config
from sit_vqa.modeling import checkpoint as ckpt
from sit_vqa.training import compat
from sit_vqa.training.compat import TrainerApiChanged, check_trainer_internals
from sit_vqa.training.run import run_training

REPO = Path(__file__).resolve().parents[2]
SMALL_CONFIG = REPO / "tests" / "configs" / "bundled_sample.yaml"


def config_for(run_dir: Path, cache: Path, *extra: str):
    overrides = ["--output_dir", str(run_dir), "--prepared_cache_dir", str(cache), "--report_to", "none",
                 "--subset_questions", "24", "--train_all", "false", "--per_device_train_batch_size", "4",
                 "--overwrite_output_dir", "false", *extra]
    return load_config(SMALL_CONFIG, overrides)


@pytest.fixture(autouse=True)
def _repo_cwd(monkeypatch):
    monkeypatch.chdir(REPO)  # the config names data/sample/... relative to the repository


def test_the_installed_trainer_has_every_private_hook_with_the_expected_parameters():
    check_trainer_internals()  # transformers as installed

    class Renamed(Trainer):  # what a release that renames a parameter looks like
        def _save_checkpoint(self, model, trial_params):
            pass

    with pytest.raises(TrainerApiChanged, match=r"Trainer._save_checkpoint is \(model, trial_params\), expected "
                                                 r"\(model, trial\).*compat.py"):
        check_trainer_internals(Renamed)


def test_the_run_layout_names_checkpoints_as_the_trainer_does():
    assert run_layout.CHECKPOINT_PREFIX == PREFIX_CHECKPOINT_DIR  # rotation and resume find them by this prefix


def test_get_output_dir_puts_every_part_of_a_checkpoint_in_staging(tmp_path, monkeypatch):
    """Item 1, `_get_output_dir`: the Trainer asks it where to write checkpoint-N (model, optimizer, scheduler,
    RNG state, trainer_state.json); all of it must land in the staging copy, none in place."""
    written = []
    real_save, real_state_save = torch.save, TrainerState.save_to_json

    def save(obj, f, *args, **kwargs):
        written.append(Path(f))
        return real_save(obj, f, *args, **kwargs)

    def save_state(self, json_path):
        written.append(Path(json_path))
        return real_state_save(self, json_path)

    monkeypatch.setattr(torch, "save", save)
    monkeypatch.setattr(TrainerState, "save_to_json", save_state)
    run_dir = tmp_path / "run"
    run_training(config_for(run_dir, tmp_path / "cache", "--max_steps", "1", "--save_steps", "1"))

    staged = run_dir / run_layout.STAGING_DIR / "checkpoint-1"
    names = {path.name for path in written}
    assert {"optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json"} <= names, names
    assert all(path.parent == staged for path in written), written
    assert {name for name in names} <= {p.name for p in (run_dir / "checkpoint-1").iterdir()}


def test_save_checkpoint_is_the_hook_the_training_loop_saves_through(tmp_path):
    """Item 1, `_save_checkpoint`: only its wrapper writes the running loss and publishes the staged copy; if
    the loop saved another way, checkpoint-N would lack running_loss_0.json (or stay in staging)."""
    run_dir = tmp_path / "run"
    run_training(config_for(run_dir, tmp_path / "cache", "--max_steps", "2", "--save_steps", "1",
                            "--save_total_limit", "1", "--logging_steps", "1"))
    assert (run_dir / "checkpoint-2" / "running_loss_0.json").is_file()
    assert not (run_dir / "checkpoint-1").exists(), "rotation did not run after the publish"
    assert not (run_dir / run_layout.STAGING_DIR).exists(), "the staging area outlived the run"


class WeightsAtTrainBegin(TrainerCallback):
    def __init__(self):
        self.weights = None

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.weights = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


def test_load_from_checkpoint_loads_the_trainable_weights_on_resume(tmp_path):
    """Item 2, `_load_from_checkpoint`: train(resume_from_checkpoint=...) loads the model through it. Without the
    override the Trainer refuses our checkpoints ("Can't find a valid checkpoint": no full model file)."""
    run_dir, cache = tmp_path / "run", tmp_path / "cache"
    run_training(config_for(run_dir, cache, "--max_steps", "2", "--save_steps", "2", "--learning_rate", "1e-2"))
    saved = load_file(run_dir / "checkpoint-2" / ckpt.WEIGHTS_NAME)
    seen = WeightsAtTrainBegin()
    run_training(config_for(run_dir, cache, "--max_steps", "3", "--save_steps", "2", "--learning_rate", "1e-2",
                            "--resume"), callbacks=[seen])
    assert seen.weights.keys() == saved.keys()
    assert all(torch.equal(seen.weights[name], saved[name]) for name in saved)


def test_the_running_loss_attributes_survive_a_checkpoint_between_two_logs(tmp_path):
    """Item 3, `_tr_loss` / `_total_loss_scalar` / `_globalstep_last_logged`: a checkpoint at step 2 of a run
    logging every 3 steps holds two unlogged steps' loss; the resumed run's step-3 loss is the uninterrupted one."""
    steps = ("--max_steps", "3", "--save_steps", "2", "--logging_steps", "3", "--learning_rate", "5e-3")
    whole = tmp_path / "whole"
    run_training(config_for(whole, tmp_path / "cache", *steps))

    cut = tmp_path / "cut"
    run_training(config_for(cut, tmp_path / "cache", *steps[:1], "2", *steps[2:]))
    state = json.loads((cut / "checkpoint-2" / "running_loss_0.json").read_text())
    assert state["unlogged"] > 0 and state["total"] == 0 and state["last_logged_step"] == 0, state
    run_training(config_for(cut, tmp_path / "cache", *steps, "--resume"))

    def step_3_loss(run_dir):
        rows = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
        return next(row["loss"] for row in rows if row.get("step") == 3 and "loss" in row)

    assert step_3_loss(cut) == step_3_loss(whole)


def test_the_running_loss_accessors_refuse_a_trainer_without_the_attributes(tmp_path):
    """Outside train() the attributes do not exist: the accessor says so instead of an AttributeError deep inside."""
    from sit_vqa.modeling.tiny import build_tiny_instructblip

    model, processor = build_tiny_instructblip("decoder")
    args = config_for(tmp_path / "run", tmp_path / "cache").training
    trainer = compat.TrainerCompat(model=model, args=args, processing_class=processor)
    with pytest.raises(TrainerApiChanged, match="_tr_loss"):
        trainer.running_loss()


def test_rotate_checkpoints_removes_the_oldest_by_step(tmp_path):
    """Item 5, `trainer_utils.rotate_checkpoints`: with save_total_limit 2 the two highest steps stay (by number:
    checkpoint-10 is newer than checkpoint-9), and other directories are left alone."""
    for name in ("checkpoint-1", "checkpoint-9", "checkpoint-10", "final"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "trainable.safetensors").write_bytes(b"x")
    compat.rotate_checkpoints(str(tmp_path), save_total_limit=2)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["checkpoint-10", "checkpoint-9", "final"]


def test_model_accepts_loss_kwargs_is_decided_from_forward_and_cleared_for_a_plain_mean(tmp_path):
    """Item 6, `Trainer.model_accepts_loss_kwargs`: InstructBLIP's forward takes **kwargs, so the Trainer sets it;
    loss_is_a_plain_mean (what SitTrainer calls for a T5 LM) clears it; without the attribute, a clear error."""
    from sit_vqa.modeling.tiny import build_tiny_instructblip

    model, processor = build_tiny_instructblip("t5")
    args = config_for(tmp_path / "run", tmp_path / "cache").training
    trainer = compat.TrainerCompat(model=model, args=args, processing_class=processor)
    assert trainer.model_accepts_loss_kwargs is True
    trainer.loss_is_a_plain_mean()
    assert trainer.model_accepts_loss_kwargs is False
    del trainer.model_accepts_loss_kwargs
    with pytest.raises(TrainerApiChanged, match="model_accepts_loss_kwargs"):
        trainer.loss_is_a_plain_mean()


def test_keep_in_fp32_modules_names_the_query_tokens_and_keeps_them_fp32():
    """Item 7, `PreTrainedModel._keep_in_fp32_modules`: InstructBLIP lists query_tokens, and
    precision.keep_trained_fp32 keeps what it lists in fp32 while the other frozen weights go to bf16."""
    from sit_vqa.modeling.precision import keep_trained_fp32
    from sit_vqa.modeling.tiny import build_tiny_instructblip

    model, _ = build_tiny_instructblip("decoder")
    assert "query_tokens" in model._keep_in_fp32_modules
    model.requires_grad_(False)
    keep_trained_fp32(model, torch.bfloat16)
    assert model.query_tokens.dtype == torch.float32
    assert model.language_projection.weight.dtype == torch.bfloat16
