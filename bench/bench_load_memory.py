"""Peak CPU memory of loading the base model for training: a CPU copy then a move (before) vs straight onto
the device in the frozen dtype (after).

    python bench/bench_load_memory.py                  # ~1.08 B-parameter Vicuna-7B replica, bf16, cuda if present
    python bench/bench_load_memory.py --layers 3 --device cpu

Writes a replica of Salesforce/instructblip-vicuna-7b (`sit_vqa.modeling.replicas.save_replica`, hidden 2048, 5
layers: 1.08 B random parameters, fp32 on disk like the hub's current files) into a temporary directory under
/tmp, deleted afterwards. Each variant runs in a fresh process and reports its peak RSS (VmHWM: file pages
of the memory-mapped safetensors included -- page cache that ranks on one machine share) and its peak
anonymous memory (RssAnon, sampled every 2 ms: what each rank holds on its own):

    before  load_instructblip(DIR, dtype=bf16), then model.to(device)   (run_training, then the Trainer's move)
    after   load_instructblip(DIR, dtype=bf16, device=device)          (run_training now)

On a CPU-only machine the device is the CPU and both variants end with the weights in RAM: the figures then
agree, and only a GPU run shows the difference.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, sys, threading, time, torch
from sit_vqa.modeling.loading import load_instructblip
directory, variant, device = sys.argv[1:4]

def status(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key)) / 2**20  # GiB

peak_anon = [status("RssAnon:")]
done = threading.Event()
def sample():
    while not done.is_set():
        peak_anon[0] = max(peak_anon[0], status("RssAnon:"))
        time.sleep(0.002)
sampler = threading.Thread(target=sample, daemon=True)
sampler.start()
start = time.perf_counter()
if variant == "before":
    model, _ = load_instructblip(directory, dtype=torch.bfloat16)
    model.to(device)
else:
    model, _ = load_instructblip(directory, dtype=torch.bfloat16, device=device)
seconds = time.perf_counter() - start
done.set(); sampler.join()
params = sum(p.numel() for p in model.parameters())
print(json.dumps({"variant": variant, "peak_rss_gib": status("VmHWM:"), "peak_anon_gib": max(peak_anon[0], status("RssAnon:")),
                  "seconds": seconds, "params": params, "device": str(next(model.parameters()).device)}))
"""


def run_variant(directory: Path, variant: str, device: str) -> dict:
    repo = Path(__file__).resolve().parent.parent
    result = subprocess.run([sys.executable, "-c", CHILD, str(directory), variant, device], cwd=repo,
                            capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": str(repo)})
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=2048)
    parser.add_argument("--layers", type=int, default=5)
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--dir", type=Path, help="an existing replica to load (kept); default: write one, then delete it")
    args = parser.parse_args(argv)
    import torch

    from sit_vqa.modeling.replicas import save_replica

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    root = None if args.dir else Path(tempfile.mkdtemp(prefix="sit_vqa_load_bench_", dir="/tmp"))
    try:
        directory = args.dir or save_replica("vicuna-7b", root / "vicuna-7b", hidden=args.hidden, layers=args.layers)
        size = sum(f.stat().st_size for f in directory.glob("*.safetensors")) / 2**30
        rows = [run_variant(directory, variant, device) for variant in ("before", "after")]
    finally:
        if root is not None:
            shutil.rmtree(root, ignore_errors=True)
    print(f"replica: {rows[0]['params'] / 1e9:.2f} B parameters, {size:.2f} GiB fp32 safetensors; bf16 load onto {device}")
    for row in rows:
        print(f"{row['variant']:>6}: peak RSS {row['peak_rss_gib']:5.2f} GiB, peak anonymous {row['peak_anon_gib']:5.2f} GiB, "
              f"{row['seconds']:.1f} s, weights on {row['device']}")
    before, after = rows
    print(f"ratio before/after: peak RSS {before['peak_rss_gib'] / after['peak_rss_gib']:.2f}x, "
          f"peak anonymous {before['peak_anon_gib'] / after['peak_anon_gib']:.2f}x")


if __name__ == "__main__":
    main()
