"""The official VQAv2 accuracy, re-implemented to give the official evaluator's numbers.

Score any model's results file (the official format: a JSON list of {"question_id": int, "answer": str}):

    python -m sit_vqa.metrics.vqa --questions v2_OpenEnded_mscoco_val2014_questions.json \\
        --annotations v2_mscoco_val2014_annotations.json --results results.json [--legacy] [--out report.json]

It prints the overall and per-answer-type accuracy and writes `overall`, `perAnswerType`, `perQuestionType` and
`perQuestion` (question id -> accuracy), the fields of the official `VQAEval.accuracy` and `VQAEval.evalQA`.
From Python: `evaluate_vqa(questions, annotations, results)`, `question_accuracy(prediction, gt_answers)`,
`normalize_answer(text)`, `score_files(...)`.

Reference: GT-Vision-Lab/VQA, PythonEvaluationTools/vqaEvaluation/vqaEval.py on master (commit a013f00, the 2021
"Fixed processing answers bug"), with PythonHelperTools/vqaTools/vqa.py (`loadRes`). `legacy=True` gives the
pre-2021 behaviour of the same script, which LAVIS ships as lavis/common/vqa_tools/vqa_eval.py, so numbers can be
compared with those published from LAVIS. The rules, each with a hand-worked test in tests/metrics/test_vqa.py:

1. Whitespace: "\\n" and "\\t" become spaces, then the answer is stripped. 2021: prediction and ground truths;
   legacy: the prediction only.
2. Punctuation: each of  ; / [ ] " { } ( ) = + \\ _ - > < @ ` , ? !  is deleted where the text has that character
   next to a space, or has digit-comma-digit anywhere ("1,000"); otherwise it is replaced by a space. The test
   looks at the text as it came in, not as it is being rewritten. Then every "." not followed by a digit is
   deleted, but at most 32 of them (the official call passes re.UNICODE, 32, as Pattern.sub's count).
   Characters not listed (: ' * # & % $ ...) are kept.
3. Words: lower-cased, split on whitespace; zero..ten and "none" become digits, the articles a/an/the are dropped,
   and the official contraction table puts apostrophes back ("dont" -> "don't"); joined with single spaces.
4. When 2 and 3 apply. 2021: to the prediction and the ground truths, but only when the stripped ground truths
   are not all identical; when all annotators agree, the stripped strings are compared as they are (so "Yes" or
   "yes." against ten "yes" scores 0; the authors' reason: such answers are often text read in the image).
   Legacy: the prediction always gets 1-3; the ground truths get rule 2 only (no lower-casing, number words,
   articles or contractions), and only when they are not all identical.
5. Accuracy of a question: for each of its n annotators, min(1, matches among the other n-1 answers / 3);
   the mean of the n values. With 10 answers: 0 matches -> 0, 1 -> 30%, 2 -> 60%, 3 -> 90%, 4 or more -> 100%.
6. Reported numbers: per question round(100 * accuracy, 2); overall, per answer type and per question type
   round(100 * mean, 2) of the unrounded per-question values, summed in annotation-file order, exactly as the
   official code computes them. `round` is Python 3's (ties to even).

Input policy (the official `loadRes` asserts that the results cover exactly the annotated questions):
- a result for a question that is not in the annotations: error (official: assertion);
- two results for the same question: error (official: the last one silently wins);
- an annotated question without a result: error (official: assertion), unless `allow_missing=True`
  (`--allow-missing`), which scores only the answered questions, like the official `evaluate(quesIds)`, and the
  CLI reports how many were skipped;
- annotations: question ids unique, at least one answer per question, and `answer_id` distinct within a
  question, as in the official files (the official leave-one-out drops answers by dict equality; with distinct
  ids that is dropping exactly one);
- questions (optional in the API): every annotated question must be in it, so mismatched files are caught.
  Questions do not change any score; the multiple-choice check of VQA v1 is not done.
Bad input raises `VQAMetricError` (a `sit_vqa.errors.DataError`) naming the file, the record and the fix.

Against the official code run under Python 3 (and LAVIS's copy, in legacy mode) the numbers are identical.
The official master is Python 2 code; run under Python 2 it differs in two places: its round sends exact binary
ties away from zero (round(0.125, 2) is 0.13 there, 0.12 here: only aggregates can hit one, e.g. 1 right of
800, and then the last digit differs), and its text functions differ on some non-ASCII text (its regexes take
only 0-9 as digits, Python 3 all Unicode digits; "İ".lower() differs).
"""

from __future__ import annotations

import argparse
import operator
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import msgspec

from sit_vqa.metrics import cli
from sit_vqa.errors import DataError, SitVqaError
from sit_vqa.files import (
    decode_json,
    gc_paused,
    read_bytes,
    write_text_atomically,
    wrong_file_hint,
)
from sit_vqa.data.vqa_format import (
    Annotation,
    AnnotationsFile,
    Question,
    QuestionsFile,
    Result,
)

PRECISION = 2  # decimals of every reported number, the official default (VQAEval's n=2)

PUNCTUATION = ';/[]"{}()=+\\_-><@`,?!'  # the official list, 21 characters
NUMBER_WORDS = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}
ARTICLES = ("a", "an", "the")
# The official contraction table, entry for entry. Keys with capitals ("Im", "Id've", ...) can never match,
# since words are lower-cased first; "somebody'd" -> "somebodyd" goes the other way. Both are kept as they are.
CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't",
    "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's",
    "howd": "how'd", "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm",
    "Ive": "I've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've", "itll": "it'll",
    "let's": "let's", "maam": "ma'am", "mightnt": "mightn't", "mightnt've": "mightn't've",
    "mightn'tve": "mightn't've", "mightve": "might've", "mustnt": "mustn't", "mustve": "must've",
    "neednt": "needn't", "notve": "not've", "oclock": "o'clock", "oughtnt": "oughtn't",
    "ow's'at": "'ow's'at", "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at", "shant": "shan't",
    "shed've": "she'd've", "she'dve": "she'd've", "she's": "she's", "shouldve": "should've",
    "shouldnt": "shouldn't", "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've",
    "somebody'd": "somebodyd", "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll", "somebodys": "somebody's", "someoned": "someone'd",
    "someoned've": "someone'd've", "someone'dve": "someone'd've", "someonell": "someone'll",
    "someones": "someone's", "somethingd": "something'd", "somethingd've": "something'd've",
    "something'dve": "something'd've", "somethingll": "something'll", "thats": "that's",
    "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've", "therere": "there're",
    "theres": "there's", "theyd": "they'd", "theyd've": "they'd've", "they'dve": "they'd've",
    "theyll": "they'll", "theyre": "they're", "theyve": "they've", "twas": "'twas", "wasnt": "wasn't",
    "wed've": "we'd've", "we'dve": "we'd've", "weve": "we've", "werent": "weren't", "whatll": "what'll",
    "whatre": "what're", "whats": "what's", "whatve": "what've", "whens": "when's", "whered": "where'd",
    "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've",
    "who'dve": "who'd've", "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll",
    "whyre": "why're", "whys": "why's", "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll",
    "y'allll": "y'all'll", "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've",
    "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll", "youre": "you're",
    "youve": "you've",
}

# The official pattern is "(?!<=\d)(\.)(?!\d)": its "(?!<=\d)" is a look-ahead (a look-behind was meant) that
# can never fail in front of a ".", so a period is deleted whenever no digit follows it ("5." loses it, "1.5"
# and "a.5" keep it).
_LONE_PERIOD = re.compile(r"\.(?!\d)")
_OFFICIAL_PERIOD_COUNT = 32  # re.UNICODE, passed where Pattern.sub takes its count
_DIGIT_COMMA_DIGIT = re.compile(r"\d,\d")
_PUNCTUATION_SET = frozenset(PUNCTUATION)
_DELETE_PUNCTUATION = str.maketrans("", "", PUNCTUATION)
# Number words, articles and contractions never overlap, so one look-up per word does the three official
# passes; articles map to "" and are dropped.
_WORD_REWRITES = {**CONTRACTIONS, **dict.fromkeys(ARTICLES, ""), **NUMBER_WORDS}


class VQAMetricError(DataError):
    """Input the VQA evaluator cannot score; the message names the file, the record and the fix."""


# --------------------------------------------------------------------------------------------------------------
# Answer normalisation
# --------------------------------------------------------------------------------------------------------------


def _clean_whitespace(text: str) -> str:
    return text.replace("\n", " ").replace("\t", " ").strip()


def _strip_punctuation(text: str) -> str:
    """Official processPunctuation (rule 2)."""
    present = _PUNCTUATION_SET.intersection(text)
    if present:
        if _DIGIT_COMMA_DIGIT.search(text):
            table = _DELETE_PUNCTUATION
        else:  # each character's fate is decided on the text as it came in
            table = {ord(char): "" if (char + " " in text or " " + char in text) else " " for char in present}
        text = text.translate(table)
    if "." in text:
        text = _LONE_PERIOD.sub("", text, count=_OFFICIAL_PERIOD_COUNT)
    return text


def _rewrite_words(text: str) -> str:
    """Official processDigitArticle (rule 3)."""
    words = (_WORD_REWRITES.get(word, word) for word in text.lower().split())
    return " ".join(word for word in words if word)


def normalize_answer(text: str) -> str:
    """The full official normalisation of an answer: whitespace, punctuation, then words (rules 1-3).

    Which answers get it, and when, is rule 4: see `question_accuracy`.
    """
    return _rewrite_words(_strip_punctuation(_clean_whitespace(text)))


# --------------------------------------------------------------------------------------------------------------
# Accuracy of one question
# --------------------------------------------------------------------------------------------------------------


def _leave_one_out_accuracy(prediction: str, answers: tuple[str, ...]) -> float:
    """Rule 5. Floats come out bit for bit as the official loop's."""
    matches = answers.count(prediction)
    if matches == 0:
        return 0.0
    if matches > 3:  # every annotator has at least 3 matching others: min(1, .) is 1 for all
        return 1.0
    # Summed in annotator order as the official loop does: float addition is not associative.
    per_annotator = [min(1, (matches - (answer == prediction)) / 3) for answer in answers]
    return float(sum(per_annotator)) / len(answers)


class _Memo(dict):
    """function(text), computed once per distinct text: most answers repeat across questions."""

    def __init__(self, function):
        super().__init__()
        self.function = function

    def __missing__(self, text: str) -> str:
        value = self[text] = self.function(text)
        return value


class _Scorer:
    """Per-question accuracy, rule 4 then rule 5, with every normalisation cached."""

    def __init__(self, legacy: bool):
        self.legacy = legacy
        self._normalized = _Memo(normalize_answer)
        self._cleaned = _Memo(_clean_whitespace)
        self._punctuated = _Memo(_strip_punctuation)

    def accuracy(self, prediction: str, gt_answers: tuple[str, ...]) -> float:
        normalized = self._normalized
        if self.legacy:
            if len(set(gt_answers)) > 1:
                gt_answers = tuple(map(self._punctuated.__getitem__, gt_answers))
            return _leave_one_out_accuracy(normalized[prediction], gt_answers)
        cleaned = tuple(map(self._cleaned.__getitem__, gt_answers))
        if len(set(cleaned)) > 1:
            return _leave_one_out_accuracy(normalized[prediction], tuple(map(normalized.__getitem__, gt_answers)))
        return _leave_one_out_accuracy(self._cleaned[prediction], cleaned)


def question_accuracy(prediction: str, gt_answers: Sequence[str], legacy: bool = False) -> float:
    """Official accuracy of one prediction against the annotators' answers, in [0, 1], unrounded.

    `gt_answers` are the raw answer strings of one question (10 in VQAv2), in annotation order.
    """
    if not gt_answers:
        raise VQAMetricError("question_accuracy needs at least one ground-truth answer")
    return _Scorer(legacy).accuracy(prediction, tuple(gt_answers))


# --------------------------------------------------------------------------------------------------------------
# Records, loading and validation
# --------------------------------------------------------------------------------------------------------------


_ANSWER_TEXT = operator.attrgetter("answer")
_ANSWER_ID = operator.attrgetter("answer_id")


_FIXES = {
    "questions": 'the official questions file, {"questions": [{"question_id": <int>, ...}, ...], ...}',
    "annotations": 'the official annotations file, {"annotations": [{"question_id": <int>, "question_type": <str>, '
    '"answer_type": <str>, "answers": [{"answer": <str>, "answer_id": <int>}, ...]}, ...], ...}',
    "results": 'results in the official format, [{"question_id": <int>, "answer": <str>}, ...]',
}


def _validation_error(source: str, kind: str, error: Exception) -> VQAMetricError:
    return VQAMetricError(f"{source}: {error}. Fix: pass {_FIXES[kind]}")


_SHAPE_KINDS = {"questions": "vqa_questions", "annotations": "vqa_annotations", "results": "vqa_results"}


def _decode_file(path: str | Path, file_type: type, kind: str):
    try:
        data = read_bytes(path, f"{kind} file")
        return decode_json(path, file_type, _FIXES[kind], data)
    except DataError as error:
        # A GQA (or other) file where a VQAv2 one belongs: say what it looks like rather than which field failed.
        hint = wrong_file_hint(data, _SHAPE_KINDS[kind], "the VQAv2 " + kind) if "data" in locals() else None
        if hint:
            raise VQAMetricError(f"{path}: {hint}. Fix: pass {_FIXES[kind]}") from None
        raise VQAMetricError(str(error)) from None


def load_questions(path: str | Path) -> list[Question]:
    """The question records of an official questions file."""
    return _decode_file(path, QuestionsFile, "questions").questions


def load_annotations(path: str | Path) -> list[Annotation]:
    """The annotation records of an official annotations file."""
    return _decode_file(path, AnnotationsFile, "annotations").annotations


def load_results(path: str | Path) -> list[Result]:
    """The records of a results file in the official format."""
    return _decode_file(path, list[Result], "results")


def _records(data, record_type: type, kind: str) -> list:
    """Typed records from in-memory data: a list of dicts (or of records), or the official file's dict."""
    source = kind
    if isinstance(data, Mapping) and kind != "results":
        if kind not in data:
            raise VQAMetricError(f"{source}: a dict without a {kind!r} list. Fix: pass {_FIXES[kind]}")
        data, source = data[kind], f"{source}[{kind!r}]"
    try:
        return msgspec.convert(data, type=list[record_type])
    except msgspec.ValidationError as error:
        raise _validation_error(source, kind, error) from None


def _examples(ids: Iterable[int], limit: int = 5) -> str:
    ids = sorted(ids)
    shown = ", ".join(map(str, ids[:limit]))
    return shown + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


def _duplicates(ids: list[int]) -> set[int]:
    seen: set[int] = set()
    return {qid for qid in ids if qid in seen or seen.add(qid)}


def _check_annotations(annotations: list[Annotation], source: str) -> list[int]:
    ids = [annotation.question_id for annotation in annotations]
    if len(set(ids)) != len(ids):
        raise VQAMetricError(
            f"{source}: question ids {_examples(_duplicates(ids))} are annotated twice. "
            "Fix: keep one annotation per question (the official files have one)."
        )
    for index, annotation in enumerate(annotations):
        answer_ids = list(map(_ANSWER_ID, annotation.answers))
        if not answer_ids or len(set(answer_ids)) != len(answer_ids):
            problem = "has no answers" if not answer_ids else f"repeats answer_id in {answer_ids}"
            raise VQAMetricError(
                f"{source}: annotation {index} (question_id {annotation.question_id}) {problem}. "
                "Fix: give each question its annotators' answers with distinct answer_id values, "
                "as the official files do (1..10)."
            )
    return ids


def _check_questions(questions: list[Question], annotation_ids: list[int], source: str) -> None:
    unasked = set(annotation_ids).difference(question.question_id for question in questions)
    if unasked:
        raise VQAMetricError(
            f"{source}: {len(unasked)} annotated questions are not in the questions, e.g. question_id "
            f"{_examples(unasked)}. Fix: pass the questions file of the same split as the annotations."
        )


def _predictions(results: list[Result], annotation_ids: list[int], allow_missing: bool, source: str):
    """question_id -> predicted answer, after the input policy of the module docstring."""
    predictions = {result.question_id: result.answer for result in results}
    if len(predictions) != len(results):
        repeated = _duplicates([result.question_id for result in results])
        raise VQAMetricError(
            f"{source}: {len(repeated)} question ids have more than one result, e.g. {_examples(repeated)}. "
            "Fix: keep one answer per question."
        )
    unknown = predictions.keys() - set(annotation_ids)
    if unknown:
        raise VQAMetricError(
            f"{source}: {len(unknown)} results are for questions that are not in the annotations, e.g. "
            f"question_id {_examples(unknown)}. Fix: score against the annotations of the split you predicted."
        )
    missing = len(annotation_ids) - len(predictions)
    if missing and not allow_missing:
        unanswered = set(annotation_ids) - predictions.keys()
        raise VQAMetricError(
            f"{source}: no result for {missing} of the {len(annotation_ids)} annotated questions, e.g. "
            f"question_id {_examples(unanswered)}. Fix: answer every question, or allow missing results "
            "(--allow-missing / allow_missing=True) to score only the answered ones."
        )
    return predictions


# --------------------------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------------------------


def _percent(values: list[float], precision: int) -> float:
    return round(100 * float(sum(values)) / len(values), precision)


def _score(annotations: list[Annotation], predictions: dict[int, str], legacy: bool, precision: int) -> dict:
    scorer = _Scorer(legacy)
    accuracies: list[float] = []
    per_question: dict[int, float] = {}
    by_answer_type: dict[str, list[float]] = {}
    by_question_type: dict[str, list[float]] = {}
    for annotation in annotations:  # annotation-file order, as the official evaluate() iterates
        prediction = predictions.get(annotation.question_id)
        if prediction is None:
            continue
        accuracy = scorer.accuracy(prediction, tuple(map(_ANSWER_TEXT, annotation.answers)))
        accuracies.append(accuracy)
        per_question[annotation.question_id] = round(100 * accuracy, precision)
        by_answer_type.setdefault(annotation.answer_type, []).append(accuracy)
        by_question_type.setdefault(annotation.question_type, []).append(accuracy)
    if not accuracies:
        raise VQAMetricError("no question to score: the results answer none of the annotated questions")
    return {
        "overall": _percent(accuracies, precision),
        "perAnswerType": {name: _percent(values, precision) for name, values in by_answer_type.items()},
        "perQuestionType": {name: _percent(values, precision) for name, values in by_question_type.items()},
        "perQuestion": per_question,
    }


def _evaluate(questions, annotations, results, sources, legacy, allow_missing, precision) -> dict:
    annotation_ids = _check_annotations(annotations, sources["annotations"])
    if questions is not None:
        _check_questions(questions, annotation_ids, sources["questions"])
    predictions = _predictions(results, annotation_ids, allow_missing, sources["results"])
    return _score(annotations, predictions, legacy, precision)


def evaluate_vqa(
    questions: Sequence[Mapping] | Mapping | None,
    annotations: Sequence[Mapping] | Mapping,
    results: Sequence[Mapping],
    legacy: bool = False,
    allow_missing: bool = False,
    precision: int = PRECISION,
) -> dict:
    """Official VQA accuracy of in-memory data.

    `questions` and `annotations` are the official files' dicts or their record lists (or the records of
    `load_questions` / `load_annotations`); `questions` may be None. `results` is a list of
    {"question_id": int, "answer": str}. Returns {"overall": float, "perAnswerType": {type: float},
    "perQuestionType": {type: float}, "perQuestion": {question_id: float}}, all percentages rounded to
    `precision` decimals as the official evaluator reports them. Raises VQAMetricError on bad input.
    """
    sources = {"questions": "questions", "annotations": "annotations", "results": "results"}
    return _evaluate(
        None if questions is None else _records(questions, Question, "questions"),
        _records(annotations, Annotation, "annotations"),
        _records(results, Result, "results"),
        sources, legacy, allow_missing, precision,
    )


def score_files(
    questions: str | Path,
    annotations: str | Path,
    results: str | Path,
    legacy: bool = False,
    allow_missing: bool = False,
    precision: int = PRECISION,
) -> dict:
    """`evaluate_vqa` on the official files (questions, annotations) and a results file."""
    return _score_files(questions, annotations, results, legacy, allow_missing, precision)[0]


def _score_files(questions, annotations, results, legacy, allow_missing, precision) -> tuple[dict, int]:
    """The report, and how many questions the annotations hold."""
    sources = {"questions": str(questions), "annotations": str(annotations), "results": str(results)}
    with gc_paused():
        annotation_records = load_annotations(annotations)
        report = _evaluate(
            load_questions(questions), annotation_records, load_results(results),
            sources, legacy, allow_missing, precision,
        )
    return report, len(annotation_records)


# --------------------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------------------


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sit_vqa.metrics.vqa",
        description="Official VQAv2 accuracy (GT-Vision-Lab/VQA vqaEval.py, master with the 2021 fix) of a "
        "results file.",
        epilog="Input policy: a result for an unknown question id, or two results for one question, is an "
        "error; so is an annotated question without a result, unless --allow-missing (then only answered "
        "questions are scored and the number skipped is printed). Annotations need unique question ids and "
        "distinct answer_id values within a question, as in the official files.",
    )
    parser.add_argument("--questions", required=True, help="official questions file (JSON)")
    parser.add_argument("--annotations", required=True, help="official annotations file (JSON)")
    parser.add_argument("--results", required=True, help='results: [{"question_id": int, "answer": str}, ...]')
    parser.add_argument("--legacy", action="store_true", help="the pre-2021 evaluator, as LAVIS ships it")
    parser.add_argument("--allow-missing", action="store_true", help="score only the questions with a result")
    parser.add_argument("--out", type=cli.output_file,
                        help="write overall, perAnswerType, perQuestionType, perQuestion as JSON here")
    parser.add_argument("--precision", type=cli.precision, default=PRECISION,
                        help=f"decimals, 0 to {cli.MAX_PRECISION} (default: %(default)s)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        report, annotated = _score_files(
            args.questions, args.annotations, args.results, args.legacy, args.allow_missing, args.precision
        )
    except SitVqaError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    scored = len(report["perQuestion"])
    print(f"Scored {scored} questions{' (legacy evaluator)' if args.legacy else ''}")
    if args.allow_missing:
        print(f"Skipped {annotated - scored} annotated questions without a result")
    print(f"Overall Accuracy is: {report['overall']:.{args.precision}f}")
    print("Per Answer Type Accuracy is the following:")
    for answer_type, accuracy in report["perAnswerType"].items():
        print(f"{answer_type} : {accuracy:.{args.precision}f}")
    if args.out:
        write_text_atomically(args.out, msgspec.json.format(msgspec.json.encode(report), indent=1).decode())
        print(f"Wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.exit_status(main))
