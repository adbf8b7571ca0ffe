"""The manifest every checkpoint of a run carries: what to rebuild the model from, and the run's config."""

from __future__ import annotations

from pathlib import Path

from sit_vqa.config import RunConfig
from sit_vqa.files import atomic_path
from sit_vqa.run_layout import BASE_MODEL_DIR, RunLayout


def run_manifest(config: RunConfig, model, processor, run_dir: RunLayout, should_save: bool) -> tuple[dict, Path | None]:
    """The manifest, and the base model directory to store with each checkpoint (tiny models only: they exist
    nowhere else)."""
    manifest = {"model_type": config.model.model_type, "config": config.to_dict()}
    if config.model.tiny_model:
        # built in code: saved once per run, then copied into every checkpoint (a few hundred KB)
        base_dir = run_dir.staged_base_model
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
