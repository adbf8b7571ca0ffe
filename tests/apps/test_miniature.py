"""The miniature experiment: its description reader, and (slow) the quick variant's proof that every arm
learns to look at the image."""

import json

import pytest

from sit_vqa.apps import miniature
from sit_vqa.samples import scenes as sample


def test_answer_from_description_matches_the_generators_truth_for_every_reference_caption():
    data = sample.build_split("val2014", 40, style="simple")
    captions = miniature.captions_by_image_from(data.captions)
    questions = {q["question_id"]: q["question"] for q in data.questions["questions"]}
    implied = 0
    for annotation in data.annotations["annotations"]:
        for caption in captions[annotation["image_id"]]:
            answer = miniature.answer_from_description(questions[annotation["question_id"]], caption)
            if answer is not None:
                implied += 1
                assert answer == annotation["multiple_choice_answer"], (questions[annotation["question_id"]], caption)
    assert implied > 300  # most question/caption pairs imply an answer


def test_answer_from_description_says_none_when_the_description_is_silent():
    assert miniature.answer_from_description("What color is the square?", None) is None
    assert miniature.answer_from_description("What color is the square?", "Two shapes on a gray background.") is None
    assert miniature.answer_from_description("How many shapes are there?", "Two shapes on a gray background.") == "2"
    assert miniature.answer_from_description("What color is the background?", "A red star, on black.") == "black"


def test_token_f1():
    assert miniature.token_f1("a red star.", "A red star") == 1.0
    assert miniature.token_f1("a blue square", "a red star") == pytest.approx(1 / 3)
    assert miniature.token_f1("", "a red star") == 0.0


@pytest.mark.slow
def test_quick_miniature_every_arm_learns_to_look(tmp_path):
    """Every arm must beat the majority answer by 10 points and the image-blind question prior clearly.
    Fails when the label mask hides the target, when images are shuffled against their questions, or when
    the parser drops the answer (tried by breaking each on purpose)."""
    results = miniature.run_experiment(tmp_path, seeds=[0], quick=True, workers=2)
    assert [run["arm"] for run in results["runs"]] == list(miniature.ARMS)
    assert not miniature.learning_failures(results), miniature.table_markdown(results)
    sit = next(run for run in results["runs"] if run["arm"] == "sit")
    assert sit["answer_marker_rate"] > 0.95
    assert sit["description"]["description_token_f1"] > 50
    assert json.loads((tmp_path / "results.json").read_text())["runs"] == results["runs"]
    assert "| sit |" in (tmp_path / "table.md").read_text()
