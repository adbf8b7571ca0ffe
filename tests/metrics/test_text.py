"""Text-path scores (sit_vqa/metrics/text.py): chrF and ROUGE-L come from sacrebleu and rouge-score; the
sequence and copy checks are ours. Expected values are worked out by hand."""

import pytest

from sit_vqa.metrics.text import (
    TextMetricError,
    chrf,
    exact_copy_rate,
    has_sequence_layout,
    rouge_l,
    sequence_rate,
    split_sequence,
)


def test_chrf_bounds_and_pairing():
    assert chrf(["Die Katze saß auf der Matte."], ["Die Katze saß auf der Matte."]) == pytest.approx(100.0)
    assert chrf(["xyz"], ["abc"]) == 0.0  # no character n-gram in common
    assert 0 < chrf(["The cat sat."], ["The cat sat on the mat."]) < 100
    with pytest.raises(TextMetricError, match="2 hypotheses but 1 references"):
        chrf(["a", "b"], ["a"])


def test_rouge_l_by_hand():
    # LCS of "the red circle" and "the blue circle" is "the circle": P = R = 2/3, F = 2/3
    assert rouge_l(["the red circle"], ["the blue circle"]) == pytest.approx(100 * 2 / 3)
    # mean over pairs: 1 and 0
    assert rouge_l(["a cat", "dog"], ["a cat", "bird"]) == pytest.approx(50.0)


def test_split_sequence():
    assert split_sequence("Input: The cat sat.\nAnswer: A cat rested.", "Input:") == ("The cat sat.", "A cat rested.")
    assert split_sequence("  Translation: Hi\nthere\n  Answer: yes\nmore", "Translation:") == ("Hi\nthere", "yes")
    assert split_sequence("Answer: A cat rested.", "Input:") is None  # skipped the first step
    assert split_sequence("Translation: x\nAnswer: y", "Input:") is None  # another first step
    assert split_sequence("Input: The cat sat.", "Input:") is None  # never answered
    assert split_sequence("Input: x Answer: y", "Input:") is None  # the answer must start a line
    assert has_sequence_layout("Input: x\nAnswer: y", "Input:")
    # the marker in any case, as everywhere else (sit_vqa.data.prompts.answer_line)
    assert split_sequence("Input: x\nANSWER: y", "Input:") == ("x", "y")


def test_rates():
    outputs = ["Input: The cat sat.\nAnswer: rested", "Input: The cat sat\nAnswer: rested", "rested"]
    sources = ["The cat sat.", "The cat sat.", "The cat sat."]
    assert sequence_rate(outputs, "Input:") == pytest.approx(100 * 2 / 3)
    assert exact_copy_rate(outputs, sources) == pytest.approx(100 * 1 / 3)  # the second lost its period
