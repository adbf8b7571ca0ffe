"""Prepare VQAv2 x COCO captions as baseline / SIT / mixed / multitask training records.

    python -m sit_vqa.apps.prepare \\
        --questions data/sample/v2_OpenEnded_mscoco_train2014_questions.json \\
        --annotations data/sample/v2_mscoco_train2014_annotations.json \\
        --captions data/sample/captions_train2014.json \\
        --image-dir data/sample/train2014 --out runs/sample_prepared --mode sit

Writes an HF `datasets` table (open it with `sit_vqa.data.prepared.load_prepared` or `datasets.load_from_disk`)
and join_report.json (what was read, dropped by reason, and written) into --out, and prints a summary.
The join options are `JoinOptions`' (the same declaration, defaults and checks as a train.py config);
train.py calls the same code (`prepare_cached`). Bad input ends with a one-paragraph error, exit status 2.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field, fields
from pathlib import Path

from transformers import HfArgumentParser

from sit_vqa.data.join import JoinOptions
from sit_vqa.data.prepared import prepare_dataset
from sit_vqa.errors import SitVqaError, unknown_options_message


@dataclass(frozen=True)
class PrepareArguments:
    """The files to join and where the result goes (the join's options are JoinOptions)."""

    questions: Path = field(metadata={"help": "v2_OpenEnded_mscoco_<split>_questions.json"})
    annotations: Path = field(metadata={"help": "v2_mscoco_<split>_annotations.json"})
    captions: Path = field(metadata={"help": "COCO captions_<split>.json"})
    image_dir: Path = field(metadata={"help": "folder of the COCO <split> images"})
    out: Path = field(metadata={"help": "output directory (dataset + join_report.json)"})


def make_parser() -> HfArgumentParser:
    return HfArgumentParser(
        (PrepareArguments, JoinOptions), prog="python -m sit_vqa.apps.prepare",
        description="Join VQAv2 questions/annotations with COCO captions and build SIT targets.",
        allow_abbrev=False,  # a mistyped flag is an error, never a prefix of another one
    )


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    try:
        files, options, unknown = parser.parse_args_into_dataclasses(
            args=argv, return_remaining_strings=True, look_for_args_file=False)
        if unknown:  # a typo in a flag: argparse's "error:" and exit 2, as for a missing one
            names = [f.name for section in (PrepareArguments, JoinOptions) for f in fields(section)]
            parser.error(unknown_options_message(unknown, names, "python -m sit_vqa.apps.prepare"))
        _, report = prepare_dataset(files.questions, files.annotations, files.captions, files.image_dir, files.out,
                                    options)
    except SitVqaError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{report.summary()}\n  saved to {files.out} (dataset + join_report.json)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
