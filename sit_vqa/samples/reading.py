"""Reads the world's caption language back (the inverse of `sit_vqa.samples.world.caption_scene`): what a
description states about a scene, and the answer it implies for each of the world's question forms. The
miniature experiment uses it on the models' own descriptions: does describing first carry the answer?"""

from __future__ import annotations

import re
from collections import Counter

from sit_vqa.samples.world import BACKGROUND_COLORS, SHAPE_COLORS, SHAPE_KINDS

NUMBERS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5}
_COLORS, _KINDS, _BACKGROUNDS = "|".join(sorted(SHAPE_COLORS)), "|".join(SHAPE_KINDS), "|".join(sorted(BACKGROUND_COLORS))
_NUMBER_WORDS = "|".join(NUMBERS)


def read_description(description: str) -> dict:
    """What a description states about the scene: {"shapes": Counter of (colour, kind) or None when it lists
    none, "total": int or None, "background": str or None}."""
    text = description.lower()
    shapes = Counter()
    for number, color, kind in re.findall(rf"\b({_NUMBER_WORDS})\s+({_COLORS})\s+({_KINDS})s?\b", text):
        shapes[(color, kind)] += NUMBERS[number]
    total_match = re.search(rf"\b({_NUMBER_WORDS})\s+(?:colored\s+)?shapes?\b", text)
    total = NUMBERS[total_match.group(1)] if total_match else (sum(shapes.values()) if shapes else None)
    background_match = re.search(rf"\b({_BACKGROUNDS})\s+(?:background|backdrop)\b|on\s+({_BACKGROUNDS})\b", text)
    background = next((g for g in background_match.groups() if g), None) if background_match else None
    return {"shapes": shapes or None, "total": total, "background": background}


def _only(found: list[str]) -> str | None:
    return found[0] if len(found) == 1 else None


def answer_from_description(question: str, description: str | None) -> str | None:
    """The answer the description implies for one of the world's question forms, or None when it implies
    none (no description, the question's facts not stated, an unknown question form)."""
    if not description:
        return None
    scene = read_description(description)
    shapes, q = scene["shapes"], question.lower().rstrip("?").strip()
    if q.startswith("how many shapes"):
        return None if scene["total"] is None else str(scene["total"])
    if q == "what color is the background":
        return scene["background"]
    if shapes is None:
        return None
    listed = [(color, kind) for (color, kind), n in shapes.items() for _ in range(n)]
    if match := re.fullmatch(r"how many (\w+?)s are there", q):
        return str(sum(kind == match.group(1) for _, kind in listed))
    if match := re.fullmatch(r"is there an? (\w+) (\w+)", q):
        return "yes" if shapes.get((match.group(1), match.group(2))) else "no"
    if match := re.fullmatch(r"are there any (\w+) shapes", q):
        return "yes" if any(color == match.group(1) for color, _ in listed) else "no"
    if match := re.fullmatch(r"what color is the (\w+)", q):
        return _only([color for color, kind in listed if kind == match.group(1)])
    if match := re.fullmatch(r"what shape is the (\w+) object", q):
        return _only([kind for color, kind in listed if color == match.group(1)])
    if match := re.fullmatch(r"is the (\w+) (\w+)", q):
        color = _only([color for color, kind in listed if kind == match.group(1)])
        return None if color is None else ("yes" if color == match.group(2) else "no")
    return None
