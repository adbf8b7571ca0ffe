"""The checkpoint format: trainable weights only, a manifest, the processor files; resolving and loading one.

A checkpoint directory holds:
    trainable.safetensors     the weights that were trained (Q-Former, query tokens, projection; or LoRA)
    sit_vqa_checkpoint.json   the manifest (`CheckpointManifest`, sit_vqa.modeling.checkpoint_manifest): base
                              model to rebuild from, the frozen weights' dtype, the run's full config, the step
    processor / tokenizer files (save_pretrained), so the checkpoint can be used without the config
    base_model/               for a tiny model built in code: its base weights (a few hundred KB), so the
                              directory stays usable when copied alone. A hub id or a local directory (stored
                              as an absolute path, checked on loading) is named in the manifest instead;
                              `base_model=` (--base-model) points at another copy.
and, inside a training run, the Trainer's resume state (optimizer.pt, scheduler.pt, rng_state*.pth,
trainer_state.json), which are loaded with `weights_only=True` only.

The manifest is written last: a directory without it is not a checkpoint (a save that was cut off).

    model, processor, manifest = load_checkpoint("runs/vqa_sit/final")   # ready for generation
    trained = load_checkpoint("runs/vqa_sit/final").trained               # what it was trained with, typed

`TrainedSettings` is the one typed record of what a checkpoint was trained with (the join mode or text mode,
hence its prompt; the templates; the instruction length and image pipeline its inputs must be made with).
Evaluation, the demo and the export read it; the export writes it (`to_dict`) and the demo reads it back
(`from_dict`). Its defaults, for manifests that predate a field, are decided here only.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch.distributed.tensor import DTensor, distribute_tensor

from sit_vqa.modeling import precision
from sit_vqa.data.prompts import Templates, load_templates, prompt_for_mode
from sit_vqa.modeling.arguments import ModelArguments
from sit_vqa.errors import CheckpointError
from sit_vqa.files import atomic_path
from sit_vqa.modeling.checkpoint_manifest import MANIFEST_NAME, CheckpointManifest, read_manifest
from sit_vqa.modeling.generation import GenerationSettings
from sit_vqa.modeling.families import model_family
from sit_vqa.modeling.loading import load_base_model, prepare_for_training
from sit_vqa.modeling.quantization import without_quantization
from sit_vqa.run_layout import BASE_MODEL_DIR, FINAL_DIR, RunLayout, step_in_name

logger = logging.getLogger(__name__)

WEIGHTS_NAME = "trainable.safetensors"
_SHOWN_NAMES = 3

# ---------------------------------------------------------------------------------------- trainable weights


def trainable_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The parameters that require grad, by name, detached (what a checkpoint needs to hold)."""
    return {name: param.detach() for name, param in model.named_parameters() if param.requires_grad}


def gathered_trainable_weights(model: torch.nn.Module, keep: bool = True) -> dict[str, torch.Tensor]:
    """The trainable parameters as whole CPU tensors (what a checkpoint holds). Under FSDP each process holds a
    shard of each of them (a DTensor), gathered here from every process: a collective, which every process must
    call, and which visits the parameters in the same order in each. Only where `keep` (the process that writes)
    are the gathered tensors kept; the others get {}."""
    weights = {}
    for name, param in trainable_state_dict(model).items():
        whole = param.full_tensor() if isinstance(param, DTensor) else param
        if keep:
            weights[name] = whole.contiguous().cpu()
    return weights


def save_trainable_weights(model: torch.nn.Module, path: str | os.PathLike,
                           weights: dict[str, torch.Tensor] | None = None) -> Path:
    """Write the trainable parameters (or `weights`, those `gathered_trainable_weights` returned) to a safetensors
    file atomically."""
    path = Path(path)
    tensors = gathered_trainable_weights(model) if weights is None else weights
    if not tensors:
        raise CheckpointError(f"refusing to write {path}: the model has no trainable parameters")
    with atomic_path(path) as temporary:
        save_file(tensors, str(temporary), metadata={"format": "pt", "model_class": type(model).__name__})
    return path


PARTIAL_LOAD_FIX = "pass another checkpoint, or allow a partial load (--allow-partial-load)"
# train.py --resume takes no partial load: the run's own settings are the fix
RESUME_FIX = ("resume with the settings the run was trained with (its run_config.json: model_type, train_all, "
              "use_lora, ...), or start a fresh run in another --output_dir")


def load_trainable_weights(
    model: torch.nn.Module, path: str | os.PathLike, *, strict: bool = True, expected: Iterable[str] | None = None,
    fix: str = PARTIAL_LOAD_FIX,
) -> list[str]:
    """Copy the weights of a `save_trainable_weights` file into model; return the names loaded.

    Every key must name a parameter of the model and every shape must match; with `expected` (the names the
    file must hold: the trainable parameters of the model it is loaded into), none of them may be missing.
    strict=False skips unknown keys and allows missing ones (a partial load). Values are cast to each
    parameter's dtype and device. `fix`: what the message about a mismatch tells the user to do.
    """
    path = Path(path)
    try:
        tensors = load_file(path)
    except (OSError, SafetensorError) as error:
        raise CheckpointError(f"cannot read trainable weights from {path}: {error}") from error
    params = dict(model.named_parameters())
    unknown = [name for name in tensors if name not in params]
    if unknown and strict:
        raise CheckpointError(
            f"{path}: {len(unknown)} tensor(s) are not parameters of {type(model).__name__}, e.g. "
            f"{', '.join(unknown[:_SHOWN_NAMES])} (a checkpoint of another model or LM kind?); {fix}"
        )
    for name in unknown:
        logger.warning("%s: skipping unknown key %s", path, name)
    missing = sorted(set(expected or ()) - set(tensors))
    if missing and strict:
        raise CheckpointError(
            f"{path}: {len(missing)} of the model's {len(set(expected))} trained tensors are missing, e.g. "
            f"{', '.join(missing[:_SHOWN_NAMES])} (the file is incomplete, or the checkpoint trained other "
            f"weights); {fix}"
        )
    loaded = []
    for name, tensor in tensors.items():
        param = params.get(name)
        if param is None:
            continue
        if param.shape != tensor.shape:
            raise CheckpointError(
                f"{path}: key {name!r} has shape {tuple(tensor.shape)} but the model's parameter has "
                f"{tuple(param.shape)} (a checkpoint of a different model size?)"
            )
        with torch.no_grad():
            param.copy_(_laid_out_like(tensor, param))
        loaded.append(name)
    return loaded


def _laid_out_like(tensor: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
    """`tensor` as `param` holds it: under FSDP (a DTensor) this process's shard, cut from the whole tensor that
    every process read from the same file (src_data_rank=None: no communication)."""
    if not isinstance(param, DTensor):
        return tensor
    tensor = tensor.to(device=param.device, dtype=param.dtype)
    return distribute_tensor(tensor, param.device_mesh, param.placements, src_data_rank=None)


# ----------------------------------------------------------------------------------------- the directory


def write_checkpoint(
    directory: str | Path, model, processor, manifest: CheckpointManifest, *, global_step: int,
    epoch: float | None = None, base_model_dir: Path | None = None, weights: dict[str, torch.Tensor] | None = None,
) -> None:
    """Write trainable weights (`weights`, when they were gathered already), processor files, a copy of
    `base_model_dir` (a tiny model's base weights) and (last, atomically) the manifest, with the step, the epochs
    it covered and the trained tensors, into `directory`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_trainable_weights(model, directory / WEIGHTS_NAME, weights)
    if processor is not None:
        processor.save_pretrained(directory)
    if base_model_dir is not None:
        shutil.copytree(base_model_dir, directory / BASE_MODEL_DIR, dirs_exist_ok=True)
    manifest.at_save(global_step, list(trainable_state_dict(model)), epoch).write(directory)


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The complete checkpoint-N directory with the highest N in `output_dir`, or None."""
    return next((path for path in RunLayout(Path(output_dir)).checkpoints_newest_first()
                 if (path / MANIFEST_NAME).is_file()), None)


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint directory, or a run directory: then its `final` checkpoint, else its latest checkpoint-N."""
    path = Path(path)
    for candidate in (path, path / FINAL_DIR):
        if (candidate / MANIFEST_NAME).is_file():
            return candidate
    latest = latest_checkpoint(path)
    if latest is None:
        raise CheckpointError(
            f"{path} is not a sit-vqa checkpoint, nor a run directory holding one (no {MANIFEST_NAME} in it, "
            "in final/ or in a checkpoint-N/); pass a checkpoint directory written by train.py, or leave "
            "--checkpoint out for a zero-shot evaluation of the config's base model"
        )
    return latest


# ------------------------------------------------------------------------------------------ resuming

TRAINER_STATE_NAME = "trainer_state.json"
# Without them the Trainer silently starts afresh. The optimizer's state is optimizer.pt, or under FSDP optimizer.bin
# (the Trainer's FSDP format: the state gathered whole, keyed by parameter name).
OPTIMIZER_FILES = ("optimizer.pt", "optimizer.bin")
SCHEDULER_FILE = "scheduler.pt"


def resume_problem(directory: Path) -> str | None:
    """Why `directory` cannot be resumed from (in words), or None when it is intact: the manifest reads, the
    trained weights read and hold exactly the tensors the manifest lists,
    trainer_state.json parses at the step of the directory's name, and the optimizer, scheduler and RNG files
    are complete archives. A save killed midway, a full disk or a damaged file each fail one of these
    (transformers only fails on them with a traceback: https://github.com/huggingface/transformers/issues/29059)."""
    for check in (_manifest_problem, _state_problem, _archives_problem):
        if problem := check(directory):
            return problem
    return _weights_problem(directory)


def _manifest_problem(directory: Path) -> str | None:
    try:
        read_manifest(directory)
    except CheckpointError:
        return f"no readable {MANIFEST_NAME} (a save that did not finish)"
    return None


def _state_problem(directory: Path) -> str | None:
    path = directory / TRAINER_STATE_NAME
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return f"{TRAINER_STATE_NAME} is missing"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        return f"{TRAINER_STATE_NAME} is damaged or truncated ({error})"
    step = str(step_in_name(directory.name))
    if not isinstance(state, dict) or str(state.get("global_step")) != step:
        return f"{TRAINER_STATE_NAME} does not hold global_step {step}"
    return None


def _archives_problem(directory: Path) -> str | None:
    """torch.save writes zip archives with a CRC per entry: testzip reads every byte without unpickling."""
    present = {path.name for path in directory.iterdir()}
    if not present & set(OPTIMIZER_FILES):
        return f"{OPTIMIZER_FILES[0]} is missing"
    if SCHEDULER_FILE not in present:
        return f"{SCHEDULER_FILE} is missing"
    archives = (*OPTIMIZER_FILES, SCHEDULER_FILE)
    for path in sorted(p for p in directory.iterdir() if p.name in archives or p.match("rng_state*.pth")):
        try:
            with zipfile.ZipFile(path) as archive:
                damaged = archive.testzip()
        except (OSError, zipfile.BadZipFile) as error:
            return f"{path.name} is truncated or not a torch.save archive ({error})"
        if damaged is not None:
            return f"{path.name} is damaged (entry {damaged} fails its checksum)"
    return None


def _weights_problem(directory: Path) -> str | None:
    path = directory / WEIGHTS_NAME
    try:
        names = set(load_file(path))  # reads every tensor: a truncated file fails here
    except (OSError, SafetensorError) as error:
        return f"{WEIGHTS_NAME} is unreadable ({error})"
    expected = read_manifest(directory).trained_tensors  # absent in older manifests
    if expected is not None:
        expected = set(expected)
        missing, unknown = sorted(expected - names), sorted(names - expected)
        if missing or unknown:
            return (f"{WEIGHTS_NAME} does not fit the model: {len(missing)} trained tensor(s) missing "
                    f"{missing[:_SHOWN_NAMES]}, {len(unknown)} unknown {unknown[:_SHOWN_NAMES]}")
    return None


# ------------------------------------------------------------------------------------ trained settings


@dataclass(frozen=True)
class TrainedSettings:
    """What a model was trained with, as the code that asks it needs to know (a zero-shot model: `zero_shot`)."""

    model_type: str = "instructblip"
    mode: str | None = None  # the join mode (sit, baseline, mixed, multitask); None: never fine-tuned
    text_mode: str | None = None  # causal_lm: plain, repeat or translate
    templates: Templates = field(default_factory=Templates)
    max_instruction_length: int = 128
    max_target_length: int = 256
    image_pipeline: str = "plain"
    global_step: int | None = None

    @classmethod
    def from_manifest(cls, manifest: CheckpointManifest) -> TrainedSettings:
        return cls.from_dict({**manifest.config, "model_type": manifest.model_type,
                              "global_step": manifest.global_step})

    @classmethod
    def zero_shot(cls, model_args, data_args) -> TrainedSettings:
        """A config's untrained base model: no mode (asked with the baseline prompt), the config's settings."""
        return cls(model_type=model_args.model_type, mode=None,
                   text_mode=None if model_family(model_args.model_type).answers_images else data_args.text_mode,
                   templates=data_args.template_set, max_instruction_length=model_args.max_instruction_length,
                   max_target_length=model_args.max_target_length, image_pipeline=model_args.image_pipeline)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainedSettings:
        """From a run's flat config (or an export's record): known keys only, the defaults for absent ones."""
        known = {f.name for f in dataclasses.fields(cls)}
        kept = {key: value for key, value in values.items() if key in known and value is not None}
        kept["templates"] = load_templates(values.get("templates") or None)
        if model_family(kept.get("model_type", "instructblip")).answers_images:
            kept.pop("text_mode", None)  # the config default; an image model has no text mode
        return cls(**kept)

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "prompt": self.prompt}

    @property
    def prompt(self) -> str:
        """The prompt the model was trained to follow: sit / baseline (images), its text_mode (text)."""
        if not model_family(self.model_type).answers_images:
            return self.text_mode or "plain"
        return prompt_for_mode(self.mode)

    def generation(self, **decoding) -> GenerationSettings:
        """Generation settings whose inputs are made as in training (instruction length, image pipeline)."""
        return GenerationSettings(max_instruction_length=self.max_instruction_length,
                                  image_pipeline=self.image_pipeline, model_type=self.model_type, **decoding)


@dataclass(frozen=True)
class LoadedCheckpoint:
    """A loaded checkpoint; unpacks as `model, processor, manifest = load_checkpoint(...)`."""

    model: Any
    processor: Any
    manifest: CheckpointManifest
    directory: Path
    # allow_partial: the trained tensors the weights file lacked (they kept the base model's values)
    missing_tensors: tuple[str, ...] = ()
    expected_tensors: int = 0

    @property
    def trained(self) -> TrainedSettings:
        return TrainedSettings.from_manifest(self.manifest)

    def __iter__(self):
        return iter((self.model, self.processor, self.manifest))


# --------------------------------------------------------------------------------------------- loading


def model_arguments(manifest: CheckpointManifest, directory: Path, base_model: str | Path | None = None) -> ModelArguments:
    """The model settings a checkpoint was trained with. Its base model is the one the manifest names (a
    directory stored with the checkpoint resolves against it), or `base_model` when given; a local one that
    is missing is a CheckpointError saying which and how to point at a copy."""
    names = {f.name for f in dataclasses.fields(ModelArguments)}
    args = ModelArguments(**{k: v for k, v in manifest.config.items() if k in names})
    if base_model is not None:
        return dataclasses.replace(args, model_name_or_path=str(base_model), tiny_model=None)
    base = manifest.base_model
    if not base or not (manifest.base_model_is_relative or manifest.base_model_is_local):
        return args  # a hub id (or the manifest of an older version)
    path = (directory / base).resolve()  # an absolute path stays itself
    if not (path / "config.json").is_file():
        raise CheckpointError(
            f"{directory}: its base model is missing: {path} (a checkpoint holds only the trained weights and "
            f"names the base model they were trained on). Put that model there, or pass --base-model DIR (a "
            "save_pretrained directory or a hub id of the same base model)"
        )
    return dataclasses.replace(args, model_name_or_path=str(path), tiny_model=None)


def load_checkpoint(
    directory: str | Path, device: str | None = None, *, dtype: torch.dtype | None = None,
    allow_partial: bool = False, base_model: str | Path | None = None, full_precision: bool = False,
) -> LoadedCheckpoint:
    """Rebuild (model, processor, manifest) from a checkpoint directory (or a run directory), ready for
    generation. The frozen weights get the dtype the run trained with unless `dtype` says otherwise; the
    weights file must hold every trained tensor (allow_partial: load what is there). `base_model` replaces
    the base model the manifest names (a copy elsewhere). A run with a 4/8-bit LLM loads it quantized again
    (its manifest's config says quantization_bit), unless `full_precision` (the export)."""
    directory = resolve_checkpoint(directory)
    manifest = read_manifest(directory)
    args = model_arguments(manifest, directory, base_model)
    dtype = dtype or precision.dtype_from_name(manifest.frozen_dtype)
    # full precision: the base model loads unquantized, and is prepared as the run was (the same peft wrapping,
    # hence the same names of the trained tensors)
    model, processor = load_base_model(without_quantization(args) if full_precision else args, dtype=dtype,
                                       device=device)
    model = prepare_for_training(model, args, dtype, quiet=True)
    expected = trainable_state_dict(model)
    loaded = load_trainable_weights(model, directory / WEIGHTS_NAME, strict=not allow_partial, expected=expected)
    model.eval()
    missing = tuple(sorted(set(expected) - set(loaded)))
    return LoadedCheckpoint(model, processor, manifest, directory, missing, len(expected))
