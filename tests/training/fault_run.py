"""A training run that stops dead at a chosen moment, for tests/test_faults.py to kill with SIGKILL.

    python tests/fault_run.py MOMENT --config CONFIG [--key value ...]      (cwd: the repository root)

MOMENT is `none` or `<where>@<step>[:rank<R>]`; at that moment the process writes its process id to
`<output_dir>/PAUSED` and sleeps, so the test can kill it from outside at exactly that point (no timing
involved). With `:rank<R>` (under torchrun) only the process of global rank R stops; the others go on:
    logged@N      just after the log row of step N was written (between saves)
    scheduler@N   while checkpoint-N is being saved: weights, manifest and optimizer written, not the rest
    publish@N     checkpoint-N complete in staging, not yet renamed into place
    final@N       final/ complete in staging, not yet renamed into place
    hold@N        like logged@N, but the run goes on once `<output_dir>/../CONTINUE` exists (outside the output
                  directory: the test may have made that read-only meanwhile)

Under torchrun every atomic write (a checkpoint, final/, a log or report file) that completes is appended to
`<output_dir>/../published.jsonl` as {"rank": global rank, "path": ...}, so a test can tell who wrote what.
"""

import json
import os
import sys
import time
from pathlib import Path

import torch
from transformers import TrainerCallback

from sit_vqa import files
from sit_vqa.config import load_config
from sit_vqa.errors import SitVqaError
from sit_vqa.samples.generated import ensure_config_sample
from sit_vqa.training.run import run_training


def pause(output_dir: Path) -> None:
    (output_dir / "PAUSED").write_text(f"{os.getpid()}\n")
    while True:  # until the test's SIGKILL
        time.sleep(1)


def hold(output_dir: Path) -> None:
    (output_dir / "PAUSED").write_text(f"{os.getpid()}\n")
    while not (output_dir.parent / "CONTINUE").exists():
        time.sleep(0.05)


class PauseAfterLog(TrainerCallback):
    def __init__(self, step: int, output_dir: Path, wait=pause):
        self.step, self.output_dir, self.wait = step, output_dir, wait

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.global_step == self.step and "loss" in (logs or {}):
            self.wait(self.output_dir)


def record_publishes(record: Path) -> None:
    real_publish = files._publish

    def publish(temporary, path):
        real_publish(temporary, path)
        with record.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps({"rank": int(os.environ["RANK"]), "path": str(path)}) + "\n")

    files._publish = publish


def main(moment: str, train_args: list[str]) -> None:
    assert train_args[0] == "--config", "the training arguments start with --config CONFIG"
    config = load_config(train_args[1], train_args[2:])
    ensure_config_sample(config)
    output_dir = Path(config.training.output_dir)
    if "RANK" in os.environ:
        record_publishes(output_dir.parent / "published.jsonl")
    callbacks = []
    moment, _, rank = moment.partition(":rank")
    if rank and rank != os.environ.get("RANK"):
        moment = "none"  # another process of the run stops
    if moment != "none":
        where, step = moment.split("@")
        if where in ("logged", "hold"):
            callbacks.append(PauseAfterLog(int(step), output_dir, pause if where == "logged" else hold))
        elif where == "scheduler":
            real_save = torch.save

            def save(obj, f, *args, **kwargs):
                if str(f).endswith(f"checkpoint-{step}/scheduler.pt"):
                    pause(output_dir)
                return real_save(obj, f, *args, **kwargs)

            torch.save = save
        elif where in ("publish", "final"):
            name = f"checkpoint-{step}" if where == "publish" else "final"
            real_publish = files._publish

            def publish(temporary, path):
                if Path(path).name == name:
                    pause(output_dir)
                return real_publish(temporary, path)

            files._publish = publish
    run_training(config, callbacks=callbacks)


if __name__ == "__main__":
    try:
        main(sys.argv[1], sys.argv[2:])
    except SitVqaError as error:  # as train.py does
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
