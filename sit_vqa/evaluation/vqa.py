"""The VQAv2-format sets (VQAv2, OK-VQA): records, scoring with the official metric, and `VqaSet`, their
`EvaluationSet` (`sit_vqa.evaluation.protocol`) that `sit_vqa.evaluation.runner` runs.

    python evaluate.py --config quickstart.yaml --checkpoint runs/quickstart/final --limit 50

- `load_eval_records` -- the split's questions joined with their images (the joiner, caption policy "first",
  one record per question), an optional seeded subset (`limit`), and the instruction of the chosen prompt:
  the SIT instruction for checkpoints trained in mode sit or mixed, the baseline one otherwise
  (`resolve_prompt`). The same `limit` and seed always pick the same questions. The training callback uses it.
- `score_generations` -- every output goes through the shared parser `parse_sit_output`: its answer is
  what gets scored (a baseline output has no marker and is its own answer); the official VQAv2 accuracy
  (`sit_vqa.metrics.vqa`) of those answers against the records' ten annotator answers.
- `VqaSet` -- the two as a set: its report (`sit_vqa.evaluation.reports.vqa_numbers`, through the protocol's
  `report` like every set's) names the split by the
  questions file's `data_subtype` (val2014 -> "val"), not by the config keys it was read through.

Generation length: `generation_max_new_tokens` of the config (64 by default), or `--max-new-tokens`. 64 tokens
hold "Description: <a COCO caption, ~11 words>\\nAnswer: <answer>" with room to spare; a baseline model stops
at its EOS after the answer, so the same budget costs it nothing (pass 10 to mirror LAVIS's VQA setting for
zero-shot rows that would otherwise ramble).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sit_vqa.config import DEFAULT_INSTRUCTION_POOL
from sit_vqa.data.coco import load_captions
from sit_vqa.data.join import DESCRIBE_KIND, JoinOptions, join_records
from sit_vqa.data.prepared import load_prepared
from sit_vqa.data.prompts import Templates, load_instruction_pool, parse_sit_output, resolve_prompt
from sit_vqa.data.vqav2 import read_annotations, read_questions
from sit_vqa.errors import ConfigError, EvaluationError
from sit_vqa.evaluation.options import SPLIT_ROLES, EvalOptions, TaskOptions
from sit_vqa.evaluation.protocol import EvaluationSet, Scored
from sit_vqa.evaluation.reports import report_markdown, set_report, vqa_numbers
from sit_vqa.metrics.sit import sit_figures
from sit_vqa.metrics.vqa import evaluate_vqa, question_accuracy

if TYPE_CHECKING:
    from sit_vqa.modeling.checkpoint import TrainedSettings

logger = logging.getLogger(__name__)

METRIC_VERSIONS = {False: "vqav2-official-2021", True: "vqav2-legacy-lavis"}


# ----------------------------------------------------------------------------------------------- records


@dataclass(frozen=True)
class EvalRecords:
    """The questions to answer: a `datasets.Dataset`, one record per question in file order, with the
    joiner's columns and "instruction" set to the prompt; and the join report (what was dropped and why)."""

    dataset: Any
    join_report: dict
    prompt: str


def load_eval_records(
    data, *, split: str = "val", prompt: str, templates: Templates | None = None,
    limit: int | None = None, seed: int = 0, phrasings: Sequence[str] = (),
) -> EvalRecords:
    """The records of `split` ("val": the config's eval_* keys or eval_dataset_dir; "train": train_*).

    `data` is the config's DataArguments. `limit` keeps a seeded sample of that many questions (file order
    kept; all of them when the split has fewer). `prompt` is "sit" or "baseline". `phrasings`: instruction
    templates over {question} to ask with instead of the templates' own (held-out ones), taken in turn.
    """
    if prompt not in ("sit", "baseline"):
        raise EvaluationError(f"prompt must be 'sit' or 'baseline' here, got {prompt!r}")
    if limit is not None and limit < 1:
        raise EvaluationError(f"limit must be a positive number of questions, got {limit}")
    templates = templates or Templates()
    table, join_report = _joined_questions(data, split, templates)
    rows = one_row_per_question(table)
    if limit is not None and limit < len(rows):
        rng = np.random.default_rng(seed)
        rows = rows[np.sort(rng.choice(len(rows), size=limit, replace=False))]
    table = _with_instructions(table.take(rows), templates, prompt, phrasings)
    return EvalRecords(datasets.Dataset(table), join_report, prompt)


def _joined_questions(data, split: str, templates: Templates):
    """(pyarrow table of joined records, join report dict) from a prepared directory or the raw files."""
    if split not in SPLIT_ROLES:
        raise EvaluationError(f"unknown split {split!r}; expected one of {', '.join(SPLIT_ROLES)}")
    prefix = SPLIT_ROLES[split]
    prepared = getattr(data, f"{prefix}_dataset_dir")
    if prepared:
        dataset, report = load_prepared(prepared)
        return dataset.with_format("arrow")[:], report.to_dict()
    raw = data.raw_files(prefix)
    if raw is None:
        raise ConfigError(
            f"no {split} data in the config: set {prefix}_questions, {prefix}_annotations, {prefix}_captions "
            f"and {prefix}_image_dir (or {prefix}_dataset_dir, a dataset prepared by `python -m sit_vqa.apps.prepare`)"
        )
    return join_eval_files(raw, data.answer_policy, data.check_images)


def join_eval_files(raw: Mapping[str, str], answer_policy: str = "multiple_choice_answer",
                    check_images: bool = False):
    """(pyarrow table, join report dict) of raw VQAv2-format files {questions, annotations, captions, image_dir}
    joined for evaluation: one record per question, its first caption (only a custom template would show it);
    the prompt comes later. The lmms-eval task reads its questions through here too (the same questions)."""
    options = JoinOptions(mode="baseline", caption_policy="first", answer_policy=answer_policy,
                          check_images=check_images)
    table, report = join_records(
        read_questions(raw["questions"]), read_annotations(raw["annotations"], answer_policy),
        load_captions(raw["captions"]), raw["image_dir"], options,
    )
    return table, report.to_dict()


def one_row_per_question(table) -> np.ndarray:
    """Rows of the first record of each question, in table order (prepared datasets may hold a question
    twice -- mixed mode, caption policy "all" -- and "describe" records, which are not questions)."""
    question_ids = table["question_id"].to_numpy()
    is_question = pc.not_equal(table["kind"], DESCRIBE_KIND).to_numpy()
    rows = np.flatnonzero(is_question)
    _, first = np.unique(question_ids[rows], return_index=True)
    rows = rows[np.sort(first)]
    if not len(rows):
        raise EvaluationError("the evaluation data holds no questions (only describe records)")
    return rows


def _with_instructions(table, templates: Templates, prompt: str, phrasings: Sequence[str] = ()):
    """The table with "instruction" rendered for `prompt` from each record's question (and caption, should a
    custom template use it; never the answer); with `phrasings`, question i is asked with phrasing i mod n
    (every phrasing on a share of the questions, the same ones in every run)."""
    questions = table["question"].to_pylist()
    captions = table["caption"].to_pylist()
    if phrasings:
        instructions = [phrasings[i % len(phrasings)].format(question=q) for i, q in enumerate(questions)]
    else:
        instructions = [templates.render(prompt, question=q, caption=c)[0] for q, c in zip(questions, captions)]
    index = table.schema.get_field_index("instruction")
    return table.set_column(index, "instruction", pa.array(instructions, pa.string()))


# ----------------------------------------------------------------------------------------------- scoring


@dataclass
class ScoredGenerations:
    """The official metric's view of VQA generations: per-question rows (predictions.jsonl), the official
    results list and the official metric. What the in-training evaluation logs; `VqaSet.score` makes the
    protocol's `Scored` of it."""

    predictions: list[dict]
    results: list[dict]
    metrics: dict  # overall, perAnswerType, perQuestionType (percentages, official rounding)
    metric_version: str


def score_generations(records, generations: Sequence[str], legacy: bool = False) -> ScoredGenerations:
    """Parse every generation into (description, answer) and score the answers.

    `records`: mappings with question_id, question, answers (the annotators' answers), answer_type and
    question_type (image_id, image_path and instruction are copied along when present).
    """
    if len(records) != len(generations):
        raise EvaluationError(f"{len(generations)} generations for {len(records)} questions")
    predictions, results, annotations = [], [], []
    for record, text in zip(records, generations, strict=True):
        parsed = parse_sit_output(text)
        gt_answers = list(record["answers"])
        predictions.append({
            "question_id": record["question_id"],
            "image_id": record.get("image_id"),
            "image_path": record.get("image_path"),
            "question": record["question"],
            "prompt": record.get("instruction"),
            "generation": text,
            "description": parsed.description,
            "answer": parsed.answer,
            "has_answer_marker": parsed.has_answer_marker,
            "gt_answers": gt_answers,
            "answer_type": record["answer_type"],
            "question_type": record["question_type"],
            "accuracy": question_accuracy(parsed.answer, gt_answers, legacy=legacy),
        })
        results.append({"question_id": record["question_id"], "answer": parsed.answer})
        annotations.append({
            "question_id": record["question_id"], "answer_type": record["answer_type"],
            "question_type": record["question_type"],
            "answers": [{"answer": answer, "answer_id": i} for i, answer in enumerate(gt_answers, 1)],
        })
    metrics = evaluate_vqa(None, annotations, results, legacy=legacy)
    metrics.pop("perQuestion")  # predictions carry the unrounded per-question accuracy
    return ScoredGenerations(predictions, results, metrics, METRIC_VERSIONS[legacy])


# ---------------------------------------------------------------------------------------------- the set


class VqaSet(EvaluationSet):
    """VQAv2 (the config's eval_* or train_* data, --split) or OK-VQA (its two files as the eval data)."""

    takes_images, score_name = True, "VQA accuracy"
    reads = frozenset({"split", "legacy_metric", "prompt_variant"})

    def __init__(self, task: TaskOptions, options: EvalOptions, config):
        self.task = task.task  # "vqa" or "okvqa": reports of the two are never compared
        self.split = options.split
        self.limit = options.limit
        self.legacy = options.legacy_metric
        self.prompt_variant = options.prompt_variant
        self.metric = METRIC_VERSIONS[self.legacy]
        self.join_report: dict = {}
        self.references: dict[int, list[str]] | None = None  # each image's captions, for the SIT figures

    def key(self, record: Mapping) -> int:
        return record["question_id"]

    def prompt(self, requested: str, trained: TrainedSettings) -> str:
        return resolve_prompt(requested, trained.mode)

    def records(self, prompt: str, trained: TrainedSettings, config):
        """The joined questions as a `datasets.Dataset` (columns read without decoding every row)."""
        phrasings = held_out_phrasings(config, prompt) if self.prompt_variant == "held-out" else ()
        records = load_eval_records(config.data, split=self.split, prompt=prompt, templates=trained.templates,
                                    limit=self.limit, seed=config.data.subset_seed, phrasings=phrasings)
        self.join_report = records.join_report
        raw = config.data.raw_files(SPLIT_ROLES[self.split])
        # the references are every caption of the image (the join kept one); a prepared dataset has no file
        self.references = load_captions(raw["captions"]).by_image if raw else None
        return records.dataset

    def score(self, records, generations: Sequence[str]) -> Scored:
        scored = score_generations(records, generations, legacy=self.legacy)
        return Scored(scored.predictions, {"results.json": scored.results}, vqa_numbers(scored, self.join_report),
                      [prediction["question_id"] for prediction in scored.predictions])

    def settings(self) -> dict:
        subtype = self.join_report.get("data_subtype")
        # the files say which split they hold (data_subtype "val2014"); --split only names the config keys
        # they were read through, and eval_* keys may well point at train2014 files
        return {"split": self.split, "config_keys": f"{SPLIT_ROLES[self.split]}_*", "data_split": split_name(subtype),
                "data_subtype": subtype, "legacy_metric": self.legacy, "prompt_variant": self.prompt_variant}

    def report(self, scored: Scored, settings: Mapping) -> dict:
        # the protocol's report, whose task is "vqa" for OK-VQA too: both write VQA reports (what the export's
        # model card and --compare read); their question sets tell them apart
        report = set_report("vqa", self.score_name, self.metric, scored.numbers, scored.question_keys, settings)
        report["sit"] = sit_figures(scored.predictions, self.references)
        return report

    def markdown(self, report: Mapping) -> str:
        return report_markdown(report)

    def summary(self, report: Mapping) -> str:
        types = ", ".join(f"{name} {value:.2f}" for name, value in report["perAnswerType"].items())
        return (f"{report['settings']['name']}: VQA accuracy {report['overall']:.2f} on {report['num_questions']} "
                f"questions ({types}); \"Answer:\" marker in {100 * report['answer_marker_rate']:.1f}% of outputs")


def held_out_phrasings(config, prompt: str) -> tuple[str, ...]:
    """The held-out phrasings of `prompt`: from the config's instruction_pool, else the shipped pool."""
    pool = config.data.pool or load_instruction_pool(DEFAULT_INSTRUCTION_POOL)
    return pool.held_out_of(prompt, config.data.instruction_pool or str(DEFAULT_INSTRUCTION_POOL))


def split_name(data_subtype: str | None) -> str:
    """"val" of "val2014", "train" of "train2014", "test-dev" of "test-dev2015"; "unknown" without one."""
    return re.sub(r"\d+$", "", data_subtype) if data_subtype else "unknown"
