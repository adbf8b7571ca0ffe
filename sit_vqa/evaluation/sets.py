"""The evaluation sets beside VQAv2 (`sit_vqa.evaluation.vqa`) and the held-out text (`sit_vqa.evaluation.text`):
GQA, xGQA and XQuAD, each an `EvaluationSet` (`sit_vqa.evaluation.protocol`): its records, prompt, parsing,
scoring and report tables. `sit_vqa.evaluation.runner` runs them (evaluate.py --task).

- gqa: the balanced questions of a GQA questions file, asked with the VQA prompts (`--prompt`); accuracy as the
  official eval.py (exact match; `--gqa-normalize` lower-cases and drops a trailing period first, stated in the
  report), overall, binary/open, per structural and semantic type.
- xgqa: every testdev_balanced_questions_<lang>.json of a folder (checked against the _en file); accuracy per
  language and its mean over the non-English languages. `--translate-first` asks "First translate the question
  into English, then ..." (target layout "Translation: ...\\nDescription: ...\\nAnswer: ..."); the parser takes
  the answer after the translation, and the translations are scored with chrF against the English questions.
- xquad: every xquad.<lang>.json of a folder (checked against xquad.en.json), asked with context and question as
  the input of a text instruction: plain, or `--translate-first` ("First translate the input into English,
  then ..."); SQuAD v1.1 exact match and F1 per language, overall = mean F1 over the non-English languages.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from sit_vqa.data.gqa import read_gqa_records, read_xgqa_records
from sit_vqa.data.prompts import parse_sit_output, resolve_prompt
from sit_vqa.data.squad import read_squad_records
from sit_vqa.data.text_sit import TRANSLATION_MARKER, build_text_sit, continue_sentence
from sit_vqa.errors import DataError, EvaluationError
from sit_vqa.evaluation.options import DEFAULT_IMAGE_DIR, EvalOptions, TaskOptions
from sit_vqa.evaluation.protocol import EvaluationSet, Scored, headline, mean, table
from sit_vqa.metrics.gqa import EXACT, NORMALIZED, score_gqa
from sit_vqa.metrics.sit import sit_figures
from sit_vqa.metrics.squad import score_squad
from sit_vqa.metrics.text import chrf, sequence_rate, split_sequence

if TYPE_CHECKING:
    from sit_vqa.modeling.checkpoint import TrainedSettings

logger = logging.getLogger(__name__)

XGQA_FILE = "testdev_balanced_questions_{}.json"
XQUAD_FILE = "xquad.{}.json"
ENGLISH = "en"

TRANSLATE_QUESTION_PREFIX = "First translate the question into English, then "
XQUAD_TASK = "Answer the question about the text."
QUESTION_MARKER = "Question:"
SQUAD_METRIC = "squad-v1.1-official"
_MARKER_LINE = re.compile(r"^[ \t]*(Description|Answer)\s*:", re.IGNORECASE | re.MULTILINE)


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


class GqaSet(EvaluationSet):
    """GQA test-dev (any balanced split): VQA prompts, official exact-match accuracy, per type."""

    task, takes_images, score_name = "gqa", True, "GQA accuracy"
    reads = frozenset({"image_dir", "gqa_normalize"})
    translate_first = False

    def __init__(self, options: TaskOptions, eval_options: EvalOptions, config):
        self.normalize = options.gqa_normalize
        self.data_path = options.data_path
        self.image_dir = Path(options.image_dir or DEFAULT_IMAGE_DIR)
        self.by_language = self._read(options, eval_options.limit, config.data.subset_seed)

    def _read(self, options: TaskOptions, limit, seed) -> dict[str, list[dict]]:
        path = options.data_path
        if not path.is_file():
            raise DataError(f"GQA questions file not found: {path}; pass --task-data FILE (e.g. "
                            "testdev_balanced_questions.json, see data/README.md)")
        self._check_image_dir()
        return {ENGLISH: _subset(balanced_records(read_gqa_records(path, self.image_dir)), limit, seed)}

    def _check_image_dir(self) -> None:
        if not self.image_dir.is_dir():
            raise DataError(f"GQA image folder not found: {self.image_dir}; pass --image-dir DIR holding the GQA "
                            "images <imageId>.jpg (images.zip, see data/README.md)")

    @property
    def metric(self) -> str:
        return "gqa-normalized" if self.normalize else "gqa-eval.py-exact"

    def key(self, record: Mapping) -> str:
        return f"{record['language']}:{record['question_id']}"

    def settings(self) -> dict:
        return {"task_data": str(self.data_path), "translate_first": self.translate_first}

    def prompt(self, requested: str, trained: TrainedSettings) -> str:
        return resolve_prompt(requested, trained.mode)

    def records(self, prompt: str, trained: TrainedSettings, config) -> list[dict]:
        templates = trained.templates  # as the model was trained (zero-shot: the config's)
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
            scores = score_gqa(gqa_questions([r for r, _ in rows]), official, normalize=self.normalize,
                               source=f"{lang} predictions")
            for prediction in rows_predictions:
                prediction["correct"] = scores["perQuestion"][prediction["question_id"]]
            per_language[lang] = {key: value for key, value in scores.items() if key != "perQuestion"}
            per_language[lang].update(self._marker_numbers(rows_predictions, [r for r, _ in rows]))
            results[self._results_name(lang)] = official
            predictions += rows_predictions
        keys = [f"{r['language']}:{r['question_id']}" for r in records]
        numbers = self._numbers(per_language)
        # GQA's images have no COCO captions to score descriptions against: the other SIT figures only
        numbers["sit"] = sit_figures(predictions, score="correct")
        return Scored(predictions, results, numbers, keys)

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
        return {"answer_marker_rate": round(mean([p["has_answer_marker"] for p in predictions]), 4),
                "description_marker_rate": round(mean([p["description"] is not None for p in predictions]), 4)}

    def _results_name(self, lang: str) -> str:
        return "results.json"

    def _numbers(self, per_language: dict) -> dict:
        scores = per_language[ENGLISH]
        columns = {"binary": scores["binary"], "open": scores["open"],
                   **{name: group["accuracy"] for name, group in scores["accuracyPerStructuralType"].items()}}
        return {"overall": scores["accuracy"], "columns": columns, **scores}

    def markdown_lines(self, report: Mapping) -> list[str]:
        lines = [f"Matching: {report['matching']}.", "", *table(
            ["Questions", "Accuracy", "Binary", "Open"],
            [[report["questions"], report["accuracy"], report["binary"], report["open"]]])]
        for key, title in (("accuracyPerStructuralType", "Structural type"), ("accuracyPerSemanticType",
                                                                              "Semantic type")):
            lines += ["", f"## Per {title.lower()}", "", *table(
                [title, "Questions", "Accuracy"],
                [[name, group["questions"], group["accuracy"]] for name, group in report[key].items()])]
        lines += ["", f"Outputs with an \"Answer:\" marker: {100 * report['answer_marker_rate']:.1f}%."]
        return lines


class XgqaSet(GqaSet):
    """xGQA: the GQA test-dev questions in each language file of a folder; per-language accuracy and the mean."""

    task, score_name = "xgqa", "xGQA accuracy (mean over the non-English languages)"
    reads = GqaSet.reads | {"languages", "translate_first"}

    def __init__(self, options: TaskOptions, eval_options: EvalOptions, config):
        self.translate_first = options.translate_first
        super().__init__(options, eval_options, config)

    def _read(self, options: TaskOptions, limit, seed) -> dict[str, list[dict]]:
        files = language_files(options.data_path, XGQA_FILE, options.languages, "xGQA")
        english_path = options.data_path / XGQA_FILE.format(ENGLISH)
        self._check_image_dir()
        english = balanced_records(read_gqa_records(english_path, self.image_dir))
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
            numbers["translation_marker_rate"] = round(mean([p["translation"] is not None for p in predictions]), 4)
            numbers["translation_chrf"] = chrf(translations, [self.english_questions[r["question_id"]]
                                                              for r in records])
        return numbers

    def _results_name(self, lang: str) -> str:
        return f"results_{lang}.json"

    def _numbers(self, per_language: dict) -> dict:
        averaged = [lang for lang in per_language if lang != ENGLISH] or list(per_language)
        return {"overall": mean([per_language[lang]["accuracy"] for lang in averaged]),
                "columns": {lang: scores["accuracy"] for lang, scores in per_language.items()},
                "mean_over": averaged, "perLanguage": per_language,
                "matching": NORMALIZED if self.normalize else EXACT, "translate_first": self.translate_first}

    def markdown_lines(self, report: Mapping) -> list[str]:
        return language_table(report)

    def summary(self, report: Mapping) -> str:
        return headline(report) + "\n\n" + "\n".join(language_table(report))


class XquadSet(EvaluationSet):
    """XQuAD (SQuAD v1.1 format, a file per language): context and question as a text instruction's input."""

    task, takes_images, metric = "xquad", False, SQUAD_METRIC
    score_name = "XQuAD F1 (mean over the non-English languages)"
    reads = frozenset({"languages", "translate_first"})

    def __init__(self, options: TaskOptions, eval_options: EvalOptions, config):
        self.translate_first = options.translate_first
        self.data_path = options.data_path
        files = language_files(options.data_path, XQUAD_FILE, options.languages, "XQuAD")
        english_path = options.data_path / XQUAD_FILE.format(ENGLISH)
        english = read_squad_records(english_path)
        self.english = {record["id"]: record for record in english}
        chosen = seeded_subset([record["id"] for record in english], eval_options.limit, config.data.subset_seed)
        self.by_language = {
            lang: [r for r in read_squad_records(path, english=english_path) if r["id"] in chosen]
            for lang, path in files.items()
        }

    def key(self, record: Mapping) -> str:
        return f"{record['language']}:{record['id']}"

    def settings(self) -> dict:
        return {"task_data": str(self.data_path), "translate_first": self.translate_first}

    def prompt(self, requested: str, trained: TrainedSettings) -> str:
        if requested != "auto":
            raise EvaluationError("xquad asks with the plain text instruction, or translation first with "
                                  "--translate-first; leave --prompt out")
        return "translate" if self.translate_first else "plain"

    def records(self, prompt: str, trained: TrainedSettings, config) -> list[dict]:
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
            "overall": mean([per_language[lang]["f1"] for lang in averaged]),
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

    def markdown_lines(self, report: Mapping) -> list[str]:
        return language_table(report)

    def summary(self, report: Mapping) -> str:
        return headline(report) + "\n\n" + "\n".join(language_table(report))


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
    return table(["Language", "Questions", *(title for _, title in columns)], rows)


def _squad_as_alpaca(record: Mapping) -> dict:
    return {"instruction": XQUAD_TASK, "input": f"{record['context']}\n{QUESTION_MARKER} {record['question']}",
            "output": record["answers"][0]}


def balanced_records(records: list[dict]) -> list[dict]:
    return [record for record in records if record["is_balanced"]]  # the official eval.py scores only these


def _subset(records: list[dict], limit, seed) -> list[dict]:
    chosen = seeded_subset([record["question_id"] for record in records], limit, seed)
    return [record for record in records if record["question_id"] in chosen]


def gqa_questions(records: list[dict]) -> dict[str, dict]:
    """The GQA questions (official field names) of records, for `score_gqa`."""
    return {r["question_id"]: {"imageId": r["image_id"], "question": r["question"], "answer": r["answer"],
                               "isBalanced": r["is_balanced"],
                               "types": None if r["structural_type"] is None else {
                                   "structural": r["structural_type"], "semantic": r["semantic_type"],
                                   "detailed": r["detailed_type"]}}
            for r in records}
