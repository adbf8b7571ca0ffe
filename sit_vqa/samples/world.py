"""The procedural world and what a scene of it says (`sit_vqa.samples.scenes` draws the scenes and writes the
official files): the palette, the scene and its style, its five captions, the questions it answers with
their canonical answers, and ten annotators' answers with realistic disagreement. Every function draws from
the `random.Random` it is given, so the sample stays byte-identical."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

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


NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six")
SHAPE_VARIANTS = {  # what annotators write instead of the canonical shape name
    "circle": ("round", "a circle", "Circle"),
    "square": ("a square", "Square", "box"),
    "triangle": ("triangular", "a triangle", "Triangle"),
    "diamond": ("rhombus", "a diamond", "Diamond"),
    "star": ("a star", "Star", "stars"),
}


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


def ask_questions(scene: Scene, rng: random.Random, style: SceneStyle) -> list[Question]:
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
