"""Scores for the text-only SIT path: chrF and ROUGE-L from their reference libraries, plus two format checks.

- `chrf(hypotheses, references)`: corpus chrF (sacrebleu's `corpus_chrf`, default chrF: character 6-grams,
  beta 2), 0-100. Works for any language.
- `rouge_l(hypotheses, references)`: mean ROUGE-L F-measure (Google's rouge-score, no stemming), 0-100. Its
  tokenizer keeps only ASCII letters and digits, so use it for English text (the answers and the English
  translations the translate mode asks for), not for bn/ko/zh/ru.
- `has_sequence_layout(output, first_marker)`: the output is laid out as the steps in order: it opens with the
  first step's marker ("Input:" for repeat, "Translation:" for translate) and later has a line that starts
  with "Answer:" (any case, the rule of `sit_vqa.data.prompts.answer_line`), the layout of the SIT targets
  (`sit_vqa.data.text_sit`). `sequence_rate` is its percentage over outputs.
- `follows_sequence(target, generation)`: the exact check that the sequence was carried out: the output's first
  line is the target's first step character for character, and its marked answer is the target's answer
  (both read by the shared `parse_sit_output`). `sequence_scores` gives the shares over outputs.
- `exact_copy_rate(outputs, sources, first_marker)`: percentage of outputs whose first step is exactly the
  source text (stripped): for the repeat mode, how often the input was copied verbatim.
"""

from __future__ import annotations

from collections.abc import Sequence

import sacrebleu
from rouge_score import rouge_scorer, tokenizers

from sit_vqa.data.prompts import answer_line, parse_sit_output  # no torch there either
from sit_vqa.errors import SitVqaError


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
    # the tokenizer rouge-score defaults to, passed in: without one it logs "Using default tokenizer." (absl)
    # on every call, noise a user cannot act on
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False, tokenizer=tokenizers.DefaultTokenizer(False))
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
    marker = answer_line(text, len(first_marker))
    if marker is None:
        return None
    first_step = text[len(first_marker):marker.start()].strip()
    answer = text[marker.end():].split("\n", 1)[0].strip()
    return first_step, answer


def has_sequence_layout(output: str, first_marker: str) -> bool:
    return split_sequence(output, first_marker) is not None


def sequence_rate(outputs: Sequence[str], first_marker: str) -> float:
    """Percentage of outputs that follow the sequence (first step's marker, then an "Answer:" line)."""
    if not outputs:
        raise TextMetricError("no outputs to score")
    return 100.0 * sum(has_sequence_layout(output, first_marker) for output in outputs) / len(outputs)


def follows_sequence(target: str, generation: str) -> dict[str, bool]:
    """Per output: first_step (its first line == the target's first line), answer (marked, and == the target's
    answer) and sequence (both)."""
    first_step = target.strip().split("\n", 1)[0].strip()
    expected = parse_sit_output(target)
    produced = parse_sit_output(generation)
    first_ok = generation.strip().split("\n", 1)[0].strip() == first_step
    answer_ok = produced.has_answer_marker and produced.answer == expected.answer
    return {"first_step": first_ok, "answer": answer_ok, "sequence": first_ok and answer_ok}


def sequence_scores(targets: Sequence[str], generations: Sequence[str]) -> dict[str, float]:
    """Shares (0-1) of outputs with the first step right, the answer right, and both (the sequence)."""
    if len(targets) != len(generations) or not targets:
        raise TextMetricError(f"need as many generations as targets (and at least one): {len(generations)} vs "
                              f"{len(targets)}")
    checks = [follows_sequence(t, g) for t, g in zip(targets, generations, strict=True)]
    return {key: round(sum(c[key] for c in checks) / len(checks), 4) for key in ("first_step", "answer", "sequence")}


def exact_copy_rate(outputs: Sequence[str], sources: Sequence[str], first_marker: str = "Input:") -> float:
    """Percentage of outputs whose first step equals the source text exactly (both stripped); an output that
    does not follow the sequence counts as no copy."""
    _check_pairs(outputs, sources)
    copied = 0
    for output, source in zip(outputs, sources):
        steps = split_sequence(output, first_marker)
        copied += steps is not None and steps[0] == source.strip()
    return 100.0 * copied / len(outputs)
