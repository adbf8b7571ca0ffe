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
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

from sit_vqa.data.vqav2 import most_frequent_answer
from sit_vqa.errors import DataError, SitVqaError
from sit_vqa.samples.world import (  # the world's objects and words (SHAPE_COLORS, Scene & co. read from here too)
    BACKGROUND_COLORS,
    SHAPE_COLORS,
    SHAPE_KINDS,  # noqa: F401  (re-exported: callers read the palette from scenes)
    Question,
    Scene,
    SceneStyle,
    Shape,
    annotate,
    ask_questions,
    caption_scene,
)

SPLITS = ("train2014", "val2014")
DEFAULT_SEED = 0
DEFAULT_TRAIN_IMAGES = 64
DEFAULT_VAL_IMAGES = 24

GRID = 3  # shapes sit in distinct cells of a GRID x GRID grid
JPEG_SETTINGS = {"format": "JPEG", "quality": 90, "subsampling": 0, "optimize": False}

# Disjoint id ranges keep train and val image ids apart however many images are generated.
IMAGE_ID_RANGES = {"train2014": (1, 299_999), "val2014": (300_000, 599_999)}
FIXED_DATE = "2017-01-01 00:00:00"  # a constant, not the clock: the output must be byte-identical
LICENSE = {
    "url": "http://creativecommons.org/licenses/by/4.0/",
    "name": "Creative Commons Attribution 4.0 International License",
}


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
