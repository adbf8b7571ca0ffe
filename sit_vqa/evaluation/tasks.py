"""The evaluation sets beside VQAv2: GQA, xGQA, XQuAD and the held-out text SIT records (OK-VQA is VQAv2-format).

    python evaluate.py --config quickstart.yaml --zero-shot --task gqa \\
        --task-data data/gqa_sample/testdev_balanced_questions.json --image-dir data/gqa_sample/images
    python evaluate.py --config quickstart.yaml --zero-shot --task xgqa --task-data data/xgqa_sample \\
        --image-dir data/gqa_sample/images [--translate-first]
    python evaluate.py --config quickstart.yaml --zero-shot --task okvqa --task-data data/okvqa_sample \\
        --eval_captions data/sample/captions_val2014.json --eval_image_dir data/sample/val2014
    python evaluate.py --config text_sit.yaml --checkpoint runs/text_sit --task xquad --task-data data/xquad_sample
    python evaluate.py --config text_sit.yaml --checkpoint runs/text_sit            # --task text: eval_text_data

Every set runs the same steps as the VQAv2 evaluation (`sit_vqa.evaluation.vqa`): read and check the files (before
the model loads, so bad input fails at once), render each record's instruction, generate with
`generate_texts`, parse with the shared `parse_sit_output`, score with the set's official scorer
(`sit_vqa.metrics`), and write the same four kinds of files (`sit_vqa.evaluation.reports.write_report_files`): the
results in the set's official format (one file per language for xGQA and XQuAD, as their scorers take one),
predictions.jsonl, report.json and report.md. Each report carries `task`, `metric`, `score_name`, `overall`,
`columns` and `question_set_sha256`, which is what `--compare` reads.

- gqa: the balanced questions of a GQA questions file, asked with the VQA prompts (`--prompt`); accuracy as the
  official eval.py (exact match; `--gqa-normalize` lower-cases and drops a trailing period first, stated in the
  report), overall, binary/open, per structural and semantic type.
- xgqa: every testdev_balanced_questions_<lang>.json of a folder (checked against the _en file); accuracy per
  language and its mean over the non-English languages. `--translate-first` asks "First translate the question
  into English, then ..." (target layout "Translation: ...\\nDescription: ...\\nAnswer: ..."); the parser takes
  the answer after the translation, and the translations are scored with chrF against the English questions.
- okvqa: the VQAv2 evaluation on OK-VQA v1.1's two files (a folder), with the config's eval captions and images.
- xquad: every xquad.<lang>.json of a folder (checked against xquad.en.json), asked with context and question as
  the input of a text instruction: plain, or `--translate-first` ("First translate the input into English,
  then ..."); SQuAD v1.1 exact match and F1 per language, overall = mean F1 over the non-English languages.
- text: the config's held-out Alpaca records (`eval_text_data`, never trained on), asked as the checkpoint was
  trained (text_mode plain / repeat / translate); how often the output follows the sequence, the first step's
  fidelity (repeat: exact copy rate; translate: chrF against the English input) and the final answer's ROUGE-L
  and chrF against the reference output.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from sit_vqa.modeling import precision
from sit_vqa.modeling.checkpoint import load_checkpoint, resolve_checkpoint
from sit_vqa.errors import DataError, EvaluationError
from sit_vqa.evaluation.sets import (
    DEFAULT_DATA,
    DEFAULT_IMAGE_DIR,
    OKVQA_FILES,
    TASKS,
    GqaSet,
    Scored,
    TextSet,
    XgqaSet,
    XquadSet,
    language_table,
    table_cell,
    trained_settings,
)
from sit_vqa.evaluation.vqa import EvalOptions, EvalRun, run_name
from sit_vqa.modeling.generation import GenerationSettings, generate_texts
from sit_vqa.modeling.loading import build_model
from sit_vqa.evaluation.reports import question_set_hash, write_report_files

logger = logging.getLogger(__name__)




@dataclass(frozen=True)
class TaskOptions:
    """Which evaluation set evaluate.py runs, and where its files are (None: the layout of data/README.md)."""

    task: Literal["auto", "vqa", "okvqa", "gqa", "xgqa", "xquad", "text"] = field(default="auto", metadata={
        "help": "vqa: the config's eval_* VQAv2 split; okvqa: OK-VQA v1.1 (VQAv2 format); gqa; xgqa; xquad; "
                "text: the config's held-out eval_text_data; auto: text for a causal_lm config, else vqa"})
    task_data: str | None = field(default=None, metadata={
        "help": "okvqa: folder with OpenEnded_mscoco_val2014_questions.json and mscoco_val2014_annotations.json "
                "(default data/okvqa); gqa: a questions file (data/gqa/testdev_balanced_questions.json); xgqa: "
                "folder of testdev_balanced_questions_<lang>.json (data/xgqa); xquad: folder of xquad.<lang>.json "
                "(data/xquad)"})
    image_dir: str | None = field(default=None, metadata={
        "help": f"gqa, xgqa: folder of the GQA images <imageId>.jpg (default {DEFAULT_IMAGE_DIR})"})
    languages: list[str] | None = field(default=None, metadata={
        "help": "xgqa, xquad: the languages to evaluate (default: every language file in --task-data)"})
    translate_first: bool = field(default=False, metadata={
        "help": "xgqa, xquad: ask to translate the question (xquad: the input) into English first"})
    gqa_normalize: bool = field(default=False, metadata={
        "help": "gqa, xgqa: lower-case, strip and drop a trailing period before the exact match (common "
                "practice, not the official metric; the report says which)"})

    def __post_init__(self):
        if self.task not in TASKS:
            raise EvaluationError(f"unknown task {self.task!r}; expected one of {', '.join(TASKS)}")
        if self.task == "auto":
            return  # checked once resolved (`for_model_type`)
        if self.translate_first and self.task not in ("xgqa", "xquad"):
            raise EvaluationError(f"--translate-first applies to --task xgqa and xquad, not {self.task}")
        if self.gqa_normalize and self.task not in ("gqa", "xgqa"):
            raise EvaluationError(f"--gqa-normalize applies to --task gqa and xgqa, not {self.task}")
        if self.languages is not None and self.task not in ("xgqa", "xquad"):
            raise EvaluationError(f"--languages applies to --task xgqa and xquad, not {self.task}")
        if self.image_dir is not None and self.task not in ("gqa", "xgqa"):
            raise EvaluationError(f"--image-dir applies to --task gqa and xgqa; {self.task} takes its images "
                                  "from the config")

    def for_model_type(self, model_type: str) -> TaskOptions:
        """The options with task "auto" resolved: the text set for a causal_lm config, VQAv2 otherwise."""
        if self.task != "auto":
            return self
        return dataclasses.replace(self, task="text" if model_type == "causal_lm" else "vqa")

    @property
    def data_path(self) -> Path:
        return Path(self.task_data or DEFAULT_DATA[self.task])


def config_overrides(task: TaskOptions) -> list[str]:
    """Config overrides a task implies (okvqa: its two files as the eval questions and annotations), to go
    before the user's own, which win."""
    if task.task != "okvqa":
        return []
    folder = task.data_path
    if not folder.is_dir():
        raise DataError(f"OK-VQA folder not found: {folder}; pass --task-data DIR holding "
                        f"{' and '.join(OKVQA_FILES.values())} (see data/README.md)")
    return [argument for key, name in OKVQA_FILES.items() for argument in (f"--{key}", str(folder / name))]


# ------------------------------------------------------------------------------------------------ helpers


SETS = {"gqa": GqaSet, "xgqa": XgqaSet, "xquad": XquadSet}


def make_set(task: TaskOptions, options: EvalOptions, config):
    """The set of `task`, its files read and checked."""
    if task.task == "text":
        return TextSet(task, options, config)
    if task.task not in SETS:
        raise EvaluationError(f"--task {task.task} runs through sit_vqa.evaluation.vqa.run_evaluation")
    return SETS[task.task](task, options, config.data.subset_seed)


# ------------------------------------------------------------------------------------------- the whole run


def run_task(config, options: EvalOptions, task: TaskOptions) -> EvalRun:
    """Evaluate a checkpoint (or the config's base model) on `task`'s set; write its report files."""
    if options.split != "val":
        raise EvaluationError(f"--split chooses the config's VQAv2 data; --task {task.task} reads its own files")
    if options.legacy_metric:
        raise EvaluationError("--legacy-metric is the pre-2021 VQAv2 evaluator; it applies to --task vqa and okvqa")
    evaluation_set = make_set(task, options, config)  # bad files fail here, before the model loads
    device = options.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, processor, manifest, checkpoint = _load_model(config, options, device, evaluation_set.model_type)
    prompt = evaluation_set.prompt(options.prompt, manifest)
    records = evaluation_set.records(prompt, manifest, config)
    generation = _generation_settings(config, options, trained_settings(manifest), evaluation_set.model_type)
    name = options.name or run_name(checkpoint, config)
    logger.info("evaluating %s on %d %s records (prompt %s)", name, len(records), task.task, prompt)
    generations = generate_texts(model, processor, records, generation, progress=options.progress)
    scored = evaluation_set.score(records, generations)
    settings = {
        "name": name, "task": task.task, "task_data": _task_data(task, config),
        "checkpoint": str(checkpoint) if checkpoint else None, "zero_shot": checkpoint is None,
        "global_step": manifest.get("global_step") if manifest else None,
        "trained_mode": trained_settings(manifest).get("text_mode" if evaluation_set.model_type == "causal_lm" else "mode"),
        "config": config.source, "prompt": prompt, "prompt_requested": options.prompt,
        "translate_first": task.translate_first, "limit": options.limit,
        "subset_seed": config.data.subset_seed if options.limit else None, "batch_size": generation.batch_size,
        "num_beams": generation.num_beams, "max_new_tokens": generation.max_new_tokens, "device": device,
    }
    report = build_task_report(evaluation_set, scored, settings)
    out_dir = Path(options.out_dir or default_out_dir(name, task.task, options.limit))
    markdown = task_markdown(evaluation_set, report)
    paths = write_report_files(out_dir, scored.results, scored.predictions, report, markdown)
    return EvalRun(out_dir, report, paths)


def default_out_dir(name: str, task: str, limit: int | None) -> Path:
    return Path("runs") / "eval" / f"{name}-{task}{f'-limit{limit}' if limit else ''}"


def vqa_options(options: EvalOptions, task: TaskOptions, config) -> EvalOptions:
    """The options of a VQAv2-format run: OK-VQA's default folder names the set, so that it never overwrites
    the VQAv2 evaluation of the same checkpoint (runs/eval/<name>-val)."""
    if task.task != "okvqa" or options.out_dir:
        return options
    checkpoint = resolve_checkpoint(options.checkpoint) if options.checkpoint else None
    name = options.name or run_name(checkpoint, config)
    return dataclasses.replace(options, out_dir=str(default_out_dir(name, "okvqa", options.limit)))


def build_task_report(evaluation_set, scored: Scored, settings: Mapping) -> dict:
    """report.json: the keys every report carries (what --compare reads), then the set's own numbers."""
    return {
        "task": evaluation_set.task, "score_name": evaluation_set.score_name, "metric": evaluation_set.metric,
        **scored.numbers,
        "num_questions": len(scored.question_keys),
        "question_set_sha256": question_set_hash(scored.question_keys),
        "settings": {**settings, "metric": evaluation_set.metric},
    }


def task_markdown(evaluation_set, report: Mapping) -> str:
    settings = report["settings"]
    lines = [f"# {report['score_name']}: {settings['name']}", "",
             f"**{table_cell(report['overall'])}** on {report['num_questions']} questions of `{settings['task_data']}`, "
             f"prompt `{settings['prompt']}`, metric `{report['metric']}`.", "",
             *evaluation_set.markdown(report),
             "", "## Settings", "", "| Setting | Value |", "|---|---|",
             *(f"| {key} | {value} |" for key, value in settings.items())]
    return "\n".join(lines) + "\n"


def summary(report: Mapping) -> str:
    """What evaluate.py prints: the overall score with the columns, or for xGQA / XQuAD the per-language table."""
    settings = report["settings"]
    headline = f"{settings['name']}: {report['score_name']} {table_cell(report['overall'])} on {report['num_questions']} questions"
    if "perLanguage" in report:
        return headline + "\n\n" + "\n".join(language_table(report))
    columns = ", ".join(f"{name} {table_cell(value)}" for name, value in report["columns"].items())
    return f"{headline} ({columns})"


def _task_data(task: TaskOptions, config) -> str:
    return config.data.eval_text_data if task.task == "text" else str(task.data_path)


def _generation_settings(config, options: EvalOptions, trained: Mapping, model_type: str) -> GenerationSettings:
    training, model = config.training, config.model
    # a text answer (or a translated paragraph) is as long as the targets the model was trained on
    default_tokens = (trained.get("max_target_length", model.max_target_length) if model_type == "causal_lm"
                      else training.generation_max_new_tokens)
    return GenerationSettings(
        batch_size=options.batch_size or training.per_device_eval_batch_size,
        max_new_tokens=options.max_new_tokens or default_tokens,
        num_beams=options.num_beams or training.generation_num_beams,
        max_instruction_length=trained.get("max_instruction_length", model.max_instruction_length),
        num_workers=training.dataloader_num_workers,
        image_pipeline=trained.get("image_pipeline", model.image_pipeline),
    )


def _load_model(config, options: EvalOptions, device: str, model_type: str):
    """(model, processor or tokenizer, manifest or None, checkpoint dir or None), of the kind the set needs."""
    if options.checkpoint is None:
        _require(model_type, config.model.model_type, config.source)
        dtype = precision.frozen_dtype(config.model.model_dtype, config.training.bf16)
        model, processor = build_model(config.model, dtype=dtype, device=device, quiet=True)
        return model.eval(), processor, None, None
    directory = resolve_checkpoint(options.checkpoint)
    model, processor, manifest = load_checkpoint(directory, device=device, allow_partial=options.allow_partial_load)
    _require(model_type, manifest.get("model_type"), str(directory))
    return model, processor, manifest, directory


def _require(needed: str, found: str | None, source: str) -> None:
    if found != needed:
        kind = "an image model (model_type instructblip)" if needed == "instructblip" else \
            "a text model (model_type causal_lm, e.g. --config text_sit.yaml)"
        raise EvaluationError(f"{source}: this set is answered by {kind}, got model_type {found!r}")
