"""Benchmark (not a test): how long the demo takes to load a checkpoint and to answer one question.

    python train.py --config quickstart.yaml --output_dir /tmp/demo_run      # a quickstart checkpoint (CPU)
    python bench/bench_demo.py --checkpoint /tmp/demo_run [--repeats 5] [--max-new-tokens 64] [--device cpu]

Prints the load time (VqaDemo.load: manifest, base model, trained weights) and the median / min / max
latency of `ask` on a bundled sample image with the evaluation's generation defaults (greedy), first call
apart (it warms up allocations), plus the time to the first streamed token.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from sit_vqa.apps.demo import VqaDemo
from sit_vqa.modeling.generation import GenerationSettings

SAMPLE_IMAGE = Path(__file__).resolve().parent.parent / "data" / "sample" / "val2014" / "COCO_val2014_000000325422.jpg"
QUESTION = "What color is the shape?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--max-new-tokens", type=int, default=GenerationSettings.max_new_tokens)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    options = GenerationSettings(max_new_tokens=args.max_new_tokens)

    start = time.perf_counter()
    demo = VqaDemo.load(args.checkpoint, device=args.device)
    load_seconds = time.perf_counter() - start

    start = time.perf_counter()
    first = demo.ask(SAMPLE_IMAGE, QUESTION, options=options)
    first_seconds = time.perf_counter() - start
    latencies = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        demo.ask(SAMPLE_IMAGE, QUESTION, options=options)
        latencies.append(time.perf_counter() - start)
    start = time.perf_counter()
    stream = demo.stream(SAMPLE_IMAGE, QUESTION, options=options)
    next(stream)
    first_token_seconds = time.perf_counter() - start
    stream.close()  # stops the generation behind it

    tokens = len(demo.tokenizer(first.raw, add_special_tokens=False)["input_ids"])
    print(f"checkpoint {demo.source} on {args.device}")
    print(f"load: {load_seconds:.2f} s")
    print(f"first answer: {first_seconds * 1000:.0f} ms ({tokens} tokens generated, max {args.max_new_tokens})")
    print(f"answer latency over {args.repeats}: median {statistics.median(latencies) * 1000:.0f} ms, "
          f"min {min(latencies) * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms")
    print(f"first streamed token: {first_token_seconds * 1000:.0f} ms")


if __name__ == "__main__":
    main()
