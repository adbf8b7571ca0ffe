"""GQA and xGQA questions, read from the official JSON files into evaluation records.

The official format (https://cs.stanford.edu/people/dorarad/gqa/download.html, `testdev_balanced_questions.json`):
one JSON object keyed by question id (a string of digits), each value

    {"imageId": "n161313", "question": "Is the tray on the right?", "answer": "yes",
     "fullAnswer": "Yes, the tray is on the right.", "isBalanced": true,
     "types": {"structural": "verify", "semantic": "rel", "detailed": "relVerify"},
     "semantic": [...], "semanticStr": "...", "groups": {...}, "entailed": [...], "equivalent": [...],
     "annotations": {...}}

Only the fields named in `GqaQuestion` are read; the others are tolerated and ignored. Images are
`<image_dir>/<imageId>.jpg`.

xGQA (Pfeiffer et al., 2022) ships the same test-dev questions in 8 languages, one file per language
(`testdev_balanced_questions_<lang>.json`, lang in bn de en id ko pt ru zh), keyed by the same question ids:
`read_xgqa_records` checks that a language file holds exactly the ids of the English one.

    records = read_gqa_records("data/gqa_sample/testdev_balanced_questions.json", "data/gqa_sample/images")
"""

from __future__ import annotations

from pathlib import Path

import msgspec

from sit_vqa.errors import DataError
from sit_vqa.files import (
    check_same_ids,
    decode_json,
    read_bytes,
)

QUESTIONS_FILE = (
    "the GQA questions file (testdev_balanced_questions.json: an object keyed by question id, each value with "
    '"imageId", "question", "answer" and "types")'
)


class GqaTypes(msgspec.Struct):
    structural: str  # verify, query, choose, logical, compare
    semantic: str  # attr, cat, global, obj, rel
    detailed: str | None = None  # e.g. "relVerify"


class GqaQuestion(msgspec.Struct, rename="camel"):
    image_id: str
    question: str
    answer: str
    full_answer: str | None = None
    # Optional so that derived files (a translation that dropped them) still load; the official eval.py needs both.
    types: GqaTypes | None = None
    is_balanced: bool = True


def read_gqa_questions(path: str | Path) -> dict[str, GqaQuestion]:
    """Read and validate a GQA (or xGQA) questions file: question id -> question, in file order."""
    path = Path(path)
    data = read_bytes(path, "GQA questions file")
    questions = decode_json(path, dict[str, GqaQuestion], QUESTIONS_FILE, data, kind="gqa_questions",
                            wrong_file_note=". VQAv2 and OK-VQA files are read by sit_vqa.data.vqav2, scored by "
                            "sit_vqa.metrics.vqa")
    if not questions:
        raise DataError(f"{path}: holds no questions; expected {QUESTIONS_FILE}")
    return questions


def read_gqa_records(questions_path: str | Path, image_dir: str | Path) -> list[dict]:
    """Evaluation records of a GQA questions file, in file order; every image must exist in image_dir.

    Each record: question_id, image_id, image_path, question, answers ([answer], the one GQA answer), answer,
    full_answer, structural_type, semantic_type, detailed_type (None where the file has no types), is_balanced.
    """
    questions = read_gqa_questions(questions_path)
    return _records(questions, Path(questions_path), Path(image_dir))


def read_xgqa_records(questions_path: str | Path, english_path: str | Path, image_dir: str | Path) -> list[dict]:
    """Evaluation records of one xGQA language file, after checking it against the English file.

    The language file must hold exactly the question ids of the English file, each about the same image.
    Question, answer and types come from the language file; types it lacks are taken from the English file.
    """
    questions_path, english_path = Path(questions_path), Path(english_path)
    questions = read_gqa_questions(questions_path)
    english = read_gqa_questions(english_path)
    check_same_ids(english_path, questions_path, english, questions, "question ids")
    for question_id, question in questions.items():
        original = english[question_id]
        if question.image_id != original.image_id:
            raise DataError(
                f"{questions_path}: question {question_id} is about image {question.image_id}, but in "
                f"{english_path} about image {original.image_id}; use the language files of one xGQA release."
            )
        if question.types is None:
            question.types = original.types
    return _records(questions, questions_path, Path(image_dir))


def _records(questions: dict[str, GqaQuestion], path: Path, image_dir: Path) -> list[dict]:
    _check_images(questions, path, image_dir)
    return [_record(question_id, question, image_dir) for question_id, question in questions.items()]


def _record(question_id: str, question: GqaQuestion, image_dir: Path) -> dict:
    types = question.types
    return {
        "question_id": question_id,
        "image_id": question.image_id,
        "image_path": str(image_dir / f"{question.image_id}.jpg"),
        "question": question.question,
        "answers": [question.answer],
        "answer": question.answer,
        "full_answer": question.full_answer,
        "structural_type": types.structural if types else None,
        "semantic_type": types.semantic if types else None,
        "detailed_type": types.detailed if types else None,
        "is_balanced": question.is_balanced,
    }


def _check_images(questions: dict[str, GqaQuestion], path: Path, image_dir: Path) -> None:
    # Checked here, once, so that a wrong --image-dir fails before any generation starts.
    if not image_dir.is_dir():
        raise DataError(f"GQA image directory not found: {image_dir} (the questions are in {path}); "
                        "pass the folder holding <imageId>.jpg")
    image_ids = dict.fromkeys(question.image_id for question in questions.values())
    missing = [image_id for image_id in image_ids if not (image_dir / f"{image_id}.jpg").is_file()]
    if missing:
        raise DataError(
            f"{image_dir}: {len(missing)} of the {len(image_ids)} images that {path} asks about are missing, "
            f"e.g. {missing[0]}.jpg; pass the folder holding the GQA images (images/<imageId>.jpg)."
        )
