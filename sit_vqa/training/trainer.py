"""The training run: RunConfig -> model + dataset -> HF Trainer -> trainable-only checkpoints.

The loop, mixed precision, gradient accumulation, DDP, schedulers and checkpoint rotation are the
Trainer's. `SitTrainer` overrides only what this package needs:
- saving: trainable weights only (safetensors) + manifest + processor; checkpoints appear atomically
  (written in a staging directory, then renamed), so a run killed mid-save keeps its previous checkpoint;
- resuming: picks the newest checkpoint that is intact (damaged ones are named and moved aside), loads
  its trainable weights back (the Trainer itself restores optimizer, scheduler, RNG and the data position)
  and the running loss sum, and cuts train_log.jsonl back to that step, so a resumed run repeats the
  uninterrupted run's losses, log and train_loss;
- a NaN/inf loss stops the run with a clear message instead of being averaged into the logs;
- throughput (samples/s) next to loss and lr in every log line, also written to train_log.jsonl.
"""

from __future__ import annotations

import json
import logging
import os
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from safetensors import SafetensorError
from transformers import Trainer, TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints

from sit_vqa.modeling import checkpoint as ckpt
from sit_vqa.modeling import precision
from sit_vqa.training.callbacks import VqaEvalCallback
from sit_vqa.modeling.collate import SampleTransform, SitCollator, TransformedDataset
from sit_vqa.config import DataArguments, RunConfig
from sit_vqa.data.prepared import load_prepared, prepare_cached
from sit_vqa.data.text_sit import build_text_sit, load_alpaca
from sit_vqa.errors import CheckpointError, ConfigError, SitVqaError, WriteError
from sit_vqa.modeling.feature_cache import (
    build_feature_cache,
    record_image_paths,
    use_cached_features,
)
from sit_vqa.files import (
    atomic_path,
    is_write_failure,
    remove,
    write_error,
    write_json_atomically,
    write_text_atomically,
)
from sit_vqa.modeling.loading import is_encoder_decoder, load_base_model, prepare_for_training

logger = logging.getLogger(__name__)

BASE_MODEL_DIR = "base_model"
STAGING_DIR = ".checkpoint-staging"
DAMAGED_DIR = "damaged_checkpoints"  # where --resume moves the checkpoints it cannot use
LOG_NAME = "train_log.jsonl"


class NonFiniteLossError(SitVqaError, RuntimeError):
    """The loss became NaN or infinite; training stopped before saving anything from that state."""


def non_finite_error(what: str, step: int, output_dir: str | Path) -> NonFiniteLossError:
    last_good = ckpt.latest_checkpoint(output_dir)
    return NonFiniteLossError(
        f"{what} at step {step}; training stopped before the update, nothing was saved from this state. "
        f"Last good checkpoint: {last_good or 'none yet'}. Try a lower learning_rate, bf16 instead of fp16, "
        "or check the data; resume with --resume."
    )


# ----------------------------------------------------------------------------------------------- data


def load_training_records(data: DataArguments, model_type: str):
    """The training records (with 'instruction' and 'target'), and a report of how they were made."""
    if model_type == "causal_lm":
        if not data.text_data:
            raise ConfigError("causal_lm training needs text_data (an Alpaca-format JSON file)")
        translated = load_alpaca(data.text_data_translated) if data.text_data_translated else None
        records = build_text_sit(
            load_alpaca(data.text_data), data.text_mode, translated=translated,
            sources=(data.text_data, data.text_data_translated or "translated records"),
        )
        return records, {"text_data": data.text_data, "text_mode": data.text_mode, "records": len(records)}
    if data.train_dataset_dir:
        dataset, report = load_prepared(data.train_dataset_dir)
    else:
        raw = data.raw_files("train")
        if raw is None:
            raise ConfigError("no training data: set train_dataset_dir or train_questions/annotations/captions/image_dir")
        dataset, report = prepare_cached(
            raw["questions"], raw["annotations"], raw["captions"], raw["image_dir"],
            cache_root=data.prepared_cache_dir, options=data.join_options(),
        )
    return dataset, report.to_dict()


# -------------------------------------------------------------------------------------------- trainer


class SitTrainer(Trainer):
    def __init__(self, *args, checkpoint_manifest: dict, base_model_dir: Path | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        if is_encoder_decoder(self.accelerator.unwrap_model(self.model)):
            # InstructBLIP's forward takes **kwargs, so the Trainer assumes it normalises the loss by
            # num_items_in_batch; its T5 branch returns a plain mean instead, and the loss would then be
            # neither divided by the accumulation steps nor averaged over processes (x GA, x world size).
            self.model_accepts_loss_kwargs = False
        self.checkpoint_manifest = checkpoint_manifest
        self.base_model_dir = base_model_dir
        self._staging_root: str | None = None
        self._last_log = (time.perf_counter(), 0)
        self._resumed_from: str | None = None
        self._loss_restored = False
        self.add_callback(_RestoreRunningLoss(self))

    # Saving: trainable weights only, atomically ------------------------------------------------------

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        if not self.args.should_save:
            return
        output_dir = Path(output_dir or self.args.output_dir)
        model = self.accelerator.unwrap_model(self.model, keep_torch_compile=False)
        manifest = {**self.checkpoint_manifest, "global_step": self.state.global_step}
        # inside _save_checkpoint the directory is already a staging copy; `final` gets its own
        publish = nullcontext(output_dir) if self._staging_root else atomic_path(output_dir)
        with publish as directory:
            ckpt.write_checkpoint(directory, model, self.processing_class, manifest, base_model_dir=self.base_model_dir)

    def _get_output_dir(self, trial) -> str:
        # While a checkpoint is being written, the Trainer writes it under the staging root.
        return self._staging_root or super()._get_output_dir(trial)

    def _save_checkpoint(self, model, trial) -> None:
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        staging_root = os.path.join(self.args.output_dir, STAGING_DIR)
        final = Path(self.args.output_dir) / name
        # Every rank writes into the staging copy (its RNG state); the main process publishes it.
        publish = atomic_path(final, temporary=Path(staging_root) / name) if self.args.should_save else nullcontext()
        with publish:
            self.accelerator.wait_for_everyone()
            self._staging_root = staging_root
            try:
                super()._save_checkpoint(model, trial)
                self._save_running_loss(Path(staging_root) / name)
            finally:
                self._staging_root = None
            self.accelerator.wait_for_everyone()  # every rank has written its RNG state
        if self.args.should_save:
            rotate_checkpoints(self.args.output_dir, save_total_limit=self.args.save_total_limit)
        self.accelerator.wait_for_everyone()

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        model = model if model is not None else self.model
        model = self.accelerator.unwrap_model(model)
        ckpt.load_trainable_weights(
            model, Path(resume_from_checkpoint) / ckpt.WEIGHTS_NAME, expected=ckpt.trainable_state_dict(model)
        )
        self._resumed_from = resume_from_checkpoint

    # The running loss survives a resume -----------------------------------------------------------------
    # The Trainer sums the logged losses of the current train() call only (its train_loss then averages the
    # last segment), and the loss accumulated since the last log is lost with the process. Each checkpoint
    # keeps both, per process, and a resumed run starts from them: its logs and train_loss are the
    # uninterrupted run's, bit for bit.

    def _running_loss_path(self, checkpoint_dir: Path) -> Path:
        return checkpoint_dir / f"running_loss_{self.args.process_index}.json"

    def _save_running_loss(self, checkpoint_dir: Path) -> None:
        state = {"total": self._total_loss_scalar, "unlogged": self._tr_loss.item(),
                 "last_logged_step": self._globalstep_last_logged}
        # complete: the total covers the whole run (not only the segment since a resume from an older format)
        state["complete"] = self._loss_restored or not self._resumed_from
        write_json_atomically(self._running_loss_path(checkpoint_dir), state)

    def restore_running_loss(self) -> None:
        """Called as training begins (after the Trainer has reset its loss sums)."""
        path = self._running_loss_path(Path(self._resumed_from)) if self._resumed_from else None
        if path is None or not path.is_file():
            return
        state = json.loads(path.read_text(encoding="utf-8"))
        self._total_loss_scalar = state["total"]
        self._tr_loss = torch.tensor(state["unlogged"], device=self._tr_loss.device, dtype=self._tr_loss.dtype)
        self._globalstep_last_logged = state["last_logged_step"]
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
            logs["train_loss"] = self._total_loss_scalar / max(self.state.global_step, 0.001)
        if "loss" in logs:
            now, step = time.perf_counter(), self.state.global_step
            last_time, last_step = self._last_log
            samples = (step - last_step) * self.args.train_batch_size * self.args.gradient_accumulation_steps
            samples *= self.args.world_size
            if now > last_time and step > last_step:
                logs["samples_per_second"] = round(samples / (now - last_time), 3)
            self._last_log = (now, step)
        super().log(logs, start_time)


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
    return bool(torch.isfinite(total))


class _RestoreRunningLoss(TrainerCallback):
    """on_train_begin is the first moment after train() has reset the loss sums that a resume restores."""

    def __init__(self, trainer: SitTrainer):
        self.trainer = trainer

    def on_train_begin(self, args, state, control, **kwargs):
        self.trainer.restore_running_loss()


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


# ------------------------------------------------------------------------------------------------ run


def run_training(config: RunConfig, callbacks: list[TrainerCallback] | None = None) -> Path:
    """Train as configured; return the directory of the final checkpoint. A write that fails (no space left,
    read-only, no permission) is a WriteError naming the last intact checkpoint; nothing partial is left."""
    try:
        return _run_training(config, callbacks)
    except WriteError as error:
        raise _with_last_checkpoint(error, config.training.output_dir) from error
    except (OSError, RuntimeError, SafetensorError) as error:  # a library writing through its own code
        if not is_write_failure(error):
            raise
        raise _with_last_checkpoint(write_error(config.training.output_dir, error), config.training.output_dir) from error


def _with_last_checkpoint(error: WriteError, output_dir: str | Path) -> WriteError:
    last = ckpt.latest_checkpoint(output_dir)
    hint = (f"the last intact checkpoint is {last}; continue from it with --resume once the disk has room"
            if last else "no checkpoint was written yet")
    return WriteError(f"{error} Nothing partial was left: {hint}.")


def _run_training(config: RunConfig, callbacks: list[TrainerCallback] | None) -> Path:
    args = config.training
    output_dir = Path(args.output_dir)
    final = output_dir / "final"
    with args.main_process_first(desc="choosing the checkpoint to resume from"):  # the main process moves damaged ones
        resume_from = _resume_checkpoint(config)
    if resume_from is None:
        _claim_output_dir(output_dir, args.overwrite_output_dir, args.should_save, args.resume)
    elif _finished(resume_from, args) and _checkpoint_step(final) == _checkpoint_step(resume_from):
        logger.info("--resume: %s already holds the run trained to step %s; nothing to do", final,
                    _checkpoint_step(final))
        return final
    frozen_dtype = precision.frozen_dtype(config.model.model_dtype, args.bf16)
    # straight onto this rank's device in the frozen dtype: no CPU copy of the whole model per rank
    base_model, processor = load_base_model(config.model, device=str(args.device), dtype=frozen_dtype)
    manifest, base_model_dir = _manifest(config, base_model, processor, output_dir, args.should_save)
    manifest["frozen_dtype"] = precision.dtype_name(frozen_dtype)
    model = prepare_for_training(base_model, config.model, frozen_dtype)

    records, data_report = load_training_records(config.data, config.model.model_type)
    transform = SampleTransform.for_model(
        model, processor,
        max_instruction_length=config.model.max_instruction_length,
        max_target_length=config.model.max_target_length,
        image_pipeline=config.model.image_pipeline,
        feature_cache=_feature_cache(config, model, processor, records),
    )
    transform.check_records(records)
    train_dataset = TransformedDataset(records, transform)
    logger.info("training on %d records from %s", len(train_dataset), config.source)
    if args.should_save:
        output_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomically(output_dir / "data_report.json", data_report)
        write_json_atomically(output_dir / "run_config.json", config.to_dict())
        if resume_from is not None and not _finished(resume_from, args):  # a finished run trains no step
            cut_log_at(output_dir / LOG_NAME, resume_from)

    trainer = SitTrainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        data_collator=SitCollator(pad_token_id=transform.pad_token_id),
        processing_class=processor,
        callbacks=[
            JsonlLogCallback(output_dir / LOG_NAME),
            *([] if args.fp16 else [FiniteGradientsCallback(output_dir)]),
            *(callbacks or []),
        ],
        checkpoint_manifest=manifest,
        base_model_dir=base_model_dir,
    )
    if args.eval_vqa_steps:
        trainer.add_callback(VqaEvalCallback.from_config(trainer, config))
    if resume_from is not None and _finished(resume_from, args):
        # the Trainer would train one more step (it checks max_steps only after a step): write final only
        logger.info("--resume: %s already reached max_steps %d; writing %s", resume_from, args.max_steps, final)
        trainer._load_from_checkpoint(str(resume_from))
        trainer.state.global_step = _checkpoint_step(resume_from)
    else:
        trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    trainer.save_model(str(final))
    return final


def _checkpoint_step(directory: Path) -> int | None:
    try:
        return ckpt.read_manifest(directory).get("global_step")
    except CheckpointError:
        return None


def _finished(checkpoint_dir: Path, args) -> bool:
    """Whether the checkpoint already reached the run's max_steps (epoch-based runs end on their own)."""
    return args.max_steps > 0 and (_checkpoint_step(checkpoint_dir) or 0) >= args.max_steps


def cut_log_at(path: Path, checkpoint_dir: Path) -> None:
    """Rewrite the training log as one run resumed at `checkpoint_dir`: keep the rows up to its step (what
    the killed segment logged later is logged again by the resumed one), drop the summary rows of earlier
    segments (the run's summary comes at its end) and a line torn by the kill, and mark where it resumed."""
    step = _checkpoint_step(checkpoint_dir)
    if step is None or not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # the last line of a process killed while writing it
        if isinstance(row, dict) and row.get("step", step + 1) <= step and "train_runtime" not in row:
            kept.append(line)
    kept.append(json.dumps({"step": step, "resumed_from": checkpoint_dir.name}))
    write_text_atomically(path, "\n".join(kept) + "\n")


def _feature_cache(config: RunConfig, model, processor, records):
    """The frozen-ViT feature cache of the training images (None when feature_cache_dir is unset), built where
    images are missing; the model then takes cached states as pixel_values (and still encodes images)."""
    if not config.data.feature_cache_dir:
        return None
    with config.training.main_process_first(desc="frozen-ViT feature cache"):  # one process builds
        cache = build_feature_cache(
            config.data.feature_cache_dir, model, processor, record_image_paths(records),
            pipeline=config.model.image_pipeline, device=config.training.device,
        )
    use_cached_features(model)
    return cache


RUN_FILES = (
    "final", BASE_MODEL_DIR, STAGING_DIR, DAMAGED_DIR, LOG_NAME, "data_report.json", "run_config.json", "runs",
)


def _claim_output_dir(output_dir: Path, overwrite: bool, should_save: bool, resume: bool = False) -> None:
    """A fresh run must not mix with an earlier one (checkpoint rotation and --resume would pick up its
    files): refuse an output_dir that holds checkpoints, or clear them with overwrite. What a run that
    failed before its first checkpoint left (logs, reports, staging) is cleared: there is nothing to keep."""
    checkpoints = sorted(output_dir.glob(f"{PREFIX_CHECKPOINT_DIR}-*")) + [p for p in [output_dir / "final"] if p.exists()]
    leftovers = [output_dir / name for name in RUN_FILES if (output_dir / name).exists()]
    if checkpoints and not overwrite:
        shown = ", ".join(p.name for p in checkpoints[:4])
        if resume:  # --resume found no checkpoint-N to continue from: only final/ (or damaged ones, moved)
            raise ConfigError(
                f"--resume: output_dir {output_dir} holds no checkpoint-N to continue from, only {shown}: the run "
                "finished, or saved no checkpoint before it ended. Pass another --output_dir, or "
                "--overwrite_output_dir true to delete it and start over"
            )
        raise ConfigError(
            f"output_dir {output_dir} already holds a run ({shown}); pass --resume to continue it, another "
            "--output_dir, or --overwrite_output_dir true to delete it and start over"
        )
    if should_save:
        for path in checkpoints + leftovers:
            remove(path)
        if checkpoints:
            logger.info("overwrite_output_dir: removed the earlier run's files from %s", output_dir)
        elif leftovers:
            logger.info("%s holds no checkpoint: removed what an earlier, failed run left (%s)", output_dir,
                        ", ".join(p.name for p in leftovers))


def _resume_checkpoint(config: RunConfig) -> Path | None:
    """The newest intact checkpoint-N for --resume (None without --resume, or when output_dir holds none).
    Damaged ones newer than it are named, and moved to damaged_checkpoints/ (the resumed run writes their
    steps again, and checkpoint rotation must not keep them in place of good ones); none intact is an error."""
    args = config.training
    if not args.resume:
        return None
    output_dir = Path(args.output_dir)
    candidates = ckpt.checkpoints_newest_first(output_dir)
    damaged = []
    for candidate in candidates:
        problem = ckpt.resume_problem(candidate)
        if problem is None:
            _move_aside(damaged, output_dir, args.should_save)
            logger.info("resuming from %s", candidate)
            return candidate
        logger.warning("--resume: skipping %s: %s", candidate, problem)
        damaged.append((candidate, problem))
    if damaged:
        listed = "; ".join(f"{path.name}: {problem}" for path, problem in damaged)
        raise CheckpointError(
            f"--resume: no intact checkpoint in {output_dir} ({listed}). Start over with --overwrite_output_dir "
            "true, or restore a checkpoint from a copy"
        )
    logger.warning("--resume: no checkpoint in %s; starting from scratch", output_dir)
    return None


def _move_aside(damaged: list[tuple[Path, str]], output_dir: Path, should_save: bool) -> None:
    if not should_save:
        return
    for path, problem in damaged:
        target = output_dir / DAMAGED_DIR / path.name
        remove(target)  # an earlier copy of the same step
        target.parent.mkdir(parents=True, exist_ok=True)
        os.rename(path, target)
        (target / "WHY.txt").write_text(f"--resume skipped this checkpoint: {problem}\n", encoding="utf-8")
        logger.warning("--resume: moved %s to %s", path.name, target)


def _manifest(config: RunConfig, model, processor, output_dir: Path, should_save: bool) -> tuple[dict, Path | None]:
    """The manifest every checkpoint of the run carries, and the base model directory to store with each
    (tiny models only: they exist nowhere else)."""
    manifest = {"model_type": config.model.model_type, "config": config.to_dict()}
    if config.model.tiny_model:
        # built in code: saved once per run, then copied into every checkpoint (a few hundred KB)
        base_dir = output_dir / STAGING_DIR / BASE_MODEL_DIR
        if should_save:
            _save_base_model(model, processor, base_dir)
        manifest["base_model"] = BASE_MODEL_DIR
        manifest["base_model_is_relative"] = True
        return manifest, base_dir
    name = config.model.model_name_or_path
    if Path(name).is_dir():  # a local copy: absolute, so a checkpoint copied elsewhere still finds it
        manifest["base_model"] = str(Path(name).resolve())
        manifest["base_model_is_local"] = True
    else:
        manifest["base_model"] = name
    return manifest, None


def _save_base_model(model, processor, base_dir: Path) -> None:
    with atomic_path(base_dir) as staging:
        model.save_pretrained(staging)
        processor.save_pretrained(staging)
