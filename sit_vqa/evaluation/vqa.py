"""VQA evaluation: generate answers for an evaluation split, split SIT outputs, score with the official metric.

    python evaluate.py --config quickstart.yaml --checkpoint runs/quickstart/final --limit 50

Steps (each a function here, so `evaluate.py`, the training callback and the tests share them):

1. `load_eval_records` -- the split's questions joined with their images (the joiner, caption policy "first",
   one record per question), an optional seeded subset (`limit`), and the instruction of the chosen prompt:
   the SIT instruction for checkpoints trained in mode sit or mixed, the baseline one otherwise
   (`resolve_prompt`). The same `limit` and seed always pick the same questions.
2. `generate_texts` / `generate_batches` -- batched greedy (or beam) generation under `torch.inference_mode`;
   decoder-only LMs get left-padded prompts, whose echo is cut off (`decode_generated`); T5 returns decoder
   ids only. `run_evaluation` hands `generate_batches` to `sit_vqa.evaluation.sharded`, which splits the batches across
   the processes of a torchrun / accelerate launch and appends the outputs to OUT/partial/ as they are made
   (a rerun with the same settings continues an interrupted run).
3. `score_generations` -- every output goes through the shared parser `parse_sit_output`: its answer is
   what gets scored (a baseline output has no marker and is its own answer); the official VQAv2 accuracy
   (`sit_vqa.metrics.vqa`) of those answers against the records' ten annotator answers.
4. `build_report` / `write_outputs` -- results.json (official format), predictions.jsonl, report.json and
   report.md, with the share of outputs that carried the "Answer:" / "Description:" markers.
5. `compare_runs` -- a side-by-side table of several runs' reports, with deltas against the first, refused
   when the runs were scored on different questions or with different metric versions.

Generation length: `generation_max_new_tokens` of the config (64 by default), or `--max-new-tokens`. 64 tokens
hold "Description: <a COCO caption, ~11 words>\\nAnswer: <answer>" with room to spare; a baseline model stops
at its EOS after the answer, so the same budget costs it nothing (pass 10 to mirror LAVIS's VQA setting for
zero-shot rows that would otherwise ramble).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from tqdm.auto import tqdm

from sit_vqa.modeling import precision
from sit_vqa.evaluation import sharded
from sit_vqa.modeling.checkpoint import WEIGHTS_NAME, load_checkpoint, resolve_checkpoint
from sit_vqa.modeling.collate import SampleTransform, TransformedDataset
from sit_vqa.data.coco import load_captions
from sit_vqa.data.join import DESCRIBE_KIND, JoinOptions, join_records
from sit_vqa.data.prepared import load_prepared
from sit_vqa.data.prompts import PROMPTS, Templates, load_templates, parse_sit_output, resolve_prompt
from sit_vqa.data.vqav2 import read_annotations, read_questions
from sit_vqa.errors import ConfigError, EvaluationError
from sit_vqa.metrics.vqa import evaluate_vqa, question_accuracy
from sit_vqa.modeling.generation import GenerationSettings, generate_batches
from sit_vqa.modeling.loading import build_model
from sit_vqa.evaluation.reports import build_report, write_outputs

logger = logging.getLogger(__name__)

SPLITS = {"val": "eval", "train": "train"}  # --split -> the config's data keys (eval_* / train_*)
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
    limit: int | None = None, seed: int = 0,
) -> EvalRecords:
    """The records of `split` ("val": the config's eval_* keys or eval_dataset_dir; "train": train_*).

    `data` is the config's DataArguments. `limit` keeps a seeded sample of that many questions (file order
    kept; all of them when the split has fewer). `prompt` is "sit" or "baseline".
    """
    if prompt not in ("sit", "baseline"):
        raise EvaluationError(f"prompt must be 'sit' or 'baseline' here, got {prompt!r}")
    if limit is not None and limit < 1:
        raise EvaluationError(f"limit must be a positive number of questions, got {limit}")
    templates = templates or Templates()
    table, join_report = _joined_questions(data, split, templates)
    rows = _one_row_per_question(table)
    if limit is not None and limit < len(rows):
        rng = np.random.default_rng(seed)
        rows = rows[np.sort(rng.choice(len(rows), size=limit, replace=False))]
    table = _with_instructions(table.take(rows), templates, prompt)
    return EvalRecords(datasets.Dataset(table), join_report, prompt)


def _joined_questions(data, split: str, templates: Templates):
    """(pyarrow table of joined records, join report dict) from a prepared directory or the raw files."""
    if split not in SPLITS:
        raise EvaluationError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    prefix = SPLITS[split]
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
    # one record per question, its first caption (only a custom template would show it); the prompt comes later
    options = JoinOptions(mode="baseline", caption_policy="first", answer_policy=data.answer_policy,
                          check_images=data.check_images)
    table, report = join_records(
        read_questions(raw["questions"]), read_annotations(raw["annotations"], data.answer_policy),
        load_captions(raw["captions"]), raw["image_dir"], options,
    )
    return table, report.to_dict()


def _one_row_per_question(table) -> np.ndarray:
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


def _with_instructions(table, templates: Templates, prompt: str):
    """The table with "instruction" rendered for `prompt` from each record's question (and caption, should a
    custom template use it; never the answer)."""
    questions = table["question"].to_pylist()
    captions = table["caption"].to_pylist()
    instructions = [templates.render(prompt, question=q, caption=c)[0] for q, c in zip(questions, captions)]
    index = table.schema.get_field_index("instruction")
    return table.set_column(index, "instruction", pa.array(instructions, pa.string()))


# ----------------------------------------------------------------------------------------------- scoring


@dataclass
class ScoredGenerations:
    """Per-question rows (predictions.jsonl), the official results list and the official metric."""

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


# ------------------------------------------------------------------------------------------------ report


# ------------------------------------------------------------------------------------------- the whole run


@dataclass(frozen=True)
class EvalOptions:
    """What `run_evaluation` does beyond the run config; evaluate.py builds its command line from these fields.
    None means: from the config (or the default)."""

    checkpoint: str | None = field(default=None, metadata={
        "help": "checkpoint or run directory (its final/, else its latest checkpoint-N/); leave out for the base "
                "model (zero-shot)"})
    split: Literal["val", "train"] = field(default="val", metadata={
        "help": "val: the config's eval_* data; train: its train_* data"})
    limit: int | None = field(default=None, metadata={"help": "score a seeded sample of N questions (default: all)"})
    out_dir: str | None = field(default=None, metadata={
        "aliases": ["--out"], "help": "output directory (default: runs/eval/<name>-<split>[-limit<N>])"})
    prompt: Literal["auto", "sit", "baseline"] = field(default="auto", metadata={
        "help": "instruction: auto follows the checkpoint's training mode"})
    batch_size: int | None = field(default=None, metadata={
        "help": "generation batch (default: the config's per_device_eval_batch_size)"})
    max_new_tokens: int | None = field(default=None, metadata={
        "help": "default: the config's generation_max_new_tokens"})
    num_beams: int | None = field(default=None, metadata={
        "help": "default: the config's generation_num_beams (1: greedy)"})
    legacy_metric: bool = field(default=False, metadata={
        "help": "the pre-2021 official evaluator, as LAVIS ships it (for numbers published from LAVIS)"})
    device: str | None = field(default=None, metadata={
        "help": "e.g. cuda, cuda:1, cpu (default: cuda if available, else cpu)"})
    name: str | None = field(default=None, metadata={"help": "the run's name in its report and in --compare tables"})
    progress: bool = field(default=True, metadata={"help": "show a progress bar (--no-progress: none)"})
    allow_partial_load: bool = field(default=False, metadata={
        "help": "load a checkpoint whose weights file lacks some trained tensors (they keep the base model's values)"})
    restart: bool = field(default=False, metadata={
        "help": "discard the outputs an interrupted run left in OUT/partial/ and start over (default: continue "
                "that run, when its settings are these)"})
    base_model: str | None = field(default=None, metadata={
        "help": "the checkpoint's base model (a save_pretrained directory or hub id), when it is not where it says"})

    def __post_init__(self):
        if self.split not in SPLITS:
            raise EvaluationError(f"unknown split {self.split!r}; expected one of {', '.join(SPLITS)}")
        if self.prompt not in PROMPTS:
            raise EvaluationError(f"unknown prompt {self.prompt!r}; expected one of {', '.join(PROMPTS)}")
        for name in ("limit", "batch_size", "max_new_tokens", "num_beams"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise EvaluationError(f"{name} must be a positive integer, got {value!r}")


@dataclass
class EvalRun:
    out_dir: Path
    report: dict | None  # None on the processes of a multi-process run other than the main one
    paths: dict[str, Path] = field(default_factory=dict)
    reused: int = 0  # questions whose outputs an interrupted earlier run had written (not generated again)


def run_evaluation(config, options: EvalOptions = EvalOptions()) -> EvalRun:
    """Evaluate a checkpoint (or the config's base model, zero-shot) on a split; write the four files.

    Under torchrun / accelerate launch every process generates its share (`sit_vqa.evaluation.sharded`) and the main one
    scores and writes (the others return an EvalRun without report). Outputs are appended to OUT/partial/ as
    they are made: a rerun with the same settings continues an interrupted run (options.restart: starts over).
    """
    ranks, device = sharded.join_launch(options.device)
    model, processor, manifest, checkpoint = _load_model(config, options, device)
    trained = manifest["config"] if manifest else None
    prompt = resolve_prompt(options.prompt, trained.get("mode") if trained else None)
    templates = load_templates((trained or {}).get("templates") or config.data.templates)
    records = load_eval_records(
        config.data, split=options.split, prompt=prompt, templates=templates,
        limit=options.limit, seed=config.data.subset_seed,
    )
    generation = _generation_settings(config, options, trained)
    name = options.name or run_name(checkpoint, config)
    out_dir = Path(options.out_dir or _default_out_dir(name, options))
    if ranks.is_main:
        logger.info("evaluating %s on %d %s questions (prompt %s, %d process(es))", name, len(records.dataset),
                    options.split, prompt, ranks.world_size)
    generate = functools.partial(generate_batches, model, processor, records.dataset, generation,
                                 progress=options.progress and ranks.is_main)
    generated = sharded.generate_to_disk(
        list(records.dataset["question_id"]), generation.batch_size, generate, out_dir,
        _fingerprint(model, checkpoint, manifest, config, records.dataset, generation, device),
        restart=options.restart, ranks=ranks,
    )
    if generated.texts is None:  # not the main process: it merges, scores and writes
        return EvalRun(out_dir, None, reused=generated.reused)
    scored = score_generations(records.dataset, generated.texts, legacy=options.legacy_metric)
    settings = {
        "name": name,
        "checkpoint": str(checkpoint) if checkpoint else None,
        "zero_shot": checkpoint is None,
        "global_step": manifest.get("global_step") if manifest else None,
        "trained_mode": trained.get("mode") if trained else None,
        "config": config.source,
        "split": options.split,
        "prompt": prompt,
        "prompt_requested": options.prompt,
        "limit": options.limit,
        "subset_seed": config.data.subset_seed if options.limit else None,
        "batch_size": generation.batch_size,
        "num_beams": generation.num_beams,
        "max_new_tokens": generation.max_new_tokens,
        "device": device,
        "legacy_metric": options.legacy_metric,
    }
    report = build_report(scored, settings, records.join_report)
    paths = write_outputs(out_dir, scored, report)
    sharded.remove_partial(out_dir)  # only now: a crash before this line keeps every generated output
    return EvalRun(out_dir, report, paths, reused=generated.reused)


def _generation_settings(config, options: EvalOptions, trained: Mapping | None) -> GenerationSettings:
    """The options', else the config's generation settings; the instruction length and image pipeline the
    checkpoint was trained with."""
    training = config.training
    return GenerationSettings(
        batch_size=options.batch_size or training.per_device_eval_batch_size,
        max_new_tokens=options.max_new_tokens or training.generation_max_new_tokens,
        num_beams=options.num_beams or training.generation_num_beams,
        max_instruction_length=(trained or {}).get("max_instruction_length", config.model.max_instruction_length),
        num_workers=training.dataloader_num_workers,
        image_pipeline=(trained or {}).get("image_pipeline", config.model.image_pipeline),
    )


def _fingerprint(model, checkpoint: Path | None, manifest, config, records, generation, device: str) -> dict:
    """What decides the generated texts, beyond the records' keys and the batch size (sharded adds those):
    an interrupted run is continued only when all of it is the same. Not the metric: it scores afterwards."""
    if checkpoint is None:
        weights = {"base_model": dataclasses.asdict(config.model)}
    else:
        stat = (checkpoint / WEIGHTS_NAME).stat()  # a checkpoint saved again in place changes size or mtime
        weights = {"checkpoint": str(checkpoint.resolve()), "global_step": manifest.get("global_step"),
                   "weights_file": [stat.st_size, stat.st_mtime_ns]}
    columns = [list(records[name]) for name in ("question_id", "image_path", "instruction")]
    inputs = json.dumps(columns, ensure_ascii=False)
    return {
        **weights,
        "inputs_sha256": hashlib.sha256(inputs.encode()).hexdigest(),  # questions, images and prompts
        "max_new_tokens": generation.max_new_tokens,
        "num_beams": generation.num_beams,
        "max_instruction_length": generation.max_instruction_length,
        "image_pipeline": generation.image_pipeline,
        "device_type": torch.device(device).type,
        "dtypes": sorted({str(parameter.dtype) for parameter in model.parameters()}),
    }


def _load_model(config, options: EvalOptions, device: str):
    """(model, processor, manifest or None, resolved checkpoint dir or None)."""
    if options.checkpoint is None:
        _require_image_model(config.model.model_type, config.source)
        # build_model, not load_base_model: the Q-Former side gets the same dtype as in a trained checkpoint
        dtype = precision.frozen_dtype(config.model.model_dtype, config.training.bf16)
        model, processor = build_model(config.model, dtype=dtype, device=device, quiet=True)
        return model.eval(), processor, None, None
    directory = resolve_checkpoint(options.checkpoint)
    model, processor, manifest = load_checkpoint(directory, device=device, allow_partial=options.allow_partial_load,
                                                 base_model=options.base_model)
    _require_image_model(manifest.get("model_type"), str(directory))
    return model, processor, manifest, directory


def _require_image_model(model_type: str | None, source: str) -> None:
    if model_type != "instructblip":
        raise EvaluationError(
            f"{source}: VQA evaluation needs an image model (model_type instructblip), got {model_type!r}; "
            "text-only (causal_lm) runs have no VQA split to answer"
        )


def run_name(checkpoint: Path | None, config) -> str:
    """The run's name in reports: the run directory (and checkpoint-N), or zero-shot-<config>."""
    if checkpoint is None:
        return f"zero-shot-{Path(config.source).stem}"
    if checkpoint.name == "final":
        return checkpoint.resolve().parent.name
    if checkpoint.name.startswith("checkpoint-"):
        return f"{checkpoint.resolve().parent.name}-{checkpoint.name}"
    return checkpoint.resolve().name


def _default_out_dir(name: str, options: EvalOptions) -> Path:
    suffix = f"-limit{options.limit}" if options.limit else ""
    return Path("runs") / "eval" / f"{name}-{options.split}{suffix}"
