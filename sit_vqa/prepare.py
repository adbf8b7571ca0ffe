"""Prepare VQAv2 x COCO captions as baseline / SIT / mixed / multitask training records.

    python -m sit_vqa.prepare \\
        --questions data/sample/v2_OpenEnded_mscoco_train2014_questions.json \\
        --annotations data/sample/v2_mscoco_train2014_annotations.json \\
        --captions data/sample/captions_train2014.json \\
        --image-dir data/sample/train2014 --out runs/sample_prepared --mode sit

Writes an HF `datasets` table (open it with `sit_vqa.data.join.load_prepared` or `datasets.load_from_disk`)
and join_report.json (what was read, dropped by reason, and written) into --out, and prints a summary.
train.py calls the same code (`prepare_cached`). Bad input ends with a one-paragraph error, exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from pathlib import Path

import yaml

from sit_vqa.data.join import (
    CAPTION_POLICIES,
    MODES,
    JoinOptions,
    load_prepared,
    prepare_cached,
    prepare_dataset,
)
from sit_vqa.data.templates import Templates, check_parsable
from sit_vqa.data.vqav2 import ANSWER_POLICIES
from sit_vqa.errors import ConfigError, SitVqaError

__all__ = ["JoinOptions", "load_prepared", "main", "make_parser", "prepare_cached", "prepare_dataset"]


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sit_vqa.prepare",
        description="Join VQAv2 questions/annotations with COCO captions and build SIT targets.",
    )
    inputs = parser.add_argument_group("inputs (official file formats)")
    inputs.add_argument("--questions", required=True, type=Path, help="v2_OpenEnded_mscoco_<split>_questions.json")
    inputs.add_argument("--annotations", required=True, type=Path, help="v2_mscoco_<split>_annotations.json")
    inputs.add_argument("--captions", required=True, type=Path, help="COCO captions_<split>.json")
    inputs.add_argument("--image-dir", required=True, type=Path, help="folder of the COCO <split> images")
    parser.add_argument("--out", required=True, type=Path, help="output directory (dataset + join_report.json)")
    parser.add_argument("--mode", choices=MODES, default="sit",
                        help="records to build: baseline (answer only), sit (description then answer), mixed "
                             "(baseline + SIT forms), multitask (baseline + separate describe records); default sit")
    parser.add_argument("--caption-policy", choices=CAPTION_POLICIES, default="first",
                        help="caption per question: first, random (seeded), longest, or all (one record per "
                             "caption); default first")
    parser.add_argument("--answer-policy", choices=ANSWER_POLICIES, default="multiple_choice_answer",
                        help="target answer: VQAv2's multiple_choice_answer (default) or the most frequent of "
                             "the annotators' answers (ties: lexicographically smallest)")
    subset = parser.add_mutually_exclusive_group()
    subset.add_argument("--subset-questions", type=int, metavar="N", help="a seeded sample of N questions")
    subset.add_argument("--subset-images", type=int, metavar="N",
                        help="a seeded sample of N images, with all their questions")
    parser.add_argument("--seed", type=int, default=0, help="seed for subsets, random captions, mixed (default 0)")
    parser.add_argument("--mixed-sit-fraction", type=float, default=1.0, metavar="F",
                        help="mode mixed: every question gets its baseline record and a seeded fraction F also "
                             "its SIT record (default 1.0: both forms of every question)")
    parser.add_argument("--check-images", action="store_true",
                        help="drop (and count) questions whose image file is missing or cannot be decoded")
    parser.add_argument("--templates", type=Path, metavar="YAML",
                        help="YAML mapping overriding templates (keys: "
                             + ", ".join(f.name for f in fields(Templates)) + "; fields {question} {caption} {answer})")
    return parser


def options_from_args(args: argparse.Namespace) -> JoinOptions:
    return JoinOptions(
        mode=args.mode,
        caption_policy=args.caption_policy,
        answer_policy=args.answer_policy,
        subset_questions=args.subset_questions,
        subset_images=args.subset_images,
        seed=args.seed,
        check_images=args.check_images,
        mixed_sit_fraction=args.mixed_sit_fraction,
        templates=read_templates(args.templates) if args.templates else Templates(),
    )


def read_templates(path: Path) -> Templates:
    """Templates from a YAML mapping of Templates field names to format strings."""
    try:
        overrides = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"cannot read templates file {path}: {error}") from None
    allowed = {f.name for f in fields(Templates)}
    if not isinstance(overrides, dict) or set(overrides) - allowed:
        unknown = sorted(set(overrides) - allowed) if isinstance(overrides, dict) else overrides
        raise ConfigError(f"{path}: expected a mapping with keys among {sorted(allowed)}; got {unknown!r}")
    try:
        templates = Templates(**overrides)
        check_parsable(templates)
        return templates
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{path}: {error}") from None


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        options = options_from_args(args)
        _, report = prepare_dataset(args.questions, args.annotations, args.captions, args.image_dir, args.out, options)
    except SitVqaError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{report.summary()}\n  saved to {args.out} (dataset + join_report.json)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
