"""The SIT-aware figures on hand-made outputs whose answers are known."""

import pytest

from sit_vqa.metrics.sit import caption_scores, mentions, sit_figures, tokens

REFERENCES = {1: ["A red square on a white background.", "a red square"],
              2: ["Two blue circles.", "two circles that are blue"],
              3: ["A green star."]}


def prediction(image_id, description, answer, accuracy, marker=True):
    return {"image_id": image_id, "description": description, "answer": answer, "accuracy": accuracy,
            "has_answer_marker": marker}


def test_tokens_and_mentions_use_whole_words():
    assert tokens("A red square, on WHITE.") == ["a", "red", "square", "on", "white"]
    assert mentions("a red square.", "red")
    assert mentions("two blue circles", "blue circles")
    assert not mentions("a reddish square", "red")  # a word inside another is no mention
    assert not mentions(None, "red") and not mentions("a red square", "")


def test_figures_split_accuracy_by_whether_the_description_carries_the_answer():
    predictions = [
        prediction(1, "a red square.", "red", 1.0),        # follows from its description, right
        prediction(2, "two blue circles.", "2", 0.3),      # "2" is not a word of the description
        prediction(3, "a green star.", "green", 0.0),      # follows, wrong
        prediction(3, None, "yes", 1.0, marker=False),     # no description at all
    ]
    figures = sit_figures(predictions, REFERENCES)
    assert figures["answer_marker_rate"] == 0.75 and figures["description_marker_rate"] == 0.75
    assert figures["description_words"] == 3.0
    assert figures["answer_in_description_rate"] == pytest.approx(2 / 3, abs=1e-4)
    assert figures["questions_answer_in_description"] == 2 and figures["questions_answer_not_in_description"] == 2
    assert figures["accuracy_answer_in_description"] == 50.0
    assert figures["accuracy_answer_not_in_description"] == 65.0


def test_a_description_equal_to_its_references_scores_higher_than_a_wrong_one():
    right = caption_scores({1: "a red square", 2: "two blue circles"}, REFERENCES)
    wrong = caption_scores({1: "a green star", 2: "one yellow circle"}, REFERENCES)
    assert right["description_cider_d"] > wrong["description_cider_d"]
    assert right["description_bleu4"] > wrong["description_bleu4"] >= 0
    assert caption_scores({1: "a red square"}, {}) == {"description_cider_d": None, "description_bleu4": None}


def test_without_references_or_descriptions_the_figures_say_none():
    baseline = [prediction(1, None, "red", 1.0, marker=False), prediction(2, None, "2", 0.0, marker=False)]
    figures = sit_figures(baseline, REFERENCES)
    assert figures["description_cider_d"] is None and figures["description_words"] is None
    assert figures["answer_in_description_rate"] is None
    assert figures["accuracy_answer_not_in_description"] == 50.0
    assert sit_figures([prediction(1, "a red square", "red", 1.0)])["description_cider_d"] is None
    gqa = sit_figures([{"description": "a red square", "answer": "red", "correct": True}], score="correct")
    assert gqa["accuracy_answer_in_description"] == 100.0
