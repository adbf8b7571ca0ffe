"""Evaluation reports and comparisons: what an evaluation writes, and the side-by-side table of several.

- `set_report` -- report.json of any set; `vqa_numbers` / `build_report` / `report_markdown` -- the VQA
  report's numbers (with the share of outputs that carried the "Answer:" / "Description:" markers) and tables;
- `write_report_files` -- the files of any set's evaluation (results files, predictions.jsonl, report.md,
  report.json last);
- `compare_runs` / `compare_markdown` / `write_comparison` -- a side-by-side table of several runs' reports, with
  deltas against the first (a partially loaded checkpoint's row says so), refused when the runs were scored on
  different tasks, questions or metric versions; `default_compare_dir` is where it goes without --out.

Every report (built by `sit_vqa.evaluation.protocol.EvaluationSet.report` through `set_report`) carries the keys a comparison reads:
`task`, `metric`, `score_name` (what `overall` is), `overall`, `columns` (the table's other numbers, e.g. per
answer type or per language) and `question_set_sha256`. Reports written before `task` and `columns` existed
are VQA reports: their columns are `perAnswerType`.

Only reads and writes JSON and markdown: no model, no torch.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

from sit_vqa.errors import EvaluationError
from sit_vqa.files import atomic_path, write_json_atomically, write_text_atomically

ANSWER_TYPES = ("yes/no", "number", "other")  # VQAv2's, in the order tables show them
REPORT_FILES = ("results.json", "predictions.jsonl", "report.json", "report.md")
COMPARE_FILES = ("compare.md", "compare.json")


def question_set_hash(question_ids: Sequence[int | str]) -> str:
    """sha256 of the sorted question ids: runs can be compared only when these agree. Integer ids (VQAv2, and
    GQA's digit strings) sort as numbers; other ids (XQuAD's hex strings, "<lang>:<id>") as strings."""
    try:
        ordered = sorted(int(qid) for qid in question_ids)
    except ValueError:
        ordered = sorted(str(qid) for qid in question_ids)
    text = ",".join(map(str, ordered))
    return hashlib.sha256(text.encode()).hexdigest()


def set_report(task: str, score_name: str, metric: str, numbers: Mapping, question_keys: Sequence,
               settings: Mapping) -> dict:
    """report.json of any set (`EvaluationSet.report`): the keys every report carries (what --compare reads),
    then the set's own numbers."""
    return {
        "task": task, "score_name": score_name, "metric": metric,
        **numbers,
        "num_questions": len(question_keys),
        "question_set_sha256": question_set_hash(question_keys),
        "settings": {**settings, "metric": metric},
    }


def vqa_numbers(scored, join_report: Mapping | None = None) -> dict:
    """The VQA report's numbers of scored generations (`sit_vqa.evaluation.vqa.score_generations`): the
    official ones, marker rates, question counts, what the join dropped."""
    predictions = scored.predictions
    count = len(predictions)
    with_answer = sum(p["has_answer_marker"] for p in predictions)
    with_description = sum(p["description"] is not None for p in predictions)
    join_report = join_report or {}
    return {
        "overall": scored.metrics["overall"],
        "columns": scored.metrics["perAnswerType"],
        "perAnswerType": scored.metrics["perAnswerType"],
        "perQuestionType": scored.metrics["perQuestionType"],
        "answer_marker_rate": round(with_answer / count, 4),
        "description_marker_rate": round(with_description / count, 4),
        "outputs_without_answer_marker": count - with_answer,
        "questions_per_answer_type": dict(Counter(p["answer_type"] for p in predictions)),
        "questions_per_question_type": dict(Counter(p["question_type"] for p in predictions)),
        "dropped": dict(join_report.get("dropped", {})),
        "questions_read": join_report.get("questions_read"),
        "questions_joined": join_report.get("joined"),
    }


def build_report(scored, settings: Mapping | None = None, join_report: Mapping | None = None) -> dict:
    """The VQA report.json of scored generations, as `VqaSet.report` writes it (without the SIT figures, which
    need the images' captions): `set_report` of `vqa_numbers`."""
    return set_report("vqa", "VQA accuracy", scored.metric_version, vqa_numbers(scored, join_report),
                      [p["question_id"] for p in scored.predictions], settings or {})


def partial_load_lines(settings: Mapping) -> list[str]:
    """A warning for report.md when the checkpoint was loaded without some of its trained tensors."""
    partial = settings.get("partial_load")
    if not partial:
        return []
    return [f"**Partial load**: {partial['missing']} of the {partial['expected']} trained tensors were missing from "
            f"the checkpoint and kept the base model's values (e.g. {', '.join(partial['examples'])}).", ""]


def report_markdown(report: Mapping) -> str:
    """report.md: the report as tables."""
    settings = report["settings"]
    counts = report["questions_per_answer_type"]
    lines = [
        f"# VQA accuracy: {settings.get('name', 'run')}",
        "",
        f"{report['num_questions']} questions of {_split_words(settings)}, "
        f"prompt `{settings.get('prompt', '?')}`, metric `{report['metric']}`.",
        "",
        *partial_load_lines(settings),
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
    lines += sit_lines(report)
    dropped = ", ".join(f"{reason} {n}" for reason, n in report["dropped"].items()) or "none"
    lines += [
        "", "## Data", "",
        f"- questions read: {report['questions_read']}, joined: {report['questions_joined']}",
        f"- dropped by the join (not scored): {dropped}",
        "", "## Settings", "", "| Setting | Value |", "|---|---|",
    ]
    lines += [f"| {key} | {value} |" for key, value in settings.items()]
    return "\n".join(lines) + "\n"


SIT_ROWS = (  # (report["sit"] key, what the row says), in report.md and --compare
    ("description_cider_d", "description CIDEr-D vs the image's reference captions"),
    ("description_bleu4", "description BLEU-4 vs the image's reference captions"),
    ("description_words", "description length (words)"),
    ("answer_in_description_rate", "answers found in the model's own description (share)"),
    ("accuracy_answer_in_description", "accuracy where the description carries the answer"),
    ("accuracy_answer_not_in_description", "accuracy where it does not"),
    ("answer_marker_rate", "outputs with an \"Answer:\" marker (share)"),
    ("description_marker_rate", "outputs with a \"Description:\" marker (share)"),
)


def sit_lines(report: Mapping) -> list[str]:
    """report.md's section of the SIT-aware figures (`sit_vqa.metrics.sit`), when the report has them."""
    figures = report.get("sit")
    if not figures:
        return []
    counts = (f"{figures['questions_answer_in_description']} / {figures['questions_answer_not_in_description']} "
              "questions with / without the answer in the description")
    return ["", "## Describe, then answer (SIT figures)", "", "| Figure | Value |", "|---|---:|",
            *(f"| {title} | {_cell(figures.get(key))} |" for key, title in SIT_ROWS), "", f"({counts}; – : does "
            "not apply, e.g. no descriptions or no reference captions)"]


def _cell(value) -> str:
    return "–" if value is None else f"{value:.2f}" if isinstance(value, float) else str(value)


def _split_words(settings: Mapping) -> str:
    """The split as the files name it (their data_subtype), and the config keys they were read through."""
    if "data_subtype" not in settings:  # a report written before the files were asked
        return f"the {settings.get('split', '?')} split"
    return f"{settings['data_subtype'] or 'files without a data_subtype'} (read through the {settings['config_keys']} keys)"


def _ordered(per_answer_type: Mapping[str, float]) -> list[tuple[str, float]]:
    """VQAv2's answer types in their table order, then other names in the order given (stable sort: the
    columns of the other sets keep the order their reports list them in)."""
    rank = {name: i for i, name in enumerate(ANSWER_TYPES)}
    return sorted(per_answer_type.items(), key=lambda item: rank.get(item[0], len(rank)))


def write_report_files(
    out_dir: str | Path, results: Mapping[str, object], predictions: Sequence[Mapping], report: Mapping,
    markdown: str,
) -> dict[str, Path]:
    """The files of any evaluation: each results file (name -> its JSON, in the set's official format),
    predictions.jsonl, report.md and report.json; returns their paths by name."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {name: out_dir / name for name in (*results, "predictions.jsonl", "report.md", "report.json")}
    for name, content in results.items():
        write_text_atomically(paths[name], json.dumps(content, ensure_ascii=False) + "\n")
    with atomic_path(paths["predictions.jsonl"]) as temporary, temporary.open("w", encoding="utf-8") as handle:
        for prediction in predictions:
            handle.write(json.dumps(prediction, ensure_ascii=False) + "\n")
    write_text_atomically(paths["report.md"], markdown)
    # written last: a directory with report.json is a complete evaluation (what --compare reads)
    write_json_atomically(paths["report.json"], report)
    return paths


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
    missing = [key for key in ("overall", "question_set_sha256", "metric") if key not in report]
    if "columns" not in report and "perAnswerType" not in report:
        missing.append("columns")
    if missing:
        raise EvaluationError(f"{path}: not an evaluation report (no {', '.join(missing)}); evaluate the run again")
    return report


def report_task(report: Mapping) -> str:
    return report.get("task", "vqa")  # reports from before the other sets existed are VQA reports


def _columns(report: Mapping) -> Mapping[str, float | None]:
    return report["columns"] if "columns" in report else report["perAnswerType"]


def compare_runs(runs: Sequence[str | Path], names: Sequence[str] | None = None) -> dict:
    """Side-by-side numbers of several evaluations, with deltas against the first (the reference row).

    Refused (EvaluationError) when the runs were scored on different tasks, questions or metric versions.
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
    columns = [name for name, _ in _ordered({column: 0 for r in reports for column in _columns(r)})]
    rows = []
    for report, name, run in zip(reports, names, runs):
        row = {"name": name, "run": str(run), "overall": report["overall"],
               "columns": {column: _columns(report).get(column) for column in columns},
               "answer_marker_rate": report.get("answer_marker_rate"),
               "partial_load": report.get("settings", {}).get("partial_load"), "sit": report.get("sit")}
        row["delta"] = {column: _delta(report, reference, column) for column in ("overall", *columns)}
        rows.append(row)
    return {
        "reference": names[0],
        "task": report_task(reference),
        "score_name": reference.get("score_name", "VQA accuracy"),
        "metric": reference["metric"],
        "question_set_sha256": reference["question_set_sha256"],
        "num_questions": reference.get("num_questions"),
        "columns": columns,
        "rows": rows,
    }


def _report_name(report: Mapping, run: str | Path) -> str:
    path = Path(run)
    return report.get("settings", {}).get("name") or (path.parent.name if path.is_file() else path.name)


def _check_comparable(reference: Mapping, reference_name: str, reference_run, report: Mapping, name: str, run) -> None:
    if report_task(report) != report_task(reference):
        raise EvaluationError(
            f"cannot compare {name} ({run}, task {report_task(report)}) with {reference_name} ({reference_run}, task "
            f"{report_task(reference)}): compare runs evaluated on the same set (the same --task)"
        )
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
    return report["overall"] if column == "overall" else _columns(report).get(column)


def _delta(report: Mapping, reference: Mapping, column: str) -> float | None:
    value, base = _value(report, column), _value(reference, column)
    if value is None or base is None:
        return None
    return round(value - base, 2)


def compare_markdown(comparison: Mapping) -> str:
    """The comparison as a markdown table: accuracy per column, then (delta vs the reference row)."""
    columns = ["overall", *comparison["columns"]]
    lines = [
        f"{comparison.get('score_name', 'VQA accuracy')} ({comparison['metric']}, {comparison['num_questions']} questions, "
        f"deltas vs {comparison['reference']})",
        "",
        "| Run | " + " | ".join(c if c != "overall" else "Overall" for c in columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    for index, row in enumerate(comparison["rows"]):
        cells = []
        for column in columns:
            value = row["overall"] if column == "overall" else row["columns"][column]
            delta = row["delta"][column]
            cell = "–" if value is None else f"{value:.2f}"
            if index and delta is not None:
                cell += f" ({delta:+.2f})"
            cells.append(cell)
        partial = " (partial load)" if row.get("partial_load") else ""
        lines.append(f"| {row['name']}{partial} | " + " | ".join(cells) + " |")
    lines += _compare_sit_lines(comparison["rows"])
    return "\n".join(lines) + "\n"


def _compare_sit_lines(rows: Sequence[Mapping]) -> list[str]:
    """The SIT figures of the compared runs side by side, when any has them."""
    if not any(row.get("sit") for row in rows):
        return []
    return ["", "SIT figures (describe, then answer):", "",
            "| Figure | " + " | ".join(row["name"] for row in rows) + " |", "|---|" + "---:|" * len(rows),
            *(f"| {title} | " + " | ".join(_cell((row.get("sit") or {}).get(key)) for row in rows) + " |"
              for key, title in SIT_ROWS)]


def default_compare_dir(runs: Sequence[str | Path], comparison: Mapping) -> Path:
    """Where --compare writes without --out: compare-<row names> beside the first run's folder (never the
    current directory, which may be anywhere)."""
    first = Path(runs[0])
    folder = first.parent if first.is_dir() else first.parent.parent  # a run folder, or its report.json
    names = "-".join(row["name"] for row in comparison["rows"])
    return folder / ("compare-" + re.sub(r"[^A-Za-z0-9._-]+", "_", names)[:120])


def write_comparison(comparison: Mapping, out_dir: str | Path) -> dict[str, Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {name: out_dir / name for name in COMPARE_FILES}
    write_text_atomically(paths["compare.md"], compare_markdown(comparison))
    write_json_atomically(paths["compare.json"], comparison)
    return paths
