"""The official VQAv2 file formats as msgspec schemas, shared by the reader (`sit_vqa.data.vqav2`) and the
scorer (`sit_vqa.metrics.vqa`), so both accept exactly the same files. No torch, no pyarrow: the scorer
CLI stays light. Unknown fields are ignored, as the official tools ignore them.

- `v2_OpenEnded_mscoco_<split>_questions.json`: {"data_subtype", "questions": [{"question_id", "image_id",
  "question"}, ...], ...}
- `v2_mscoco_<split>_annotations.json`: {"data_subtype", "annotations": [{"question_id", "image_id",
  "multiple_choice_answer", "answers": [{"answer", "answer_confidence", "answer_id"} x 10], "answer_type",
  "question_type"}, ...]}
- results: [{"question_id", "answer"}, ...]

`image_id` and `multiple_choice_answer` are optional in the annotation schema: the scorer needs neither and
scores in-memory annotations without them; the reader checks that `image_id` is there.
"""

from __future__ import annotations

import msgspec

QUESTIONS_FILE = "VQAv2 questions file (v2_OpenEnded_mscoco_<split>_questions.json)"
ANNOTATIONS_FILE = "VQAv2 annotations file (v2_mscoco_<split>_annotations.json)"


class Question(msgspec.Struct, gc=False):
    question_id: int
    image_id: int
    question: str


class Answer(msgspec.Struct, gc=False):
    answer: str
    answer_id: int


class Annotation(msgspec.Struct, gc=False):
    question_id: int
    question_type: str
    answer_type: str
    answers: list[Answer]
    image_id: int | None = None
    multiple_choice_answer: str | None = None


class Result(msgspec.Struct, gc=False):
    question_id: int
    answer: str


class QuestionsFile(msgspec.Struct):
    questions: list[Question]
    data_subtype: str | None = None


class AnnotationsFile(msgspec.Struct):
    annotations: list[Annotation]
    data_subtype: str | None = None
