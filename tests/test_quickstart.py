"""The first README command learns: python train.py --config quickstart.yaml, then evaluate.py on its val split."""

import json

import pytest

import evaluate
from sit_vqa.apps.miniature_stats import reference_scores


@pytest.mark.slow
def test_quickstart_clearly_looks_at_the_image(learned_quickstart, tmp_path):
    final, config, printed = learned_quickstart
    assert f"checkpoint: {final}" in printed and f"python evaluate.py --config quickstart.yaml --checkpoint {final}" in printed
    out = tmp_path / "eval"
    assert evaluate.main(["--config", "quickstart.yaml", "--checkpoint", str(final), "--out", str(out),
                          "--no-progress", "--sample_dir", config.data.sample_dir]) == 0
    report = json.loads((out / "report.json").read_text())
    references = reference_scores(config)
    prior = references["question prior"]
    # issue #17: a model that clearly looks -- 10 points over every image-blind reference (measured: +13 over
    # the best of them; a model near the tipping point between looking and guessing flips with the CPU).
    # Counts and colours/kinds are read from the image; yes/no is not asserted: it stays near the majority
    # answer's level in this budget (measured 61.4 vs 63.3, README).
    for blind in ("majority", "question prior", "question-type majority"):
        assert report["overall"] >= references[blind]["overall"] + 10, (report, references)
    for answer_type in ("number", "other"):
        assert report["perAnswerType"][answer_type] > prior["perAnswerType"][answer_type] + 10, (report, prior)
    assert report["answer_marker_rate"] > 0.95  # readable "Description: ... Answer: ..." outputs
    predictions = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert sum(p["description"] is not None for p in predictions) > 0.95 * len(predictions)
