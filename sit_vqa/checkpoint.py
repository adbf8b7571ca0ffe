"""Checkpoints that hold only the trainable weights, and how to rebuild a model from one.

A checkpoint directory holds:
    trainable.safetensors     the weights that were trained (Q-Former, query tokens, projection; or LoRA)
    sit_vqa_checkpoint.json   the manifest: base model to rebuild from, the run's full config, the step
    processor / tokenizer files (save_pretrained), so the checkpoint can be used without the config
and, inside a training run, the Trainer's resume state (optimizer.pt, scheduler.pt, rng_state*.pth,
trainer_state.json), which are loaded with `weights_only=True` only.

The manifest is written last: a directory without it is not a checkpoint (a save that was cut off).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from sit_vqa import model as model_lib
from sit_vqa.model import CheckpointError

MANIFEST_NAME = "sit_vqa_checkpoint.json"
WEIGHTS_NAME = "trainable.safetensors"
FORMAT = "sit-vqa-checkpoint/1"
_CHECKPOINT_DIR = re.compile(r"^checkpoint-(\d+)$")


def write_checkpoint(directory: str | Path, model, processor, manifest: dict[str, Any]) -> None:
    """Write trainable weights, processor files and (last, atomically) the manifest into `directory`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model_lib.save_trainable_weights(model, directory / WEIGHTS_NAME)
    if processor is not None:
        processor.save_pretrained(directory)
    _write_json_atomically(directory / MANIFEST_NAME, {"format": FORMAT, **manifest})


def read_manifest(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / MANIFEST_NAME
    if not path.is_file():
        raise CheckpointError(
            f"{directory} is not a sit-vqa checkpoint (no {MANIFEST_NAME}); pass a checkpoint-N or final "
            "directory written by train.py"
        )
    manifest = json.loads(path.read_text(encoding="utf-8"))
    if manifest.get("format") != FORMAT:
        raise CheckpointError(f"{path}: unknown checkpoint format {manifest.get('format')!r}; expected {FORMAT}")
    return manifest


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The complete checkpoint-N directory with the highest N in `output_dir`, or None."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return None
    complete = [
        (int(match.group(1)), path)
        for path in output_dir.iterdir()
        if (match := _CHECKPOINT_DIR.match(path.name)) and (path / MANIFEST_NAME).is_file()
    ]
    return max(complete)[1] if complete else None


def _write_json_atomically(path: Path, payload: dict[str, Any]) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(payload, indent=2, default=str), encoding="utf-8")
    os.replace(temporary, path)
