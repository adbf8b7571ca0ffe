"""GQA accuracy as the official GQA `eval.py` defines it, for GQA test-dev and the xGQA language files.

    python -m sit_vqa.metrics.gqa --questions testdev_balanced_questions.json --results predictions.json \\
        [--normalize] [--allow-missing] [--english testdev_balanced_questions_en.json] [--out report.json]

Results are in the official predictions format, `[{"questionId": "20968567", "prediction": "yes"}, ...]`
(an integer questionId is read as its digits). From Python: `score_gqa(questions, predictions, normalize=False)`,
`score_gqa_files(...)`, `normalize_gqa_answer(text)`.

The official definition (eval.py of https://cs.stanford.edu/people/dorarad/gqa/evaluate.html):
- a question scores 1 when the prediction equals the answer as strings (`predicted == gold`), else 0;
- only questions with `isBalanced` true are scored (all of testdev_balanced are);
- accuracy = 100 * mean; `binary` over the questions whose structural type is not "query", `open` over "query";
  per structural and per semantic type the same mean, with the number of questions. Unrounded, as eval.py
  keeps them (it prints 2 decimals).
Validity, plausibility, consistency, distribution and grounding need the choices, all-questions and
scene-graph files and are not computed here.

`normalize=True` (`--normalize`) is NOT the official metric; it is the clean-up common practice applies first:
prediction and answer are lower-cased, stripped of surrounding whitespace and of one trailing period
("Yes." -> "yes"). The report records which one was used (`normalize`, `matching`).

Input policy (eval.py raises on a missing prediction and lets the last of two predictions win):
- a prediction for a question id not in the questions file: error;
- two predictions for one question: error;
- a balanced question without a prediction: error, unless `allow_missing` (then only answered questions are
  scored and `skipped` says how many were not).
Bad input raises `GQAMetricError` (a `sit_vqa.errors.DataError`) naming the file, the record and the fix.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import msgspec

from sit_vqa.data.gqa import GqaQuestion, read_gqa_questions
from sit_vqa.metrics import cli
from sit_vqa.errors import DataError, SitVqaError
from sit_vqa.files import (
    check_same_ids,
    decode_json,
    read_bytes,
    write_text_atomically,
)

PREDICTIONS_FORMAT = 'GQA predictions in the official format, [{"questionId": "<id>", "prediction": "<answer>"}, ...]'
EXACT = "exact string match (official eval.py)"
NORMALIZED = "lower-cased, whitespace-stripped, one trailing period removed, then exact match (not official)"


class GQAMetricError(DataError):
    """Input the GQA evaluator cannot score; the message names the file, the record and the fix."""


class GqaPrediction(msgspec.Struct, rename="camel"):
    question_id: str | int
    prediction: str


def normalize_gqa_answer(text: str) -> str:
    """The common clean-up before GQA's exact match: lower-case, strip, drop one trailing period."""
    return text.strip().lower().removesuffix(".").strip()


def load_gqa_predictions(path: str | Path) -> list[GqaPrediction]:
    path = Path(path)
    try:
        data = read_bytes(path, "GQA predictions file")
        return decode_json(path, list[GqaPrediction], PREDICTIONS_FORMAT, data, kind="gqa_predictions")
    except DataError as error:
        raise GQAMetricError(str(error)) from None


def _examples(ids, limit: int = 5) -> str:
    ids = sorted(ids)
    return ", ".join(ids[:limit]) + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


def _prediction_map(predictions: Sequence[GqaPrediction], questions: Mapping[str, GqaQuestion], source: str):
    by_id: dict[str, str] = {}
    repeated = set()
    for prediction in predictions:
        question_id = str(prediction.question_id)
        if question_id in by_id:
            repeated.add(question_id)
        by_id[question_id] = prediction.prediction
    if repeated:
        raise GQAMetricError(f"{source}: {len(repeated)} question ids have more than one prediction, e.g. "
                             f"{_examples(repeated)}. Fix: keep one prediction per question.")
    unknown = by_id.keys() - questions.keys()
    if unknown:
        raise GQAMetricError(
            f"{source}: {len(unknown)} predictions are for question ids that are not in the questions file, e.g. "
            f"{_examples(unknown)}. Fix: score against the questions file you predicted (same split)."
        )
    return by_id


def _check_missing(by_id: dict[str, str], questions: Mapping[str, GqaQuestion], allow_missing: bool, source: str):
    missing = [qid for qid, question in questions.items() if question.is_balanced and qid not in by_id]
    if missing and not allow_missing:
        raise GQAMetricError(
            f"{source}: no prediction for {len(missing)} of the balanced questions, e.g. {_examples(missing)}. "
            "Fix: answer every question, or allow missing predictions (--allow-missing / allow_missing=True) to "
            "score only the answered ones."
        )
    return len(missing)


def _percent(scores: list[float]) -> float | None:
    return 100 * float(sum(scores)) / len(scores) if scores else None


def _per_type(groups: dict[str, list[float]]) -> dict[str, dict]:
    return {name: {"accuracy": _percent(groups[name]), "questions": len(groups[name])} for name in sorted(groups)}


def score_gqa(
    questions: Mapping[str, GqaQuestion | Mapping],
    predictions: Sequence[GqaPrediction | Mapping],
    normalize: bool = False,
    allow_missing: bool = False,
    source: str = "predictions",
) -> dict:
    """GQA accuracy of predictions against questions (question id -> question, as `read_gqa_questions` gives or
    the file's dicts). Returns {"accuracy", "binary", "open", "accuracyPerStructuralType",
    "accuracyPerSemanticType", "perQuestion", "questions", "skipped", "normalize", "matching"}; percentages
    unrounded, None for a group without questions."""
    try:
        questions = msgspec.convert(dict(questions), type=dict[str, GqaQuestion], from_attributes=True)
        predictions = msgspec.convert(list(predictions), type=list[GqaPrediction], from_attributes=True)
    except msgspec.ValidationError as error:
        raise GQAMetricError(f"{source}: {error}. Fix: pass GQA questions and {PREDICTIONS_FORMAT}") from None
    by_id = _prediction_map(predictions, questions, source)
    skipped = _check_missing(by_id, questions, allow_missing, source)
    clean = normalize_gqa_answer if normalize else str
    scores, binary, open_, structural, semantic, per_question = [], [], [], {}, {}, {}
    for question_id, question in questions.items():  # file order, as eval.py iterates
        if not question.is_balanced or question_id not in by_id:
            continue
        score = float(clean(by_id[question_id]) == clean(question.answer))
        scores.append(score)
        per_question[question_id] = score
        if question.types is not None:
            structural.setdefault(question.types.structural, []).append(score)
            semantic.setdefault(question.types.semantic, []).append(score)
            (open_ if question.types.structural == "query" else binary).append(score)
    if not scores:
        raise GQAMetricError(f"{source}: no balanced question has a prediction; nothing to score")
    return {
        "accuracy": _percent(scores),
        "binary": _percent(binary),
        "open": _percent(open_),
        "accuracyPerStructuralType": _per_type(structural),
        "accuracyPerSemanticType": _per_type(semantic),
        "questions": len(scores),
        "skipped": skipped,
        "normalize": normalize,
        "matching": NORMALIZED if normalize else EXACT,
        "perQuestion": per_question,
    }


def score_gqa_files(
    questions: str | Path,
    results: str | Path,
    normalize: bool = False,
    allow_missing: bool = False,
    english: str | Path | None = None,
) -> dict:
    """`score_gqa` on a GQA (or xGQA) questions file and a predictions file in the official format. With
    `english` (the English xGQA file), the questions file must hold exactly its question ids."""
    try:
        question_records = read_gqa_questions(questions)
        if english is not None:
            check_same_ids(Path(english), Path(questions), read_gqa_questions(english), question_records,
                           "question ids")
    except DataError as error:
        raise GQAMetricError(str(error)) from None
    return score_gqa(question_records, load_gqa_predictions(results), normalize, allow_missing, str(results))


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sit_vqa.metrics.gqa",
        description="GQA accuracy (exact match, as the official eval.py) of a predictions file; for GQA test-dev "
        "and the xGQA language files.",
        epilog="A prediction for an unknown question id, or two for one question, is an error; so is a balanced "
        "question without a prediction, unless --allow-missing.",
    )
    parser.add_argument("--questions", required=True, help="GQA questions file, e.g. testdev_balanced_questions.json")
    parser.add_argument("--results", required=True, help='predictions: [{"questionId": str, "prediction": str}, ...]')
    parser.add_argument("--normalize", action="store_true",
                        help="lower-case, strip and drop a trailing period first (common practice, not official)")
    parser.add_argument("--allow-missing", action="store_true", help="score only the questions with a prediction")
    parser.add_argument("--english", help="xGQA: the English questions file; --questions must hold its question ids")
    parser.add_argument("--out", type=cli.output_file, help="write the report as JSON here")
    return parser


def _print_report(report: dict) -> None:
    print(f"Scored {report['questions']} questions; matching: {report['matching']}")
    if report["skipped"]:
        print(f"Skipped {report['skipped']} balanced questions without a prediction")
    for name in ("binary", "open", "accuracy"):
        if report[name] is not None:
            print(f"{name.capitalize()}: {report[name]:.2f}%")
    for key, title in (("accuracyPerStructuralType", "structural type"), ("accuracyPerSemanticType", "semantic type")):
        print(f"Accuracy / {title}:")
        for name, group in report[key].items():
            print(f"  {name}: {group['accuracy']:.2f}% ({group['questions']} questions)")


def main(argv: Sequence[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        report = score_gqa_files(args.questions, args.results, args.normalize, args.allow_missing, args.english)
    except SitVqaError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    _print_report(report)
    if args.out:
        write_text_atomically(args.out, msgspec.json.format(msgspec.json.encode(report), indent=1).decode())
        print(f"Wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.exit_status(main))
