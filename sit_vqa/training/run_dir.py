"""What a training run does to its run directory: claim it, pick the checkpoint --resume continues from (moving
damaged ones aside), cut the log back to that checkpoint, and clear what killed or finished runs leave.

An output_dir may hold a user's own files (`--output_dir ~/experiments`), so a run removes nothing by its name
alone. It lists what it writes in a marker (.sit_vqa_run.json) *before* writing it; a later run removes only
what a marker lists (and the temporaries of those), and refuses a directory holding anything else.

The names of the directory's parts are sit_vqa.run_layout's; this module holds the rules.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from sit_vqa.errors import CheckpointError, ConfigError
from sit_vqa.files import held_lock, remove, write_json_atomically, write_text_atomically
from sit_vqa.modeling import checkpoint as ckpt
from sit_vqa.run_layout import LOCK_NAME, MARKER_NAME, RunLayout, temporary_of

logger = logging.getLogger(__name__)

_OWN = {MARKER_NAME, LOCK_NAME}  # the directory's bookkeeping, never a run's output nor a user's file


def checkpoint_step(directory: Path) -> int | None:
    """The step a checkpoint's manifest records (None when it has no readable manifest)."""
    try:
        return ckpt.read_manifest(directory).global_step
    except CheckpointError:
        return None


@dataclass(frozen=True)
class RunDirectory(RunLayout):
    """A run directory, with the rules for claiming and resuming it. `should_save`: this process writes (the
    main process); the others only read."""

    should_save: bool = True

    @classmethod
    def for_output_dir(cls, output_dir: str | None, should_save: bool = True) -> "RunDirectory":
        """The run directory of a configured output_dir; the current directory (or one above it) is refused:
        a run's files would mix with everything else there."""
        if not output_dir or not str(output_dir).strip():
            raise ConfigError("output_dir is empty; name a directory of the run's own, e.g. --output_dir runs/my_run")
        root = Path(output_dir).expanduser()
        cwd = Path.cwd().resolve()
        if root.resolve() == cwd or root.resolve() in cwd.parents:
            where = "the current directory" if root.resolve() == cwd else f"above the current directory ({cwd})"
            raise ConfigError(
                f"output_dir {output_dir} is {where}: a run's checkpoints, logs and TensorBoard runs/ would mix "
                "with everything else there. Name a directory of the run's own, e.g. --output_dir runs/my_run"
            )
        return cls(root, should_save=should_save)

    def exclusive(self) -> contextlib.AbstractContextManager:
        """Hold the directory's lock (`files.held_lock`) while the writing process trains: a second run into the
        same output_dir -- a job started twice, a relaunch while the first still runs -- refuses, naming the
        first, instead of deleting its files under it (overwrite) or interleaving two runs' checkpoints and log
        rows. The kernel releases the lock however the process ends; the other processes of a run hold none."""
        if not self.should_save:
            return contextlib.nullcontext()

        def busy(holder: str) -> ConfigError:
            return ConfigError(
                f"output_dir {self.root} is in use by another training run ({holder}, holding {self.lock}); "
                "wait for it to end (or stop it), then --resume it, or pass another --output_dir"
            )

        return held_lock(self.lock, busy)

    # --- the marker: what the run wrote here ---------------------------------------------------------

    def recorded(self) -> set[str]:
        """The names the marker lists (none without a readable marker: then nothing here is provably a run's)."""
        try:
            names = json.loads(self.marker.read_text(encoding="utf-8"))["entries"]
        except (OSError, ValueError, KeyError, TypeError):
            return set()
        return {name for name in names if isinstance(name, str)} if isinstance(names, list) else set()

    def record(self, *paths: Path) -> None:
        """List `paths` (entries of the run directory) in the marker before the run writes them. One that exists
        already and is not listed is someone else's (a user's file, a run older than the marker): it stays
        unlisted, so no run ever removes it."""
        if not self.should_save:
            return
        listed = self.recorded()
        new = {path.name for path in paths if path.name not in listed and not path.exists()}
        if new or not self.marker.exists():
            self._write_marker(listed | new)

    def record_run_files(self, tensorboard: bool) -> None:
        """List what every run writes here besides its checkpoints (each checkpoint-N is listed as it is staged)."""
        self.record(self.data_report, self.run_config, self.log, self.unreadable_images, self.staging, self.final,
                    *([self.tensorboard] if tensorboard else []))

    def _write_marker(self, names: set[str]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        write_json_atomically(self.marker, {
            "written_by": "sit-vqa train.py",
            "about": "the entries of this directory a sit-vqa run wrote, listed before it wrote them; a later "
                     "run removes only these (and their .partial temporaries) and refuses to mix with anything else",
            "entries": sorted(names),
        })

    def _is_recorded(self, name: str, listed: set[str]) -> bool:
        return name in _OWN or name in listed or temporary_of(name) in listed | {MARKER_NAME}

    def foreign_entries(self) -> list[Path]:
        """What the directory holds that no marker lists: a user's files, or a run older than the marker."""
        listed = self.recorded()
        return [path for path in self.entries() if not self._is_recorded(path.name, listed)]

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
        self.record(self.damaged)
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
        """A fresh run must not mix with anything else: refuse a directory holding an entry no marker lists (a
        user's file, a run older than the marker), with overwrite_output_dir too -- it replaces only a run's own
        files, and one foreign checkpoint-N would be taken for the new run's by rotation and --resume. Refuse a
        run's checkpoints unless overwrite (then they are removed). What a run that failed before its first
        checkpoint left (logs, reports, staging) is removed: there is nothing to keep. Then the marker is written,
        before anything else."""
        foreign = self.foreign_entries()
        if foreign:
            shown = ", ".join(path.name + ("/" if path.is_dir() else "") for path in foreign[:5])
            more = f" and {len(foreign) - 5} more" if len(foreign) > 5 else ""
            raise ConfigError(
                f"output_dir {self.root} holds files no sit-vqa run recorded writing there ({shown}{more}); a run "
                "never deletes or mixes with them, whatever overwrite_output_dir says. Pass another --output_dir, "
                "or move those files out of it (if they are a run from a sit-vqa version before the "
                f"{MARKER_NAME} marker, delete it yourself)"
            )
        checkpoints = sorted(self.checkpoints_newest_first()) + [p for p in [self.final] if p.exists()]
        if checkpoints and not overwrite:
            shown = ", ".join(p.name for p in checkpoints[:4])
            raise ConfigError(
                f"output_dir {self.root} already holds a run ({shown}); pass --resume to continue it, another "
                "--output_dir, or --overwrite_output_dir true to delete it and start over"
            )
        if not self.should_save:
            return
        leftovers = [path for path in self.entries() if path.name not in _OWN]
        for path in leftovers:
            remove(path)
        self._write_marker(set())
        if checkpoints:
            logger.info("overwrite_output_dir: removed the earlier run's files from %s", self.root)
        elif leftovers:
            logger.info("%s holds no checkpoint: removed what an earlier, failed run left (%s)", self.root,
                        ", ".join(p.name for p in leftovers))

    def clear_partial_writes(self) -> None:
        """Remove the temporaries of the run's atomic writes a killed process left (a kill during the final save
        leaves .final.<hex>.partial/, as large as a checkpoint). Called when a run claims or resumes the
        directory, before it writes anything: no other process of this run can be writing one yet."""
        if not self.should_save:
            return
        listed = self.recorded() | {MARKER_NAME}
        for path in self.entries():
            if temporary_of(path.name) in listed:
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
