"""Small VQAv2 + COCO captions inputs in the official formats, written into tmp_path.

`official_data` is a fresh dict per test ({"questions": ..., "annotations": ..., "captions": ...}, each the
whole JSON document) that a test may edit before `write_official(data)` writes it (plus tiny JPEGs for the
images, unless told otherwise) and returns the paths. Tests outside tests/data import
`build_official_data` and `write_official_files` from here.

The content is chosen so that the paper's released-code defects would show:
- image 9 has three questions and three captions (a join keyed by image keeps one of each);
- question 25000's first annotator says "tree" while the consensus is "leaves";
- captions carry colons, a newline, double spaces and an "Answer:" inside the text.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

SPLIT = "train2014"

# image_id -> captions (file order)
CAPTIONS = {
    9: ["A plate of food.", "Broccoli and rice on a white plate next to a silver fork.",
        "Dinner: rice,\nbroccoli  and a fork."],
    25: ["A giraffe eating leaves.", "A tall giraffe. Answer: it is near trees"],
    30: ["A red bus on a street."],
    42: ["An image with captions but no questions."],
}

# (question_id, image_id, question, multiple_choice_answer, answers (10), answer_type, question_type)
QUESTIONS = [
    (9000, 9, "What is on the plate?", "rice", ["rice"] * 6 + ["broccoli"] * 4, "other", "what is on the"),
    (9001, 9, "How many forks are there?", "1", ["1"] * 8 + ["2"] * 2, "number", "how many"),
    (9002, 9, "Is this food healthy?", "yes", ["yes"] * 9 + ["no"], "yes/no", "is this"),
    (25000, 25, "What is the giraffe eating?", "leaves", ["tree"] + ["leaves"] * 7 + ["green", "grass"],
     "other", "what is the"),
    (25001, 25, "How many giraffes?", "1", ["1"] * 10, "number", "how many"),
    (30000, 30, "What color is the bus?", "red", ["red"] * 9 + ["orange"], "other", "what color is the"),
]


def image_name(image_id: int, split: str = SPLIT) -> str:
    return f"COCO_{split}_{image_id:012d}.jpg"


def build_official_data(split: str = SPLIT) -> dict:
    questions = {
        "info": {"description": "test"}, "task_type": "Open-Ended", "data_type": "mscoco",
        "license": {"name": "test"}, "data_subtype": split,
        "questions": [{"image_id": image, "question": text, "question_id": qid}
                      for qid, image, text, *_ in QUESTIONS],
    }
    annotations = {
        "info": {"description": "test"}, "license": {"name": "test"}, "data_subtype": split, "data_type": "mscoco",
        "annotations": [
            {"question_type": qtype, "multiple_choice_answer": mc, "image_id": image, "answer_type": atype,
             "question_id": qid,
             "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": i + 1} for i, a in enumerate(answers)]}
            for qid, image, _, mc, answers, atype, qtype in QUESTIONS
        ],
    }
    annotation_id = 100
    caption_annotations = []
    for image, texts in CAPTIONS.items():
        for text in texts:
            caption_annotations.append({"image_id": image, "id": annotation_id, "caption": text})
            annotation_id += 1
    captions = {
        "info": {"description": "test"}, "licenses": [{"id": 1, "name": "test"}],
        "images": [{"license": 1, "file_name": image_name(image, split), "coco_url": "", "height": 8, "width": 8,
                    "date_captured": "2013-11-14 16:28:13", "flickr_url": "", "id": image} for image in CAPTIONS],
        "annotations": caption_annotations,
    }
    return {"questions": questions, "annotations": annotations, "captions": captions}


@dataclass(frozen=True)
class OfficialFiles:
    questions: Path
    annotations: Path
    captions: Path
    image_dir: Path

    def args(self) -> tuple[Path, Path, Path, Path]:
        return self.questions, self.annotations, self.captions, self.image_dir


@pytest.fixture
def official_data() -> dict:
    return copy.deepcopy(build_official_data())


def write_official_files(directory: Path, data: dict, images: bool = True) -> OfficialFiles:
    """Write the three JSON files (and an 8x8 JPEG per listed image, if `images`) into directory."""
    directory.mkdir(parents=True, exist_ok=True)
    split = data["questions"].get("data_subtype", SPLIT)
    files = OfficialFiles(
        questions=directory / f"v2_OpenEnded_mscoco_{split}_questions.json",
        annotations=directory / f"v2_mscoco_{split}_annotations.json",
        captions=directory / f"captions_{split}.json",
        image_dir=directory / split,
    )
    for key in ("questions", "annotations", "captions"):
        getattr(files, key).write_text(json.dumps(data[key]))
    files.image_dir.mkdir(exist_ok=True)
    if images:
        for entry in data["captions"].get("images", []):
            name = entry.get("file_name") or image_name(entry["id"], split)
            Image.new("RGB", (8, 8), (200, 30, 30)).save(files.image_dir / name, "JPEG")
    return files


@pytest.fixture
def write_official(tmp_path):
    """write_official(data, images=True) -> OfficialFiles, in tmp_path/inputs."""
    return lambda data, images=True: write_official_files(tmp_path / "inputs", data, images)


@pytest.fixture
def official_files(official_data, write_official) -> OfficialFiles:
    return write_official(official_data)
