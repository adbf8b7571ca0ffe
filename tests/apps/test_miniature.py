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


def test_in_the_named_world_every_caption_carries_every_answer():
    data = sample.build_split("val2014", 40, style="named")
    captions = miniature.captions_by_image_from(data.captions)
    questions = {q["question_id"]: q["question"] for q in data.questions["questions"]}
    for annotation in data.annotations["annotations"]:
        for caption in captions[annotation["image_id"]]:
            question = questions[annotation["question_id"]]
            assert miniature.answer_from_description(question, caption) == annotation["multiple_choice_answer"], (
                question, caption)


def test_answer_from_description_says_none_when_the_description_is_silent():
    assert miniature.answer_from_description("What color is the square?", None) is None
    assert miniature.answer_from_description("What color is the square?", "Two shapes on a gray background.") is None
    assert miniature.answer_from_description("How many shapes are there?", "Two shapes on a gray background.") == "2"
    assert miniature.answer_from_description("What color is the background?", "A red star, on black.") == "black"


def test_token_f1():
    assert miniature.token_f1("a red star.", "A red star") == 1.0
    assert miniature.token_f1("a blue square", "a red star") == pytest.approx(1 / 3)
    assert miniature.token_f1("", "a red star") == 0.0


def test_paired_bootstrap_interval_covers_the_mean_and_shrinks_to_a_constant():
    constant = miniature.paired_bootstrap([[5.0] * 50, [5.0] * 50])
    assert constant == {"mean": 5.0, "low": 5.0, "high": 5.0}
    assert miniature.verdict(constant) == "SIT better"
    noisy = miniature.paired_bootstrap([[100.0, -100.0] * 25, [-100.0, 100.0] * 25, [0.0] * 50])
    assert noisy["low"] < noisy["mean"] == 0.0 < noisy["high"] and miniature.verdict(noisy) == "not separated"
    # seeds that disagree widen the interval even with many questions: the seed spread counts
    by_seed = miniature.paired_bootstrap([[8.0] * 400, [-6.0] * 400, [1.0] * 400])
    assert by_seed["low"] < 0 < by_seed["high"]
    assert miniature.verdict({"mean": -3.0, "low": -5.0, "high": -1.0}) == "SIT worse"


def test_readable_split_reads_the_answer_from_the_models_own_description():
    def prediction(question, accuracy, gt):
        return {"question": question, "accuracy": accuracy, "gt_answers": [gt] * 10}

    predictions = [prediction("What color is the circle?", 1.0, "red"),
                   prediction("Is there a blue square?", 0.0, "yes"),
                   prediction("How many shapes are there?", 0.3, "2")]
    descriptions = ["A red circle and a blue square on a white background.",
                    "A red circle and a blue square on a white background.",
                    "A simple drawing."]  # says no count
    split = miniature.readable_split(predictions, descriptions)
    assert split["readable_share"] == pytest.approx(200 / 3, abs=0.01)
    assert split["readable_right_share"] == split["readable_share"]
    assert split["accuracy_readable"] == 50.0 and split["accuracy_rest"] == 30.0


@pytest.mark.slow
def test_quick_miniature_trains_every_arm_and_reports_the_paired_table(tmp_path):
    """The quick variant end to end: every arm trains and answers far above the majority answer, SIT writes
    "Description: ... Answer: ..." with descriptions close to the reference captions, and the table carries the
    paired differences and the own-description split. What it does NOT assert, because the figures do not
    support it at this budget (docs/MINIATURE.md: seeds 0 and 1 at 800 steps): that every arm beats the
    image-blind question prior, or that SIT beats the baseline -- the runs are still at the tipping point
    between looking and guessing, and which side a run lands on depends on the seed."""
    results = miniature.run_experiment(tmp_path, quick=True, workers=2)
    table = miniature.table_markdown(results)
    (world,) = results["worlds"]
    assert world["world"] == "named"
    assert sorted(run["arm"] for run in world["runs"]) == sorted(miniature.ARMS)
    majority = world["references"]["majority"]["overall"]
    for run in world["runs"]:
        assert run["overall"] >= majority + 20, table  # measured: +26 or more in every run
    sit = next(run for run in world["runs"] if run["arm"] == "sit")
    assert sit["answer_marker_rate"] > 0.95
    assert sit["description"]["description_token_f1"] > 50, table  # measured 71
    assert sit["own_description"]["readable_share"] > 50, table  # its descriptions state facts (measured 87)
    baseline = next(run for run in world["runs"] if run["arm"] == "baseline")
    assert baseline["own_description"]["readable_share"] < 5, table  # never trained to describe
    assert set(world["differences"]) == {"baseline", "multitask"}
    written = json.loads((tmp_path / "results.json").read_text())
    assert written["worlds"][0]["runs"][0]["name"] == world["runs"][0]["name"]
    assert "| SIT - baseline |" in (tmp_path / "table.md").read_text()
