"""SQuAD v1.1 exact match and F1, exactly as the official `evaluate-v1.1.py`, for SQuAD and XQuAD.

    python -m sit_vqa.metrics.squad --data xquad.de.json --predictions predictions.json \\
        [--english xquad.en.json] [--allow-missing] [--out report.json]

Predictions are the official format, one JSON object `{"<question id>": "<answer text>", ...}`. From Python:
`score_squad(answers, predictions)`, `score_squad_files(...)`, `exact_match_score`, `f1_score`,
`normalize_answer`.

The official definition (https://rajpurkar.github.io/SQuAD-explorer/, evaluate-v1.1.py):
- normalise a text: lower-case; delete every character of `string.punctuation` (ASCII only: curly quotes,
  « », 。 and other non-ASCII punctuation stay); replace the English articles a / an / the (whole words,
  `\\b(a|an|the)\\b`) with a space; collapse whitespace (split, join with single spaces);
- exact match: 1 if the normalised prediction equals a normalised reference;
- F1: over the normalised tokens (split on whitespace), the multiset overlap with a reference:
  precision = overlap / prediction tokens, recall = overlap / reference tokens, F1 = 2PR / (P + R), 0 when
  nothing overlaps;
- each question takes its best value over its references; exact_match and f1 are 100 * the mean over all
  questions of the data file (unrounded).
The English rules are applied to every language as the official script does (XQuAD reports it that way too).

Input policy (the official script ignores predictions for unknown ids, keeps the last of repeated keys and
scores a missing prediction 0 with a message):
- a prediction for an id not in the data file: error; a repeated key in the predictions object: error;
- a question without a prediction: error, unless `allow_missing`, which then scores it 0 as the official script
  does (`missing` says how many).
Bad input raises `SquadMetricError` (a `sit_vqa.errors.DataError`).
"""

from __future__ import annotations

import argparse
import json
import re
import string
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

from sit_vqa.data.squad import read_squad, squad_answers
from sit_vqa.metrics import cli
from sit_vqa.errors import DataError, SitVqaError
from sit_vqa.files import check_same_ids, read_bytes, write_text_atomically, wrong_file_hint

PREDICTIONS_FORMAT = 'SQuAD predictions, one JSON object {"<question id>": "<answer text>", ...}'

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


class SquadMetricError(DataError):
    """Input the SQuAD evaluator cannot score; the message names the file, the record and the fix."""


def normalize_answer(text: str) -> str:
    """The official normalisation: lower-case, drop ASCII punctuation, drop articles, collapse whitespace."""
    text = "".join(char for char in text.lower() if char not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match_score(prediction: str, reference: str) -> bool:
    return normalize_answer(prediction) == normalize_answer(reference)


def f1_score(prediction: str, reference: str) -> float:
    prediction_tokens = normalize_answer(prediction).split()
    reference_tokens = normalize_answer(reference).split()
    overlap = sum((Counter(prediction_tokens) & Counter(reference_tokens)).values())
    if overlap == 0:
        return 0.0
    precision = overlap / len(prediction_tokens)
    recall = overlap / len(reference_tokens)
    return 2 * precision * recall / (precision + recall)


def _examples(ids, limit: int = 5) -> str:
    ids = sorted(ids)
    return ", ".join(ids[:limit]) + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


def score_squad(
    answers: Mapping[str, Sequence[str]],
    predictions: Mapping[str, str],
    allow_missing: bool = False,
    source: str = "predictions",
) -> dict:
    """Exact match and F1 of predictions (id -> text) against answers (id -> reference texts, e.g.
    `squad_answers(read_squad(path))`). Returns {"exact_match", "f1", "questions", "missing", "perQuestion":
    {id: {"exact_match": 0/1, "f1": float}}}; exact_match and f1 in percent, unrounded."""
    unknown = predictions.keys() - answers.keys()
    if unknown:
        raise SquadMetricError(
            f"{source}: {len(unknown)} predictions are for question ids that are not in the data file, e.g. "
            f"{_examples(unknown)}. Fix: score against the data file (language) you predicted."
        )
    missing = answers.keys() - predictions.keys()
    if missing and not allow_missing:
        raise SquadMetricError(
            f"{source}: no prediction for {len(missing)} of the {len(answers)} questions, e.g. {_examples(missing)}. "
            "Fix: answer every question, or allow missing predictions (--allow-missing / allow_missing=True) to "
            "score them 0 as the official script does."
        )
    per_question = {}
    for question_id, references in answers.items():  # file order, as the official loop
        if question_id not in predictions:
            per_question[question_id] = {"exact_match": 0.0, "f1": 0.0}
            continue
        prediction = predictions[question_id]
        per_question[question_id] = {
            "exact_match": float(max(exact_match_score(prediction, reference) for reference in references)),
            "f1": max(f1_score(prediction, reference) for reference in references),
        }
    total = len(per_question)
    return {
        "exact_match": 100.0 * sum(score["exact_match"] for score in per_question.values()) / total,
        "f1": 100.0 * sum(score["f1"] for score in per_question.values()) / total,
        "questions": total,
        "missing": len(missing),
        "perQuestion": per_question,
    }


def load_squad_predictions(path: str | Path) -> dict[str, str]:
    """A predictions object {id: text}; repeated keys (which json.load would silently merge) are an error."""
    path = Path(path)
    try:
        data = read_bytes(path, "SQuAD predictions file")
    except DataError as error:
        raise SquadMetricError(str(error)) from None
    try:
        document = json.loads(data.decode("utf-8"), object_pairs_hook=_refuse_repeated_keys)
    except UnicodeDecodeError as error:
        raise SquadMetricError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start}); save it as UTF-8. "
                               f"Expected {PREDICTIONS_FORMAT}") from None
    except json.JSONDecodeError as error:
        raise SquadMetricError(f"{path}: not valid JSON ({error.msg} at line {error.lineno}, column {error.colno}). "
                               f"Expected {PREDICTIONS_FORMAT}") from None
    except _RepeatedKey as error:
        raise SquadMetricError(f"{path}: question id {error.args[0]!r} has more than one prediction. "
                               "Fix: keep one prediction per question.") from None
    bad = _first_non_text(document)
    if bad is not None:
        hint = wrong_file_hint(data, "squad_predictions", PREDICTIONS_FORMAT)
        raise SquadMetricError(f"{path}: {hint or bad}. Expected {PREDICTIONS_FORMAT}")
    return document


class _RepeatedKey(Exception):
    pass


def _refuse_repeated_keys(pairs: list[tuple[str, object]]) -> dict:
    document = {}
    for key, value in pairs:
        if key in document:
            raise _RepeatedKey(key)
        document[key] = value
    return document


def _first_non_text(document) -> str | None:
    if not isinstance(document, dict):
        return f"the top level is a JSON {type(document).__name__}, not an object"
    for key, value in document.items():
        if not isinstance(value, str):
            return f"the prediction for {key!r} is {type(value).__name__} {json.dumps(value)[:80]}, not a string"
    return None


def score_squad_files(
    data: str | Path, predictions: str | Path, allow_missing: bool = False, english: str | Path | None = None
) -> dict:
    """`score_squad` on a SQuAD-format data file and a predictions file. With `english` (the English file of the
    same XQuAD release), the data file must hold exactly its question ids."""
    try:
        answers = squad_answers(read_squad(data))
        if english is not None:
            check_same_ids(Path(english), Path(data), squad_answers(read_squad(english)), answers, "question ids")
    except DataError as error:
        raise SquadMetricError(str(error)) from None
    return score_squad(answers, load_squad_predictions(predictions), allow_missing, str(predictions))


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sit_vqa.metrics.squad",
        description="SQuAD v1.1 exact match and F1 (the official evaluate-v1.1.py) of a predictions file; for "
        "SQuAD v1.1 and the XQuAD language files.",
        epilog="A prediction for an unknown id, or a repeated id, is an error; so is a question without a "
        "prediction, unless --allow-missing (then it scores 0, as in the official script).",
    )
    parser.add_argument("--data", required=True, help="SQuAD v1.1-format data file, e.g. xquad.de.json")
    parser.add_argument("--predictions", required=True, help='predictions: {"<question id>": "<answer>", ...}')
    parser.add_argument("--english", help="XQuAD: the English file (xquad.en.json); --data must hold its ids")
    parser.add_argument("--allow-missing", action="store_true", help="score questions without a prediction 0")
    parser.add_argument("--out", type=cli.output_file, help="write the report as JSON here")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        report = score_squad_files(args.data, args.predictions, args.allow_missing, args.english)
    except SitVqaError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if report["missing"]:
        print(f"{report['missing']} questions without a prediction scored 0")
    print(json.dumps({"exact_match": report["exact_match"], "f1": report["f1"]}))
    if args.out:
        write_text_atomically(args.out, json.dumps(report, indent=1, ensure_ascii=False) + "\n")
        print(f"Wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.exit_status(main))
