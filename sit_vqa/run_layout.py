"""The one place that knows a run directory's layout (names only: no torch, no transformers, no I/O beyond listing).

    runs/vqa_sit/
      checkpoint-N/             a checkpoint every save_steps (trainable weights, manifest, resume state)
      final/                    the checkpoint of the finished run
      .checkpoint-staging/      checkpoints being written (renamed into place when complete), and base_model/
                                (a tiny model's base weights, saved once per run and copied into each checkpoint)
      damaged_checkpoints/      checkpoints --resume could not use, each with a WHY.txt
      train_log.jsonl           every log row (loss, lr, throughput, eval metrics)
      unreadable_images.jsonl   the records skipped because their image could not be read
      data_report.json          how the training records were made (and which were skipped)
      run_config.json           the run's full config
      runs/                     TensorBoard events
      .sit_vqa_run.json         the marker: what the run writes here, listed before it writes it
      .<name>.<hex>.partial     an atomic write in progress (left only by a killed process)

It sits beside files.py and errors.py, below every package: sit_vqa.modeling (resolving a checkpoint, its
base_model/), sit_vqa.training (claiming, resuming, staging) and sit_vqa.evaluation (naming a run) all read it,
and it imports none of them, so no arrow runs upwards.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

CHECKPOINT_PREFIX = "checkpoint"  # transformers' PREFIX_CHECKPOINT_DIR; a test keeps the two equal
FINAL_DIR = "final"
BASE_MODEL_DIR = "base_model"
STAGING_DIR = ".checkpoint-staging"
DAMAGED_DIR = "damaged_checkpoints"
LOG_NAME = "train_log.jsonl"
UNREADABLE_IMAGES_NAME = "unreadable_images.jsonl"
DATA_REPORT_NAME = "data_report.json"
RUN_CONFIG_NAME = "run_config.json"
TENSORBOARD_DIR = "runs"
MARKER_NAME = ".sit_vqa_run.json"
LOCK_NAME = ".sit_vqa_run.lock"  # held (flock) by the run's writing process while it trains
# sit_vqa.files.atomic_path's temporaries: .<name>.<12 hex>.partial (being written), .previous (being replaced)
_TEMPORARY_NAME = re.compile(r"^\.(.+)\.[0-9a-f]{12}\.(?:partial|previous)$")

_CHECKPOINT_NAME = re.compile(rf"^{CHECKPOINT_PREFIX}-(\d+)$")


def checkpoint_name(step: int) -> str:
    return f"{CHECKPOINT_PREFIX}-{step}"


def step_in_name(name: str) -> int | None:
    """N for a directory named checkpoint-N, else None."""
    match = _CHECKPOINT_NAME.match(name)
    return int(match.group(1)) if match else None


def temporary_of(name: str) -> str | None:
    """The name an atomic write's temporary (`.final.0123456789ab.partial`) stands for ("final"), else None."""
    match = _TEMPORARY_NAME.match(name)
    return match.group(1) if match else None


def run_name(checkpoint: Path) -> str:
    """A checkpoint's name in reports: its run directory's name for final/, "<run>-checkpoint-N" for a
    checkpoint-N, else the directory's own name (a checkpoint copied out of its run)."""
    if checkpoint.name == FINAL_DIR:
        return checkpoint.resolve().parent.name
    if step_in_name(checkpoint.name) is not None:
        return f"{checkpoint.resolve().parent.name}-{checkpoint.name}"
    return checkpoint.resolve().name


@dataclass(frozen=True)
class RunLayout:
    """The paths of one run directory."""

    root: Path  # a Path (callers convert a configured string)

    @property
    def final(self) -> Path:
        return self.root / FINAL_DIR

    @property
    def staging(self) -> Path:
        return self.root / STAGING_DIR

    @property
    def staged_base_model(self) -> Path:
        return self.staging / BASE_MODEL_DIR

    @property
    def damaged(self) -> Path:
        return self.root / DAMAGED_DIR

    @property
    def log(self) -> Path:
        return self.root / LOG_NAME

    @property
    def unreadable_images(self) -> Path:
        return self.root / UNREADABLE_IMAGES_NAME

    @property
    def data_report(self) -> Path:
        return self.root / DATA_REPORT_NAME

    @property
    def run_config(self) -> Path:
        return self.root / RUN_CONFIG_NAME

    @property
    def tensorboard(self) -> Path:
        return self.root / TENSORBOARD_DIR

    @property
    def marker(self) -> Path:
        return self.root / MARKER_NAME

    @property
    def lock(self) -> Path:
        return self.root / LOCK_NAME

    def checkpoint(self, step: int) -> Path:
        return self.root / checkpoint_name(step)

    def staged_checkpoint(self, step: int) -> Path:
        return self.staging / checkpoint_name(step)

    def checkpoints_newest_first(self) -> list[Path]:
        """Every checkpoint-N directory (complete or not), highest N first."""
        if not self.root.is_dir():
            return []
        found = [(step, path) for path in self.root.iterdir()
                 if (step := step_in_name(path.name)) is not None and path.is_dir()]
        return [path for _, path in sorted(found, reverse=True)]

    def entries(self) -> list[Path]:
        """Everything directly in the run directory (sorted by name; none when it does not exist)."""
        return sorted(self.root.iterdir()) if self.root.is_dir() else []
