"""Prepared datasets on disk: the join's records as a Hugging Face `datasets` table plus join_report.json,
written atomically (`prepare_dataset`), reopened memory-mapped (`load_prepared`), and cached under a key of
the inputs' identity and the join options (`prepare_cached`, what train.py calls)."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import datasets

from sit_vqa import __version__
from sit_vqa.data.coco import load_captions
from sit_vqa.data.join import (
    COLUMNS,
    FORMAT_VERSION,
    JoinOptions,
    JoinReport,
    join_records,
    require_image_dir,
)
from sit_vqa.data.vqav2 import read_annotations, read_questions
from sit_vqa.errors import DataError
from sit_vqa.files import atomic_path, gc_paused

logger = logging.getLogger(__name__)

REPORT_FILE = "join_report.json"


def prepare_dataset(
    questions_path: str | Path,
    annotations_path: str | Path,
    captions_path: str | Path,
    image_dir: str | Path,
    out_dir: str | Path,
    options: JoinOptions | None = None,
):
    """Read, join and build the records, then write `out_dir` atomically: the `datasets` table
    (`save_to_disk`) and join_report.json. Returns (datasets.Dataset loaded from out_dir, JoinReport).

    An existing `out_dir` is replaced only when it is empty or a previously prepared dataset.
    """
    options = options or JoinOptions()
    out_dir = Path(out_dir)
    _check_replaceable(out_dir)
    require_image_dir(image_dir)  # before the (long) read
    with gc_paused():
        questions = read_questions(questions_path)
        annotations = read_annotations(annotations_path, options.answer_policy)
        captions = load_captions(captions_path)
        table, report = join_records(questions, annotations, captions, image_dir, options)
        del questions, annotations, captions  # free the inputs before writing
    _save_atomically(table, report, out_dir)
    logger.info("%s\n  saved to %s", report.summary(), out_dir)
    return load_prepared(out_dir)


def _check_replaceable(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise DataError(f"output path {out_dir} is a file; pass a directory for the prepared dataset")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / REPORT_FILE).is_file():
        raise DataError(
            f"output directory {out_dir} exists and is not a prepared dataset (no {REPORT_FILE}); "
            f"refusing to overwrite it: pass a new or empty directory"
        )


def _save_atomically(table, report: JoinReport, out_dir: Path) -> None:
    """A crash never leaves a half-written dataset under out_dir (`atomic_path`)."""
    with atomic_path(out_dir) as staging:
        # An explicit fingerprint: otherwise datasets hashes the whole in-memory table to make one.
        fingerprint = hashlib.sha256(json.dumps(report.to_dict(), sort_keys=True).encode()).hexdigest()[:16]
        datasets.Dataset(table, fingerprint=fingerprint).save_to_disk(str(staging))
        (staging / REPORT_FILE).write_text(json.dumps(report.to_dict(), indent=2) + "\n")


def load_prepared(directory: str | Path):
    """Open a prepared dataset directory (memory-mapped): returns (datasets.Dataset, JoinReport)."""
    directory = Path(directory)
    report_path = directory / REPORT_FILE
    if not report_path.is_file():
        raise DataError(
            f"{directory} is not a prepared dataset (no {REPORT_FILE}); create it with "
            f"`python -m sit_vqa.apps.prepare ... --out {directory}`"
        )
    try:
        report = JoinReport.from_dict(json.loads(report_path.read_text()))
        dataset = datasets.load_from_disk(str(directory))
    except (ValueError, TypeError, OSError) as error:
        raise DataError(f"{directory}: the prepared dataset is damaged ({error}); prepare it again") from None
    missing = set(COLUMNS) - set(dataset.column_names)
    if missing:
        raise DataError(f"{directory}: the prepared dataset lacks columns {sorted(missing)}; prepare it again")
    return dataset, report


def cache_key(questions_path, annotations_path, captions_path, image_dir, options: JoinOptions) -> str:
    """A hash of the inputs' identity (resolved path, size, mtime_ns), the options and the record format."""
    inputs = {name: _file_identity(Path(path)) for name, path in
              (("questions", questions_path), ("annotations", annotations_path), ("captions", captions_path))}
    image_dir = Path(image_dir).resolve()
    # The image paths embed the directory; with image checks its contents matter too (mtime changes with them).
    inputs["image_dir"] = [str(image_dir), image_dir.stat().st_mtime_ns if options.check_images else None]
    payload = {"format": FORMAT_VERSION, "version": __version__, "inputs": inputs, "options": options.to_dict()}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


def _file_identity(path: Path) -> list:
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise DataError(f"input file not found: {path}") from None
    return [str(path.resolve()), stat.st_size, stat.st_mtime_ns]


def prepare_cached(
    questions_path: str | Path,
    annotations_path: str | Path,
    captions_path: str | Path,
    image_dir: str | Path,
    cache_root: str | Path,
    options: JoinOptions | None = None,
):
    """`prepare_dataset` into cache_root/<cache_key>, or reuse that directory when it exists.
    Returns (datasets.Dataset, JoinReport)."""
    options = options or JoinOptions()
    image_dir = require_image_dir(image_dir)
    out_dir = Path(cache_root) / cache_key(questions_path, annotations_path, captions_path, image_dir, options)
    if (out_dir / REPORT_FILE).is_file():
        logger.info("reusing the prepared dataset in %s (same inputs and options)", out_dir)
        return load_prepared(out_dir)
    return prepare_dataset(questions_path, annotations_path, captions_path, image_dir, out_dir, options)
