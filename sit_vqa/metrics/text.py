"""Scores for the text-only SIT path: chrF and ROUGE-L from their reference libraries, plus two format checks.

- `chrf(hypotheses, references)`: corpus chrF (sacrebleu's `corpus_chrf`, default chrF: character 6-grams,
  beta 2), 0-100. Works for any language.
- `rouge_l(hypotheses, references)`: mean ROUGE-L F-measure (Google's rouge-score, no stemming), 0-100. Its
  tokenizer keeps only ASCII letters and digits, so use it for English text (the answers and the English
  translations the translate mode asks for), not for bn/ko/zh/ru.
- `follows_sequence(output, first_marker)`: the output does the steps in order: it opens with the first step's
  marker ("Input:" for repeat, "Translation:" for translate) and later has a line that starts with "Answer:",
  the layout of the SIT targets (`sit_vqa.data.text_sit`). `sequence_rate` is its percentage over outputs.
- `exact_copy_rate(outputs, sources, first_marker)`: percentage of outputs whose first step is exactly the
  source text (stripped): for the repeat mode, how often the input was copied verbatim.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import sacrebleu
from rouge_score import rouge_scorer

from sit_vqa.errors import SitVqaError

ANSWER_MARKER = "Answer:"  # the marker of sit_vqa.data.text_sit and of the image SIT targets
_ANSWER_LINE = re.compile(r"^[ \t]*" + re.escape(ANSWER_MARKER), re.MULTILINE)


class TextMetricError(SitVqaError, ValueError):
    """Hypotheses and references that cannot be scored together."""


def _check_pairs(hypotheses: Sequence[str], references: Sequence[str]) -> None:
    if len(hypotheses) != len(references):
        raise TextMetricError(f"{len(hypotheses)} hypotheses but {len(references)} references; "
                              "pass one reference per hypothesis, in the same order")
    if not hypotheses:
        raise TextMetricError("no hypotheses to score")


def chrf(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Corpus chrF (sacrebleu defaults), 0-100."""
    _check_pairs(hypotheses, references)
    return sacrebleu.corpus_chrf(list(hypotheses), [list(references)]).score


def rouge_l(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Mean ROUGE-L F-measure over the pairs (rouge-score, no stemmer), 0-100."""
    _check_pairs(hypotheses, references)
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    scores = [scorer.score(reference, hypothesis)["rougeL"].fmeasure
              for hypothesis, reference in zip(hypotheses, references)]
    return 100.0 * sum(scores) / len(scores)


def split_sequence(output: str, first_marker: str) -> tuple[str, str] | None:
    """(first step, answer) of an output laid out "<first_marker> ...\\nAnswer: ...", or None if it is not.

    The first step runs to the first line that starts with "Answer:"; the answer is the rest of that line.
    """
    text = output.strip()
    if not text.startswith(first_marker):
        return None
    answer_line = _ANSWER_LINE.search(text, len(first_marker))
    if answer_line is None:
        return None
    first_step = text[len(first_marker):answer_line.start()].strip()
    answer = text[answer_line.end():].split("\n", 1)[0].strip()
    return first_step, answer


def follows_sequence(output: str, first_marker: str) -> bool:
    return split_sequence(output, first_marker) is not None


def sequence_rate(outputs: Sequence[str], first_marker: str) -> float:
    """Percentage of outputs that follow the sequence (first step's marker, then an "Answer:" line)."""
    if not outputs:
        raise TextMetricError("no outputs to score")
    return 100.0 * sum(follows_sequence(output, first_marker) for output in outputs) / len(outputs)


def exact_copy_rate(outputs: Sequence[str], sources: Sequence[str], first_marker: str = "Input:") -> float:
    """Percentage of outputs whose first step equals the source text exactly (both stripped); an output that
    does not follow the sequence counts as no copy."""
    _check_pairs(outputs, sources)
    copied = 0
    for output, source in zip(outputs, sources):
        steps = split_sequence(output, first_marker)
        copied += steps is not None and steps[0] == source.strip()
    return 100.0 * copied / len(outputs)
