"""Data-pipeline throughput on one CPU core: decode + preprocess + collate, plain vs fast image pipeline.

    python bench/data_throughput.py [--images 64] [--rounds 5] [--workdir /tmp/sit_vqa_photos]

Inputs: procedural photo-like JPEGs at COCO size (640x480, quality 90; sit_vqa.samples.photo_like), written
once into --workdir. Target: the real InstructBLIP image size, BlipImageProcessorPil(size 224x224,
bicubic, CLIP mean/std: the processor's defaults, read by both pipelines).

Each contender runs over every image in one process with torch.set_num_threads(1), so samples/s is per
core. The contenders alternate within every round (the machine is shared and noisy); the report gives
each one's median round, and each ratio as the median over rounds of the ratio within a round (the two
sides of a ratio run seconds apart, under the same load):
- images plain / fast: decode + pixel_values + collate (torch.stack into batches of 16) -- the measure
  the issue gave (~126 samples/s plain on one core);
- sample plain / fast: the whole training sample: SampleTransform (read the file, pixel_values,
  tokenize a SIT instruction and target for the LM and the Q-Former) + SitCollator (batches of 16);
- decode full / draft: Image.open + decoding alone (full size; at the draft scale the fast path picks).
It also prints the largest and mean pixel_values difference of fast against plain over the images.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from PIL import Image
from transformers import BlipImageProcessorPil

from sit_vqa.modeling.collate import SampleTransform
from sit_vqa.modeling.builders_for_tests import write_photo_like_jpegs
from sit_vqa.modeling.images import image_transform
from sit_vqa.modeling.tiny import (
    IMAGE_TOKEN,
    build_tiny_qformer_tokenizer,
    build_tiny_word_tokenizer,
)

BATCH = 16
INSTRUCTION = "first describe the image, then answer the question based on the image. question: what color is the circle?"
TARGET = "description: a red circle and a blue square on a white background.\nanswer: red"


def sample_transform(image_processor, pipeline: str) -> SampleTransform:
    tokenizer = build_tiny_word_tokenizer(lm_kind="decoder")
    return SampleTransform(
        tokenizer=tokenizer, qformer_tokenizer=build_tiny_qformer_tokenizer(), image_processor=image_processor,
        num_query_tokens=32, image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN), image_pipeline=pipeline,
    )


def run_samples(transform: SampleTransform, paths: list[Path]) -> None:
    collate = transform.collator()
    records = [{"instruction": INSTRUCTION, "target": TARGET, "image_path": str(path)} for path in paths]
    for start in range(0, len(records), BATCH):
        collate([transform(record) for record in records[start:start + BATCH]])


def run_images(transform, paths: list[Path]) -> None:
    for start in range(0, len(paths), BATCH):
        pixels = []
        for path in paths[start:start + BATCH]:
            with Image.open(path) as image:
                pixels.append(transform(image))
        torch.stack(pixels)


def run_decode(paths: list[Path], draft_size: tuple[int, int] | None) -> None:
    for path in paths:
        with Image.open(path) as image:
            if draft_size:
                image.draft("RGB", draft_size)
            image.load()


def samples_per_second(function, count: int) -> float:
    start = time.perf_counter()
    function()
    return count / (time.perf_counter() - start)


def pixel_differences(image_processor, paths: list[Path]) -> tuple[float, float]:
    plain, fast = image_transform(image_processor, "plain"), image_transform(image_processor, "fast")
    largest, means = 0.0, []
    for path in paths:
        with Image.open(path) as first, Image.open(path) as second:
            difference = (plain(first) - fast(second)).abs()
        largest = max(largest, difference.max().item())
        means.append(difference.mean().item())
    return largest, statistics.fmean(means)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--size", type=int, default=224, help="processor size (224: the real InstructBLIP's)")
    parser.add_argument("--workdir", default="/tmp/sit_vqa_photos")
    args = parser.parse_args(argv)

    torch.set_num_threads(1)
    paths = write_photo_like_jpegs(args.workdir, args.images, seed=0)
    image_processor = BlipImageProcessorPil(size={"height": args.size, "width": args.size})
    draft_size = (args.size, args.size)
    n = len(paths)
    plain_sample, fast_sample = sample_transform(image_processor, "plain"), sample_transform(image_processor, "fast")
    contenders = {
        "images plain": lambda: run_images(image_transform(image_processor, "plain"), paths),
        "images fast": lambda: run_images(image_transform(image_processor, "fast"), paths),
        "sample plain": lambda: run_samples(plain_sample, paths),
        "sample fast": lambda: run_samples(fast_sample, paths),
        "decode full": lambda: run_decode(paths, None),
        "decode draft": lambda: run_decode(paths, draft_size),
    }
    for function in contenders.values():  # warm-up: imports, caches
        function()
    rates: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(args.rounds):
        for name, function in contenders.items():
            rates[name].append(samples_per_second(function, n))
    median = {name: statistics.median(values) for name, values in rates.items()}

    with Image.open(paths[0]) as image:
        source = f"{image.width}x{image.height} JPEG"
    print(f"{n} photo-like {source}s (quality 90) -> {args.size}x{args.size}, 1 thread, "
          f"median of {args.rounds} interleaved rounds")
    for name, value in median.items():
        spread = f"{min(rates[name]):.0f}-{max(rates[name]):.0f}"
        print(f"  {name:<13} {value:7.1f} samples/s  (rounds {spread})")
    for fast, plain in (("images fast", "images plain"), ("sample fast", "sample plain"), ("decode draft", "decode full")):
        ratios = [f / p for f, p in zip(rates[fast], rates[plain])]
        print(f"ratio {fast} / {plain}: {statistics.median(ratios):.2f}x (rounds {min(ratios):.2f}-{max(ratios):.2f})")
    largest, mean = pixel_differences(image_processor, paths)
    print(f"pixel_values fast vs plain: max |diff| {largest:.4f}, mean |diff| {mean:.4f} "
          f"(normalised units; one 0-255 level is {1 / 255 / max(image_processor.image_std):.4f}"
          f"-{1 / 255 / min(image_processor.image_std):.4f})")


if __name__ == "__main__":
    main()
