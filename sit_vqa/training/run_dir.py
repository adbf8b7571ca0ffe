"""What a training run does to its run directory: claim it, pick the checkpoint --resume continues from (moving
damaged ones aside), cut the log back to that checkpoint, and clear what killed or finished runs leave.

The names of the directory's parts are sit_vqa.run_layout's; this module holds the rules.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from sit_vqa.errors import CheckpointError, ConfigError
from sit_vqa.files import remove, write_text_atomically
from sit_vqa.modeling import checkpoint as ckpt
from sit_vqa.run_layout import RunLayout

logger = logging.getLogger(__name__)


def checkpoint_step(directory: Path) -> int | None:
    """The step a checkpoint's manifest records (None when it has no readable manifest)."""
    try:
        return ckpt.read_manifest(directory).get("global_step")
    except CheckpointError:
        return None


@dataclass(frozen=True)
class RunDirectory(RunLayout):
    """A run directory, with the rules for claiming and resuming it. `should_save`: this process writes (the
    main process); the others only read."""

    should_save: bool = True

    # --- resuming --------------------------------------------------------------------------------------

    def resume_checkpoint(self) -> Path | None:
        """The newest intact checkpoint-N (None when the directory holds none). Damaged ones newer than it are
        named and moved to damaged_checkpoints/ (the resumed run writes their steps again, and checkpoint
        rotation must not keep them in place of good ones); none intact is an error."""
        damaged = []
        for candidate in self.checkpoints_newest_first():
            problem = ckpt.resume_problem(candidate)
            if problem is None:
                self._move_aside(damaged)
                logger.info("resuming from %s", candidate)
                return candidate
            logger.warning("--resume: skipping %s: %s", candidate, problem)
            damaged.append((candidate, problem))
        if damaged:
            listed = "; ".join(f"{path.name}: {problem}" for path, problem in damaged)
            raise CheckpointError(
                f"--resume: no intact checkpoint in {self.root} ({listed}). Start over with --overwrite_output_dir "
                "true, or restore a checkpoint from a copy"
            )
        return None

    def _move_aside(self, damaged: list[tuple[Path, str]]) -> None:
        if not self.should_save:
            return
        for path, problem in damaged:
            target = self.damaged / path.name
            remove(target)  # an earlier copy of the same step
            target.parent.mkdir(parents=True, exist_ok=True)
            os.rename(path, target)
            (target / "WHY.txt").write_text(f"--resume skipped this checkpoint: {problem}\n", encoding="utf-8")
            logger.warning("--resume: moved %s to %s", path.name, target)

    def refuse_resume_without_checkpoint(self) -> None:
        """--resume found no checkpoint-N. A directory that holds what is left of a run (final/, or checkpoints
        moved to damaged_checkpoints/) is never removed, whatever overwrite_output_dir says: --resume means
        "continue", and neither holds a state to continue from. What a run that failed before its first
        checkpoint left (a log, reports) is no run: that starts afresh."""
        kept = [path for path in (self.final, self.damaged) if path.exists()]
        if not kept:
            logger.warning("--resume: no checkpoint in %s; starting from scratch", self.root)
            return
        step = checkpoint_step(self.final)
        names = [f"{path.name} (trained to step {step})" if path == self.final and step is not None else path.name
                 for path in kept]
        shown = " and ".join(names)
        raise ConfigError(
            f"--resume: output_dir {self.root} holds no checkpoint-N to continue from, only {shown}: the run "
            "finished, or saved no intact checkpoint before it ended, and --resume never deletes a run. Use "
            f"{self.final.name}/ as it is, pass another --output_dir to train anew, or drop --resume and pass "
            "--overwrite_output_dir true to delete it and start over"
        )

    # --- claiming a fresh run -----------------------------------------------------------------------------

    def claim(self, overwrite: bool) -> None:
        """A fresh run must not mix with an earlier one (checkpoint rotation and --resume would pick up its
        files): refuse a directory that holds checkpoints, or clear them with overwrite. What a run that
        failed before its first checkpoint left (logs, reports, staging) is cleared: there is nothing to keep."""
        checkpoints = sorted(self.checkpoints_newest_first()) + [p for p in [self.final] if p.exists()]
        if checkpoints and not overwrite:
            shown = ", ".join(p.name for p in checkpoints[:4])
            raise ConfigError(
                f"output_dir {self.root} already holds a run ({shown}); pass --resume to continue it, another "
                "--output_dir, or --overwrite_output_dir true to delete it and start over"
            )
        if not self.should_save:
            return
        leftovers = self.run_files() + self.partial_writes()
        for path in checkpoints + leftovers:
            remove(path)
        if checkpoints:
            logger.info("overwrite_output_dir: removed the earlier run's files from %s", self.root)
        elif leftovers:
            logger.info("%s holds no checkpoint: removed what an earlier, failed run left (%s)", self.root,
                        ", ".join(p.name for p in leftovers))

    def clear_partial_writes(self) -> None:
        """Remove the temporaries of atomic writes a killed process left (a kill during the final save leaves
        .final.<hex>.partial/, as large as a checkpoint). Called when a run claims or resumes the directory,
        before it writes anything: no other process of this run can be writing one yet."""
        if not self.should_save:
            return
        for path in self.partial_writes():
            remove(path)
            logger.info("removed %s, left by a process killed while writing it", path.name)

    def clear_staging(self) -> None:
        """After the final checkpoint: the staging area (and the base model copy each checkpoint took from it)
        is needed by no later step; a resumed run saves the base model there again."""
        if self.should_save:
            remove(self.staging)

    # --- the training log ---------------------------------------------------------------------------------

    def cut_log_at(self, checkpoint_dir: Path) -> None:
        """Rewrite the training log as one run resumed at `checkpoint_dir`: keep the rows up to its step (what
        the killed segment logged later is logged again by the resumed one), drop the summary rows of earlier
        segments (the run's summary comes at its end) and a line torn by the kill, and mark where it resumed."""
        step = checkpoint_step(checkpoint_dir)
        if step is None or not self.log.is_file():
            return
        kept = []
        for line in self.log.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # the last line of a process killed while writing it
            if isinstance(row, dict) and row.get("step", step + 1) <= step and "train_runtime" not in row:
                kept.append(line)
        kept.append(json.dumps({"step": step, "resumed_from": checkpoint_dir.name}))
        write_text_atomically(self.log, "\n".join(kept) + "\n")
