"""The training run: RunConfig -> model + dataset -> HF Trainer -> trainable-only checkpoints.

The loop, mixed precision, gradient accumulation, DDP, schedulers and checkpoint rotation are the
Trainer's. `SitTrainer` overrides only what this package needs:
- saving: trainable weights only (safetensors) + manifest + processor; checkpoints appear atomically
  (written in a staging directory, then renamed), so a run killed mid-save keeps its previous checkpoint;
- resuming: loads those trainable weights back (the Trainer itself restores optimizer, scheduler, RNG
  and the data position, so a resumed run repeats the uninterrupted run's losses);
- a NaN/inf loss stops the run with a clear message instead of being averaged into the logs;
- throughput (samples/s) next to loss and lr in every log line, also written to train_log.jsonl.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from transformers import Trainer, TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints

from sit_vqa import checkpoint as ckpt
from sit_vqa import precision
from sit_vqa.callbacks import VqaEvalCallback
from sit_vqa.collate import SampleTransform, SitCollator, TransformedDataset
from sit_vqa.config import DataArguments, RunConfig
from sit_vqa.data.prepared import load_prepared, prepare_cached
from sit_vqa.data.text_sit import build_text_sit, load_alpaca
from sit_vqa.errors import ConfigError, SitVqaError
from sit_vqa.feature_cache import (
    build_feature_cache,
    record_image_paths,
    use_cached_features,
)
from sit_vqa.files import atomic_path, write_json_atomically
from sit_vqa.model import is_encoder_decoder, load_base_model, prepare_for_training

logger = logging.getLogger(__name__)

BASE_MODEL_DIR = "base_model"
STAGING_DIR = ".checkpoint-staging"


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
    def __init__(self, *args, checkpoint_manifest: dict, **kwargs):
        super().__init__(*args, **kwargs)
        if is_encoder_decoder(self.accelerator.unwrap_model(self.model)):
            # InstructBLIP's forward takes **kwargs, so the Trainer assumes it normalises the loss by
            # num_items_in_batch; its T5 branch returns a plain mean instead, and the loss would then be
            # neither divided by the accumulation steps nor averaged over processes (x GA, x world size).
            self.model_accepts_loss_kwargs = False
        self.checkpoint_manifest = checkpoint_manifest
        self._staging_root: str | None = None
        self._last_log = (time.perf_counter(), 0)

    # Saving: trainable weights only, atomically ------------------------------------------------------

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        if not self.args.should_save:
            return
        output_dir = output_dir or self.args.output_dir
        model = self.accelerator.unwrap_model(self.model, keep_torch_compile=False)
        manifest = {**self.checkpoint_manifest, "global_step": self.state.global_step}
        ckpt.write_checkpoint(output_dir, model, self.processing_class, manifest)

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

    # The loss must stay finite -------------------------------------------------------------------------

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        result = super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
        loss = result[0] if return_outputs else result
        if not torch.isfinite(loss.detach()).all():
            raise non_finite_error(f"loss is {loss.item()}", self.state.global_step + 1, self.args.output_dir)
        return result

    # Throughput in every log line ----------------------------------------------------------------------

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
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
    """Train as configured; return the directory of the final checkpoint."""
    args = config.training
    output_dir = Path(args.output_dir)
    resume_from = _resume_checkpoint(config)
    if resume_from is None:
        _claim_output_dir(output_dir, args.overwrite_output_dir, args.should_save)
    frozen_dtype = precision.frozen_dtype(config.model.model_dtype, args.bf16)
    # straight onto this rank's device in the frozen dtype: no CPU copy of the whole model per rank
    base_model, processor = load_base_model(config.model, device=str(args.device), dtype=frozen_dtype)
    manifest = _manifest(config, base_model, processor, output_dir, args.should_save)
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

    trainer = SitTrainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        data_collator=SitCollator(pad_token_id=transform.pad_token_id),
        processing_class=processor,
        callbacks=[
            JsonlLogCallback(output_dir / "train_log.jsonl"),
            *([] if args.fp16 else [FiniteGradientsCallback(output_dir)]),
            *(callbacks or []),
        ],
        checkpoint_manifest=manifest,
    )
    if args.eval_vqa_steps:
        trainer.add_callback(VqaEvalCallback.from_config(trainer, config))
    trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    final = output_dir / "final"
    trainer.save_model(str(final))
    return final


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


RUN_FILES = ("final", BASE_MODEL_DIR, STAGING_DIR, "train_log.jsonl", "data_report.json", "run_config.json")


def _claim_output_dir(output_dir: Path, overwrite: bool, should_save: bool) -> None:
    """A fresh run must not mix with an earlier one (checkpoint rotation, --resume and base_model/ would
    pick up its files): refuse a used output_dir, or clear the earlier run's files with overwrite."""
    earlier = sorted(output_dir.glob(f"{PREFIX_CHECKPOINT_DIR}-*")) + [
        output_dir / name for name in RUN_FILES if (output_dir / name).exists()
    ]
    if not earlier:
        return
    if not overwrite:
        raise ConfigError(
            f"output_dir {output_dir} already holds a run ({', '.join(p.name for p in earlier[:4])}); pass --resume "
            "to continue it, another --output_dir, or --overwrite_output_dir true to delete it and start over"
        )
    if should_save:
        for path in earlier:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        logger.info("overwrite_output_dir: removed the earlier run's files from %s", output_dir)


def _resume_checkpoint(config: RunConfig) -> Path | None:
    if not config.training.resume:
        return None
    latest = ckpt.latest_checkpoint(config.training.output_dir)
    if latest is None:
        logger.warning("--resume: no complete checkpoint in %s; starting from scratch", config.training.output_dir)
    else:
        logger.info("resuming from %s", latest)
    return latest


def _manifest(config: RunConfig, model, processor, output_dir: Path, should_save: bool) -> dict:
    manifest = {"model_type": config.model.model_type, "config": config.to_dict()}
    if config.model.tiny_model:
        # The tiny model is built in code: keep its base weights beside the checkpoints so they can be rebuilt.
        base_dir = output_dir / BASE_MODEL_DIR
        if should_save and not base_dir.exists():
            _save_base_model(model, processor, base_dir)
        # every checkpoint (checkpoint-N, final) lives directly in output_dir, next to base_model/
        manifest["base_model"] = f"../{BASE_MODEL_DIR}"
        manifest["base_model_is_relative"] = True
    else:
        manifest["base_model"] = config.model.model_name_or_path
    return manifest


def _save_base_model(model, processor, base_dir: Path) -> None:
    with atomic_path(base_dir) as staging:
        model.save_pretrained(staging)
        processor.save_pretrained(staging)
