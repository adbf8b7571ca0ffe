"""Every use of the HF Trainer's private API, in one place (written against transformers 5.23).

The rest of the package uses public hooks only: `save_model` (trainable weights only), `compute_loss`, `log`,
callbacks and `TrainerState`. What follows cannot be done through them; each item says why, and
tests/training/test_compat.py has one test per item that fails loudly when a transformers release changes it.
Items 8 and 9 are exercised by the FSDP runs of tests/training/test_fsdp.py.
`check_trainer_internals()` runs when a `SitTrainer` is built and names what changed, instead of letting a
renamed hook be silently skipped (an override of a method that no longer exists is never called).

1. `_save_checkpoint(model, trial)` and `_get_output_dir(trial)`: checkpoints appear atomically. The Trainer
   writes checkpoint-N in place, file by file (model, optimizer, scheduler, RNG state of every rank,
   trainer_state.json), then rotates old ones out; a kill midway leaves a half-written checkpoint-N that
   rotation counts as the newest. Wrapping `_save_checkpoint` lets the whole of it be written under
   .checkpoint-staging/ -- `_get_output_dir` is where the Trainer asks for the directory to write it in --
   and renamed into place, complete, before our rotation runs. The manifest-last rule alone cannot carry
   this: `save_model` (which writes the manifest) runs first, before the optimizer and trainer state; moved
   to the public `on_save`, the manifest would come after the Trainer's rotation, which with
   save_total_limit 1 deletes the previous checkpoint while the new one is not yet complete.
2. `_load_from_checkpoint(resume_from_checkpoint, model)`: `train(resume_from_checkpoint=...)` calls it to
   load the model's weights and raises "Can't find a valid checkpoint" when the directory holds no full model
   file; our checkpoints hold the trainable weights only, so this loads those.
3. `_tr_loss`, `_total_loss_scalar`, `_globalstep_last_logged`: the loss summed since the last log, the
   run's loss sum, and the step of the last log. `train()` resets them, and they are not in `TrainerState`,
   so a resumed run would log a different first loss and train_loss than the uninterrupted run. Each
   checkpoint keeps them (`RunningLoss`), and a resumed run restores them at `on_train_begin`.
4. `TensorBoardCallback._init_summary_writer(args)` and its `logging_dir`: where the callback makes its
   SummaryWriter. It writes each process's events into a new runs/<date>_<host>/ folder with no purge step, so
   after a resume the steps a killed segment logged past its checkpoint show twice. `ResumableTensorBoard`
   writes every segment into the run's one runs/ folder and opens the writer with purge_step = the step
   resumed from: TensorBoard then hides the killed segment's events from that step on. It also keeps the
   writer thread's failure (a disk made read-only) from printing a second traceback: the Trainer's thread
   raises the same error at its next flush, and the run reports it there.
5. `transformers.trainer_utils.rotate_checkpoints(output_dir, save_total_limit=...)`: the Trainer's own rule for
   which checkpoints save_total_limit removes (the oldest by step, never the newest). Item 1 publishes a
   checkpoint after the point where the Trainer rotates, so `rotate_checkpoints` here runs that rule again
   then. A module function of trainer_utils, not a documented API.
6. `Trainer.model_accepts_loss_kwargs`: decided at construction from the model's forward (**kwargs: yes); when
   set, the Trainer passes num_items_in_batch to the model and takes the loss as normalised by it (no division
   by the accumulation steps, a product with the process count). InstructBLIP's forward takes **kwargs but its
   T5 branch returns a plain mean: `loss_is_a_plain_mean()` clears it. (The documented `loss_is_scaled_for_ga`
   covers only the accumulation half.)
7. `PreTrainedModel._keep_in_fp32_modules` (InstructBLIP: query_tokens), read by
   `sit_vqa.modeling.precision.keep_trained_fp32` so that a bf16 model keeps those weights fp32 as transformers'
   own loading does for fp16. The modeling layer cannot import this module: the item is listed and tested here.
8. `create_accelerator_and_postprocess()` and `is_fsdp_enabled`, with accelerate's `AcceleratorState`
   (`distributed_type`, `fsdp_plugin`): accelerate (1.15) turns FSDP on only for GPU-like devices (its
   AcceleratorState switches MULTI_GPU, MULTI_XPU, ... to FSDP); CPU processes (gloo) stay MULTI_CPU, the plugin
   is dropped and the Trainer runs DDP without a word. torch's FSDP2 `fully_shard` shards on CPU, so for CPU
   processes this sets what accelerate sets for GPUs (the plugin, distributed_type FSDP). Either way, a run with
   `fsdp: true` that the Trainer would not shard stops here (TrainerApiChanged) instead of training unsharded.
9. `_save_optimizer_and_scheduler(output_dir)`: under FSDP the Trainer writes, beside the optimizer's state,
   the whole model gathered on the first process (accelerate's save_fsdp_model: pytorch_model_fsdp.bin, the
   frozen LLM included, in every checkpoint). A checkpoint here holds the trained weights only (`save_model`), so
   this writes the optimizer's state gathered whole (optimizer.bin, the name and format the Trainer's FSDP
   resume reads: keyed by parameter name, trainable parameters only) and the scheduler, as the Trainer does.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import threading
from dataclasses import dataclass

import accelerate
import torch
import transformers
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict
from transformers import Trainer
from transformers.integrations import TensorBoardCallback
from transformers.trainer_utils import rotate_checkpoints as _trainer_rotation
from transformers.trainer import SCHEDULER_NAME

from sit_vqa.errors import SitVqaError
from sit_vqa.files import is_write_failure

TESTED_WITH = "5.23"
ACCELERATE_TESTED_WITH = "1.15"

# name -> the parameters it must take (the order the Trainer passes them in)
PRIVATE_METHODS = {
    "_save_checkpoint": ("model", "trial"),
    "_get_output_dir": ("trial",),
    "_load_from_checkpoint": ("resume_from_checkpoint", "model"),
    "create_accelerator_and_postprocess": (),
    "_save_optimizer_and_scheduler": ("output_dir",),
}
FSDP_OPTIMIZER_NAME = "optimizer.bin"  # accelerate's save_fsdp_optimizer / load_fsdp_optimizer name (FULL_STATE_DICT)
RUNNING_LOSS_ATTRIBUTES = ("_tr_loss", "_total_loss_scalar", "_globalstep_last_logged")


class TrainerApiChanged(SitVqaError, RuntimeError):
    """The installed transformers changed a private Trainer hook this package relies on."""


def check_trainer_internals(trainer_class: type = Trainer) -> None:
    """Raise TrainerApiChanged when a private method of item 1 or 2 is gone or takes other parameters."""
    for name, expected in PRIVATE_METHODS.items():
        method = getattr(trainer_class, name, None)
        found = tuple(inspect.signature(method).parameters)[1:] if callable(method) else None
        if found != expected:
            shown = "gone" if found is None else f"({', '.join(found)})"
            raise TrainerApiChanged(
                f"transformers {transformers.__version__}: Trainer.{name} is {shown}, expected "
                f"({', '.join(expected)}). "
                f"sit_vqa.training.compat is written against transformers {TESTED_WITH}: install that version, "
                "or adapt compat.py (tests/training/test_compat.py checks each hook)"
            )


@dataclass(frozen=True)
class RunningLoss:
    """The Trainer's loss bookkeeping at a checkpoint (item 3)."""

    total: float  # the logged losses' sum (times their step counts), over the whole run
    unlogged: float  # summed since the last log
    last_logged_step: int


class TrainerCompat(Trainer):
    """The private hooks (items 1-3, 8, 9). A subclass supplies `checkpoint_staging()`, a context manager that
    yields the directory the checkpoint is written under and publishes it when the block ends, and
    `load_resume_weights(checkpoint_dir, model)`."""

    _staging_root: str | None = None

    def _get_output_dir(self, trial) -> str:  # item 1
        return self._staging_root or super()._get_output_dir(trial)

    def _save_checkpoint(self, model, trial) -> None:  # item 1
        with self.checkpoint_staging() as staging_root:
            self._staging_root = str(staging_root)
            try:
                super()._save_checkpoint(model, trial)
            finally:
                self._staging_root = None

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:  # item 2
        self.load_resume_weights(resume_from_checkpoint, model if model is not None else self.model)

    def create_accelerator_and_postprocess(self) -> None:  # item 8
        super().create_accelerator_and_postprocess()
        if not self.args.fsdp or self.is_fsdp_enabled:
            return
        state = self.accelerator.state
        if state.distributed_type == DistributedType.MULTI_CPU:  # what AcceleratorState does for a GPU
            plugin = FullyShardedDataParallelPlugin(**self.args.fsdp_plugin_args)
            if state.mixed_precision != "no":
                plugin.set_mixed_precision(state.mixed_precision)
            state.fsdp_plugin = plugin
            state.distributed_type = DistributedType.FSDP
            self.is_fsdp_enabled = True
            return
        raise TrainerApiChanged(
            f"fsdp is set, but accelerate {accelerate.__version__} did not turn FSDP on for this run "
            f"({state.distributed_type}): it would train unsharded. sit_vqa.training.compat item 8 is written "
            f"against transformers {TESTED_WITH} and accelerate {ACCELERATE_TESTED_WITH}")

    def _save_optimizer_and_scheduler(self, output_dir: str) -> None:  # item 9
        if not self.is_fsdp_enabled:
            return super()._save_optimizer_and_scheduler(output_dir)
        # a collective: every process takes part; with cpu_offload only the first one receives the whole state
        state = get_optimizer_state_dict(self.model, self.optimizer,
                                         options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if self.args.should_save:
            torch.save(state, os.path.join(output_dir, FSDP_OPTIMIZER_NAME))
            torch.save(self.lr_scheduler.state_dict(), os.path.join(output_dir, SCHEDULER_NAME))

    def checkpoint_staging(self) -> contextlib.AbstractContextManager:
        raise NotImplementedError

    def load_resume_weights(self, checkpoint_dir: str, model) -> None:
        raise NotImplementedError

    def loss_is_a_plain_mean(self) -> None:  # item 6
        """The model returns a plain mean loss although its forward takes **kwargs: the Trainer must divide it by
        the accumulation steps and average it over processes itself."""
        if not hasattr(self, "model_accepts_loss_kwargs"):
            raise TrainerApiChanged(f"transformers {transformers.__version__}: the Trainer has no "
                                    "model_accepts_loss_kwargs; adapt sit_vqa.training.compat item 6 (written "
                                    f"against transformers {TESTED_WITH})")
        self.model_accepts_loss_kwargs = False

    @property
    def saving_a_checkpoint(self) -> bool:
        """Whether `save_model` is being called for a checkpoint-N (written in staging) rather than final/."""
        return self._staging_root is not None

    def running_loss(self) -> RunningLoss:  # item 3
        self._require_running_loss()
        return RunningLoss(self._total_loss_scalar, self._tr_loss.item(), self._globalstep_last_logged)

    def set_running_loss(self, loss: RunningLoss) -> None:  # item 3
        self._require_running_loss()
        self._total_loss_scalar = loss.total
        self._tr_loss = torch.tensor(loss.unlogged, device=self._tr_loss.device, dtype=self._tr_loss.dtype)
        self._globalstep_last_logged = loss.last_logged_step

    def _require_running_loss(self) -> None:
        missing = [name for name in RUNNING_LOSS_ATTRIBUTES if not hasattr(self, name)]
        if missing or not isinstance(self._tr_loss, torch.Tensor):
            raise TrainerApiChanged(
                f"transformers {transformers.__version__}: the Trainer no longer keeps "
                f"{', '.join(missing) or '_tr_loss as a tensor'} during training; a resumed run cannot restore "
                f"its loss log. sit_vqa.training.compat is written against transformers {TESTED_WITH}"
            )


def rotate_checkpoints(output_dir: str, save_total_limit: int | None) -> None:  # item 5
    """Remove the oldest checkpoint-N of output_dir beyond save_total_limit, as the Trainer's rotation does."""
    _trainer_rotation(output_dir, save_total_limit=save_total_limit)


class ResumableTensorBoard(TensorBoardCallback):  # item 4
    """TensorBoardCallback writing into `log_dir` (the run's runs/, every segment of a resumed run) with the
    resumed step as its purge step."""

    def __init__(self, log_dir: str):
        super().__init__()
        self.logging_dir = self.logging_dir or log_dir  # TENSORBOARD_LOGGING_DIR still wins
        self.purge_step: int | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.purge_step = state.global_step or None  # the checkpoint's step on a resume (state is loaded first)
        super().on_train_begin(args, state, control, **kwargs)

    def _init_summary_writer(self, args) -> None:
        _quiet_writer_thread_failures()
        self.tb_writer = self._SummaryWriter(log_dir=self.logging_dir, purge_step=self.purge_step)


def use_resumable_tensorboard(trainer: Trainer, log_dir: str) -> None:
    """Put a `ResumableTensorBoard` where the Trainer's own TensorBoardCallback is (same place in the order:
    the loggers run before the callbacks given to the Trainer)."""
    if not callable(getattr(TensorBoardCallback, "_init_summary_writer", None)):  # else never called: no purge
        raise TrainerApiChanged(f"transformers {transformers.__version__}: TensorBoardCallback has no "
                                f"_init_summary_writer; adapt sit_vqa.training.compat item 4 (written against "
                                f"transformers {TESTED_WITH})")
    handler = trainer.callback_handler
    handler.callbacks = [ResumableTensorBoard(log_dir) if type(callback) is TensorBoardCallback else callback
                         for callback in handler.callbacks]


def _quiet_writer_thread_failures() -> None:
    """Let a failed write in TensorBoard's writer thread end that thread without a traceback: the writer
    re-raises the error in the training thread at its next flush (each log flushes), where the run turns it
    into one message. Other threads' failures print as before."""
    previous = threading.excepthook
    if getattr(previous, "quiet_tensorboard_writer", False):
        return

    def hook(args) -> None:
        if type(args.thread).__name__ == "_AsyncWriterThread" and is_write_failure(args.exc_value):
            return
        previous(args)

    hook.quiet_tensorboard_writer = True
    threading.excepthook = hook
