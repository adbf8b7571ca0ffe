"""The evaluation sets beside VQAv2: GQA, xGQA, XQuAD and the held-out text SIT records (OK-VQA is VQAv2-format).

    python evaluate.py --config quickstart.yaml --zero-shot --task gqa \\
        --task-data data/gqa_sample/testdev_balanced_questions.json --image-dir data/gqa_sample/images
    python evaluate.py --config quickstart.yaml --zero-shot --task xgqa --task-data data/xgqa_sample \\
        --image-dir data/gqa_sample/images [--translate-first]
    python evaluate.py --config quickstart.yaml --zero-shot --task okvqa --task-data data/okvqa_sample \\
        --eval_captions data/sample/captions_val2014.json --eval_image_dir data/sample/val2014
    python evaluate.py --config text_sit.yaml --checkpoint runs/text_sit --task xquad --task-data data/xquad_sample
    python evaluate.py --config text_sit.yaml --checkpoint runs/text_sit            # --task text: eval_text_data

Every set runs the same steps as the VQAv2 evaluation (`sit_vqa.evaluation`): read and check the files (before
the model loads, so bad input fails at once), render each record's instruction, generate with
`generate_texts`, parse with the shared `parse_sit_output`, score with the set's official scorer
(`sit_vqa.metrics`), and write the same four kinds of files (`sit_vqa.reports.write_report_files`): the
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
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from sit_vqa import precision
from sit_vqa.checkpoint import load_checkpoint, resolve_checkpoint
from sit_vqa.data.gqa import read_gqa_records, read_xgqa_records
from sit_vqa.data.squad import read_squad_records
from sit_vqa.data.templates import ANSWER_MARKER, load_templates, parse_sit_output
from sit_vqa.data.text_sit import (
    INPUT_MARKER,
    TRANSLATION_MARKER,
    build_text_sit,
    continue_sentence,
    load_alpaca,
)
from sit_vqa.errors import ConfigError, DataError, EvaluationError
from sit_vqa.evaluation import (
    EvalOptions,
    EvalRun,
    GenerationSettings,
    generate_texts,
    resolve_prompt,
    run_name,
)
from sit_vqa.metrics.gqa import EXACT, NORMALIZED, score_gqa
from sit_vqa.metrics.squad import score_squad
from sit_vqa.metrics.text import (
    chrf,
    exact_copy_rate,
    rouge_l,
    sequence_rate,
    split_sequence,
)
from sit_vqa.model import build_model
from sit_vqa.reports import question_set_hash, write_report_files

logger = logging.getLogger(__name__)

TASKS = ("auto", "vqa", "okvqa", "gqa", "xgqa", "xquad", "text")
DEFAULT_DATA = {  # where data/README.md puts the real files
    "okvqa": "data/okvqa",
    "gqa": "data/gqa/testdev_balanced_questions.json",
    "xgqa": "data/xgqa",
    "xquad": "data/xquad",
}
DEFAULT_IMAGE_DIR = "data/gqa/images"
OKVQA_FILES = {"eval_questions": "OpenEnded_mscoco_val2014_questions.json",
               "eval_annotations": "mscoco_val2014_annotations.json"}
XGQA_FILE = "testdev_balanced_questions_{}.json"
XQUAD_FILE = "xquad.{}.json"
ENGLISH = "en"

TRANSLATE_QUESTION_PREFIX = "First translate the question into English, then "
XQUAD_TASK = "Answer the question about the text."
QUESTION_MARKER = "Question:"
TEXT_METRIC = "text-sit/1: sequence markers, chrF (sacrebleu), ROUGE-L (rouge-score)"
SQUAD_METRIC = "squad-v1.1-official"
_MARKER_LINE = re.compile(r"^[ \t]*(Description|Answer)\s*:", re.IGNORECASE | re.MULTILINE)
_ANSWER_LINE = re.compile(r"^[ \t]*" + re.escape(ANSWER_MARKER), re.MULTILINE)


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


def seeded_subset(keys: Sequence, limit: int | None, seed: int) -> set:
    """The keys of a seeded sample of `limit` of them (all without a limit), picked by position as
    `load_eval_records` picks VQA questions: the same limit and seed pick the same questions in every run."""
    if limit is None or limit >= len(keys):
        return set(keys)
    rng = np.random.default_rng(seed)
    return {keys[i] for i in rng.choice(len(keys), size=limit, replace=False)}


def translation_of(output: str) -> str | None:
    """The text after a leading "Translation:" up to the next "Description:" / "Answer:" line, or None."""
    text = output.strip()
    if not text.startswith(TRANSLATION_MARKER):
        return None
    end = _MARKER_LINE.search(text, len(TRANSLATION_MARKER))
    return text[len(TRANSLATION_MARKER):end.start() if end else None].strip()


def translate_first_instruction(instruction: str) -> str:
    """A VQA instruction asked translation first: "First translate the question into English, then <the
    instruction, continuing the sentence>" ("First describe ..., then answer ..." loses its own "First")."""
    return TRANSLATE_QUESTION_PREFIX + continue_sentence(instruction.removeprefix("First "))


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _cell(value) -> str:
    return "–" if value is None else f"{value:.2f}" if isinstance(value, float) else str(value)


def _table(header: Sequence[str], rows: Sequence[Sequence]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1),
            *("| " + " | ".join(_cell(value) for value in row) + " |" for row in rows)]


def language_files(folder: Path, pattern: str, languages: Sequence[str] | None, what: str) -> dict[str, Path]:
    """{lang: file} of a folder of per-language files (English first), every requested language present."""
    if not folder.is_dir():
        raise DataError(f"{what} folder not found: {folder}; pass --task-data DIR holding {pattern.format('<lang>')} "
                        "files (see data/README.md)")
    english = folder / pattern.format(ENGLISH)
    if not english.is_file():
        raise DataError(f"{folder}: no {english.name}; the English file is the reference every language file is "
                        "checked against (same question ids)")
    prefix, suffix = pattern.split("{}")
    found = {path.name[len(prefix):-len(suffix)]: path for path in folder.glob(pattern.format("*"))}
    if languages:
        missing = [lang for lang in languages if lang not in found]
        if missing:
            raise DataError(f"{folder}: no {pattern.format(missing[0])} for language {missing[0]} (found: "
                            f"{', '.join(sorted(found))}); pass --languages among those")
        chosen = list(dict.fromkeys(languages))
    else:
        chosen = sorted(found, key=lambda lang: (lang != ENGLISH, lang))
    return {lang: found[lang] for lang in chosen}


# -------------------------------------------------------------------------------------------------- sets


@dataclass
class Scored:
    """What a set's scoring gives: rows for predictions.jsonl, results files (name -> JSON in the official
    format), the report's numbers (overall, columns and the set's own), and the keys naming the questions."""

    predictions: list[dict]
    results: dict[str, object]
    numbers: dict
    question_keys: list[str]


class GqaSet:
    """GQA test-dev (any balanced split): VQA prompts, official exact-match accuracy, per type."""

    task, model_type, score_name = "gqa", "instructblip", "GQA accuracy"
    translate_first = False

    def __init__(self, options: TaskOptions, eval_options: EvalOptions, seed: int):
        self.normalize = options.gqa_normalize
        self.image_dir = Path(options.image_dir or DEFAULT_IMAGE_DIR)
        self.by_language = self._read(options, eval_options.limit, seed)

    def _read(self, options: TaskOptions, limit, seed) -> dict[str, list[dict]]:
        path = options.data_path
        if not path.is_file():
            raise DataError(f"GQA questions file not found: {path}; pass --task-data FILE (e.g. "
                            "testdev_balanced_questions.json, see data/README.md)")
        self._check_image_dir()
        return {ENGLISH: _subset(_balanced(read_gqa_records(path, self.image_dir)), limit, seed)}

    def _check_image_dir(self) -> None:
        if not self.image_dir.is_dir():
            raise DataError(f"GQA image folder not found: {self.image_dir}; pass --image-dir DIR holding the GQA "
                            "images <imageId>.jpg (images.zip, see data/README.md)")

    @property
    def metric(self) -> str:
        return "gqa-normalized" if self.normalize else "gqa-eval.py-exact"

    def prompt(self, requested: str, manifest) -> str:
        return resolve_prompt(requested, manifest)

    def records(self, prompt: str, manifest, config) -> list[dict]:
        templates = load_templates(_trained(manifest).get("templates") or config.data.templates)
        records = []
        for lang, questions in self.by_language.items():
            for record in questions:
                instruction = templates.render(prompt, question=record["question"])[0]
                if self.translate_first:
                    instruction = translate_first_instruction(instruction)
                records.append({**record, "language": lang, "instruction": instruction})
        return records

    def score(self, records: list[dict], generations: list[str]) -> Scored:
        predictions, results, per_language = [], {}, {}
        for lang in self.by_language:
            rows = [(r, g) for r, g in zip(records, generations) if r["language"] == lang]
            rows_predictions = [self._prediction(record, text) for record, text in rows]
            official = [{"questionId": p["question_id"], "prediction": p["answer"]} for p in rows_predictions]
            scores = score_gqa(_gqa_questions([r for r, _ in rows]), official, normalize=self.normalize,
                               source=f"{lang} predictions")
            for prediction in rows_predictions:
                prediction["correct"] = scores["perQuestion"][prediction["question_id"]]
            per_language[lang] = {key: value for key, value in scores.items() if key != "perQuestion"}
            per_language[lang].update(self._marker_numbers(rows_predictions, [r for r, _ in rows]))
            results[self._results_name(lang)] = official
            predictions += rows_predictions
        keys = [f"{r['language']}:{r['question_id']}" for r in records]
        return Scored(predictions, results, self._numbers(per_language), keys)

    def _prediction(self, record: dict, text: str) -> dict:
        parsed = parse_sit_output(text)
        return {
            "question_id": record["question_id"], "language": record["language"], "image_id": record["image_id"],
            "image_path": record["image_path"], "question": record["question"], "prompt": record["instruction"],
            "generation": text, "translation": translation_of(text), "description": parsed.description,
            "answer": parsed.answer, "has_answer_marker": parsed.has_answer_marker, "gt_answer": record["answer"],
            "structural_type": record["structural_type"], "semantic_type": record["semantic_type"],
        }

    def _marker_numbers(self, predictions: list[dict], records: list[dict]) -> dict:
        return {"answer_marker_rate": round(_mean([p["has_answer_marker"] for p in predictions]), 4),
                "description_marker_rate": round(_mean([p["description"] is not None for p in predictions]), 4)}

    def _results_name(self, lang: str) -> str:
        return "results.json"

    def _numbers(self, per_language: dict) -> dict:
        scores = per_language[ENGLISH]
        columns = {"binary": scores["binary"], "open": scores["open"],
                   **{name: group["accuracy"] for name, group in scores["accuracyPerStructuralType"].items()}}
        return {"overall": scores["accuracy"], "columns": columns, **scores}

    def markdown(self, report: Mapping) -> list[str]:
        lines = [f"Matching: {report['matching']}.", "", *_table(
            ["Questions", "Accuracy", "Binary", "Open"],
            [[report["questions"], report["accuracy"], report["binary"], report["open"]]])]
        for key, title in (("accuracyPerStructuralType", "Structural type"), ("accuracyPerSemanticType",
                                                                              "Semantic type")):
            lines += ["", f"## Per {title.lower()}", "", *_table(
                [title, "Questions", "Accuracy"],
                [[name, group["questions"], group["accuracy"]] for name, group in report[key].items()])]
        lines += ["", f"Outputs with an \"Answer:\" marker: {100 * report['answer_marker_rate']:.1f}%."]
        return lines


class XgqaSet(GqaSet):
    """xGQA: the GQA test-dev questions in each language file of a folder; per-language accuracy and the mean."""

    task, score_name = "xgqa", "xGQA accuracy (mean over the non-English languages)"

    def __init__(self, options: TaskOptions, eval_options: EvalOptions, seed: int):
        self.translate_first = options.translate_first
        super().__init__(options, eval_options, seed)

    def _read(self, options: TaskOptions, limit, seed) -> dict[str, list[dict]]:
        files = language_files(options.data_path, XGQA_FILE, options.languages, "xGQA")
        english_path = options.data_path / XGQA_FILE.format(ENGLISH)
        self._check_image_dir()
        english = _balanced(read_gqa_records(english_path, self.image_dir))
        self.english_questions = {r["question_id"]: r["question"] for r in english}
        chosen = seeded_subset([r["question_id"] for r in english], limit, seed)
        by_language = {}
        for lang, path in files.items():
            records = english if lang == ENGLISH else read_xgqa_records(path, english_path, self.image_dir)
            by_language[lang] = [r for r in records if r["question_id"] in chosen]
        return by_language

    @property
    def metric(self) -> str:
        return "xgqa-" + super().metric

    def _marker_numbers(self, predictions: list[dict], records: list[dict]) -> dict:
        numbers = super()._marker_numbers(predictions, records)
        if self.translate_first:  # an output without a translation counts as an empty one
            translations = [p["translation"] or "" for p in predictions]
            numbers["translation_marker_rate"] = round(_mean([p["translation"] is not None for p in predictions]), 4)
            numbers["translation_chrf"] = chrf(translations, [self.english_questions[r["question_id"]]
                                                              for r in records])
        return numbers

    def _results_name(self, lang: str) -> str:
        return f"results_{lang}.json"

    def _numbers(self, per_language: dict) -> dict:
        averaged = [lang for lang in per_language if lang != ENGLISH] or list(per_language)
        return {"overall": _mean([per_language[lang]["accuracy"] for lang in averaged]),
                "columns": {lang: scores["accuracy"] for lang, scores in per_language.items()},
                "mean_over": averaged, "perLanguage": per_language,
                "matching": NORMALIZED if self.normalize else EXACT, "translate_first": self.translate_first}

    def markdown(self, report: Mapping) -> list[str]:
        return language_table(report)


class XquadSet:
    """XQuAD (SQuAD v1.1 format, a file per language): context and question as a text instruction's input."""

    task, model_type, metric = "xquad", "causal_lm", SQUAD_METRIC
    score_name = "XQuAD F1 (mean over the non-English languages)"

    def __init__(self, options: TaskOptions, eval_options: EvalOptions, seed: int):
        self.translate_first = options.translate_first
        files = language_files(options.data_path, XQUAD_FILE, options.languages, "XQuAD")
        english_path = options.data_path / XQUAD_FILE.format(ENGLISH)
        english = read_squad_records(english_path)
        self.english = {record["id"]: record for record in english}
        chosen = seeded_subset([record["id"] for record in english], eval_options.limit, seed)
        self.by_language = {
            lang: [r for r in read_squad_records(path, english=english_path) if r["id"] in chosen]
            for lang, path in files.items()
        }

    def prompt(self, requested: str, manifest) -> str:
        if requested != "auto":
            raise EvaluationError("xquad asks with the plain text instruction, or translation first with "
                                  "--translate-first; leave --prompt out")
        return "translate" if self.translate_first else "plain"

    def records(self, prompt: str, manifest, config) -> list[dict]:
        records = []
        for lang, questions in self.by_language.items():
            alpaca = [_squad_as_alpaca(record) for record in questions]
            english = [_squad_as_alpaca(self.english[record["id"]]) for record in questions]
            # translate: the English records give the target layout, the language's inputs are what is shown
            built = (build_text_sit(english, "translate", translated=alpaca) if prompt == "translate"
                     else build_text_sit(alpaca, "plain"))
            records += [{**record, "language": lang, "instruction": text["instruction"],
                         "english_input": source["input"]}
                        for record, text, source in zip(questions, built, english)]
        return records

    def score(self, records: list[dict], generations: list[str]) -> Scored:
        predictions, results, per_language = [], {}, {}
        for lang in self.by_language:
            rows = [(r, g) for r, g in zip(records, generations) if r["language"] == lang]
            rows_predictions = [self._prediction(record, text) for record, text in rows]
            official = {p["id"]: p["answer"] for p in rows_predictions}
            scores = score_squad({r["id"]: r["answers"] for r, _ in rows}, official, source=f"{lang} predictions")
            for prediction in rows_predictions:
                prediction.update(scores["perQuestion"][prediction["id"]])
            per_language[lang] = {key: value for key, value in scores.items() if key != "perQuestion"}
            if self.translate_first:
                outputs = [text for _, text in rows]
                per_language[lang]["sequence_rate"] = sequence_rate(outputs, TRANSLATION_MARKER)
                per_language[lang]["translation_chrf"] = chrf(
                    [p["translation"] or "" for p in rows_predictions], [r["english_input"] for r, _ in rows])
            results[f"results_{lang}.json"] = official
            predictions += rows_predictions
        averaged = [lang for lang in per_language if lang != ENGLISH] or list(per_language)
        numbers = {
            "overall": _mean([per_language[lang]["f1"] for lang in averaged]),
            "columns": {f"{lang} {name}": per_language[lang][key] for lang in per_language
                        for name, key in (("EM", "exact_match"), ("F1", "f1"))},
            "mean_over": averaged, "perLanguage": per_language, "translate_first": self.translate_first,
        }
        return Scored(predictions, results, numbers, [f"{r['language']}:{r['id']}" for r in records])

    def _prediction(self, record: dict, text: str) -> dict:
        parsed = parse_sit_output(text)  # the answer after the translation, or the output's first line
        steps = split_sequence(text, TRANSLATION_MARKER)
        return {"id": record["id"], "language": record["language"], "question": record["question"],
                "prompt": record["instruction"], "generation": text,
                "translation": steps[0] if steps else None, "answer": parsed.answer,
                "has_answer_marker": parsed.has_answer_marker, "gt_answers": record["answers"]}

    def markdown(self, report: Mapping) -> list[str]:
        return language_table(report)


class TextSet:
    """The held-out Alpaca records of the config (eval_text_data), asked as the model was trained."""

    task, model_type, metric = "text", "causal_lm", TEXT_METRIC
    score_name = "text SIT: answer ROUGE-L"

    def __init__(self, options: TaskOptions, eval_options: EvalOptions, config):
        data = config.data
        if not data.eval_text_data:
            raise ConfigError(f"{config.source}: the text evaluation answers held-out records: set eval_text_data "
                              "(an Alpaca-format file never trained on; text_sit.yaml points at "
                              "data/alpaca_sample/alpaca_eval_en.json)")
        self.sources = (data.eval_text_data, data.eval_text_data_translated or "eval_text_data_translated")
        self.english = load_alpaca(data.eval_text_data)
        self.translated = load_alpaca(data.eval_text_data_translated) if data.eval_text_data_translated else None
        keys = list(range(len(self.english)))
        self.chosen = sorted(seeded_subset(keys, eval_options.limit, config.data.subset_seed))
        self.config_mode = data.text_mode

    def prompt(self, requested: str, manifest) -> str:
        """auto: the text_mode the checkpoint trained with (zero-shot: the config's); baseline: plain; sit:
        the config's text_mode, repeat unless it says translate."""
        if requested == "auto":
            return _trained(manifest).get("text_mode", self.config_mode)
        if requested == "baseline":
            return "plain"
        return self.config_mode if self.config_mode != "plain" else "repeat"

    def records(self, prompt: str, manifest, config) -> list[dict]:
        if prompt == "translate" and self.translated is None:
            raise ConfigError(f"{config.source}: text_mode translate shows the inputs in another language: set "
                              "eval_text_data_translated (eval_text_data's records, translated, in the same order)")
        built = build_text_sit(self.english, prompt, translated=self.translated, sources=self.sources)
        return [{**built[i], "input": self.english[i]["input"].strip(), "reference": self.english[i]["output"].strip(),
                 "source_instruction": self.english[i]["instruction"]} for i in self.chosen]

    def score(self, records: list[dict], generations: list[str]) -> Scored:
        mode = records[0]["text_mode"]
        marker = {"repeat": INPUT_MARKER, "translate": TRANSLATION_MARKER}.get(mode)
        predictions = [self._prediction(record, text, marker) for record, text in zip(records, generations)]
        answers = [p["answer"] for p in predictions]
        references = [r["reference"] for r in records]
        sequenced = [(r, g) for r, g in zip(records, generations) if marker and r["input"]]
        numbers = {"text_mode": mode, "records": len(records), "records_with_input": sum(bool(r["input"]) for r in records),
                   "sequence_rate": None, "first_step_fidelity": None, "first_step_metric": None,
                   "answer_rouge_l": rouge_l(answers, references), "answer_chrf": chrf(answers, references)}
        if sequenced:
            outputs, inputs = [g for _, g in sequenced], [r["input"] for r, _ in sequenced]
            numbers["sequence_rate"] = sequence_rate(outputs, marker)
            if mode == "repeat":
                numbers["first_step_metric"] = "exact copy rate (%)"
                numbers["first_step_fidelity"] = exact_copy_rate(outputs, inputs, marker)
            else:  # an output that does not follow the sequence has an empty translation
                numbers["first_step_metric"] = "chrF against the English input"
                steps = [split_sequence(output, marker) for output in outputs]
                numbers["first_step_fidelity"] = chrf([s[0] if s else "" for s in steps], inputs)
        numbers["overall"] = numbers["answer_rouge_l"]
        numbers["columns"] = {"sequence_rate": numbers["sequence_rate"],
                              "first_step_fidelity": numbers["first_step_fidelity"],
                              "answer_chrf": numbers["answer_chrf"]}
        results = [{"source_index": p["source_index"], "answer": p["answer"]} for p in predictions]
        keys = [f"{r['source_index']}:{r['source_instruction']}" for r in records]
        return Scored(predictions, {"results.json": results}, numbers, keys)

    def _prediction(self, record: dict, text: str, marker: str | None) -> dict:
        steps = split_sequence(text, marker) if marker and record["input"] else None
        return {"source_index": record["source_index"], "prompt": record["instruction"], "generation": text,
                "follows_sequence": steps is not None if marker and record["input"] else None,
                "first_step": steps[0] if steps else None, "answer": text_answer(text, record, marker),
                "reference": record["reference"]}

    def markdown(self, report: Mapping) -> list[str]:
        rows = [["follows the sequence (%)", report["sequence_rate"]],
                [f"first step: {report['first_step_metric'] or '–'}", report["first_step_fidelity"]],
                ["answer ROUGE-L", report["answer_rouge_l"]], ["answer chrF", report["answer_chrf"]]]
        return [f"text_mode `{report['text_mode']}`, {report['records']} held-out records "
                f"({report['records_with_input']} with an input: the sequence is asked of those).", "",
                *_table(["Score", "Value"], rows)]


def text_answer(output: str, record: Mapping, marker: str | None) -> str:
    """The final answer of a text output: everything after its first line-start "Answer:" (answers may span
    lines, unlike VQA's), or the whole output when the record was asked without a sequence or the model gave no
    marker (scored all the same)."""
    text = output.strip()
    if marker and record["input"]:
        found = _ANSWER_LINE.search(text)
        if found:
            return text[found.end():].strip()
    return text


LANGUAGE_COLUMNS = {  # (report key, column title); the first is what `overall` averages
    "xgqa": [("accuracy", "Accuracy"), ("binary", "Binary"), ("open", "Open"),
             ("answer_marker_rate", "\"Answer:\" marker"), ("translation_chrf", "Translation chrF")],
    "xquad": [("f1", "F1"), ("exact_match", "EM"), ("sequence_rate", "Follows the sequence %"),
              ("translation_chrf", "Translation chrF")],
}


def language_table(report: Mapping) -> list[str]:
    """Per language the set's numbers, then the mean row (over the non-English languages) of the first."""
    per_language = report["perLanguage"]
    columns = [(key, title) for key, title in LANGUAGE_COLUMNS[report["task"]]
               if any(scores.get(key) is not None for scores in per_language.values())]
    rows = [[lang, scores["questions"], *(scores.get(key) for key, _ in columns)]
            for lang, scores in per_language.items()]
    rows.append([f"**mean** ({', '.join(report['mean_over'])})", "", report["overall"], *([""] * (len(columns) - 1))])
    return _table(["Language", "Questions", *(title for _, title in columns)], rows)


def _squad_as_alpaca(record: Mapping) -> dict:
    return {"instruction": XQUAD_TASK, "input": f"{record['context']}\n{QUESTION_MARKER} {record['question']}",
            "output": record["answers"][0]}


def _balanced(records: list[dict]) -> list[dict]:
    return [record for record in records if record["is_balanced"]]  # the official eval.py scores only these


def _subset(records: list[dict], limit, seed) -> list[dict]:
    chosen = seeded_subset([record["question_id"] for record in records], limit, seed)
    return [record for record in records if record["question_id"] in chosen]


def _gqa_questions(records: list[dict]) -> dict[str, dict]:
    """The GQA questions (official field names) of records, for `score_gqa`."""
    return {r["question_id"]: {"imageId": r["image_id"], "question": r["question"], "answer": r["answer"],
                               "isBalanced": r["is_balanced"],
                               "types": None if r["structural_type"] is None else {
                                   "structural": r["structural_type"], "semantic": r["semantic_type"],
                                   "detailed": r["detailed_type"]}}
            for r in records}


def _trained(manifest) -> dict:
    return manifest["config"] if manifest else {}


SETS = {"gqa": GqaSet, "xgqa": XgqaSet, "xquad": XquadSet}


def make_set(task: TaskOptions, options: EvalOptions, config):
    """The set of `task`, its files read and checked."""
    if task.task == "text":
        return TextSet(task, options, config)
    if task.task not in SETS:
        raise EvaluationError(f"--task {task.task} runs through sit_vqa.evaluation.run_evaluation")
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
    generation = _generation_settings(config, options, _trained(manifest), evaluation_set.model_type)
    name = options.name or run_name(checkpoint, config)
    logger.info("evaluating %s on %d %s records (prompt %s)", name, len(records), task.task, prompt)
    generations = generate_texts(model, processor, records, generation, progress=options.progress)
    scored = evaluation_set.score(records, generations)
    settings = {
        "name": name, "task": task.task, "task_data": _task_data(task, config),
        "checkpoint": str(checkpoint) if checkpoint else None, "zero_shot": checkpoint is None,
        "global_step": manifest.get("global_step") if manifest else None,
        "trained_mode": _trained(manifest).get("text_mode" if evaluation_set.model_type == "causal_lm" else "mode"),
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
             f"**{_cell(report['overall'])}** on {report['num_questions']} questions of `{settings['task_data']}`, "
             f"prompt `{settings['prompt']}`, metric `{report['metric']}`.", "",
             *evaluation_set.markdown(report),
             "", "## Settings", "", "| Setting | Value |", "|---|---|",
             *(f"| {key} | {value} |" for key, value in settings.items())]
    return "\n".join(lines) + "\n"


def summary(report: Mapping) -> str:
    """What evaluate.py prints: the overall score with the columns, or for xGQA / XQuAD the per-language table."""
    settings = report["settings"]
    headline = f"{settings['name']}: {report['score_name']} {_cell(report['overall'])} on {report['num_questions']} questions"
    if "perLanguage" in report:
        return headline + "\n\n" + "\n".join(language_table(report))
    columns = ", ".join(f"{name} {_cell(value)}" for name, value in report["columns"].items())
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
