"""SIT-aware figures of an image set's outputs: how good the model's own descriptions are, and whether its
answers follow from them -- what a plain VQA score cannot tell apart.

    figures = sit_figures(predictions, references)     # predictions: description, answer, correct / accuracy

Per evaluation (each None where it does not apply, e.g. no reference captions or no descriptions):
- `description_cider_d`, `description_bleu4`: the descriptions against the image's reference captions, with
  pycocoevalcap's CIDEr-D and BLEU-4 scorers (the COCO caption evaluation's). Its PTB tokenizer needs Java:
  the text is tokenised here in Python the same way in spirit (lower case, punctuation dropped, words kept
  whole), so the figures are close to, not identical with, the official server's. CIDEr-D's document
  frequencies come from the evaluated images' references, as in the COCO evaluation.
- `answer_marker_rate`, `description_marker_rate`: shares of outputs carrying "Answer:" / "Description:".
- `description_words`: the mean description length in words.
- `answer_in_description_rate`: the share of described outputs whose answer appears in their own
  description (whole words) -- does the answer follow from what the model said it sees?
- `accuracy_answer_in_description` / `accuracy_answer_not_in_description` with their question counts: the
  set's accuracy on those two groups.
No torch, no model.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def tokens(text: str) -> list[str]:
    """Lower-case words, punctuation dropped (the PTB tokenizer's effect on captions, in Python)."""
    return _WORD.findall(text.lower())


def mentions(description: str | None, answer: str) -> bool:
    """Whether `answer` (its words, in order) appears in `description` as whole words."""
    if not description:
        return False
    answer_words, words = tokens(answer), tokens(description)
    span = len(answer_words)
    return bool(span) and any(words[i:i + span] == answer_words for i in range(len(words) - span + 1))


def caption_scores(descriptions: Mapping, references: Mapping[object, Sequence[str]]) -> dict[str, float | None]:
    """CIDEr-D and BLEU-4 (x100) of {key: description} against {key: reference captions}; keys without a
    description or without references are left out (None when none are left)."""
    keys = [key for key, text in descriptions.items() if text and references.get(key)]
    if not keys:
        return {"description_cider_d": None, "description_bleu4": None}
    candidates = {i: [" ".join(tokens(descriptions[key]))] for i, key in enumerate(keys)}
    refs = {i: [" ".join(tokens(caption)) for caption in references[key]] for i, key in enumerate(keys)}
    cider, _ = Cider().compute_score(refs, candidates)
    bleu, _ = Bleu(4).compute_score(refs, candidates, verbose=0)
    return {"description_cider_d": round(100 * float(cider), 2), "description_bleu4": round(100 * bleu[3], 2)}


def sit_figures(predictions: Sequence[Mapping], references: Mapping[object, Sequence[str]] | None = None, *,
                key: str = "image_id", score: str = "accuracy") -> dict:
    """The figures above for `predictions` (each with description, answer, has_answer_marker, `score` -- the
    question's score in [0, 1]: VQA's accuracy, GQA's correct -- and `key`, the image the references are keyed
    by)."""
    count = len(predictions)
    described = [p for p in predictions if p.get("description")]
    figures = {
        "answer_marker_rate": _share(sum(bool(p.get("has_answer_marker")) for p in predictions), count),
        "description_marker_rate": _share(sum(p.get("description") is not None for p in predictions), count),
        "description_words": (round(sum(len(tokens(p["description"])) for p in described) / len(described), 2)
                              if described else None),
    }
    # one description per image and question: CIDEr-D scores each output, so key by position
    by_position = {i: p.get("description") for i, p in enumerate(predictions)}
    refs = {i: (references or {}).get(p.get(key), ()) for i, p in enumerate(predictions)}
    figures.update(caption_scores(by_position, refs) if references else
                   {"description_cider_d": None, "description_bleu4": None})
    follows = [mentions(p.get("description"), p["answer"]) for p in predictions]
    inside = [p for p, mentioned in zip(predictions, follows) if mentioned]
    outside = [p for p, mentioned in zip(predictions, follows) if not mentioned]
    figures.update({
        "answer_in_description_rate": _share(len(inside), len(described)),
        "accuracy_answer_in_description": _mean_score(inside, score),
        "accuracy_answer_not_in_description": _mean_score(outside, score),
        "questions_answer_in_description": len(inside),
        "questions_answer_not_in_description": len(outside),
    })
    return figures


def _share(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _mean_score(predictions: Sequence[Mapping], score: str) -> float | None:
    """The mean accuracy (in %) of a group, from per-question scores in [0, 1] (VQA's accuracy, GQA's correct)."""
    if not predictions:
        return None
    return round(100 * sum(float(p[score]) for p in predictions) / len(predictions), 2)
