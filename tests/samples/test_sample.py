"""The bundled sample set: it is what the generator makes, in the official formats, and its answers
and captions are true of the pictures."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image
from pycocotools.coco import COCO

from sit_vqa.samples import generated
from sit_vqa.samples import scenes as sample
from sit_vqa.samples.scenes import BACKGROUND_COLORS, SHAPE_COLORS, SHAPE_KINDS, SPLITS
from sit_vqa.errors import DataError

SAMPLE_DIR = Path(__file__).resolve().parents[2] / "data" / "sample"
NUMBER_WORDS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5}


def tree_hashes(root: Path) -> dict[str, str]:
    return {
        path.relative_to(root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def load(split: str, kind: str) -> dict:
    names = {
        "questions": f"v2_OpenEnded_mscoco_{split}_questions.json",
        "annotations": f"v2_mscoco_{split}_annotations.json",
        "captions": f"captions_{split}.json",
    }
    return json.loads((SAMPLE_DIR / names[kind]).read_text())


@pytest.fixture(scope="module")
def scenes() -> dict[str, dict[int, sample.Scene]]:
    """The generator's ground truth for the committed sample, by split and image id."""
    counts = dict(zip(SPLITS, (sample.DEFAULT_TRAIN_IMAGES, sample.DEFAULT_VAL_IMAGES)))
    return {
        split: {s.image_id: s for s in sample.build_split(split, n, sample.DEFAULT_SEED).scenes}
        for split, n in counts.items()
    }


# ----------------------------------------------------------------------------- reproducibility


def test_committed_sample_is_what_the_generator_makes(tmp_path):
    sample.write_sample(tmp_path)  # the defaults are the committed sample's settings
    fresh, committed = tree_hashes(tmp_path), tree_hashes(SAMPLE_DIR)
    assert sorted(fresh) == sorted(committed), "file lists differ: regenerate data/sample (see data/README.md)"
    changed = [name for name in fresh if fresh[name] != committed[name]]
    assert not changed, f"{len(changed)} file(s) differ from a fresh generation, e.g. {changed[:3]}"


def test_generation_is_byte_identical_across_runs_and_depends_on_seed(tmp_path):
    first, second, other_seed = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    sample.write_sample(first, train_images=6, val_images=3, seed=7)
    sample.write_sample(second, train_images=6, val_images=3, seed=7)
    sample.write_sample(other_seed, train_images=6, val_images=3, seed=8)
    assert tree_hashes(first) == tree_hashes(second)
    assert tree_hashes(first) != tree_hashes(other_seed)


def test_larger_sets_start_with_the_smaller_set():
    small = sample.build_split("train2014", 3, seed=0)
    large = sample.build_split("train2014", 8, seed=0)
    assert large.scenes[:3] == small.scenes
    assert large.questions["questions"][: len(small.questions["questions"])] == small.questions["questions"]


def test_sample_is_small_with_the_requested_sizes():
    total = sum(p.stat().st_size for p in SAMPLE_DIR.rglob("*") if p.is_file())
    assert total < 2_000_000
    assert len(list((SAMPLE_DIR / "train2014").glob("*.jpg"))) == sample.DEFAULT_TRAIN_IMAGES
    assert len(list((SAMPLE_DIR / "val2014").glob("*.jpg"))) == sample.DEFAULT_VAL_IMAGES


# ----------------------------------------------------------------------------- official formats


@pytest.mark.parametrize("split", SPLITS)
def test_captions_load_with_pycocotools(split):
    coco = COCO(str(SAMPLE_DIR / f"captions_{split}.json"))
    image_ids = coco.getImgIds()
    assert len(image_ids) == len(list((SAMPLE_DIR / split).glob("*.jpg")))
    for image_id in image_ids:
        captions = coco.loadAnns(coco.getAnnIds(imgIds=[image_id]))
        assert len(captions) == 5
        assert len({c["caption"] for c in captions}) == 5, "the 5 captions of an image should differ"
        info = coco.loadImgs(image_id)[0]
        assert set(info) == {"license", "file_name", "coco_url", "height", "width", "date_captured", "flickr_url", "id"}
        assert info["file_name"] == f"COCO_{split}_{image_id:012d}.jpg"
        with Image.open(SAMPLE_DIR / split / info["file_name"]) as image:
            assert image.format == "JPEG"
            assert image.size == (info["width"], info["height"])
            assert 96 <= min(image.size) and max(image.size) <= 128
    document = load(split, "captions")
    assert list(document) == ["info", "licenses", "images", "annotations"]
    assert all(list(c) == ["image_id", "id", "caption"] for c in document["annotations"])


@pytest.mark.parametrize("split", SPLITS)
def test_questions_follow_the_vqav2_format(split):
    document = load(split, "questions")
    assert list(document) == ["info", "task_type", "data_type", "license", "data_subtype", "questions"]
    assert (document["task_type"], document["data_type"], document["data_subtype"]) == ("Open-Ended", "mscoco", split)
    per_image = Counter()
    for q in document["questions"]:
        assert list(q) == ["image_id", "question", "question_id"]
        assert isinstance(q["image_id"], int) and isinstance(q["question_id"], int)
        assert q["question"].endswith("?")
        assert q["question_id"] == q["image_id"] * 1000 + per_image[q["image_id"]]
        per_image[q["image_id"]] += 1
    assert set(per_image.values()) <= {4, 5, 6}


@pytest.mark.parametrize("split", SPLITS)
def test_annotations_follow_the_vqav2_format(split):
    document = load(split, "annotations")
    questions = load(split, "questions")["questions"]
    assert list(document) == ["info", "license", "data_subtype", "data_type", "annotations"]
    annotations = document["annotations"]
    assert [a["question_id"] for a in annotations] == [q["question_id"] for q in questions]
    for annotation, question in zip(annotations, questions):
        assert list(annotation) == [
            "question_type", "multiple_choice_answer", "answers", "image_id", "answer_type", "question_id",
        ]  # fmt: skip
        assert annotation["image_id"] == question["image_id"]
        assert annotation["answer_type"] in {"yes/no", "number", "other"}
        assert question["question"].lower().startswith(annotation["question_type"])
        answers = annotation["answers"]
        assert [a["answer_id"] for a in answers] == list(range(1, 11))
        assert all(list(a) == ["answer", "answer_confidence", "answer_id"] for a in answers)
        assert all(a["answer_confidence"] in {"yes", "maybe", "no"} for a in answers)
        counts = Counter(a["answer"] for a in answers).most_common()
        assert annotation["multiple_choice_answer"] == counts[0][0]
        assert len(counts) == 1 or counts[0][1] > counts[1][1], "the consensus answer should be unambiguous"


@pytest.mark.parametrize("split", SPLITS)
def test_every_question_has_an_image_that_opens(split):
    listed = {image["id"]: image["file_name"] for image in load(split, "captions")["images"]}
    for question in load(split, "questions")["questions"]:
        path = SAMPLE_DIR / split / listed[question["image_id"]]
        with Image.open(path) as image:
            image.load()


def test_train_and_val_are_disjoint():
    ids = {split: {image["id"] for image in load(split, "captions")["images"]} for split in SPLITS}
    assert not ids["train2014"] & ids["val2014"]
    question_ids = [q["question_id"] for split in SPLITS for q in load(split, "questions")["questions"]]
    caption_ids = [c["id"] for split in SPLITS for c in load(split, "captions")["annotations"]]
    assert len(set(question_ids)) == len(question_ids)
    assert len(set(caption_ids)) == len(caption_ids)


def test_annotators_disagree_realistically():
    annotations = [a for split in SPLITS for a in load(split, "annotations")["annotations"]]
    answers = [(a["multiple_choice_answer"], x["answer"]) for a in annotations for x in a["answers"]]
    agreeing = sum(consensus == given for consensus, given in answers) / len(answers)
    assert 0.6 < agreeing < 0.95
    unanimous = sum(len({x["answer"] for x in a["answers"]}) == 1 for a in annotations)
    assert 0 < unanimous < len(annotations)
    given = {x["answer"] for a in annotations for x in a["answers"]}
    assert {"Yes", "two", "no"} <= given  # spelling variants and plain answers both occur
    assert any(a.startswith(("dark ", "light ")) for a in given)
    assert Counter(a["answer_type"] for a in annotations).keys() == {"yes/no", "number", "other"}
    yes_no = Counter(a["multiple_choice_answer"] for a in annotations if a["answer_type"] == "yes/no")
    assert min(yes_no["yes"], yes_no["no"]) > 0.35 * sum(yes_no.values())


# ----------------------------------------------------------------------------- answers and captions are true


def expected_answer(question: str, scene: sample.Scene) -> str:
    """An oracle independent of the generator's question code: parse the text, read the scene."""
    kinds, colors = "|".join(SHAPE_KINDS), "|".join(SHAPE_COLORS)

    def yes_no(truth: bool) -> str:
        return "yes" if truth else "no"

    def only(**attributes) -> sample.Shape:
        (shape,) = [s for s in scene.shapes if all(getattr(s, k) == v for k, v in attributes.items())]
        return shape

    rules = [
        (r"How many shapes (are there|are in the picture|can you see)\?", lambda m: str(len(scene.shapes))),
        (rf"How many ({kinds})s are there\?", lambda m: str(scene.count(kind=m[1]))),
        (rf"Is there an? ({colors}) ({kinds})\?", lambda m: yes_no(scene.count(color=m[1], kind=m[2]) > 0)),
        (rf"Are there any ({colors}) shapes\?", lambda m: yes_no(scene.count(color=m[1]) > 0)),
        (r"What color is the background\?", lambda m: scene.background),
        (rf"What color is the ({kinds})\?", lambda m: only(kind=m[1]).color),
        (rf"What shape is the ({colors}) object\?", lambda m: only(color=m[1]).kind),
        (rf"Is the ({kinds}) ({colors})\?", lambda m: yes_no(only(kind=m[1]).color == m[2])),
    ]
    for pattern, answer in rules:
        match = re.fullmatch(pattern, question)
        if match:
            return answer(match)
    raise AssertionError(f"no oracle rule for question {question!r}")


@pytest.mark.parametrize("split", SPLITS)
def test_answers_follow_the_scene(split, scenes):
    questions = load(split, "questions")["questions"]
    annotations = load(split, "annotations")["annotations"]
    for question, annotation in zip(questions, annotations):
        scene = scenes[split][question["image_id"]]
        assert annotation["multiple_choice_answer"] == expected_answer(question["question"], scene), question
    totals = [
        (q, a) for q, a in zip(questions, annotations) if q["question"].startswith("How many shapes")
    ]
    assert totals, "the sample should ask for the total count"
    for question, annotation in totals:
        assert int(annotation["multiple_choice_answer"]) == len(scenes[split][question["image_id"]].shapes)


def close(pixel, rgb, tolerance=40) -> bool:
    return all(abs(p - c) <= tolerance for p, c in zip(pixel, rgb))


@pytest.mark.parametrize("split", SPLITS)
def test_images_show_the_scene(split, scenes):
    for scene in scenes[split].values():
        with Image.open(SAMPLE_DIR / split / sample.file_name(split, scene.image_id)) as image:
            rgb = image.convert("RGB")
        assert close(rgb.getpixel((0, 0)), BACKGROUND_COLORS[scene.background])
        for shape in scene.shapes:
            assert close(rgb.getpixel(shape.center), SHAPE_COLORS[shape.color]), (scene.image_id, shape)


@pytest.mark.parametrize("split", SPLITS)
def test_captions_describe_the_scene(split, scenes):
    for caption in load(split, "captions")["annotations"]:
        scene = scenes[split][caption["image_id"]]
        text = caption["caption"].lower()
        words = re.findall(r"[a-z]+", text)
        assert {w for w in words if w in SHAPE_COLORS} <= {s.color for s in scene.shapes}, text
        assert {w for w in words if w in BACKGROUND_COLORS} <= {scene.background}, text
        assert {w.rstrip("s") for w in words if w.rstrip("s") in SHAPE_KINDS} <= {s.kind for s in scene.shapes}, text
        for number, _noun in re.findall(r"\b(one|two|three|four|five) (colored )?shapes?\b", text):
            assert NUMBER_WORDS[number] == len(scene.shapes), text
        for number, color, kind in re.findall(rf"\b(two|three|four|five) ({'|'.join(SHAPE_COLORS)}) (\w+)s\b", text):
            assert scene.count(color=color, kind=kind) == NUMBER_WORDS[number], text


# ----------------------------------------------------------------------------- the command line


def test_cli_writes_the_official_layout(tmp_path):
    sample.main(["--out", str(tmp_path), "--train-images", "2", "--val-images", "1", "--seed", "3"])
    for split, n in zip(SPLITS, (2, 1)):
        assert (tmp_path / f"v2_OpenEnded_mscoco_{split}_questions.json").is_file()
        assert (tmp_path / f"v2_mscoco_{split}_annotations.json").is_file()
        assert len(COCO(str(tmp_path / f"captions_{split}.json")).getImgIds()) == n
        assert len(list((tmp_path / split).glob("COCO_*.jpg"))) == n


def test_cli_help_runs_as_a_module():
    result = subprocess.run(
        [sys.executable, "-m", "sit_vqa.samples.scenes", "--help"], capture_output=True, text=True, check=True
    )
    assert "--train-images" in result.stdout and "--seed" in result.stdout


def test_cli_rejects_an_empty_split(tmp_path, capsys):
    with pytest.raises(SystemExit):
        sample.main(["--out", str(tmp_path), "--val-images", "0"])
    assert "at least 1" in capsys.readouterr().err


def test_refuses_to_leave_stale_images_beside_new_json(tmp_path):
    sample.write_sample(tmp_path, train_images=3, val_images=1)
    with pytest.raises(DataError, match="empty --out directory"):
        sample.write_sample(tmp_path, train_images=2, val_images=1)
    sample.write_sample(tmp_path, train_images=3, val_images=1)  # same settings again: fine


# ----------------------------------------------------------------------------- generated on first use


def test_ensure_sample_generates_once_and_again_only_for_other_settings(tmp_path):
    out = tmp_path / "generated"
    assert generated.ensure_sample(out, 3, 2, style="simple") is True
    first = tree_hashes(out)
    assert generated.ensure_sample(out, 3, 2, style="simple") is False  # same settings: reused as it is
    assert generated.ensure_sample(out, 2, 2, style="simple") is True  # fewer images: regenerated, nothing stale
    assert len(list((out / "train2014").glob("*.jpg"))) == 2
    assert generated.ensure_sample(out, 3, 2, style="simple") is True
    assert tree_hashes(out) == first


def test_ensure_sample_refuses_a_directory_it_did_not_make(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="not a generated sample"):
        generated.ensure_sample(tmp_path, 2, 1)


def test_simple_style_draws_64_px_scenes_of_one_to_three_shapes():
    scenes = sample.build_split("train2014", 40, style="simple").scenes
    assert {(s.width, s.height) for s in scenes} == {(64, 64)}
    assert {len(s.shapes) for s in scenes} == {1, 2, 3}


def test_named_style_draws_distinct_shapes_on_white_and_every_caption_names_every_shape():
    style = sample.SCENE_STYLES["named"]
    data = sample.build_split("train2014", 40, style="named")
    for scene in data.scenes:
        assert scene.background == "white" and 1 <= len(scene.shapes) <= 3
        kinds, colors = [s.kind for s in scene.shapes], [s.color for s in scene.shapes]
        assert len(set(kinds)) == len(kinds) and len(set(colors)) == len(colors)  # distinct kinds and colours
        assert set(kinds) <= set(style.kinds) and set(colors) <= set(style.colors)
    by_image = {scene.image_id: scene for scene in data.scenes}
    for caption in data.captions["annotations"]:
        for shape in by_image[caption["image_id"]].shapes:
            assert f"{shape.color} {shape.kind}" in caption["caption"].lower(), caption
    asked = " ".join(q["question"].lower() for q in data.questions["questions"])
    assert "background" not in asked  # the background never varies here
    outside = (set(sample.SHAPE_COLORS) - set(style.colors)) | (set(sample.SHAPE_KINDS) - set(style.kinds))
    outside |= {kind + "s" for kind in set(sample.SHAPE_KINDS) - set(style.kinds)}
    assert not any(word in asked.replace("?", "").split() for word in outside)
