"""Generate a small, deterministic image-QA set in the official VQAv2 and COCO captions formats.

Each image is a procedurally drawn scene: a plain background and 1-5 coloured shapes, each in its own
cell of a 3x3 grid (so shapes never overlap and every count is visible). The scene description
(`Scene`) is the ground truth: the 5 COCO captions describe it, and the VQAv2 questions (yes/no,
number and other) are answered from it. Ten simulated annotators answer every question with
realistic disagreement -- most give the canonical answer, some a variant ("two", "Yes", "dark red",
"red."), a few a wrong one -- and `multiple_choice_answer` is the most frequent answer, as in VQAv2.

Output (per split, split in {train2014, val2014}):

    OUT/v2_OpenEnded_mscoco_{split}_questions.json
    OUT/v2_mscoco_{split}_annotations.json
    OUT/captions_{split}.json
    OUT/{split}/COCO_{split}_{image_id:012d}.jpg

Run (this regenerates the committed copy in data/sample/ byte for byte):

    python -m sit_vqa.samples.scenes --out data/sample --train-images 64 --val-images 24 --seed 0

Determinism: only `random.Random` seeded by strings (hashed with SHA-512 by Python, so independent of
PYTHONHASHSEED and the machine), JSON written with a fixed key order and separators, JPEG written by
Pillow with fixed settings. Every image has its own random streams, derived from (seed, split,
image id, purpose), so a larger set (--train-images 5000) starts with exactly the images of a smaller
one with the same seed.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import random
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

from sit_vqa.data.vqav2 import most_frequent_answer
from sit_vqa.errors import DataError, SitVqaError

SPLITS = ("train2014", "val2014")
DEFAULT_SEED = 0
DEFAULT_TRAIN_IMAGES = 64
DEFAULT_VAL_IMAGES = 24

# Shape colours never coincide with a background colour, so every shape is visible.
SHAPE_COLORS = {
    "red": (220, 40, 40),
    "green": (40, 160, 60),
    "blue": (40, 80, 220),
    "yellow": (245, 210, 30),
    "purple": (140, 60, 180),
    "orange": (245, 140, 30),
}
BACKGROUND_COLORS = {"white": (245, 245, 245), "gray": (128, 128, 128), "black": (25, 25, 25)}
SHAPE_KINDS = ("circle", "square", "triangle", "diamond", "star")
GRID = 3  # shapes sit in distinct cells of a GRID x GRID grid
JPEG_SETTINGS = {"format": "JPEG", "quality": 90, "subsampling": 0, "optimize": False}

# Disjoint id ranges keep train and val image ids apart however many images are generated.
IMAGE_ID_RANGES = {"train2014": (1, 299_999), "val2014": (300_000, 599_999)}
FIXED_DATE = "2017-01-01 00:00:00"  # a constant, not the clock: the output must be byte-identical
LICENSE = {
    "url": "http://creativecommons.org/licenses/by/4.0/",
    "name": "Creative Commons Attribution 4.0 International License",
}

NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six")
SHAPE_VARIANTS = {  # what annotators write instead of the canonical shape name
    "circle": ("round", "a circle", "Circle"),
    "square": ("a square", "Square", "box"),
    "triangle": ("triangular", "a triangle", "Triangle"),
    "diamond": ("rhombus", "a diamond", "Diamond"),
    "star": ("a star", "Star", "stars"),
}


@dataclass(frozen=True)
class SceneStyle:
    """How hard the scenes are: image sides (each drawn independently for width and height), how many
    shapes (1..max_shapes) an image holds, and the world's words. The defaults are the full palette; a
    style that narrows them also narrows its questions (no "Is there a purple star?" in a world without
    purple or stars)."""

    image_sides: tuple[int, ...]
    max_shapes: int
    backgrounds: tuple[str, ...] = tuple(sorted(BACKGROUND_COLORS))
    colors: tuple[str, ...] = tuple(sorted(SHAPE_COLORS))
    kinds: tuple[str, ...] = SHAPE_KINDS
    distinct: bool = False  # True: the shapes of an image differ in both kind and colour
    # True: only the caption templates that name every shape, so describing first carries the answer
    complete_captions: bool = False
    ask_background: bool = True  # False where the background never varies (the question would be a constant)


# "bundled": the committed data/sample (and the default). "simple": square 64 px images with 1-3 shapes,
# 6 colours, 5 kinds, 3 backgrounds and varied captions, some of which name no shape (as COCO captions
# leave most objects out). "named": the prototype's world -- white 64 px images, 1-3 shapes of distinct
# kinds and colours (4 colours, 3 kinds), every caption names every shape.
SCENE_STYLES = {
    "bundled": SceneStyle(image_sides=(96, 112, 128), max_shapes=5),
    "simple": SceneStyle(image_sides=(64,), max_shapes=3),
    "named": SceneStyle(
        image_sides=(64,), max_shapes=3, backgrounds=("white",), colors=("blue", "green", "red", "yellow"),
        kinds=("circle", "square", "triangle"), distinct=True, complete_captions=True, ask_background=False,
    ),
}
DEFAULT_STYLE = "bundled"


@dataclass(frozen=True)
class Shape:
    kind: str
    color: str
    box: tuple[int, int, int, int]  # (x0, y0, x1, y1), inclusive pixel bounds
    cell: tuple[int, int]  # (row, column) in the grid

    @property
    def center(self) -> tuple[int, int]:
        x0, y0, x1, y1 = self.box
        return (x0 + x1) // 2, (y0 + y1) // 2


@dataclass(frozen=True)
class Scene:
    """Ground truth of one image: what was drawn, where."""

    image_id: int
    width: int
    height: int
    background: str
    shapes: tuple[Shape, ...]

    def count(self, kind: str | None = None, color: str | None = None) -> int:
        return sum((kind is None or s.kind == kind) and (color is None or s.color == color) for s in self.shapes)


@dataclass(frozen=True)
class Question:
    """One question with its canonical answer and the answers annotators confuse it with."""

    text: str
    question_type: str
    answer_type: str  # "yes/no" | "number" | "other"
    answer: str
    variants: tuple[str, ...]  # same meaning, other spelling: "two", "Yes", "dark red"
    wrong: tuple[str, ...]  # plausible mistakes


@dataclass(frozen=True)
class SplitData:
    split: str
    scenes: list[Scene]
    questions: dict
    annotations: dict
    captions: dict
    images: dict[str, bytes]  # file name -> JPEG bytes


# ----------------------------------------------------------------------------- random streams


def _rng(seed: int, split: str, image_id: int | str, purpose: str) -> random.Random:
    # A string seed is hashed with SHA-512 by `random`, so this is stable across runs and machines.
    return random.Random(f"sit-vqa-sample:{seed}:{split}:{image_id}:{purpose}")


def image_ids(split: str, n_images: int, seed: int) -> list[int]:
    """The first n distinct ids of the split's id stream (prefix-stable in n)."""
    low, high = IMAGE_ID_RANGES[split]
    rng = _rng(seed, split, "all", "image-ids")
    ids: list[int] = []
    seen: set[int] = set()
    while len(ids) < n_images:
        candidate = rng.randint(low, high)
        if candidate not in seen:
            seen.add(candidate)
            ids.append(candidate)
    return ids


# ----------------------------------------------------------------------------- scenes and pixels


def make_scene(image_id: int, rng: random.Random, style: SceneStyle = SCENE_STYLES[DEFAULT_STYLE]) -> Scene:
    width, height = rng.choice(style.image_sides), rng.choice(style.image_sides)
    background = rng.choice(style.backgrounds)
    grid_cells = [(row, col) for row in range(GRID) for col in range(GRID)]
    cells = sorted(rng.sample(grid_cells, rng.randint(1, style.max_shapes)))
    if style.distinct:
        looks = zip(rng.sample(style.kinds, len(cells)), rng.sample(style.colors, len(cells)))
        shapes = tuple(_place_shape(kind, color, cell, width, height, rng) for (kind, color), cell in zip(looks, cells))
    else:
        shapes = tuple(
            _place_shape(rng.choice(style.kinds), rng.choice(style.colors), cell, width, height, rng) for cell in cells
        )
    return Scene(image_id, width, height, background, shapes)


def _place_shape(kind: str, color: str, cell: tuple[int, int], width: int, height: int, rng: random.Random) -> Shape:
    cell_w, cell_h = width // GRID, height // GRID
    pad = 3  # keeps shapes off cell borders: neighbours never touch, image corners stay background
    size = rng.randint(int(0.55 * min(cell_w, cell_h)), min(cell_w, cell_h) - 2 * pad)
    x0 = cell[1] * cell_w + rng.randint(pad, cell_w - pad - size)
    y0 = cell[0] * cell_h + rng.randint(pad, cell_h - pad - size)
    return Shape(kind, color, (x0, y0, x0 + size - 1, y0 + size - 1), cell)


def draw_scene(scene: Scene) -> Image.Image:
    image = Image.new("RGB", (scene.width, scene.height), BACKGROUND_COLORS[scene.background])
    draw = ImageDraw.Draw(image)
    for shape in scene.shapes:
        fill = SHAPE_COLORS[shape.color]
        if shape.kind == "circle":
            draw.ellipse(shape.box, fill=fill)
        elif shape.kind == "square":
            draw.rectangle(shape.box, fill=fill)
        else:
            draw.polygon(_polygon(shape), fill=fill)
    return image


def _polygon(shape: Shape) -> list[tuple[int, int]]:
    x0, y0, x1, y1 = shape.box
    cx, cy = shape.center
    if shape.kind == "triangle":
        return [(cx, y0), (x1, y1), (x0, y1)]
    if shape.kind == "diamond":
        return [(cx, y0), (x1, cy), (cx, y1), (x0, cy)]
    if shape.kind == "star":
        return _star_points(cx, cy, (x1 - x0) / 2)
    raise ValueError(f"no polygon for shape kind {shape.kind!r}")


def _star_points(cx: int, cy: int, radius: float) -> list[tuple[int, int]]:
    # Five outer tips alternating with five inner corners; rounded to ints so rendering is exact.
    points = []
    for i in range(10):
        r = radius if i % 2 == 0 else radius * 0.45
        angle = -math.pi / 2 + i * math.pi / 5
        points.append((round(cx + r * math.cos(angle)), round(cy + r * math.sin(angle))))
    return points


def encode_jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, **JPEG_SETTINGS)
    return buffer.getvalue()


# ----------------------------------------------------------------------------- captions


def _article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _plural(kind: str) -> str:
    return kind + "s"


def _counted(n: int, color: str, kind: str) -> str:
    return _article(f"{color} {kind}") if n == 1 else f"{NUMBER_WORDS[n]} {color} {_plural(kind)}"


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _position(cell: tuple[int, int]) -> str:
    row, col = ("top", "middle", "bottom")[cell[0]], ("left", "center", "right")[cell[1]]
    if (row, col) == ("middle", "center"):
        return "in the center"
    if row == "middle":
        return f"on the {col}"
    if col == "center":
        return f"at the {row}"
    return f"in the {row} {col} corner"


def _capitalize(text: str) -> str:
    return text[0].upper() + text[1:]


def caption_scene(scene: Scene, rng: random.Random, complete: bool = False) -> list[str]:
    """Five different, truthful captions of the scene; complete=True: only captions that name every shape."""
    groups = Counter((s.color, s.kind) for s in scene.shapes)
    order = list(groups)
    rng.shuffle(order)
    things = _join([_counted(groups[key], *key) for key in order])
    n, bg = len(scene.shapes), scene.background
    number = f"{NUMBER_WORDS[n]} {'shape' if n == 1 else 'shapes'}"
    placed = _join([f"{_article(f'{s.color} {s.kind}')} {_position(s.cell)}" for s in scene.shapes])
    first_is_single = groups[order[0]] == 1
    templates = [
        f"{_capitalize(things)} on a {bg} background.",
        f"A {bg} background with {things}.",
        f"{_capitalize(number)} on a plain {bg} background: {things}.",
        f"There {'is' if first_is_single else 'are'} {things} on a {bg} background.",
        f"{_capitalize(placed)}, on {bg}.",
        f"A simple drawing of {things}.",
        f"An image of {number.replace('shape', 'colored shape')} against a {bg} backdrop.",
    ]
    if complete:
        templates = templates[:-1]  # the last one names only the count
    return rng.sample(templates, 5)


# ----------------------------------------------------------------------------- questions


def _yes_no(truth: bool) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    answer, other = ("yes", "no") if truth else ("no", "yes")
    return answer, (answer.capitalize(), answer + ".", answer.capitalize() + "."), (other,)


def _number(n: int) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    variants = (NUMBER_WORDS[n], f"{n}.") + (("none",) if n == 0 else ())
    wrong = tuple(str(m) for m in (n - 1, n + 1) if m >= 0)
    return str(n), variants, wrong


def _color(color: str, choices: list[str]) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    shades = () if color in ("black", "white") else (f"dark {color}", f"light {color}")
    variants = shades + (color.capitalize(), f"{color}.")
    return color, variants, tuple(c for c in choices if c != color)


def _kind(kind: str, kinds: tuple[str, ...]) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    return kind, SHAPE_VARIANTS[kind], tuple(k for k in kinds if k != kind)


TOTAL_COUNT_QUESTIONS = (
    "How many shapes are there?",
    "How many shapes are in the picture?",
    "How many shapes can you see?",
)


def _ask_total(scene, rng, style):
    text = rng.choice(TOTAL_COUNT_QUESTIONS)
    return Question(text, "how many", "number", *_number(len(scene.shapes)))


def _ask_kind_count(scene, rng, style):
    kind = rng.choice([s.kind for s in scene.shapes] if rng.random() < 0.6 else list(style.kinds))
    return Question(f"How many {_plural(kind)} are there?", "how many", "number", *_number(scene.count(kind=kind)))


def _ask_is_there(scene, rng, style):
    if rng.random() < 0.5:
        shape = rng.choice(scene.shapes)
        color, kind = shape.color, shape.kind
    else:
        absent = [(c, k) for c in style.colors for k in style.kinds if not scene.count(kind=k, color=c)]
        color, kind = rng.choice(absent)
    truth = scene.count(kind=kind, color=color) > 0
    return Question(f"Is there {_article(f'{color} {kind}')}?", "is there a", "yes/no", *_yes_no(truth))


def _ask_any_color(scene, rng, style):
    present = sorted({s.color for s in scene.shapes})
    color = rng.choice(present if rng.random() < 0.5 else sorted(set(style.colors) - set(present)))
    truth = scene.count(color=color) > 0
    return Question(f"Are there any {color} shapes?", "are there any", "yes/no", *_yes_no(truth))


def _ask_background(scene, rng, style):
    answer = _color(scene.background, sorted(BACKGROUND_COLORS))  # any background is a plausible mistake
    return Question("What color is the background?", "what color is the", "other", *answer)


def _unique(scene, attribute: str) -> list[Shape]:
    counts = Counter(getattr(s, attribute) for s in scene.shapes)
    return [s for s in scene.shapes if counts[getattr(s, attribute)] == 1]


def _ask_color_of(scene, rng, style):
    candidates = _unique(scene, "kind")  # "the square" must name exactly one shape
    if not candidates:
        return None
    shape = rng.choice(candidates)
    answer = _color(shape.color, list(style.colors))
    return Question(f"What color is the {shape.kind}?", "what color is the", "other", *answer)


def _ask_kind_of(scene, rng, style):
    candidates = _unique(scene, "color")  # "the blue object" must name exactly one shape
    if not candidates:
        return None
    shape = rng.choice(candidates)
    answer = _kind(shape.kind, style.kinds)
    return Question(f"What shape is the {shape.color} object?", "what shape is the", "other", *answer)


def _ask_is_the(scene, rng, style):
    candidates = _unique(scene, "kind")
    if not candidates:
        return None
    shape = rng.choice(candidates)
    color = shape.color if rng.random() < 0.5 else rng.choice(sorted(set(style.colors) - {shape.color}))
    return Question(f"Is the {shape.kind} {color}?", "is the", "yes/no", *_yes_no(color == shape.color))


QUESTION_MAKERS = (
    _ask_total, _ask_kind_count, _ask_is_there, _ask_any_color,
    _ask_background, _ask_color_of, _ask_kind_of, _ask_is_the,
)  # fmt: skip


def ask_questions(
    scene: Scene, rng: random.Random, style: SceneStyle = SCENE_STYLES[DEFAULT_STYLE]
) -> list[Question]:
    """4-6 different questions whose answers follow from the scene."""
    wanted = rng.randint(4, 6)
    makers = [maker for maker in QUESTION_MAKERS if style.ask_background or maker is not _ask_background]
    rng.shuffle(makers)
    questions = []
    for maker in makers:
        question = maker(scene, rng, style)
        if question is not None:
            questions.append(question)
        if len(questions) == wanted:
            break
    return questions


# ----------------------------------------------------------------------------- annotators


def annotate(question: Question, rng: random.Random) -> list[dict]:
    """Ten answers with realistic disagreement. The canonical answer always stays the single most
    frequent string (at least 4 of 10 votes; a variant or wrong string gets at most 3)."""
    n_wrong = rng.choices((0, 1, 2, 3), weights=(50, 30, 15, 5))[0]
    n_variant = rng.choices((0, 1, 2, 3), weights=(40, 30, 20, 10))[0]
    given = []
    for _ in range(10 - n_wrong - n_variant):
        given.append((question.answer, rng.choices(("yes", "maybe"), weights=(85, 15))[0]))
    for _ in range(n_variant):
        given.append((rng.choice(question.variants), rng.choices(("yes", "maybe"), weights=(70, 30))[0]))
    for _ in range(n_wrong):
        given.append((rng.choice(question.wrong), rng.choice(("yes", "maybe", "maybe", "no"))))
    rng.shuffle(given)
    return [
        {"answer": answer, "answer_confidence": confidence, "answer_id": i}
        for i, (answer, confidence) in enumerate(given, start=1)
    ]


# ----------------------------------------------------------------------------- official JSON


def _info(split: str, seed: int, what: str) -> dict:
    return {
        "description": f"Synthetic {what} sample ({split}) made by sit_vqa.samples.scenes with seed {seed}",
        "url": "https://github.com/sit-vqa",
        "version": "1.0",
        "year": 2017,
        "contributor": "sit-vqa",
        "date_created": FIXED_DATE,
    }


def file_name(split: str, image_id: int) -> str:
    return f"COCO_{split}_{image_id:012d}.jpg"


def build_split(split: str, n_images: int, seed: int = DEFAULT_SEED, style: str = DEFAULT_STYLE) -> SplitData:
    """All files of one split, in memory: the scenes plus the three official JSON documents and JPEGs."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    scene_style = scene_style_named(style)
    scenes = [make_scene(i, _rng(seed, split, i, "scene"), scene_style) for i in image_ids(split, n_images, seed)]
    questions, annotations, images, captions = [], [], [], []
    for scene in scenes:
        images.append(_image_entry(split, scene))
        captions_rng = _rng(seed, split, scene.image_id, "captions")
        for k, caption in enumerate(caption_scene(scene, captions_rng, scene_style.complete_captions)):
            captions.append({"image_id": scene.image_id, "id": scene.image_id * 10 + k, "caption": caption})
        answers_rng = _rng(seed, split, scene.image_id, "answers")
        for k, question in enumerate(ask_questions(scene, _rng(seed, split, scene.image_id, "questions"), scene_style)):
            question_id = scene.image_id * 1000 + k  # the VQAv2 convention
            questions.append({"image_id": scene.image_id, "question": question.text, "question_id": question_id})
            annotations.append(_annotation(question, annotate(question, answers_rng), scene.image_id, question_id))
    return SplitData(
        split=split,
        scenes=scenes,
        questions={
            "info": _info(split, seed, "VQA v2"),
            "task_type": "Open-Ended",
            "data_type": "mscoco",
            "license": LICENSE,
            "data_subtype": split,
            "questions": questions,
        },
        annotations={
            "info": _info(split, seed, "VQA v2"),
            "license": LICENSE,
            "data_subtype": split,
            "data_type": "mscoco",
            "annotations": annotations,
        },
        captions={
            "info": _info(split, seed, "COCO captions"),
            "licenses": [{"url": LICENSE["url"], "id": 1, "name": LICENSE["name"]}],
            "images": images,
            "annotations": captions,
        },
        images={file_name(split, scene.image_id): encode_jpeg(draw_scene(scene)) for scene in scenes},
    )


def scene_style_named(name: str) -> SceneStyle:
    if name not in SCENE_STYLES:
        raise ValueError(f"unknown scene style {name!r}; expected one of {', '.join(SCENE_STYLES)}")
    return SCENE_STYLES[name]


def _image_entry(split: str, scene: Scene) -> dict:
    return {
        "license": 1,
        "file_name": file_name(split, scene.image_id),
        "coco_url": "",  # synthetic images live only on disk
        "height": scene.height,
        "width": scene.width,
        "date_captured": FIXED_DATE,
        "flickr_url": "",
        "id": scene.image_id,
    }


def _annotation(question: Question, answers: list[dict], image_id: int, question_id: int) -> dict:
    return {
        "question_type": question.question_type,
        "multiple_choice_answer": most_frequent_answer([a["answer"] for a in answers]),
        "answers": answers,
        "image_id": image_id,
        "answer_type": question.answer_type,
        "question_id": question_id,
    }


# ----------------------------------------------------------------------------- writing


def dump_json(document: dict) -> bytes:
    # One fixed layout (insertion key order, indent 1, ASCII) so the bytes never vary.
    return (json.dumps(document, indent=1, ensure_ascii=True) + "\n").encode("ascii")


def split_files(data: SplitData) -> dict[str, bytes]:
    """Relative path -> bytes for every file of the split."""
    split = data.split
    files = {
        f"v2_OpenEnded_mscoco_{split}_questions.json": dump_json(data.questions),
        f"v2_mscoco_{split}_annotations.json": dump_json(data.annotations),
        f"captions_{split}.json": dump_json(data.captions),
    }
    files.update({f"{split}/{name}": jpeg for name, jpeg in data.images.items()})
    return files


def write_sample(
    out_dir: str | Path,
    train_images: int = DEFAULT_TRAIN_IMAGES,
    val_images: int = DEFAULT_VAL_IMAGES,
    seed: int = DEFAULT_SEED,
    style: str = DEFAULT_STYLE,
) -> list[Path]:
    """Generate both splits into out_dir; return the written paths."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise DataError(f"--out {out_dir} is a file; pass a directory for the sample (e.g. data/sample)")
    files: dict[str, bytes] = {}
    for split, n_images in zip(SPLITS, (train_images, val_images)):
        if n_images < 1:
            raise ValueError(f"{split}: need at least 1 image, got {n_images}")
        files.update(split_files(build_split(split, n_images, seed, style)))
    _refuse_stale_images(out_dir, files)
    written = []
    for relative, content in sorted(files.items()):
        path = out_dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        written.append(path)
    return written


def _refuse_stale_images(out_dir: Path, files: dict[str, bytes]) -> None:
    # Leftover images from an earlier, larger run would sit beside JSON that does not mention them.
    for split in SPLITS:
        stale = [p for p in sorted((out_dir / split).glob("COCO_*.jpg")) if f"{split}/{p.name}" not in files]
        if stale:
            raise DataError(
                f"{out_dir / split} holds {len(stale)} image(s) this generation would not write "
                f"(e.g. {stale[0].name}, from an earlier run with other settings?); "
                f"use an empty --out directory or delete those images first"
            )


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sit_vqa.samples.scenes",
        description="Generate a synthetic image-QA set in the official VQAv2 + COCO captions formats "
        "(train2014 and val2014 splits).",
    )
    parser.add_argument("--out", required=True, type=Path, help="output directory (e.g. data/sample)")
    parser.add_argument("--train-images", type=int, default=DEFAULT_TRAIN_IMAGES, help="number of train2014 images")
    parser.add_argument("--val-images", type=int, default=DEFAULT_VAL_IMAGES, help="number of val2014 images")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="random seed (same seed -> same bytes)")
    parser.add_argument("--style", choices=list(SCENE_STYLES), default=DEFAULT_STYLE,
                        help="scene world: bundled (data/sample), simple (64 px, 1-3 shapes, varied captions) or "
                        "named (64 px, 1-3 distinct shapes on white, captions naming every shape)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    if args.train_images < 1 or args.val_images < 1:
        make_parser().error("--train-images and --val-images must be at least 1")
    try:
        written = write_sample(args.out, args.train_images, args.val_images, args.seed, args.style)
    except SitVqaError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    size = sum(p.stat().st_size for p in written)
    print(f"wrote {len(written)} files ({size / 1e6:.2f} MB) to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
