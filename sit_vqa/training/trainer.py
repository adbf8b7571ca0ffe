"""`SitTrainer`: the HF Trainer with what this package needs, through public hooks (the private ones it cannot
avoid are in sit_vqa.training.compat).

The loop, mixed precision, gradient accumulation, DDP, FSDP, schedulers and checkpoint rotation are the Trainer's.
- saving (`save_model`): trainable weights only (safetensors; under FSDP gathered whole from the shards) +
  manifest (last) + processor; checkpoints appear atomically (written in the run's staging directory, then
  renamed), so a run killed mid-save keeps its previous checkpoint;
- resuming: loads a checkpoint's trainable weights back (the Trainer itself restores optimizer, scheduler,
  RNG and the data position) and the running loss sums, so a resumed run repeats the uninterrupted run's
  losses, log and train_loss;
- a NaN/inf loss or gradient stops the run with a clear message instead of being averaged into the logs;
- throughput (samples/s) next to loss and lr in every log line; every log row goes to train_log.jsonl.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import asdict
from pathlib import Path

import torch
from torch.distributed.tensor import DTensor
from transformers import TrainerCallback

from sit_vqa.errors import SitVqaError
from sit_vqa.files import atomic_path, write_json_atomically
from sit_vqa.modeling import checkpoint as ckpt
from sit_vqa.modeling.families import is_encoder_decoder
from sit_vqa.training.compat import RunningLoss, TrainerCompat, check_trainer_internals, rotate_checkpoints
from sit_vqa.training.run_dir import RunDirectory


class NonFiniteLossError(SitVqaError, RuntimeError):
    """The loss became NaN or infinite; training stopped before saving anything from that state."""


def non_finite_error(what: str, step: int, output_dir: str | Path) -> NonFiniteLossError:
    last_good = ckpt.latest_checkpoint(output_dir)
    return NonFiniteLossError(
        f"{what} at step {step}; training stopped before the update, nothing was saved from this state. "
        f"Last good checkpoint: {last_good or 'none yet'}. Try a lower learning_rate, bf16 instead of fp16, "
        "or check the data; resume with --resume."
    )


class SitTrainer(TrainerCompat):
    def __init__(self, *args, checkpoint_manifest: ckpt.CheckpointManifest, base_model_dir: Path | None = None, **kwargs):
        check_trainer_internals()
        super().__init__(*args, **kwargs)
        if is_encoder_decoder(self.accelerator.unwrap_model(self.model)):
            # InstructBLIP's forward takes **kwargs, so the Trainer assumes it normalises the loss by
            # num_items_in_batch; its T5 branch returns a plain mean instead, and the loss would then be
            # neither divided by the accumulation steps nor averaged over processes (x GA, x world size).
            self.loss_is_a_plain_mean()
        self.checkpoint_manifest = checkpoint_manifest
        self.base_model_dir = base_model_dir
        self.run_layout = RunDirectory(Path(self.args.output_dir), should_save=self.args.should_save)
        self._last_log = (time.perf_counter(), 0)
        self._resumed_from: str | None = None
        self._loss_restored = False
        self.add_callback(_RestoreRunningLoss(self))

    # Saving: trainable weights only, atomically ------------------------------------------------------

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Write a checkpoint of the trainable weights to `output_dir` (default: the run directory). Every process
        calls it: under FSDP each holds a shard of every trained tensor, and all take part in gathering it."""
        model = self.accelerator.unwrap_model(self.model, keep_torch_compile=False)
        weights = ckpt.gathered_trainable_weights(model, keep=self.args.should_save)
        if not self.args.should_save:
            return
        output_dir = Path(output_dir or self.args.output_dir)
        # a checkpoint-N is written in its staging copy, published whole; `final` gets its own atomic write
        publish = contextlib.nullcontext(output_dir) if self.saving_a_checkpoint else atomic_path(output_dir)
        with publish as directory:
            ckpt.write_checkpoint(directory, model, self.processing_class, self.checkpoint_manifest,
                                  global_step=self.state.global_step, epoch=self.state.epoch,
                                  base_model_dir=self.base_model_dir, weights=weights)

    @contextlib.contextmanager
    def checkpoint_staging(self):
        """The Trainer writes checkpoint-N under the staging root; once every rank has written its part (its
        RNG state), the main process renames it into place, then rotates the old ones out."""
        step = self.state.global_step
        staged, final = self.run_layout.staged_checkpoint(step), self.run_layout.checkpoint(step)
        self.run_layout.record(final)  # listed in the run's marker before it exists
        publish = atomic_path(final, temporary=staged) if self.args.should_save else contextlib.nullcontext()
        with publish:
            self.accelerator.wait_for_everyone()
            yield self.run_layout.staging
            self._save_running_loss(staged)
            self.accelerator.wait_for_everyone()
        if self.args.should_save:
            rotate_checkpoints(self.args.output_dir, save_total_limit=self.args.save_total_limit)
        self.accelerator.wait_for_everyone()

    def load_resume_weights(self, checkpoint_dir: str, model) -> None:
        """Load a checkpoint's trainable weights (what `train(resume_from_checkpoint=...)` needs of it)."""
        model = self.accelerator.unwrap_model(model)
        ckpt.load_trainable_weights(
            model, Path(checkpoint_dir) / ckpt.WEIGHTS_NAME, expected=ckpt.trainable_state_dict(model),
            fix=ckpt.RESUME_FIX,
        )
        self._resumed_from = str(checkpoint_dir)

    # The running loss survives a resume -----------------------------------------------------------------
    # The Trainer sums the logged losses of the current train() call only (its train_loss then averages the
    # last segment), and the loss accumulated since the last log is lost with the process. Each checkpoint
    # keeps both, per process, and a resumed run starts from them: its logs and train_loss are the
    # uninterrupted run's, bit for bit.

    def _running_loss_path(self, checkpoint_dir: Path) -> Path:
        return Path(checkpoint_dir) / f"running_loss_{self.args.process_index}.json"

    def _save_running_loss(self, checkpoint_dir: Path) -> None:
        state = asdict(self.running_loss())
        # complete: the total covers the whole run (not only the segment since a resume from an older format)
        state["complete"] = self._loss_restored or not self._resumed_from
        write_json_atomically(self._running_loss_path(checkpoint_dir), state)

    def restore_running_loss(self) -> None:
        """Called as training begins (after the Trainer has reset its loss sums)."""
        path = self._running_loss_path(Path(self._resumed_from)) if self._resumed_from else None
        if path is None or not path.is_file():
            return
        state = json.loads(path.read_text(encoding="utf-8"))
        self.set_running_loss(RunningLoss(state["total"], state["unlogged"], state["last_logged_step"]))
        self._loss_restored = state.get("complete", False)
        self._last_log = (time.perf_counter(), self.state.global_step)

    # The loss must stay finite -------------------------------------------------------------------------

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        result = super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
        loss = result[0] if return_outputs else result
        if not torch.isfinite(loss.detach()).all():
            raise non_finite_error(f"loss is {loss.item()}", self.state.global_step + 1, self.args.output_dir)
        return result

    # Throughput in every log line ----------------------------------------------------------------------

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "train_loss" in logs and self._loss_restored:
            # the Trainer divides the whole run's loss sum by this segment's steps; average over the whole run
            logs["train_loss"] = self.running_loss().total / max(self.state.global_step, 0.001)
        if "loss" in logs:
            now, step = time.perf_counter(), self.state.global_step
            last_time, last_step = self._last_log
            samples = (step - last_step) * self.args.train_batch_size * self.args.gradient_accumulation_steps
            samples *= self.args.world_size
            if now > last_time and step > last_step:
                logs["samples_per_second"] = round(samples / (now - last_time), 3)
            self._last_log = (now, step)
        super().log(logs, start_time)


class _RestoreRunningLoss(TrainerCallback):
    """on_train_begin is the first moment after train() has reset the loss sums that a resume restores."""

    def __init__(self, trainer: SitTrainer):
        self.trainer = trainer

    def on_train_begin(self, args, state, control, **kwargs):
        self.trainer.restore_running_loss()


class FiniteGradientsCallback(TrainerCallback):
    """Stops the run before the optimizer applies a NaN/inf gradient (a finite loss can still overflow in
    the backward pass), so no checkpoint ever holds the weights it would produce. Not used with fp16,
    whose loss scaler skips such steps on purpose."""

    def __init__(self, output_dir: str | Path):
        self.output_dir = output_dir

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        grads = [p.grad for p in model.parameters() if p.requires_grad and p.grad is not None]
        if grads and not gradients_are_finite(grads):
            raise non_finite_error("the gradient is not finite", state.global_step + 1, self.output_dir)


def gradients_are_finite(grads: list[torch.Tensor]) -> bool:
    """Whether every gradient entry is finite, in one fused pass and one device sync.

    The 2-norm of all tensors from torch's multi-tensor `_foreach_norm` kernels: a NaN or inf anywhere makes
    it non-finite. (So does a finite gradient whose norm overflows fp32, above ~1e19: a step not worth taking
    either.) Testing the tensors one by one launched two kernels per tensor, ~10-50x slower for InstructBLIP's
    331 trained tensors (bench/bench_finite_grads.py); the max-abs norm would be exact but is ~10x slower."""
    total = torch.nn.utils.get_total_norm(grads, norm_type=2.0, foreach=True)
    if isinstance(total, DTensor):  # under FSDP: every process's shards summed, so all of them decide alike
        total = total.full_tensor()
    return bool(torch.isfinite(total))


class JsonlLogCallback(TrainerCallback):
    """Appends every log record (loss, lr, throughput, eval metrics) to OUTPUT_DIR/train_log.jsonl."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps({"step": state.global_step, **logs}, default=_json_number) + "\n")


def _json_number(value):
    return float(value) if isinstance(value, (torch.Tensor,)) else str(value)
