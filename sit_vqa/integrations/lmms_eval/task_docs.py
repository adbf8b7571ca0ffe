"""The documents, prompt and per-question scores of the lmms-eval tasks in tasks/ (sit_vqav2, sit_gqa); their
YAML files name these functions with `!function`. No lmms-eval import: lmms-eval calls these, not the reverse.

lmms-eval loads every task through `datasets.load_dataset`, which cannot read the official files (VQAv2 is a
questions file, an annotations file and COCO's captions file for the image names; GQA is one JSON object keyed by
question id). So each task loads a one-row stub (tasks/*_stub.jsonl) and its `process_docs` replaces it with the
questions sit_vqa reads from the files the environment names -- the same reading and join as evaluate.py:

    SIT_VQA_VQAV2_QUESTIONS  v2_OpenEnded_mscoco_val2014_questions.json
    SIT_VQA_VQAV2_ANNOTATIONS  v2_mscoco_val2014_annotations.json
    SIT_VQA_VQAV2_CAPTIONS  captions_val2014.json (COCO's image file names; evaluate.py's join reads it too)
    SIT_VQA_VQAV2_IMAGE_DIR  val2014/
    SIT_VQA_GQA_QUESTIONS  testdev_balanced_questions.json
    SIT_VQA_GQA_IMAGE_DIR  images/ (<imageId>.jpg)

Scores are evaluate.py's: VQAv2's official accuracy per question (sit_vqa.metrics.vqa) and GQA's exact match
(sit_vqa.metrics.gqa, the official eval.py's, on balanced questions), as percentages whose mean is the figure
evaluate.py reports. Both score the answer that the tasks' regex filter (sit_vqa.data.prompts.ANSWER_PATTERN)
took from the output.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import datasets
from PIL import Image

from sit_vqa.data.gqa import read_gqa_records
from sit_vqa.data.prompts import Templates
from sit_vqa.errors import DataError
from sit_vqa.evaluation.sets import balanced_records, gqa_questions
from sit_vqa.evaluation.vqa import join_eval_files, one_row_per_question
from sit_vqa.metrics.gqa import score_gqa
from sit_vqa.metrics.vqa import question_accuracy

VQAV2_FILES = {  # join_eval_files' keys -> the environment variable naming that file
    "questions": "SIT_VQA_VQAV2_QUESTIONS",
    "annotations": "SIT_VQA_VQAV2_ANNOTATIONS",
    "captions": "SIT_VQA_VQAV2_CAPTIONS",
    "image_dir": "SIT_VQA_VQAV2_IMAGE_DIR",
}
GQA_FILES = {"questions": "SIT_VQA_GQA_QUESTIONS", "image_dir": "SIT_VQA_GQA_IMAGE_DIR"}
DOC_COLUMNS = ("question_id", "question", "image_path", "answers")


def _paths(variables: Mapping[str, str], task: str) -> dict[str, str]:
    values = {key: os.environ.get(name, "") for key, name in variables.items()}
    unset = [variables[key] for key, value in values.items() if not value]
    if unset:
        example = " ".join(f"{name}=..." for name in variables.values())
        raise DataError(f"the lmms-eval task {task} reads its questions from the files the environment names, and "
                        f"{', '.join(unset)} {'is' if len(unset) == 1 else 'are'} not set; run lmms-eval with "
                        f"{example} (see sit_vqa/integrations/lmms_eval/task_docs.py for the files)")
    return values


def vqav2_docs(stub: datasets.Dataset) -> datasets.Dataset:
    """process_docs of sit_vqav2: the questions of the VQAv2 files the environment names, one per question in
    file order, each with its image path and the annotators' answers (the stub's row is dropped)."""
    table, _ = join_eval_files(_paths(VQAV2_FILES, "sit_vqav2"))
    table = table.take(one_row_per_question(table)).select(list(DOC_COLUMNS))
    return datasets.Dataset(table)


def gqa_docs(stub: datasets.Dataset) -> datasets.Dataset:
    """process_docs of sit_gqa: the balanced questions of the GQA file the environment names (the ones the
    official eval.py scores), in file order."""
    paths = _paths(GQA_FILES, "sit_gqa")
    if not Path(paths["image_dir"]).is_dir():
        raise DataError(f"GQA image folder not found: {paths['image_dir']}; set SIT_VQA_GQA_IMAGE_DIR to the folder "
                        "holding the GQA images <imageId>.jpg")
    records = balanced_records(read_gqa_records(paths["questions"], paths["image_dir"]))
    columns = (*DOC_COLUMNS, "image_id", "answer", "is_balanced", "structural_type", "semantic_type", "detailed_type")
    return datasets.Dataset.from_list([{name: record[name] for name in columns} for record in records])


def sit_instruction(doc: Mapping, lmms_eval_specific_kwargs: Mapping | None = None) -> str:
    """doc_to_text: the SIT instruction the package trains with (Templates' sit_instruction) for the question.
    The sit_vqa model asks with its checkpoint's own instruction instead; other models get this one."""
    return Templates().render("sit", question=doc["question"])[0]


def doc_to_visual(doc: Mapping) -> list[Image.Image]:
    with Image.open(doc["image_path"]) as image:
        return [image.convert("RGB")]


def vqav2_accuracy(doc: Mapping, results: list[str]) -> dict[str, float]:
    """process_results of sit_vqav2: the official VQAv2 accuracy (in %) of the filtered answer."""
    return {"vqa_accuracy": 100 * question_accuracy(results[0], doc["answers"])}


def gqa_accuracy(doc: Mapping, results: list[str]) -> dict[str, float]:
    """process_results of sit_gqa: the official exact match (in %) of the filtered answer."""
    question_id = doc["question_id"]
    scores = score_gqa(gqa_questions([doc]), [{"questionId": question_id, "prediction": results[0]}])
    return {"gqa_accuracy": 100 * scores["perQuestion"][question_id]}
