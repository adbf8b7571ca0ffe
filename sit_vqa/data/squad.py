"""SQuAD v1.1 and XQuAD files, read into evaluation records for the text-only path.

The format (SQuAD v1.1 dev-v1.1.json; XQuAD https://github.com/google-deepmind/xquad, xquad.<lang>.json):

    {"version": "1.1", "data": [{"title": "...", "paragraphs": [{"context": "...",
        "qas": [{"id": "...", "question": "...", "answers": [{"text": "...", "answer_start": 12}, ...]}]}]}]}

XQuAD ships the same 1,190 questions in 12 languages under the same ids; `read_squad_records(path,
english=...)` checks that a language file holds exactly the ids of the English one.

    records = read_squad_records("data/xquad_sample/xquad.de.json", english="data/xquad_sample/xquad.en.json")
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

SQUAD_FILE = (
    'a SQuAD v1.1-format file (e.g. xquad.de.json: {"version": "1.1", "data": [{"title", "paragraphs": '
    '[{"context", "qas": [{"id", "question", "answers": [{"text", "answer_start"}]}]}]}]})'
)


class SquadAnswer(msgspec.Struct):
    text: str
    answer_start: int | None = None  # not used for scoring; some derived files drop it


class SquadQuestion(msgspec.Struct):
    id: str
    question: str
    answers: list[SquadAnswer]


class SquadParagraph(msgspec.Struct):
    context: str
    qas: list[SquadQuestion]


class SquadArticle(msgspec.Struct):
    paragraphs: list[SquadParagraph]
    title: str = ""


class SquadFile(msgspec.Struct):
    data: list[SquadArticle]
    version: str | None = None


def read_squad(path: str | Path) -> SquadFile:
    """Read and validate a SQuAD v1.1-format file: types, unique question ids, at least one answer each."""
    path = Path(path)
    data = read_bytes(path, "SQuAD-format file")
    document = decode_json(path, SquadFile, SQUAD_FILE, data, kind="squad")
    _check_questions(document, path)
    return document


def _check_questions(document: SquadFile, path: Path) -> None:
    seen: set[str] = set()
    for a, article in enumerate(document.data):
        for p, paragraph in enumerate(article.paragraphs):
            for q, qa in enumerate(paragraph.qas):
                where = f"$.data[{a}].paragraphs[{p}].qas[{q}] (id {qa.id!r})"
                if qa.id in seen:
                    raise DataError(f"{path}: {where} repeats a question id; each id must be unique "
                                    "(two files concatenated?)")
                if not qa.answers:
                    raise DataError(f"{path}: {where} has no answers; SQuAD v1.1 scoring needs at least one "
                                    "reference answer per question")
                seen.add(qa.id)
    if not seen:
        raise DataError(f"{path}: holds no questions; expected {SQUAD_FILE}")


def squad_answers(document: SquadFile) -> dict[str, list[str]]:
    """Question id -> its reference answer texts, in file order (what the official evaluator scores against)."""
    return {
        qa.id: [answer.text for answer in qa.answers]
        for article in document.data
        for paragraph in article.paragraphs
        for qa in paragraph.qas
    }


def read_squad_records(path: str | Path, english: str | Path | None = None) -> list[dict]:
    """Evaluation records {id, title, context, question, answers} of a SQuAD-format file, in file order.

    With `english` (the English file of the same XQuAD release), the file must hold exactly its question ids.
    """
    document = read_squad(path)
    if english is not None:
        check_same_ids(Path(english), Path(path), squad_answers(read_squad(english)), squad_answers(document),
                       "question ids")
    return [
        {
            "id": qa.id,
            "title": article.title,
            "context": paragraph.context,
            "question": qa.question,
            "answers": [answer.text for answer in qa.answers],
        }
        for article in document.data
        for paragraph in article.paragraphs
        for qa in paragraph.qas
    ]
