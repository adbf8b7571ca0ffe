"""Fine-tune InstructBLIP's Q-Former with sequential instruction tuning (or a causal LM on text-only SIT).

    python train.py --config quickstart.yaml          # CPU, generated sample data, tiny model, a few minutes
    python train.py --config vqa_sit.yaml             # the paper's recipe on one GPU (real COCO + VQAv2 files)
    python train.py --config vqa_sit.yaml --learning_rate 2e-5 --output_dir runs/sit_lr2e-5
    python train.py --config vqa_sit.yaml --resume    # continue from the latest complete checkpoint
    accelerate launch --num_processes 8 train.py --config vqa_sit.yaml    # or: torchrun --nproc_per_node 8 train.py ...

A bare config name is looked up in configs/. Every YAML key (model, data and transformers
TrainingArguments settings) can be overridden as `--key value`; `python train.py --help` lists them all.
"""

from __future__ import annotations

import argparse
import logging
import sys

from transformers import HfArgumentParser

from sit_vqa.config import SECTIONS, HelpFormatter, load_config
from sit_vqa.errors import SitVqaError
from sit_vqa.samples.generated import ensure_config_sample
from sit_vqa.modeling.families import model_family
from sit_vqa.training.run import run_training


def make_parser() -> HfArgumentParser:
    parser = HfArgumentParser(SECTIONS, description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--config", help="YAML file, or the name of one in configs/ (e.g. vqa_sit.yaml)")
    return parser


def main(argv: list[str] | None = None):
    argv = sys.argv[1:] if argv is None else argv
    if "-h" in argv or "--help" in argv:
        make_parser().print_help()
        return None
    config_arg = argparse.ArgumentParser(add_help=False)
    config_arg.add_argument("--config")
    known, overrides = config_arg.parse_known_args(argv)
    config = load_config(known.config, overrides)
    ensure_config_sample(config)  # a config with sample_dir: its sample, generated on first use
    final = run_training(config)
    if config.training.should_save:
        print(f"\ncheckpoint: {final}")
        print(f"score it:   {score_command(known.config, final, config.model.model_type)}")
    return final


def score_command(config_arg: str | None, final, model_type: str) -> str:
    """The one command that scores the checkpoint: evaluate.py on VQAv2 (image model), or on the held-out text
    records (text-only: ROUGE-L, chrF and the exact repeat/translate-then-answer shares)."""
    config_part = f"--config {config_arg} " if config_arg else ""
    task_part = "" if model_family(model_type).answers_images else " --task text"  # its default too; said, to be plain
    return f"python evaluate.py {config_part}--checkpoint {final}{task_part}"


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        main()
    except SitVqaError as error:  # bad config, data or checkpoint: the message says what to fix
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
