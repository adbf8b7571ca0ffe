"""VQA evaluation: generate answers for an evaluation split, split SIT outputs, score with the official metric.

    python evaluate.py --config quickstart.yaml --checkpoint runs/quickstart/final --limit 50

Steps (each a function here, so `evaluate.py`, the training callback and the tests share them):

1. `load_eval_records` -- the split's questions joined with their images (the joiner, caption policy "first",
   one record per question), an optional seeded subset (`limit`), and the instruction of the chosen prompt:
   the SIT instruction for checkpoints trained in mode sit or mixed, the baseline one otherwise
   (`resolve_prompt`). The same `limit` and seed always pick the same questions.
2. `generate_texts` -- batched greedy (or beam) generation under `torch.inference_mode`; decoder-only LMs
   get left-padded prompts, whose echo is cut off (`decode_generated`); T5 returns decoder ids only.
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

import contextlib
import functools
import hashlib
import json
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from tqdm.auto import tqdm

from sit_vqa import checkpoint as ckpt
from sit_vqa.collate import SampleTransform, TransformedDataset
from sit_vqa.data import join
from sit_vqa.data.coco import load_captions
from sit_vqa.data.templates import Templates, parse_sit_output
from sit_vqa.data.vqav2 import read_annotations, read_questions
from sit_vqa.errors import ConfigError, SitVqaError
from sit_vqa.loading import build_model, load_checkpoint
from sit_vqa.metrics.vqa import evaluate_vqa, question_accuracy
from sit_vqa.model import decode_generated, is_encoder_decoder

logger = logging.getLogger(__name__)

SPLITS = {"val": "eval", "train": "train"}  # --split -> the config's data keys (eval_* / train_*)
PROMPTS = ("auto", "sit", "baseline")
SIT_TRAINED_MODES = ("sit", "mixed")  # checkpoints trained in these modes are asked with the SIT instruction
METRIC_VERSIONS = {False: "vqav2-official-2021", True: "vqav2-legacy-lavis"}
ANSWER_TYPES = ("yes/no", "number", "other")  # VQAv2's, in the order tables show them
REPORT_FILES = ("results.json", "predictions.jsonl", "report.json", "report.md")
COMPARE_FILES = ("compare.md", "compare.json")


class EvaluationError(SitVqaError, ValueError):
    """An evaluation that cannot run or runs that cannot be compared; the message says what to fix."""


# ----------------------------------------------------------------------------------------------- records


@dataclass(frozen=True)
class EvalRecords:
    """The questions to answer: a `datasets.Dataset`, one record per question in file order, with the
    joiner's columns and "instruction" set to the prompt; and the join report (what was dropped and why)."""

    dataset: Any
    join_report: dict
    prompt: str


def prompt_for_mode(mode: str | None) -> str:
    """The prompt a model trained in `mode` is asked with: SIT for sit/mixed, baseline otherwise (and zero-shot)."""
    return "sit" if mode in SIT_TRAINED_MODES else "baseline"


def resolve_prompt(prompt: str, manifest: Mapping | None) -> str:
    """`prompt` unless it is "auto": then from the checkpoint's training mode (baseline without a checkpoint)."""
    if prompt not in PROMPTS:
        raise EvaluationError(f"unknown prompt {prompt!r}; expected one of {', '.join(PROMPTS)}")
    if prompt != "auto":
        return prompt
    return prompt_for_mode(manifest["config"].get("mode") if manifest else None)


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
        dataset, report = join.load_prepared(prepared)
        return dataset.with_format("arrow")[:], report.to_dict()
    raw = data.raw_split(prefix)
    if raw is None:
        raise ConfigError(
            f"no {split} data in the config: set {prefix}_questions, {prefix}_annotations, {prefix}_captions "
            f"and {prefix}_image_dir (or {prefix}_dataset_dir, a dataset prepared by `python -m sit_vqa.prepare`)"
        )
    options = join.JoinOptions(
        mode="baseline", caption_policy="first", answer_policy=data.answer_policy,
        check_images=data.check_images, templates=templates,
    )
    table, report = join.join_records(
        read_questions(raw["questions"]), read_annotations(raw["annotations"], data.answer_policy),
        load_captions(raw["captions"]), raw["image_dir"], options,
    )
    return table, report.to_dict()


def _one_row_per_question(table) -> np.ndarray:
    """Rows of the first record of each question, in table order (prepared datasets may hold a question
    twice -- mixed mode, caption policy "all" -- and "describe" records, which are not questions)."""
    question_ids = table["question_id"].to_numpy()
    is_question = pc.not_equal(table["mode"], "describe").to_numpy()
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


def question_set_hash(question_ids: Sequence[int]) -> str:
    """sha256 of the sorted question ids: runs can be compared only when these agree."""
    text = ",".join(map(str, sorted(int(qid) for qid in question_ids)))
    return hashlib.sha256(text.encode()).hexdigest()


# -------------------------------------------------------------------------------------------- generation


@dataclass(frozen=True)
class GenerationSettings:
    batch_size: int = 16
    max_new_tokens: int = 64
    num_beams: int = 1
    max_instruction_length: int = 128
    num_workers: int = 0
    image_pipeline: str = "plain"  # as the checkpoint was trained (sit_vqa.images)

    def __post_init__(self):
        for name in ("batch_size", "max_new_tokens", "num_beams", "max_instruction_length"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise EvaluationError(f"{name} must be a positive integer, got {value!r}")


def generate_texts(
    model, processor, records, settings: GenerationSettings, *, progress: bool = True, feature_cache=None
) -> list[str]:
    """The model's output for every record (prompt = its "instruction" and image), in record order.

    The model is put in eval mode for the call and left in the mode it was in. feature_cache: a
    sit_vqa.feature_cache.FeatureCache holding the records' images (the model needs use_cached_features).
    """
    transform = SampleTransform.for_model(
        model, processor, max_instruction_length=settings.max_instruction_length,
        image_pipeline=settings.image_pipeline, feature_cache=feature_cache,
    )
    collator = transform.collator(padding_side="right" if is_encoder_decoder(model) else "left")
    loader = torch.utils.data.DataLoader(
        TransformedDataset(records, functools.partial(transform, with_target=False)),
        batch_size=settings.batch_size, collate_fn=collator, num_workers=settings.num_workers,
    )
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    texts: list[str] = []
    try:
        with torch.inference_mode(), _autocast(model, device):
            for batch in _progress(loader, progress):
                batch = {key: value.to(device) for key, value in batch.items()}
                generated = model.generate(
                    **batch, max_new_tokens=settings.max_new_tokens, num_beams=settings.num_beams,
                    do_sample=False, pad_token_id=transform.pad_token_id,
                )
                texts.extend(decode_generated(model, transform.tokenizer, generated, batch["input_ids"].shape[1]))
    finally:
        model.train(was_training)
    return texts


def _autocast(model, device: torch.device):
    """Frozen weights may be bf16 while trained ones stay fp32 (sit_vqa.loading, the GPU default). Without
    autocast the two meet in one matmul and fail ("mat1 and mat2 must have the same dtype"); training ran
    under bf16 autocast too."""
    low_precision = {p.dtype for p in model.parameters() if p.dtype != torch.float32}
    if not low_precision:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=low_precision.pop())


def _progress(loader, enabled: bool):
    # disable=None: tqdm turns itself off when stderr is not a terminal (logs stay clean)
    return tqdm(loader, desc="generating", unit="batch", disable=None if enabled else True)


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


def build_report(
    scored: ScoredGenerations, settings: Mapping | None = None, join_report: Mapping | None = None
) -> dict:
    """report.json: the official numbers, marker rates, question counts, what the join dropped, settings."""
    predictions = scored.predictions
    count = len(predictions)
    with_answer = sum(p["has_answer_marker"] for p in predictions)
    with_description = sum(p["description"] is not None for p in predictions)
    join_report = join_report or {}
    return {
        "overall": scored.metrics["overall"],
        "perAnswerType": scored.metrics["perAnswerType"],
        "perQuestionType": scored.metrics["perQuestionType"],
        "answer_marker_rate": round(with_answer / count, 4),
        "description_marker_rate": round(with_description / count, 4),
        "outputs_without_answer_marker": count - with_answer,
        "num_questions": count,
        "questions_per_answer_type": dict(Counter(p["answer_type"] for p in predictions)),
        "questions_per_question_type": dict(Counter(p["question_type"] for p in predictions)),
        "question_set_sha256": question_set_hash([p["question_id"] for p in predictions]),
        "metric": scored.metric_version,
        "dropped": dict(join_report.get("dropped", {})),
        "questions_read": join_report.get("questions_read"),
        "questions_joined": join_report.get("joined"),
        "settings": {**(settings or {}), "metric": scored.metric_version},
    }


def report_markdown(report: Mapping) -> str:
    """report.md: the report as tables."""
    settings = report["settings"]
    counts = report["questions_per_answer_type"]
    lines = [
        f"# VQA accuracy: {settings.get('name', 'run')}",
        "",
        f"{report['num_questions']} questions of the {settings.get('split', '?')} split, "
        f"prompt `{settings.get('prompt', '?')}`, metric `{report['metric']}`.",
        "",
        "| Answer type | Questions | Accuracy |",
        "|---|---:|---:|",
        f"| **overall** | {report['num_questions']} | **{report['overall']:.2f}** |",
    ]
    lines += [f"| {name} | {counts.get(name, 0)} | {value:.2f} |" for name, value in _ordered(report["perAnswerType"])]
    without = report["outputs_without_answer_marker"]
    lines += [
        "",
        "## Output format",
        "",
        f"- outputs with an \"Answer:\" marker: {100 * report['answer_marker_rate']:.1f}% "
        f"({without} without one, scored all the same: their last line that is not the description)",
        f"- outputs with a \"Description:\" marker: {100 * report['description_marker_rate']:.1f}%",
        "",
        "## Per question type",
        "",
        "| Question type | Questions | Accuracy |",
        "|---|---:|---:|",
    ]
    type_counts = report["questions_per_question_type"]
    lines += [f"| {name} | {type_counts.get(name, 0)} | {value:.2f} |"
              for name, value in sorted(report["perQuestionType"].items())]
    dropped = ", ".join(f"{reason} {n}" for reason, n in report["dropped"].items()) or "none"
    lines += [
        "", "## Data", "",
        f"- questions read: {report['questions_read']}, joined: {report['questions_joined']}",
        f"- dropped by the join (not scored): {dropped}",
        "", "## Settings", "", "| Setting | Value |", "|---|---|",
    ]
    lines += [f"| {key} | {value} |" for key, value in settings.items()]
    return "\n".join(lines) + "\n"


def _ordered(per_answer_type: Mapping[str, float]) -> list[tuple[str, float]]:
    rank = {name: i for i, name in enumerate(ANSWER_TYPES)}
    return sorted(per_answer_type.items(), key=lambda item: (rank.get(item[0], len(rank)), item[0]))


def write_outputs(out_dir: str | Path, scored: ScoredGenerations, report: Mapping) -> dict[str, Path]:
    """results.json, predictions.jsonl, report.json and report.md in out_dir; returns their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {name: out_dir / name for name in REPORT_FILES}
    paths["results.json"].write_text(json.dumps(scored.results, ensure_ascii=False) + "\n", encoding="utf-8")
    with paths["predictions.jsonl"].open("w", encoding="utf-8") as handle:
        for prediction in scored.predictions:
            handle.write(json.dumps(prediction, ensure_ascii=False) + "\n")
    paths["report.md"].write_text(report_markdown(report), encoding="utf-8")
    # written last: a directory with report.json is a complete evaluation (what --compare reads)
    paths["report.json"].write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return paths


# ------------------------------------------------------------------------------------------- the whole run


@dataclass(frozen=True)
class EvalOptions:
    """What `run_evaluation` does beyond the run config. None means: from the config (or the default)."""

    checkpoint: str | Path | None = None  # None: zero-shot, the config's base model
    split: str = "val"
    limit: int | None = None
    out_dir: str | Path | None = None  # default: runs/eval/<name>-<split>[-limit<N>]
    prompt: str = "auto"
    batch_size: int | None = None
    max_new_tokens: int | None = None
    num_beams: int | None = None
    legacy_metric: bool = False
    device: str | None = None  # default: cuda if available, else cpu
    name: str | None = None  # the run's name in reports and comparisons
    progress: bool = True

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
    report: dict
    paths: dict[str, Path] = field(default_factory=dict)


def run_evaluation(config, options: EvalOptions = EvalOptions()) -> EvalRun:
    """Evaluate a checkpoint (or the config's base model, zero-shot) on a split; write the four files."""
    device = options.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, processor, manifest, checkpoint = _load_model(config, options.checkpoint, device)
    trained = manifest["config"] if manifest else None
    prompt = resolve_prompt(options.prompt, manifest)
    templates = Templates(**((trained or {}).get("templates") or config.data.templates or {}))
    records = load_eval_records(
        config.data, split=options.split, prompt=prompt, templates=templates,
        limit=options.limit, seed=config.data.subset_seed,
    )
    training = config.training
    generation = GenerationSettings(
        batch_size=options.batch_size or training.per_device_eval_batch_size,
        max_new_tokens=options.max_new_tokens or training.generation_max_new_tokens,
        num_beams=options.num_beams or training.generation_num_beams,
        max_instruction_length=(trained or {}).get("max_instruction_length", config.model.max_instruction_length),
        num_workers=training.dataloader_num_workers,
        image_pipeline=(trained or {}).get("image_pipeline", config.model.image_pipeline),
    )
    name = options.name or _run_name(checkpoint, config)
    logger.info("evaluating %s on %d %s questions (prompt %s)", name, len(records.dataset), options.split, prompt)
    generations = generate_texts(model, processor, records.dataset, generation, progress=options.progress)
    scored = score_generations(records.dataset, generations, legacy=options.legacy_metric)
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
    out_dir = Path(options.out_dir or _default_out_dir(name, options))
    paths = write_outputs(out_dir, scored, report)
    return EvalRun(out_dir, report, paths)


def _load_model(config, checkpoint, device: str):
    """(model, processor, manifest or None, resolved checkpoint dir or None)."""
    if checkpoint is None:
        _require_image_model(config.model.model_type, config.source)
        # build_model, not load_base_model: the Q-Former side gets the same dtype as in a trained checkpoint
        model, processor = build_model(config.model, device=device, quiet=True)
        return model.eval(), processor, None, None
    directory = resolve_checkpoint(checkpoint)
    model, processor, manifest = load_checkpoint(directory, device=device)
    _require_image_model(manifest.get("model_type"), str(directory))
    return model, processor, manifest, directory


def _require_image_model(model_type: str | None, source: str) -> None:
    if model_type != "instructblip":
        raise EvaluationError(
            f"{source}: VQA evaluation needs an image model (model_type instructblip), got {model_type!r}; "
            "text-only (causal_lm) runs have no VQA split to answer"
        )


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint directory, or a run directory: then its `final` checkpoint, else its latest checkpoint-N."""
    path = Path(path)
    for candidate in (path, path / "final"):
        if (candidate / ckpt.MANIFEST_NAME).is_file():
            return candidate
    latest = ckpt.latest_checkpoint(path)
    if latest is None:
        raise EvaluationError(
            f"{path} is not a sit-vqa checkpoint, nor a run directory holding one (no {ckpt.MANIFEST_NAME} in it, "
            "in final/ or in a checkpoint-N/); pass a checkpoint directory written by train.py, or leave "
            "--checkpoint out for a zero-shot evaluation of the config's base model"
        )
    return latest


def _run_name(checkpoint: Path | None, config) -> str:
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


# ---------------------------------------------------------------------------------------------- compare


def read_report(run: str | Path) -> dict:
    """report.json of an evaluation directory (or the report.json path itself)."""
    path = Path(run)
    if path.is_dir():
        path = path / "report.json"
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EvaluationError(
            f"{path} not found: pass the directory an evaluation wrote (python evaluate.py ... --out DIR)"
        ) from None
    except json.JSONDecodeError as error:
        raise EvaluationError(f"{path}: not valid JSON ({error}); evaluate the run again") from None
    missing = [key for key in ("overall", "perAnswerType", "question_set_sha256", "metric") if key not in report]
    if missing:
        raise EvaluationError(f"{path}: not an evaluation report (no {', '.join(missing)}); evaluate the run again")
    return report


def compare_runs(runs: Sequence[str | Path], names: Sequence[str] | None = None) -> dict:
    """Side-by-side numbers of several evaluations, with deltas against the first (the reference row).

    Refused (EvaluationError) when the runs were scored on different questions or metric versions.
    """
    if not runs:
        raise EvaluationError("nothing to compare: pass one or more evaluation directories")
    if names is not None and len(names) != len(runs):
        raise EvaluationError(f"{len(names)} names for {len(runs)} runs; pass one name per run")
    reports = [read_report(run) for run in runs]
    if not names:
        names = [_report_name(report, run) for report, run in zip(reports, runs)]
        if len(set(names)) < len(names):  # e.g. one checkpoint asked two ways: the folders tell them apart
            names = [Path(run).name for run in runs]
    reference = reports[0]
    for report, name, run in zip(reports[1:], names[1:], runs[1:]):
        _check_comparable(reference, names[0], runs[0], report, name, run)
    answer_types = [name for name, _ in _ordered({t: 0 for r in reports for t in r["perAnswerType"]})]
    rows = []
    for report, name, run in zip(reports, names, runs):
        row = {"name": name, "run": str(run), "overall": report["overall"],
               "perAnswerType": {t: report["perAnswerType"].get(t) for t in answer_types},
               "answer_marker_rate": report.get("answer_marker_rate")}
        row["delta"] = {column: _delta(report, reference, column) for column in ("overall", *answer_types)}
        rows.append(row)
    return {
        "reference": names[0],
        "metric": reference["metric"],
        "question_set_sha256": reference["question_set_sha256"],
        "num_questions": reference.get("num_questions"),
        "answer_types": answer_types,
        "rows": rows,
    }


def _report_name(report: Mapping, run: str | Path) -> str:
    path = Path(run)
    return report.get("settings", {}).get("name") or (path.parent.name if path.is_file() else path.name)


def _check_comparable(reference: Mapping, reference_name: str, reference_run, report: Mapping, name: str, run) -> None:
    if report["metric"] != reference["metric"]:
        raise EvaluationError(
            f"cannot compare {name} ({run}, metric {report['metric']}) with {reference_name} ({reference_run}, "
            f"metric {reference['metric']}): score every run with the same metric (with or without --legacy-metric)"
        )
    if report["question_set_sha256"] != reference["question_set_sha256"]:
        raise EvaluationError(
            f"cannot compare {name} ({run}, {report.get('num_questions')} questions) with {reference_name} "
            f"({reference_run}, {reference.get('num_questions')} questions): they were scored on different "
            "questions. Evaluate every run on the same split with the same --limit (and subset_seed)."
        )


def _value(report: Mapping, column: str) -> float | None:
    return report["overall"] if column == "overall" else report["perAnswerType"].get(column)


def _delta(report: Mapping, reference: Mapping, column: str) -> float | None:
    value, base = _value(report, column), _value(reference, column)
    if value is None or base is None:
        return None
    return round(value - base, 2)


def compare_markdown(comparison: Mapping) -> str:
    """The comparison as a markdown table: accuracy per column, then (delta vs the reference row)."""
    columns = ["overall", *comparison["answer_types"]]
    lines = [
        f"VQA accuracy ({comparison['metric']}, {comparison['num_questions']} questions, "
        f"deltas vs {comparison['reference']})",
        "",
        "| Run | " + " | ".join(c if c != "overall" else "Overall" for c in columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    for index, row in enumerate(comparison["rows"]):
        cells = []
        for column in columns:
            value = row["overall"] if column == "overall" else row["perAnswerType"][column]
            delta = row["delta"][column]
            cell = "–" if value is None else f"{value:.2f}"
            if index and delta is not None:
                cell += f" ({delta:+.2f})"
            cells.append(cell)
        lines.append(f"| {row['name']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_comparison(comparison: Mapping, out_dir: str | Path = ".") -> dict[str, Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {name: out_dir / name for name in COMPARE_FILES}
    paths["compare.md"].write_text(compare_markdown(comparison), encoding="utf-8")
    paths["compare.json"].write_text(json.dumps(comparison, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return paths
