"""Intra-op threads for the tiny models: steps/s of the quickstart's training with 1 and 2 threads, alone and
beside a second identical run (issue #28, item 8; the rule it supports: sit_vqa/modeling/threads.py).

    ../shared/tools/slot --both python bench/threads.py             # needs the whole machine: both cores
    python bench/threads.py --steps 200 --out /tmp/bench-threads

Each cell runs `train.py --config quickstart.yaml` for --steps steps in fresh processes (the quickstart's
sample is generated once, first) with OMP_NUM_THREADS set, and reads train_steps_per_second from each run's
train_log.jsonl. "beside a second run": two identical runs at once, each with that thread count (the mean of
the two is printed). Ratios are against 1 thread alone, measured in the same invocation.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _command(out: Path, steps: int, sample: Path) -> list[str]:
    return [sys.executable, "train.py", "--config", "quickstart.yaml", "--max_steps", str(steps), "--output_dir",
            str(out), "--sample_dir", str(sample), "--report_to", "none", "--disable_tqdm", "true",
            "--save_steps", str(steps + 1), "--logging_steps", str(steps)]


def steps_per_second(run_dir: Path) -> float:
    rows = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    return next(row["train_steps_per_second"] for row in rows if "train_steps_per_second" in row)


def run_cell(root: Path, threads: int, side_by_side: int, steps: int, sample: Path) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    runs = [root / f"t{threads}-x{side_by_side}-{i}" for i in range(side_by_side)]
    processes = [subprocess.Popen(_command(run, steps, sample), cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL) for run in runs]
    if any(process.wait() != 0 for process in processes):
        raise SystemExit(f"a training run failed: rerun {' '.join(_command(runs[0], steps, sample))}")
    return sum(steps_per_second(run) for run in runs) / len(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--out", default=None, help="scratch directory (default: a temporary one)")
    args = parser.parse_args()
    root = Path(args.out or tempfile.mkdtemp(prefix="bench-threads-"))
    sample = root / "sample"
    run_cell(root / "warmup", 1, 1, 2, sample)  # generates the sample once
    figures = {}
    for threads in (1, 2):
        for side_by_side in (1, 2):
            figures[(threads, side_by_side)] = run_cell(root, threads, side_by_side, args.steps, sample)
    reference = figures[(1, 1)]
    print(f"quickstart model, {args.steps} steps, {os.cpu_count()} cores; steps/s per run (ratio to 1 thread alone)")
    for (threads, side_by_side), rate in figures.items():
        where = "alone" if side_by_side == 1 else "beside a second run"
        print(f"  {threads} thread(s), {where:20s} {rate:6.2f} steps/s  ({rate / reference:.2f}x)")


if __name__ == "__main__":
    main()
