"""The one protocol every evaluation set follows (VQAv2 / OK-VQA, GQA, xGQA, XQuAD, held-out text), so that one
runner (`sit_vqa.evaluation.runner`) evaluates them all the same way.

A set is built from the options, `SetClass(task, options, config)` (its files read and checked there, before any
model loads; `sit_vqa.evaluation.registry.SETS` lists the sets by --task name), and answers:

- `task`, `takes_images` (answered by an image model, a family that `answers_images`, or by a text one),
  `metric`, `score_name` (what `overall` is), `reads` (the set-specific options it takes: any other one given
  is refused);
- `prompt(requested, trained)`: the prompt to ask with, from --prompt and what the model was trained with
  (a `TrainedSettings`);
- `records(prompt, trained, config)`: the records to generate for, each with "instruction" (and "image_path"
  for image sets), in a fixed order; `key(record)` names one (a JSON value, unique in the set);
- `score(records, generations)`: a `Scored` (predictions.jsonl rows, the results files in the set's official
  format, the report's numbers, the question keys);
- `report(scored, settings)`, `markdown(report)`, `summary(report)`: report.json, report.md and the line
  evaluate.py prints; `settings()`: what the report records about the set's data.

Every report carries `task`, `metric`, `score_name`, `overall`, `columns` and `question_set_sha256`: what
`--compare` reads. No model, no torch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sit_vqa.evaluation.reports import partial_load_lines, set_report, sit_lines

if TYPE_CHECKING:  # types only: the model side is not needed to describe a set
    from sit_vqa.modeling.checkpoint import TrainedSettings


@dataclass
class Scored:
    """What a set's scoring gives: rows for predictions.jsonl, results files (name -> JSON in the official
    format), the report's numbers (overall, columns and the set's own), and the keys naming the questions."""

    predictions: list[dict]
    results: dict[str, object]
    numbers: dict
    question_keys: list


class EvaluationSet:
    """The defaults of the protocol; a set overrides what it does differently."""

    task: str
    takes_images: bool
    metric: str
    score_name: str
    reads: frozenset[str] = frozenset()  # of TaskOptions' flags and EvalOptions' split, legacy_metric, prompt_variant

    def key(self, record: Mapping) -> Any:
        return record["key"]

    def prompt(self, requested: str, trained: TrainedSettings) -> str:
        raise NotImplementedError

    def records(self, prompt: str, trained: TrainedSettings, config) -> Sequence[Mapping]:
        raise NotImplementedError

    def score(self, records: Sequence[Mapping], generations: Sequence[str]) -> Scored:
        raise NotImplementedError

    def settings(self) -> dict:
        """What report.json's settings say about the set's data."""
        return {}

    def report(self, scored: Scored, settings: Mapping) -> dict:
        """report.json: the keys every report carries (what --compare reads), then the set's own numbers."""
        return set_report(self.task, self.score_name, self.metric, scored.numbers, scored.question_keys, settings)

    def markdown_lines(self, report: Mapping) -> list[str]:
        """The set's own tables in report.md."""
        return []

    def markdown(self, report: Mapping) -> str:
        settings = report["settings"]
        lines = [f"# {report['score_name']}: {settings['name']}", "",
                 f"**{table_cell(report['overall'])}** on {report['num_questions']} questions of "
                 f"`{settings.get('task_data')}`, prompt `{settings['prompt']}`, metric `{report['metric']}`.", "",
                 *partial_load_lines(settings),
                 *self.markdown_lines(report),
                 *sit_lines(report),
                 "", "## Settings", "", "| Setting | Value |", "|---|---|",
                 *(f"| {key} | {value} |" for key, value in settings.items())]
        return "\n".join(lines) + "\n"

    def summary(self, report: Mapping) -> str:
        """What evaluate.py prints: the overall score with the columns."""
        columns = ", ".join(f"{name} {table_cell(value)}" for name, value in report["columns"].items())
        return f"{headline(report)} ({columns})"


def headline(report: Mapping) -> str:
    settings = report["settings"]
    partial = " (PARTIAL LOAD)" if settings.get("partial_load") else ""
    return (f"{settings['name']}{partial}: {report['score_name']} {table_cell(report['overall'])} on "
            f"{report['num_questions']} questions")


def table_cell(value) -> str:
    return "–" if value is None else f"{value:.2f}" if isinstance(value, float) else str(value)


def table(header: Sequence[str], rows: Sequence[Sequence]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1),
            *("| " + " | ".join(table_cell(value) for value in row) + " |" for row in rows)]


def mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None
