"""The exact text SIT check (sit_vqa.metrics.text.follows_sequence): exact first step, then the marked answer,
as the text set of evaluate.py reports it; and (slow) text_sit.yaml learns it."""

import json

import pytest

import train
from sit_vqa.config import load_config
from sit_vqa.samples import text_sample
from sit_vqa.evaluation.options import EvalOptions, TaskOptions
from sit_vqa.evaluation.runner import run_evaluation
from sit_vqa.metrics.text import follows_sequence, sequence_scores

TARGET = "Input: cat dog\nAnswer: dog cat"
# text_sit.yaml's trained model carried out the sequence on 31.5% of the 200 held-out records (untrained: 0%)
TEXT_SEQUENCE_SHARE = 0.2


@pytest.mark.parametrize("generation, expected", [
    ("Input: cat dog\nAnswer: dog cat", (True, True, True)),
    ("Input: cat dog\nAnswer: cat dog", (True, False, False)),  # the step, a wrong answer
    ("Input: cat dogs\nAnswer: dog cat", (False, True, False)),  # the answer, a wrong repeat
    ("Input: cat dog\ndog cat", (True, False, False)),  # no "Answer:" marker
    ("Input: cat dog\nANSWER: dog cat", (True, True, True)),  # the marker in any case (prompts.answer_line)
    ("dog cat", (False, False, False)),
    ("", (False, False, False)),
])  # fmt: skip
def test_follows_sequence(generation, expected):
    checks = follows_sequence(TARGET, generation)
    assert (checks["first_step"], checks["answer"], checks["sequence"]) == expected


def test_sequence_scores_are_shares():
    scores = sequence_scores([TARGET] * 4, [TARGET, TARGET, "Input: cat dog\nAnswer: no", "x"])
    assert scores == {"first_step": 0.75, "answer": 0.5, "sequence": 0.5}
    with pytest.raises(ValueError):
        sequence_scores([TARGET], [])


def test_committed_text_sample_is_what_the_generator_makes(tmp_path):
    text_sample.write_text_sample(tmp_path)
    for path in sorted(tmp_path.iterdir()):
        assert path.read_bytes() == (text_sample.DEFAULT_DIR / path.name).read_bytes(), path.name


def test_text_sample_answers_follow_from_the_input():
    english, german = text_sample.build_split("val", 50)
    for record, foreign in zip(english, german):
        words = record["input"].split()
        assert record["output"] == text_sample.TASKS[record["instruction"]](words)
        assert foreign["input"].split() == [text_sample.WORDS[word] for word in words]


@pytest.mark.slow
def test_text_sit_config_learns_the_sequence(tmp_path):
    """The embedded text default: the untrained tiny LM never carries out the sequence on held-out records;
    trained by train.py it mostly does."""
    overrides = ["--output_dir", str(tmp_path / "run"), "--report_to", "none", "--disable_tqdm", "true"]
    config = load_config("text_sit.yaml", overrides, data_roles=("eval",))
    text = TaskOptions(task="text")
    untrained = run_evaluation(config, EvalOptions(max_new_tokens=48, out_dir=str(tmp_path / "untrained"),
                                                   progress=False), text).report
    final = train.main(["--config", "text_sit.yaml", *overrides])
    trained = run_evaluation(config, EvalOptions(checkpoint=str(final), max_new_tokens=96,
                                                 out_dir=str(tmp_path / "trained"), progress=False), text)
    predictions = (trained.out_dir / "predictions.jsonl").read_text().splitlines()
    assert untrained["exact"]["sequence"] == 0.0
    assert trained.report["exact"]["sequence"] >= TEXT_SEQUENCE_SHARE, json.dumps(predictions[:3], indent=1)
