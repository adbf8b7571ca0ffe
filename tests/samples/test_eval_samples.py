"""The GQA / xGQA / OK-VQA / XQuAD samples are what the generator makes, byte for byte, small, and true of
their pictures."""

import hashlib
import json
import re
from pathlib import Path

from PIL import Image

from sit_vqa.samples import eval_samples
from sit_vqa.samples.scenes import SHAPE_COLORS

DATA = Path(__file__).resolve().parents[2] / "data"
SAMPLES = ("gqa_sample", "xgqa_sample", "okvqa_sample", "xquad_sample")


def hashes(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for folder in SAMPLES for p in sorted((root / folder).rglob("*")) if p.is_file()}


def test_regenerating_gives_the_committed_bytes(tmp_path):
    eval_samples.main(["--out", str(tmp_path)])
    assert hashes(tmp_path) == hashes(DATA)


def test_samples_are_small():
    assert sum((DATA / relative).stat().st_size for relative in hashes(DATA)) < 1_000_000


def english_oracle(question: str, scene) -> str:
    """Answer a GQA sample question from the scene, by parsing the English text (independent of the generator)."""
    kinds = {s.kind for s in scene.shapes}
    color = {s.kind: s.color for s in scene.shapes}
    rules = [
        (r"What color is the background\?", lambda m: scene.background),
        (r"What color is the (\w+)\?", lambda m: color[m[1]]),
        (r"Is the (\w+) (\w+) or (\w+)\?", lambda m: color[m[1]]),
        (r"Is the (\w+) (\w+)\?", lambda m: "yes" if color[m[1]] == m[2] else "no"),
        (r"Is there a (\w+) in the picture\?", lambda m: "yes" if m[1] in kinds else "no"),
        (r"Are there both a (\w+) and a (\w+)\?", lambda m: "yes" if {m[1], m[2]} <= kinds else "no"),
    ]
    for pattern, answer in rules:
        match = re.fullmatch(pattern, question)
        if match:
            return answer(match)
    raise AssertionError(f"no rule for {question!r}")


def test_gqa_answers_follow_the_pictures():
    scenes = {f"n{scene.image_id}": scene for scene in eval_samples.gqa_scenes()}
    questions = json.loads((DATA / "gqa_sample" / "testdev_balanced_questions.json").read_text())
    assert 20 <= len(questions) <= 60
    for question in questions.values():
        scene = scenes[question["imageId"]]
        assert question["answer"] == english_oracle(question["question"], scene), question
        with Image.open(DATA / "gqa_sample" / "images" / f"{question['imageId']}.jpg") as image:
            rgb = image.convert("RGB")
        for shape in scene.shapes:
            pixel = rgb.getpixel(shape.center)
            assert all(abs(p - c) <= 40 for p, c in zip(pixel, SHAPE_COLORS[shape.color])), (shape, pixel)
    structural = {q["types"]["structural"] for q in questions.values()}
    assert structural == {"query", "verify", "choose", "logical"}


def test_xquad_answers_are_colours_of_the_pictures():
    english = json.loads((DATA / "xquad_sample" / "xquad.en.json").read_text())
    answers = {qa["answers"][0]["text"] for a in english["data"] for p in a["paragraphs"] for qa in p["qas"]}
    assert answers <= set(SHAPE_COLORS) | {"white", "gray", "black"}
