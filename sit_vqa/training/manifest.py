"""The manifest every checkpoint of a run carries: what to rebuild the model from, in which dtype, and the run's
config (the step and the trained tensors are added by each save)."""

from __future__ import annotations

from pathlib import Path

import torch

from sit_vqa.config import RunConfig
from sit_vqa.files import atomic_path
from sit_vqa.modeling import precision
from sit_vqa.modeling.checkpoint_manifest import CheckpointManifest
from sit_vqa.run_layout import BASE_MODEL_DIR, RunLayout


def run_manifest(config: RunConfig, model, processor, run_dir: RunLayout, should_save: bool,
                 frozen_dtype: torch.dtype) -> tuple[CheckpointManifest, Path | None]:
    """The manifest, and the base model directory to store with each checkpoint (tiny models only: they exist
    nowhere else)."""
    run = dict(model_type=config.model.model_type, config=config.to_dict(),
               frozen_dtype=precision.dtype_name(frozen_dtype))
    if config.model.tiny_model:
        # built in code: saved once per run, then copied into every checkpoint (a few hundred KB)
        base_dir = run_dir.staged_base_model
        if should_save:
            _save_base_model(model, processor, base_dir)
        return CheckpointManifest(**run, base_model=BASE_MODEL_DIR, base_model_is_relative=True), base_dir
    name = config.model.model_name_or_path
    if Path(name).is_dir():  # a local copy: absolute, so a checkpoint copied elsewhere still finds it
        return CheckpointManifest(**run, base_model=str(Path(name).resolve()), base_model_is_local=True), None
    return CheckpointManifest(**run, base_model=name), None


def _save_base_model(model, processor, base_dir: Path) -> None:
    with atomic_path(base_dir) as staging:
        model.save_pretrained(staging)
        processor.save_pretrained(staging)
