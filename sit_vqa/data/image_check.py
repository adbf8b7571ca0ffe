"""Checks of the image files behind a join: a cheap existence count (always), or decoding every image and
dropping the questions whose file is missing or unreadable (`check_images`), counted by reason."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
from PIL import Image

from sit_vqa.errors import DataError

logger = logging.getLogger(__name__)

EXAMPLES_PER_REASON = 5


def count_missing_images(images, image_dir: Path, report) -> None:
    """`images` is the join's ImageBank, `report` its JoinReport. Without check_images, a cheap existence check (a stat per image, ~0.4 s for VQAv2 train): a wrong image
    directory is an error at once, not a failure hours into training; a few missing files are counted."""
    paths = images.paths.to_pylist()
    missing = len(paths) - sum(_existing(paths, image_dir))
    if paths and missing == len(paths):
        raise DataError(
            f"none of the {len(paths)} image files exist in {image_dir} (e.g. {paths[0]}); pass the directory that "
            "holds the images named in the captions file's file_name (COCO 2014: COCO_train2014_000000000009.jpg)"
        )
    report.image_files_missing_unchecked = missing
    if missing:
        logger.warning("%d of %d image files do not exist in %s; their questions are kept (training would fail on "
                       "them): use --check-images / check_images to drop and count them", missing, len(paths), image_dir)


def _existing(paths: list[str], image_dir: Path) -> list[bool]:
    """Which paths are files. One directory listing instead of a stat per image (0.09 s against 0.26 s for
    VQAv2 train's 82,783 images); paths outside the directory itself are stat-ed."""
    directory = str(image_dir.resolve()) + os.sep
    listed = {entry.name for entry in os.scandir(image_dir) if entry.is_file()}
    return [
        path[len(directory):] in listed if path.startswith(directory) and os.sep not in path[len(directory):]
        else os.path.isfile(path)
        for path in paths
    ]


def drop_bad_images(joined: pa.Table, images, report) -> pa.Table:
    """Drop the questions whose image file is missing or cannot be decoded; count them by reason."""
    problems = np.full(len(images.image_ids), "", dtype=object)
    examples: dict[str, list[str]] = {"image_missing": [], "image_unreadable": []}
    for index, path in enumerate(images.paths.to_pylist()):
        if not os.path.isfile(path):
            reason, example = "image_missing", path
        else:
            error = _unreadable_reason(path)
            if error is None:
                continue
            reason, example = "image_unreadable", f"{path} ({error})"
        problems[index] = reason
        if len(examples[reason]) < EXAMPLES_PER_REASON:
            examples[reason].append(example)
    report.images_checked = len(images.image_ids)
    question_problems = problems[images.by_question]
    for reason, reason_examples in examples.items():
        report.dropped[reason] += int((question_problems == reason).sum())
        if reason_examples:
            report.drop_examples[reason] = reason_examples
    kept = joined.filter(pa.array(question_problems == ""))
    if kept.num_rows == 0:
        example = (examples["image_missing"] + examples["image_unreadable"])[0]
        raise DataError(
            f"no questions left after dropping those with bad image files (image_missing "
            f"{report.dropped['image_missing']}, image_unreadable {report.dropped['image_unreadable']} questions), "
            f"e.g. {example}; check --image-dir: it should hold the images named in the captions file"
        )
    return kept


def _unreadable_reason(path: str) -> str | None:
    """Why an image file cannot be decoded, or None when it can."""
    try:
        with Image.open(path) as image:
            image.draft("RGB", (64, 64))  # JPEG: decode at reduced scale -- still reads the whole stream
            image.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        return f"{type(error).__name__}: {error}"
    return None
