"""The training run: RunConfig -> model + dataset -> SitTrainer -> trainable-only checkpoints in the run directory.

    final = run_training(load_config("quickstart.yaml"))      # what train.py runs

A fresh run claims its output_dir (refusing one that holds a run, unless overwrite_output_dir, and one that holds
anything its marker does not list); --resume continues from the newest intact checkpoint-N and never deletes a run. See sit_vqa.training.run_dir for the
rules, sit_vqa.run_layout for the names.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import traceback
from pathlib import Path

import torch.distributed as dist
from safetensors import SafetensorError
from transformers import TrainerCallback, set_seed

from sit_vqa.config import RunConfig
from sit_vqa.errors import ConfigError, PeerLostError, SitVqaError, WriteError
from sit_vqa.files import is_write_failure, write_error, write_json_atomically
from sit_vqa.modeling import checkpoint as ckpt
from sit_vqa.modeling import precision
from sit_vqa.modeling.loading import load_base_model, prepare_for_training
from sit_vqa.modeling.threads import use_cpu_threads
from sit_vqa.training.callbacks import VqaEvalCallback
from sit_vqa.training.compat import use_resumable_tensorboard
from sit_vqa.training.manifest import run_manifest
from sit_vqa.training.records import load_training_records, training_dataset
from sit_vqa.training.run_dir import RunDirectory, checkpoint_step
from sit_vqa.training.sharding import refuse_unknown_layer_classes, refuse_unworkable_fsdp
from sit_vqa.training.trainer import FiniteGradientsCallback, JsonlLogCallback, SitTrainer
from sit_vqa.training.unreadable import unreadable_images_report

logger = logging.getLogger(__name__)


def run_training(config: RunConfig, callbacks: list[TrainerCallback] | None = None) -> Path:
    """Train as configured; return the directory of the final checkpoint. A write that fails (no space left,
    read-only, no permission) is a WriteError naming the last intact checkpoint; nothing partial is left."""
    output_dir = config.training.output_dir
    try:
        return _run_training(config, callbacks)
    except WriteError as error:
        raise _with_last_checkpoint(error, output_dir) from error
    except SitVqaError as error:
        if (message := _worker_message(error)) is None:
            raise
        raise type(error)(message) from error
    except (OSError, RuntimeError, SafetensorError) as error:  # a library writing through its own code
        if _failed_in_a_collective(error):
            raise _peer_lost(error, output_dir) from error
        if not is_write_failure(error):
            raise
        # name the file it failed on when the library says (a TensorBoard events file, a safetensors file)
        failed = os.fsdecode(error.filename) if getattr(error, "filename", None) else output_dir
        raise _with_last_checkpoint(write_error(failed, error), output_dir) from error


# What the optimizer, its schedule and the data order were built with. A resume restores their state from the
# checkpoint (optimizer.pt, scheduler.pt, the RNG), so another value would be written to run_config.json and the
# manifest without being what trains (or would splice two schedules): refused.
RESUME_FIXED_KEYS = ("learning_rate", "lr_scheduler_type", "lr_scheduler_kwargs", "warmup_steps", "warmup_ratio",
                     "weight_decay", "adam_beta1", "adam_beta2", "adam_epsilon", "optim", "optim_args",
                     "max_grad_norm", "per_device_train_batch_size", "gradient_accumulation_steps", "seed",
                     "fsdp")  # the optimizer's state is saved in the layout of the run's sharding


def _refuse_changed_resume_settings(config: RunConfig, recorded_path: Path) -> None:
    """A ConfigError naming every RESUME_FIXED_KEYS setting that differs from the run's run_config.json."""
    try:
        recorded = json.loads(recorded_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # a run from before run_config.json, or a damaged one: nothing to hold to
        return
    now = json.loads(json.dumps(config.to_dict(), default=str))  # as run_config.json holds them
    changed = [key for key in RESUME_FIXED_KEYS
               if key in recorded and _as_compared(key, recorded[key]) != _as_compared(key, now.get(key))]
    if changed:
        shown = "; ".join(f"{key} {now.get(key)!r} now, {recorded[key]!r} in {recorded_path}" for key in changed)
        raise ConfigError(
            f"--resume continues the run with the optimizer, schedule and data order it was trained with, so it "
            f"cannot take other values for them ({shown}). Drop {', '.join('--' + key for key in changed)} (or set "
            "the recorded values) to continue it, or start a new run with them in another --output_dir."
        )


def _as_compared(key: str, value):
    """A recorded setting as it is compared: runs from before `fsdp` was a bool recorded null for off."""
    return bool(value) if key == "fsdp" else value


def _worker_message(error: SitVqaError) -> str | None:
    """The message of an error a DataLoader worker raised (an unreadable image, a bad record), or None for an
    error raised here. torch re-raises it in this process with the worker's traceback as its message
    ("Caught DataError in DataLoader worker process 0. Original Traceback ..."); the user needs the last part."""
    text = str(error)
    marker = f"{type(error).__name__}: "
    if not text.startswith("Caught ") or "Original Traceback" not in text or marker not in text:
        return None
    return text.rsplit(marker, 1)[1].strip()


def _failed_in_a_collective(error: BaseException) -> bool:
    """Whether `error` came out of a torch.distributed collective of a run of several processes: what the others
    see when one process dies (gloo: a RuntimeError "Connection reset by peer" from the collective's wait(); NCCL:
    a DistBackendError) or hangs (a DistBackendError once ddp_timeout has passed)."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return False
    frames = traceback.extract_tb(error.__traceback__)
    raised_in = frames[-1].filename.replace(os.sep, "/") if frames else ""
    return isinstance(error, dist.DistError) or "/torch/distributed/" in raised_in


def _peer_lost(error: BaseException, output_dir: str | Path) -> PeerLostError:
    last = ckpt.latest_checkpoint(output_dir)
    restart = (f"the last intact checkpoint is {last}; start the run again on every node, with the same number of "
               "nodes and processes per node, adding --resume" if last else
               "no checkpoint was written yet; start the run again on every node")
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return PeerLostError(
        f"process {dist.get_rank()} of {dist.get_world_size()} stopped: a collective operation with the run's "
        f"other processes failed ({first_line}). Most often another process of the run (on another node) was "
        "killed, preempted or ran out of memory: its node's log shows why. Nothing is lost but the steps since the "
        f"last checkpoint: {restart} (what a save cut short left is removed then)."
    )


_NOT_PERMITTED = {errno.EACCES, errno.EPERM, errno.EROFS}
_OUT_OF_ROOM = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, None}  # None: a write cut short, no errno told


def _with_last_checkpoint(error: WriteError, output_dir: str | Path) -> WriteError:
    last = ckpt.latest_checkpoint(output_dir)
    number = _cause_number(error)
    if last is None:
        hint = "no checkpoint was written yet"
    elif number in _NOT_PERMITTED:
        hint = (f"the last intact checkpoint is {last}; make {output_dir} writable (fix its permissions, or mount "
                "it read-write), or copy the run to a writable --output_dir, then continue it with --resume")
    elif number in _OUT_OF_ROOM:
        hint = f"the last intact checkpoint is {last}; continue from it with --resume once the disk has room"
    else:
        hint = f"the last intact checkpoint is {last}; continue from it with --resume once that is fixed"
    made = WriteError(f"{error} Nothing partial was left: {hint}.")
    made.errno = number
    return made


def _cause_number(error: BaseException) -> int | None:
    """The errno of a failed write: the first one in the chain of causes (a WriteError made by
    files.write_error carries its cause's)."""
    while error is not None:
        if (number := getattr(error, "errno", None)) is not None:
            return number
        error = error.__cause__ or error.__context__
    return None


def _run_training(config: RunConfig, callbacks: list[TrainerCallback] | None) -> Path:
    args = config.training
    refuse_unworkable_fsdp(config)
    run_dir = RunDirectory.for_output_dir(args.output_dir, should_save=args.should_save)
    with run_dir.exclusive():  # one training at a time writes into output_dir
        return _train_in(run_dir, config, callbacks)


def _train_in(run_dir: RunDirectory, config: RunConfig, callbacks: list[TrainerCallback] | None) -> Path:
    args = config.training
    # the main process moves damaged checkpoints and clears leftovers; the others look once it is done. The main
    # process of the whole run (local=False), not one per node: output_dir is one directory on a filesystem every
    # node sees (rank 0 writes each checkpoint once; every process reads it on --resume)
    with args.main_process_first(local=False, desc="claiming the output directory"):
        resume_from = run_dir.resume_checkpoint() if args.resume else None
        if resume_from is None:
            if args.resume:
                run_dir.refuse_resume_without_checkpoint()
            run_dir.claim(args.overwrite_output_dir)
        run_dir.record_run_files(tensorboard="tensorboard" in args.report_to)
    if resume_from is not None:
        _refuse_changed_resume_settings(config, run_dir.run_config)
    if resume_from is not None and _finished(resume_from, args) and (
            checkpoint_step(run_dir.final) == checkpoint_step(resume_from)):
        logger.info("--resume: %s already holds the run trained to step %s; nothing to do", run_dir.final,
                    checkpoint_step(run_dir.final))
        run_dir.clear_staging()
        return run_dir.final
    run_dir.clear_partial_writes()

    frozen_dtype = precision.frozen_dtype_for(config.model.model_dtype, args.bf16)
    # straight onto this rank's device in the frozen dtype: no CPU copy of the whole model per rank
    base_model, processor = load_base_model(config.model, device=str(args.device), dtype=frozen_dtype)
    manifest, base_model_dir = run_manifest(config, base_model, processor, run_dir, args.should_save, frozen_dtype)
    set_seed(args.seed)  # peft draws the adapters' initial weights from the global RNG: the run's seed decides them
    model = prepare_for_training(base_model, config.model, frozen_dtype)
    refuse_unknown_layer_classes(config, model)
    use_cpu_threads(model, args.device, config.model.cpu_threads)

    # one process per node joins the raw files into prepared_cache_dir; the others then reuse its result
    with args.main_process_first(desc="preparing the training records"):
        records, data_report = load_training_records(config.data, config.model.model_type)
    train_dataset, transform = training_dataset(config, model, processor, records, run_dir.unreadable_images)
    if args.should_save:
        run_dir.root.mkdir(parents=True, exist_ok=True)
        write_json_atomically(run_dir.data_report, data_report)
        write_json_atomically(run_dir.run_config, config.to_dict())
        if resume_from is not None and not _finished(resume_from, args):  # a finished run trains no step
            run_dir.cut_log_at(resume_from)

    trainer = SitTrainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        data_collator=transform.collator(),  # SitCollator, or ChatCollator for chat VLMs
        processing_class=processor,
        callbacks=[
            JsonlLogCallback(run_dir.log),
            *([] if args.fp16 else [FiniteGradientsCallback(run_dir.root)]),
            *(callbacks or []),
        ],
        checkpoint_manifest=manifest,
        base_model_dir=base_model_dir,
    )
    use_resumable_tensorboard(trainer, str(run_dir.tensorboard))
    if args.eval_vqa_steps:
        trainer.add_callback(VqaEvalCallback.from_config(trainer, config))
    try:
        _train(trainer, resume_from, args, run_dir)
    finally:
        if args.should_save:
            _report_unreadable_images(run_dir, data_report)
    run_dir.clear_staging()
    return run_dir.final


def _train(trainer: SitTrainer, resume_from: Path | None, args, run_dir: RunDirectory) -> None:
    if resume_from is not None and _finished(resume_from, args):
        # the Trainer would train one more step (it checks max_steps only after a step): write final only
        logger.info("--resume: %s already reached max_steps %d; writing %s", resume_from, args.max_steps,
                    run_dir.final)
        trainer.load_resume_weights(str(resume_from), trainer.model)
        trainer.state.global_step = checkpoint_step(resume_from)
    else:
        trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    trainer.save_model(str(run_dir.final))


def _finished(checkpoint_dir: Path, args) -> bool:
    """Whether the checkpoint already reached the run's max_steps (epoch-based runs end on their own)."""
    return args.max_steps > 0 and (checkpoint_step(checkpoint_dir) or 0) >= args.max_steps


def _report_unreadable_images(run_dir: RunDirectory, data_report: dict) -> None:
    """Name the records skipped for an unreadable image in data_report.json (also when the run stopped)."""
    skipped = unreadable_images_report(run_dir.unreadable_images)
    if skipped is not None:
        write_json_atomically(run_dir.data_report, {**data_report, "unreadable_images": skipped})
        logger.warning("%d record(s) were skipped for an unreadable image; see %s", skipped["count"],
                       run_dir.data_report)
