"""Prepare VQAv2 x COCO captions as baseline / SIT / mixed / multitask training records.

    python -m sit_vqa.apps.prepare \\
        --questions data/sample/v2_OpenEnded_mscoco_train2014_questions.json \\
        --annotations data/sample/v2_mscoco_train2014_annotations.json \\
        --captions data/sample/captions_train2014.json \\
        --image-dir data/sample/train2014 --out runs/sample_prepared --mode sit

Writes an HF `datasets` table (open it with `sit_vqa.data.prepared.load_prepared` or `datasets.load_from_disk`)
and join_report.json (what was read, dropped by reason, and written) into --out, and prints a summary.
With --format llamafactory|swift|trl|llava|lavis|seqins, --out instead gets the records in that framework's format
(sit_vqa.data.export_formats) with join_report.json beside them; --image-root makes the image paths relative.
The join options are `JoinOptions`' (the same declaration, defaults and checks as a train.py config);
train.py calls the same code (`prepare_cached`). Bad input ends with a one-paragraph error, exit status 2.
"""

from __future__ import annotations

import sys
import tempfile
from dataclasses import dataclass, field, fields
from pathlib import Path

from transformers import HfArgumentParser

from sit_vqa.data.export_formats import FORMATS, check_new_output, export_format, turns, write_export
from sit_vqa.data.join import JoinOptions
from sit_vqa.data.prepared import REPORT_FILE, prepare_dataset
from sit_vqa.errors import ConfigError, SitVqaError, unknown_options_message


@dataclass(frozen=True)
class PrepareArguments:
    """The files to join and where the result goes (the join's options are JoinOptions)."""

    questions: Path = field(metadata={"help": "v2_OpenEnded_mscoco_<split>_questions.json"})
    annotations: Path = field(metadata={"help": "v2_mscoco_<split>_annotations.json"})
    captions: Path = field(metadata={"help": "COCO captions_<split>.json"})
    image_dir: Path = field(metadata={"help": "folder of the COCO <split> images"})
    out: Path = field(metadata={"help": "output directory (dataset + join_report.json)"})


@dataclass(frozen=True)
class ExportArguments:
    """Write the records in another framework's training format instead of a `datasets` table."""

    format: str | None = field(default=None, metadata={
        "help": f"one of {', '.join(FORMATS)}: --out gets that framework's file (+ join_report.json)"})
    image_root: Path | None = field(default=None, metadata={
        "help": "with --format: write image paths relative to this folder (default: absolute paths)"})


SECTIONS = (PrepareArguments, JoinOptions, ExportArguments)


def make_parser() -> HfArgumentParser:
    return HfArgumentParser(
        SECTIONS, prog="python -m sit_vqa.apps.prepare",
        description="Join VQAv2 questions/annotations with COCO captions and build SIT targets.",
        allow_abbrev=False,  # a mistyped flag is an error, never a prefix of another one
    )


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    try:
        files, options, export, unknown = parser.parse_args_into_dataclasses(
            args=argv, return_remaining_strings=True, look_for_args_file=False)
        if unknown:  # a typo in a flag: argparse's "error:" and exit 2, as for a missing one
            names = [f.name for section in SECTIONS for f in fields(section)]
            parser.error(unknown_options_message(unknown, names, "python -m sit_vqa.apps.prepare"))
        if export.image_root is not None and export.format is None:  # never silently ignored
            raise ConfigError("--image-root applies to --format exports only; add --format or drop --image-root")
        if export.format is not None:
            return _export(files, options, export)
        _, report = prepare_dataset(files.questions, files.annotations, files.captions, files.image_dir, files.out,
                                    options)
    except SitVqaError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{report.summary()}\n  saved to {files.out} (dataset + join_report.json)")
    return 0


def _export(files: PrepareArguments, options: JoinOptions, export: ExportArguments) -> int:
    """The join, then the records in export.format; the checks that need no join come first."""
    export_format(export.format)
    check_new_output(files.out)
    with tempfile.TemporaryDirectory(prefix="sit_vqa_prepare_") as scratch:
        dataset, report = prepare_dataset(files.questions, files.annotations, files.captions, files.image_dir,
                                          Path(scratch) / "prepared", options)
        report_text = (Path(scratch) / "prepared" / REPORT_FILE).read_text()
        written = write_export(turns(dataset, export.image_root), export.format, files.out,
                               {REPORT_FILE: report_text})
    print(f"{report.summary()}\n  {export.format} records written to {written} (+ {REPORT_FILE})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
