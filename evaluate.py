"""Score a checkpoint (or the base model alone) on VQAv2 or another evaluation set (--task); compare runs.

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

--task picks the set (default: vqa, the config's eval_* VQAv2 split; text, its held-out eval_text_data, for a
causal_lm config); each writes the same four kinds of files, its results in the set's official format
(sit_vqa.evaluation.sets, .vqa and .text have the details):

    python evaluate.py --config quickstart.yaml --zero-shot --task okvqa --task-data data/okvqa_sample \\
        --eval_captions data/sample/captions_val2014.json --eval_image_dir data/sample/val2014
    python evaluate.py --config quickstart.yaml --zero-shot --task gqa \\
        --task-data data/gqa_sample/testdev_balanced_questions.json --image-dir data/gqa_sample/images
    python evaluate.py --config quickstart.yaml --zero-shot --task xgqa --task-data data/xgqa_sample \\
        --image-dir data/gqa_sample/images --translate-first
    python evaluate.py --config text_sit.yaml --checkpoint runs/text_sit --task xquad --task-data data/xquad_sample
    python evaluate.py --config text_sit.yaml --checkpoint runs/text_sit --task text   # the held-out eval_text_data

Every set on several processes (one per GPU, or CPU processes with --device cpu): launch the command with torchrun
or accelerate launch. Each process generates its share of the batches, the first one scores and writes; the
files are those of a one-process run with the same --batch-size (each batch is one a single process makes):

    torchrun --nproc_per_node 8 evaluate.py --config vqa_sit.yaml --checkpoint runs/vqa_sit --out runs/eval/sit
    accelerate launch --num_processes 8 evaluate.py --config vqa_sit.yaml --checkpoint runs/vqa_sit --out ...

Outputs are appended to OUT/partial/ (rank-R.jsonl, one line per question, on disk batch by batch) while they
are made. A run of any set that dies (crash, kill, preemption) is continued by running the same command again: what is
on disk is kept, the rest is generated, and the files are those an uninterrupted run writes; the number of
processes may differ. A rerun with other settings (checkpoint, split, --limit, prompt, --batch-size,
--max-new-tokens, --num-beams, data) is refused with the settings that differ; --restart discards the partial
outputs. OUT/partial/ is removed once the report is written. A finished evaluation is never replaced by one with
other settings (refused, naming them; the default folder names carry the prompt, the prompt variant, the metric and
the limit, so two evaluations of one checkpoint do not share one), and one evaluation at a time writes into an OUT
(a second one refuses, naming the first one's pid).

--compare prints a markdown table of the runs' scores (overall and the set's columns: per answer type, per
language, ...) with deltas against the first run, and writes compare.md and compare.json into --out (default:
compare-<name>-<name>... beside the first run's folder, e.g. runs/eval/compare-zero-shot-sit/). Runs of different
tasks, on different questions or with different metric versions are refused; a run whose checkpoint was loaded
partially (--allow-partial-load) is marked "(partial load)" in the table.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

from transformers import HfArgumentParser

from sit_vqa.config import CommandLine, HelpFormatter, load_config
from sit_vqa.errors import SitVqaError
from sit_vqa.evaluation.options import EvalOptions, TaskOptions, config_overrides
from sit_vqa.evaluation.reports import compare_markdown, compare_runs, default_compare_dir, write_comparison
from sit_vqa.evaluation.runner import run_evaluation
from sit_vqa.samples.generated import ensure_config_sample


@dataclass(frozen=True)
class CommandArguments:
    """What this command line adds to EvalOptions: the config to read, or runs to compare."""

    config: str | None = field(default=None, metadata={
        "help": "YAML file, or the name of one in configs/ (data paths, generation defaults)"})
    zero_shot: bool = field(default=False, metadata={"help": "evaluate the config's base model, untrained"})
    compare: list[str] | None = field(default=None, metadata={
        "metavar": "RUN_DIR", "help": "evaluation directories (each with report.json); the first is the reference row"})
    names: list[str] | None = field(default=None, metadata={
        "help": "row names for --compare, one per RUN_DIR (default: the runs' names)"})


# an unknown flag here may be a typo of one of evaluate.py's own options as well as of a config key
EVALUATE_COMMAND = CommandLine(
    help="python evaluate.py --help lists its options, python train.py --help the config keys it also takes",
    options=tuple(f.name for section in (CommandArguments, EvalOptions, TaskOptions)
                  for f in dataclasses.fields(section)),
)


def make_parser() -> HfArgumentParser:
    return HfArgumentParser(
        (CommandArguments, EvalOptions, TaskOptions), prog="python evaluate.py", description=__doc__,
        formatter_class=HelpFormatter,
        allow_abbrev=False,  # unknown options are config overrides; never let them match ours by prefix
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (2: bad input, with the message on stderr)."""
    parser = make_parser()
    try:
        command, options, task, overrides = parser.parse_args_into_dataclasses(
            args=argv, return_remaining_strings=True, look_for_args_file=False
        )
        if command.compare:
            _compare(parser, command, options, task, overrides)
        else:
            _evaluate(parser, command, options, task, overrides)
    except SitVqaError as error:  # bad config, data, checkpoint or reports: the message says what to fix
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


def _evaluate(parser, command: CommandArguments, options: EvalOptions, task: TaskOptions, overrides: list[str]) -> None:
    if not command.config:
        parser.error("--config is required to evaluate (or pass --compare RUN_DIR ...)")
    if command.zero_shot and options.checkpoint:
        parser.error("--zero-shot evaluates the base model: leave --checkpoint out")
    # no training data needed; the user's overrides come last and win over the task's
    config = load_config(command.config, config_overrides(task) + overrides, data_roles=("eval",),
                         command=EVALUATE_COMMAND)
    ensure_config_sample(config)  # a config with sample_dir: its sample, generated on first use
    run = run_evaluation(config, options, task)
    if run.report is None:  # a process of a multi-process run other than the first: that one reports
        return
    if run.reused:
        print(f"continued an interrupted run: {run.reused} of {run.report['num_questions']} questions were "
              f"already generated in {run.out_dir / 'partial'}")
    print(run.summary)
    print(f"wrote {', '.join(path.name for path in run.paths.values())} to {run.out_dir}")


def _compare(parser, command: CommandArguments, options: EvalOptions, task: TaskOptions,
             overrides: list[str]) -> None:
    if overrides:
        parser.error(f"--compare reads finished evaluations; unexpected arguments: {' '.join(overrides)}")
    # --compare uses --names and --out only: any other option would be silently ignored
    ignored = [f"--{f.name.replace('_', '-')}" for section in (command, options, task) for f in dataclasses.fields(section)
               if f.name not in ("compare", "names", "out_dir") and getattr(section, f.name) != f.default]
    if ignored:
        parser.error(f"--compare reads finished evaluations and takes only --names and --out; it would ignore "
                     f"{', '.join(ignored)}: leave {'them' if len(ignored) > 1 else 'it'} out (to evaluate, run "
                     "without --compare)")
    comparison = compare_runs(command.compare, command.names)
    print(compare_markdown(comparison), end="")
    paths = write_comparison(comparison, options.out_dir or default_compare_dir(command.compare, comparison))
    print(f"\nwrote {', '.join(str(path) for path in paths.values())}")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sys.exit(main())
