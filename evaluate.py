"""Score VQA accuracy of a checkpoint (or of the base model alone) on the evaluation split; compare runs.

    python evaluate.py --config quickstart.yaml --checkpoint runs/quickstart/final    # -> runs/eval/quickstart-val/
    python evaluate.py --config quickstart.yaml --zero-shot                          # the base model, no training
    python evaluate.py --config vqa_sit.yaml --checkpoint runs/sit --limit 5000 --num-beams 5 --out runs/eval/sit
    python evaluate.py --compare runs/eval/zero-shot runs/eval/baseline runs/eval/sit runs/eval/mixed

An evaluation writes into --out: results.json (the official format, [{"question_id", "answer"}], which
`python -m sit_vqa.metrics.vqa` scores too), predictions.jsonl (per question: prompt, raw generation, parsed
description and answer, ground-truth answers, accuracy), report.json and report.md (overall, per answer type, per
question type, how often the outputs carried the "Answer:"/"Description:" markers, what the join dropped, settings).

--checkpoint takes a checkpoint directory or a run directory (its final/, else its latest checkpoint-N/).
The prompt follows the checkpoint's training mode (--prompt auto): the SIT instruction for sit and mixed, the
baseline instruction for baseline, multitask and zero-shot. Every output is split by the shared SIT parser; one
without an "Answer:" marker is still scored. --limit N scores a seeded sample of N questions (the config's
subset_seed): the same N picks the same questions for every run, so their reports can be compared.
Generation settings default to the config's per_device_eval_batch_size, generation_num_beams and
generation_max_new_tokens (64: room for "Description: <caption>\\nAnswer: <answer>"). Any other config key can
be overridden as on train.py, e.g. --eval_questions PATH.

--compare prints a markdown table of the runs' accuracies (overall and per answer type) with deltas against the
first run, and writes compare.md and compare.json into --out (default: the current directory). Runs scored on
different questions or with different metric versions are refused.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from sit_vqa.config import load_config
from sit_vqa.errors import SitVqaError
from sit_vqa.evaluation import (
    PROMPTS,
    SPLITS,
    EvalOptions,
    compare_markdown,
    compare_runs,
    run_evaluation,
    write_comparison,
)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python evaluate.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,  # unknown options are config overrides; never let them match ours by prefix
    )
    run = parser.add_argument_group("evaluate a checkpoint")
    run.add_argument("--config", help="YAML file, or the name of one in configs/ (data paths, generation defaults)")
    run.add_argument("--checkpoint", help="checkpoint or run directory; leave out (or --zero-shot) for the base model")
    run.add_argument("--zero-shot", action="store_true", help="evaluate the config's base model, untrained")
    run.add_argument("--split", choices=list(SPLITS), default="val",
                     help="val: the config's eval_* data; train: its train_* data (default: %(default)s)")
    run.add_argument("--limit", type=int, help="score a seeded sample of N questions (default: all)")
    run.add_argument("--out", help="output directory (default: runs/eval/<name>-<split>[-limit<N>])")
    run.add_argument("--prompt", choices=PROMPTS, default="auto",
                     help="instruction: auto follows the checkpoint's training mode (default: %(default)s)")
    run.add_argument("--batch-size", type=int, help="generation batch (default: per_device_eval_batch_size)")
    run.add_argument("--max-new-tokens", type=int, help="default: the config's generation_max_new_tokens")
    run.add_argument("--num-beams", type=int, help="default: the config's generation_num_beams (1: greedy)")
    run.add_argument("--legacy-metric", action="store_true",
                     help="the pre-2021 official evaluator, as LAVIS ships it (for numbers published from LAVIS)")
    run.add_argument("--device", help="e.g. cuda, cuda:1, cpu (default: cuda if available, else cpu)")
    run.add_argument("--name", help="the run's name in its report and in --compare tables")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    compare = parser.add_argument_group("compare evaluations")
    compare.add_argument("--compare", nargs="+", metavar="RUN_DIR",
                         help="evaluation directories (each with report.json); the first is the reference row")
    compare.add_argument("--names", nargs="+", help="row names, one per RUN_DIR (default: the runs' names)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (2: bad input, with the message on stderr)."""
    parser = make_parser()
    args, overrides = parser.parse_known_args(argv)
    try:
        if args.compare:
            _compare(parser, args, overrides)
        else:
            _evaluate(parser, args, overrides)
    except SitVqaError as error:  # bad config, data, checkpoint or reports: the message says what to fix
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


def _evaluate(parser: argparse.ArgumentParser, args: argparse.Namespace, overrides: list[str]) -> None:
    if not args.config:
        parser.error("--config is required to evaluate (or pass --compare RUN_DIR ...)")
    if args.zero_shot and args.checkpoint:
        parser.error("--zero-shot evaluates the base model: leave --checkpoint out")
    config = load_config(args.config, overrides, data_splits=("eval",))  # no training data needed
    options = EvalOptions(
        checkpoint=args.checkpoint, split=args.split, limit=args.limit, out_dir=args.out, prompt=args.prompt,
        batch_size=args.batch_size, max_new_tokens=args.max_new_tokens, num_beams=args.num_beams,
        legacy_metric=args.legacy_metric, device=args.device, name=args.name, progress=not args.no_progress,
    )
    run = run_evaluation(config, options)
    report = run.report
    types = ", ".join(f"{name} {value:.2f}" for name, value in report["perAnswerType"].items())
    print(f"{report['settings']['name']}: VQA accuracy {report['overall']:.2f} on {report['num_questions']} "
          f"questions ({types}); \"Answer:\" marker in {100 * report['answer_marker_rate']:.1f}% of outputs")
    print(f"wrote {', '.join(path.name for path in run.paths.values())} to {run.out_dir}")


def _compare(parser: argparse.ArgumentParser, args: argparse.Namespace, overrides: list[str]) -> None:
    if overrides:
        parser.error(f"--compare reads finished evaluations; unexpected arguments: {' '.join(overrides)}")
    comparison = compare_runs(args.compare, args.names)
    print(compare_markdown(comparison), end="")
    paths = write_comparison(comparison, args.out or ".")
    print(f"\nwrote {', '.join(str(path) for path in paths.values())}")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sys.exit(main())
