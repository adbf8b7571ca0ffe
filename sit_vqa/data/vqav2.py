"""VQAv2 questions and annotations, read from the official JSON files into Arrow tables.

The official formats (https://visualqa.org/download.html):

- `v2_OpenEnded_mscoco_{split}_questions.json`:
  `{"data_subtype": "train2014", "questions": [{"question_id", "image_id", "question"}, ...], ...}`
- `v2_mscoco_{split}_annotations.json`:
  `{"data_subtype": "train2014", "annotations": [{"question_id", "image_id", "multiple_choice_answer",
  "answers": [{"answer", "answer_confidence", "answer_id"}, ... 10 of them], "answer_type", "question_type"}, ...]}`

The train annotations file is ~330 MB; `json.load` turns it into 2.4 GB of dicts. msgspec decodes it into
typed Structs that keep only the fields we use (and checks their types on the way), and the Structs are
turned into pyarrow columns at once, so the millions of small Python objects live only for a moment.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sit_vqa.errors import ConfigError, DataError
from sit_vqa.files import (
    check_unique_ids,
    decode_json,
    int64_ids,
    read_bytes,
    wrong_file_hint,
)
from sit_vqa.data.vqa_format import (
    ANNOTATIONS_FILE,
    QUESTIONS_FILE,
    AnnotationsFile,
    QuestionsFile,
)

ANSWER_POLICIES = ("multiple_choice_answer", "most_frequent")


@dataclass(frozen=True)
class VqaQuestions:
    """Questions in file order: columns question_id, image_id (int64), question (string)."""

    table: pa.Table
    data_subtype: str | None  # e.g. "train2014"
    path: Path


@dataclass(frozen=True)
class VqaAnnotations:
    """Annotations in file order: question_id, image_id, answer (chosen by the answer policy),
    answers (all annotators' answers, list<string>), answer_type, question_type."""

    table: pa.Table
    data_subtype: str | None
    path: Path


def read_questions(path: str | Path) -> VqaQuestions:
    """Read and validate a questions file: types, at least one question, unique question ids."""
    path = Path(path)
    parsed = _decode(path, QuestionsFile, QUESTIONS_FILE)
    questions = parsed.questions
    if not questions:
        raise DataError(f"{path}: the questions list is empty; expected the {QUESTIONS_FILE} with its questions")
    question_ids = int64_ids(path, "questions", [q.question_id for q in questions], "question_id")
    check_unique_ids(path, "questions", question_ids, "question_id")
    table = pa.table({
        "question_id": question_ids,
        "image_id": int64_ids(path, "questions", [q.image_id for q in questions], "image_id"),
        "question": pa.array([q.question for q in questions], pa.string()),
    })
    return VqaQuestions(table, parsed.data_subtype, path)


def read_annotations(path: str | Path, answer_policy: str = "multiple_choice_answer") -> VqaAnnotations:
    """Read and validate an annotations file; the `answer` column follows `answer_policy`:
    "multiple_choice_answer" (VQAv2's own consensus) or "most_frequent" (see `most_frequent_answer`).

    OK-VQA v1.1 files (https://okvqa.allenai.org) are read as they are: same layout, but without
    `multiple_choice_answer` (and with `raw_answer`, `answer_confidence` per answer and `confidence` per
    question, which are ignored); there the most frequent answer is used under either policy."""
    if answer_policy not in ANSWER_POLICIES:
        raise ConfigError(f"unknown answer policy {answer_policy!r}; expected one of: {', '.join(ANSWER_POLICIES)}")
    path = Path(path)
    parsed = _decode(path, AnnotationsFile, ANNOTATIONS_FILE)
    annotations = parsed.annotations
    if not annotations:
        raise DataError(f"{path}: the annotations list is empty; expected the {ANNOTATIONS_FILE} with its annotations")
    count = len(annotations)
    question_ids = int64_ids(path, "annotations", [a.question_id for a in annotations], "question_id")
    check_unique_ids(path, "annotations", question_ids, "question_id")
    answer_counts = np.fromiter((len(a.answers) for a in annotations), dtype=np.int64, count=count)
    if not answer_counts.all():
        index = int(np.argmin(answer_counts))
        raise DataError(
            f"{path}: $.annotations[{index}] (question_id {annotations[index].question_id}) has no answers; "
            f"every VQAv2 annotation carries the 10 annotators' answers"
        )
    _require_image_ids(path, annotations)
    chosen = [_chosen_answer(a, answer_policy) for a in annotations]
    offsets = np.zeros(count + 1, dtype=np.int64)
    np.cumsum(answer_counts, out=offsets[1:])
    all_answers = pa.array([x.answer for a in annotations for x in a.answers], pa.string())
    table = pa.table({
        "question_id": question_ids,
        "image_id": int64_ids(path, "annotations", [a.image_id for a in annotations], "image_id"),
        "answer": _single_spaced(pa.array(chosen, pa.string())),
        "answers": pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), all_answers),
        "answer_type": pa.array([a.answer_type for a in annotations], pa.string()),
        "question_type": pa.array([a.question_type for a in annotations], pa.string()),
    })
    return VqaAnnotations(table, parsed.data_subtype, path)


def _require_image_ids(path: Path, annotations) -> None:
    for index, annotation in enumerate(annotations):
        if annotation.image_id is None:
            raise DataError(f"{path}: $.annotations[{index}] (question_id {annotation.question_id}) has no image_id; "
                            f"every record of the {ANNOTATIONS_FILE} names its image")


def _chosen_answer(annotation, policy: str) -> str:
    """The target answer. Files without multiple_choice_answer (OK-VQA v1.1) fall back to the most frequent."""
    if policy == "multiple_choice_answer" and annotation.multiple_choice_answer is not None:
        return annotation.multiple_choice_answer
    return most_frequent_answer([answer.answer for answer in annotation.answers])


def _single_spaced(answers: pa.Array) -> pa.Array:
    """The chosen answer becomes a target line: real VQAv2 answers hold stray newlines and tabs (the reason for
    the official metric's 2021 fix), which would split "Answer: <answer>" over lines. The 10 raw answers
    are kept as they are for scoring."""
    return pc.utf8_trim_whitespace(pc.replace_substring_regex(answers, r"\s+", " "))


def most_frequent_answer(answers: list[str]) -> str:
    """The answer given most often (exact strings); ties go to the lexicographically smallest, so the
    result never depends on the annotators' order (unlike taking the first annotator's answer)."""
    if not answers:
        raise DataError("no answers to choose from")
    return min(set(answers), key=lambda answer: (-answers.count(answer), answer))


def _decode(path: Path, file_type: type, what: str):
    data = read_bytes(path, what)
    try:
        return decode_json(path, file_type, "the " + what, data)
    except DataError:
        swapped = _swap_hint(data, file_type)
        if swapped:
            raise DataError(f"{path}: {swapped}") from None
        raise


def _swap_hint(data: bytes, file_type: type) -> str | None:
    """A message for the common mix-up of the two VQAv2 files (or a COCO file passed instead)."""
    try:
        keys = set(msgspec.json.decode(data, type=dict[str, msgspec.Raw]))
    except msgspec.MsgspecError:
        return None
    if file_type is AnnotationsFile and "questions" in keys and "annotations" not in keys:
        return f"this is a questions file, not the {ANNOTATIONS_FILE}; did you swap --questions and --annotations?"
    if file_type is QuestionsFile and "annotations" in keys and "questions" not in keys:
        kind = "a COCO file" if "images" in keys else "an annotations file"
        return f"this is {kind}, not the {QUESTIONS_FILE}; check the --questions argument"
    # A GQA, SQuAD or results file where a VQAv2 file belongs: say what it looks like.
    expected_kind, what = ("vqa_annotations", ANNOTATIONS_FILE) if file_type is AnnotationsFile else (
        "vqa_questions", QUESTIONS_FILE)
    hint = wrong_file_hint(data, expected_kind, f"the {what}")
    if hint and "GQA" in hint:
        hint += " (GQA questions are read by sit_vqa.data.gqa and scored by sit_vqa.metrics.gqa)"
    return hint
