"""sit_vqa.evaluation.vqa: eval records, batched generation, parsing + scoring, reports and the compare table.

Scoring and reports are checked on hand-made generations with hand-worked numbers; generation on the
tiny models (decoder-only and T5) and the bundled sample; the full command in test_evaluate_cli.py.
"""

import json
from pathlib import Path

import pytest
import torch

from sit_vqa.modeling import checkpoint as ckpt
from sit_vqa.modeling.checkpoint import resolve_checkpoint
from sit_vqa.config import DataArguments, load_config
from sit_vqa.data.join import JoinOptions
from sit_vqa.data.prepared import prepare_dataset
from sit_vqa.data.prompts import BASELINE_TASK, SIT_TASK, Templates, resolve_prompt
from sit_vqa.errors import CheckpointError, EvaluationError
from sit_vqa.evaluation.options import EvalOptions
from sit_vqa.evaluation.vqa import (
    METRIC_VERSIONS,
    load_eval_records,
    score_generations,
)
from sit_vqa.modeling.generation import GenerationSettings, generate_texts
from sit_vqa.metrics.vqa import question_accuracy
from sit_vqa.modeling.loading import build_model, configure_trainable
from sit_vqa.modeling.precision import keep_trained_fp32
from sit_vqa.evaluation.reports import (
    build_report,
    compare_markdown,
    compare_runs,
    question_set_hash,
    report_markdown,
    write_comparison,
    write_report_files,
)
from sit_vqa.modeling.tiny import build_tiny_instructblip
from tests.data.conftest import build_official_data, write_official_files

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "data" / "sample"


def ids(dataset) -> list[int]:
    return list(dataset["question_id"])


def sample_data(**overrides) -> DataArguments:
    """The bundled sample's val split as the config's eval_* keys."""
    values = dict(
        eval_questions=str(SAMPLE / "v2_OpenEnded_mscoco_val2014_questions.json"),
        eval_annotations=str(SAMPLE / "v2_mscoco_val2014_annotations.json"),
        eval_captions=str(SAMPLE / "captions_val2014.json"),
        eval_image_dir=str(SAMPLE / "val2014"),
    )
    return DataArguments(**{**values, **overrides})


def write_tiny_checkpoint(directory: Path, *overrides: str, mode: str = "sit") -> Path:
    """A checkpoint of the quickstart config's tiny model (`--key value` overrides), as train.py writes one:
    trainable weights (query tokens moved off their initial values) + processor + manifest."""
    config = load_config(REPO / "tests" / "configs" / "bundled_sample.yaml", ["--mode", mode, "--train_all", "false", *overrides])
    model, processor = build_model(config.model, quiet=True)
    with torch.no_grad():
        model.query_tokens.add_(0.5)
    manifest = ckpt.CheckpointManifest(model_type="instructblip", config=config.to_dict())
    ckpt.write_checkpoint(directory, model, processor, manifest, global_step=2)
    return directory


# ------------------------------------------------------------------------------------------------ records


def test_eval_records_one_per_question_with_the_prompt_of_the_mode():
    sit = load_eval_records(sample_data(), prompt="sit").dataset
    baseline = load_eval_records(sample_data(), prompt="baseline").dataset
    questions = json.loads(Path(sample_data().eval_questions).read_text())["questions"]
    assert ids(sit) == ids(baseline) == [q["question_id"] for q in questions]
    templates = Templates()
    for record in sit.select(range(5)):
        assert record["instruction"] == templates.render("sit", question=record["question"])[0]
        assert record["instruction"].startswith(SIT_TASK)
        assert len(record["answers"]) == 10 and Path(record["image_path"]).is_file()
    assert baseline[0]["instruction"] == templates.render("baseline", question=baseline[0]["question"])[0]
    assert baseline[0]["instruction"].startswith(BASELINE_TASK)


def test_eval_records_never_hold_the_answer_even_with_a_template_that_names_it():
    templates = Templates(baseline_instruction="Q: {question} (A: {answer})")
    record = load_eval_records(sample_data(), prompt="baseline", templates=templates, limit=1).dataset[0]
    assert record["instruction"] == f"Q: {record['question']} (A: )"


def test_limit_is_a_seeded_sample_in_file_order():
    all_ids = ids(load_eval_records(sample_data(), prompt="sit").dataset)
    first = ids(load_eval_records(sample_data(), prompt="sit", limit=10, seed=42).dataset)
    again = ids(load_eval_records(sample_data(), prompt="baseline", limit=10, seed=42).dataset)
    other = ids(load_eval_records(sample_data(), prompt="sit", limit=10, seed=7).dataset)
    assert first == again and len(first) == 10 and len(set(first)) == 10
    assert first != other
    assert first == [qid for qid in all_ids if qid in set(first)]  # file order kept
    assert first != all_ids[:10]  # a sample, not the head of the file
    everything = ids(load_eval_records(sample_data(), prompt="sit", limit=10_000).dataset)
    assert everything == all_ids
    with pytest.raises(EvaluationError, match="limit must be a positive"):
        load_eval_records(sample_data(), prompt="sit", limit=0)


def test_questions_dropped_by_the_join_are_counted(tmp_path):
    data = build_official_data()
    data["questions"]["questions"].append({"image_id": 77, "question": "Where is it?", "question_id": 77000})
    data["annotations"]["annotations"].append({
        "question_type": "where is", "multiple_choice_answer": "park", "image_id": 77, "answer_type": "other",
        "question_id": 77000, "answers": [{"answer": "park", "answer_confidence": "yes", "answer_id": i}
                                          for i in range(1, 11)],
    })
    files = write_official_files(tmp_path, data)
    args = DataArguments(eval_questions=str(files.questions), eval_annotations=str(files.annotations),
                         eval_captions=str(files.captions), eval_image_dir=str(files.image_dir))
    records = load_eval_records(args, prompt="baseline")
    assert 77000 not in ids(records.dataset)
    assert records.join_report["dropped"]["no_caption"] == 1
    assert len(records.dataset) == len(data["questions"]["questions"]) - 1


def test_prepared_dataset_gives_one_record_per_question_without_describe_records(tmp_path):
    for mode in ("mixed", "multitask"):
        options = JoinOptions(mode=mode, caption_policy="all")
        prepared = tmp_path / mode
        dataset, _ = prepare_dataset(
            sample_data().eval_questions, sample_data().eval_annotations, sample_data().eval_captions,
            sample_data().eval_image_dir, prepared, options,
        )
        assert len(dataset) > len(set(ids(dataset)))  # duplicates / describe records to remove
        records = load_eval_records(DataArguments(eval_dataset_dir=str(prepared)), prompt="sit").dataset
        raw = load_eval_records(sample_data(), prompt="sit").dataset
        assert ids(records) == ids(raw)
        assert list(records["instruction"]) == list(raw["instruction"])


def test_a_config_without_eval_data_is_a_clear_error():
    with pytest.raises(Exception, match="no val data in the config: set eval_questions"):
        load_eval_records(DataArguments(), prompt="sit")


# ------------------------------------------------------------------------------------------------- prompt


@pytest.mark.parametrize(("mode", "expected"), [("sit", "sit"), ("mixed", "sit"), ("baseline", "baseline"),
                                                ("multitask", "baseline")])
def test_auto_prompt_follows_the_training_mode(mode, expected):
    assert resolve_prompt("auto", mode) == expected
    assert resolve_prompt("baseline", mode) == "baseline"
    assert resolve_prompt("sit", mode) == "sit"


def test_zero_shot_is_asked_with_the_baseline_prompt():
    assert resolve_prompt("auto", None) == "baseline"
    with pytest.raises(EvaluationError, match="unknown prompt"):
        resolve_prompt("chat", None)


def test_checkpoint_or_run_directory(tmp_path):
    run = tmp_path / "run"
    for name in ("checkpoint-2", "checkpoint-10", "checkpoint-12"):
        (run / name).mkdir(parents=True)
    for name in ("checkpoint-2", "checkpoint-10"):
        (run / name / ckpt.MANIFEST_NAME).write_text("{}")  # checkpoint-12 was cut off: no manifest
    assert resolve_checkpoint(run) == run / "checkpoint-10"
    assert resolve_checkpoint(run / "checkpoint-2") == run / "checkpoint-2"
    (run / "final").mkdir()
    (run / "final" / ckpt.MANIFEST_NAME).write_text("{}")
    assert resolve_checkpoint(run) == run / "final"
    with pytest.raises(CheckpointError, match="not a sit-vqa checkpoint, nor a run directory"):
        resolve_checkpoint(tmp_path / "elsewhere")


def test_options_are_validated():
    with pytest.raises(EvaluationError, match="unknown split"):
        EvalOptions(split="test")
    with pytest.raises(EvaluationError, match="num_beams must be a positive integer"):
        EvalOptions(num_beams=0)
    with pytest.raises(EvaluationError, match="max_new_tokens must be a positive integer"):
        GenerationSettings(max_new_tokens=0)


# --------------------------------------------------------------------------------------------- generation


def test_decoder_only_batches_are_left_padded(tiny_decoder):
    """A right-padded decoder-only batch would generate after its pad tokens and differ from one-by-one."""
    model, processor = tiny_decoder
    records = load_eval_records(sample_data(), prompt="sit", limit=6).dataset
    lengths = {len(record["instruction"].split()) for record in records}
    assert len(lengths) > 1, "the prompts must differ in length for padding to matter"
    settings = GenerationSettings(max_new_tokens=12)
    batched = generate_texts(model, processor, records, settings, progress=False)
    one_by_one = [generate_texts(model, processor, [record], settings, progress=False)[0] for record in records]
    assert batched == one_by_one
    assert any(batched)


def test_t5_generation_is_decoded_from_decoder_ids(tiny_t5):
    model, processor = tiny_t5
    records = load_eval_records(sample_data(), prompt="baseline", limit=4).dataset
    settings = GenerationSettings(batch_size=4, max_new_tokens=6)
    texts = generate_texts(model, processor, records, settings, progress=False)
    assert len(texts) == 4
    assert all(len(text.split()) <= 6 for text in texts)  # new tokens only: no echo of the prompt
    assert texts == [generate_texts(model, processor, [r], settings, progress=False)[0] for r in records]


def test_generation_leaves_the_model_in_train_mode_when_it_was():
    config = load_config(REPO / "tests" / "configs" / "bundled_sample.yaml")
    model, processor = build_model(config.model, quiet=True)
    model.train()
    records = load_eval_records(sample_data(), prompt="sit", limit=2).dataset
    generate_texts(model, processor, records, GenerationSettings(max_new_tokens=3), progress=False)
    assert model.training and model.qformer.training


def test_bf16_frozen_weights_generate_under_autocast():
    """The GPU default: frozen weights bf16, trained ones fp32 (here on CPU, same code path)."""
    model, processor = build_tiny_instructblip("decoder")
    configure_trainable(model, quiet=True)
    keep_trained_fp32(model, torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16, torch.float32}
    records = load_eval_records(sample_data(), prompt="sit", limit=3).dataset
    texts = generate_texts(model, processor, records, GenerationSettings(max_new_tokens=4), progress=False)
    assert len(texts) == 3 and all(isinstance(text, str) for text in texts)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16, torch.float32}


# -------------------------------------------------------------------------------------- scoring and report


def hand_made_records():
    return [
        {"question_id": 1, "question": "What color?", "answers": ["red"] * 10,
         "answer_type": "other", "question_type": "what color"},
        {"question_id": 2, "question": "How many?", "answers": ["2"] * 3 + ["3"] * 7,
         "answer_type": "number", "question_type": "how many"},
        {"question_id": 3, "question": "What shape?", "answers": ["square"] * 10,
         "answer_type": "other", "question_type": "what shape"},
        {"question_id": 4, "question": "Is it?", "answers": ["yes"] * 10,
         "answer_type": "yes/no", "question_type": "is it"},
    ]


HAND_MADE_GENERATIONS = [
    "Description: a red circle on white.\nAnswer: red",  # both markers
    "answer : 2",  # the answer marker only (tiny tokenizer spacing)
    "Description: a blue square",  # the description only: no answer line -> ""
    "yes",  # a baseline output: no marker, the whole text is the answer
]


def test_scoring_hand_made_generations():
    scored = score_generations(hand_made_records(), HAND_MADE_GENERATIONS)
    assert [p["answer"] for p in scored.predictions] == ["red", "2", "", "yes"]
    assert [p["description"] for p in scored.predictions] == ["a red circle on white.", None, "a blue square", None]
    # 3 of 10 annotators said "2": the 3 each see 2 matches (2/3), the 7 others see 3 (1): (3*2/3 + 7)/10
    assert [p["accuracy"] for p in scored.predictions] == pytest.approx([1.0, 0.9, 0.0, 1.0])
    assert scored.results == [{"question_id": q, "answer": a} for q, a in zip([1, 2, 3, 4], ["red", "2", "", "yes"])]
    assert scored.metrics["overall"] == 72.5  # (1 + 0.9 + 0 + 1) / 4
    assert scored.metrics["perAnswerType"] == {"other": 50.0, "number": 90.0, "yes/no": 100.0}
    assert scored.metrics["perQuestionType"]["how many"] == 90.0
    for prediction in scored.predictions:
        assert prediction["accuracy"] == question_accuracy(prediction["answer"], prediction["gt_answers"])


def test_report_counts_the_markers():
    scored = score_generations(hand_made_records(), HAND_MADE_GENERATIONS)
    join_report = {"dropped": {"no_annotation": 0, "no_caption": 3}, "questions_read": 9, "joined": 6}
    report = build_report(scored, {"name": "hand", "split": "val", "prompt": "sit"}, join_report)
    assert report["answer_marker_rate"] == 0.5
    assert report["description_marker_rate"] == 0.5
    assert report["outputs_without_answer_marker"] == 2
    assert report["num_questions"] == 4
    assert report["dropped"] == {"no_annotation": 0, "no_caption": 3}
    assert report["questions_per_answer_type"] == {"other": 2, "number": 1, "yes/no": 1}
    assert report["question_set_sha256"] == question_set_hash([4, 3, 2, 1])
    assert report["metric"] == report["settings"]["metric"] == METRIC_VERSIONS[False]
    markdown = report_markdown(report)
    assert "| **overall** | 4 | **72.50** |" in markdown
    assert "| number | 1 | 90.00 |" in markdown
    assert "50.0% (2 without one" in markdown
    assert "no_caption 3" in markdown


def test_legacy_metric_is_passed_through():
    records = [{"question_id": 1, "question": "?", "answers": ["Yes"] * 9 + ["no"], "answer_type": "yes/no",
                "question_type": "is"}]
    # 2021: the ground truths disagree, so they are normalised too ("yes"); legacy normalises only the
    # prediction and leaves the ground truths' case alone ("Yes" != "yes").
    assert score_generations(records, ["yes"]).metrics["overall"] == 100.0
    legacy = score_generations(records, ["yes"], legacy=True)
    assert legacy.metrics["overall"] == 0.0
    assert legacy.predictions[0]["accuracy"] == 0.0
    assert legacy.metric_version == METRIC_VERSIONS[True] != METRIC_VERSIONS[False]


def test_scoring_refuses_a_count_mismatch():
    with pytest.raises(EvaluationError, match="3 generations for 4 questions"):
        score_generations(hand_made_records(), HAND_MADE_GENERATIONS[:3])


def test_report_files_official_results_and_predictions(tmp_path):
    scored = score_generations(hand_made_records(), HAND_MADE_GENERATIONS)
    report = build_report(scored, {"name": "hand"})
    paths = write_report_files(tmp_path, {"results.json": scored.results}, scored.predictions, report,
                               report_markdown(report))
    assert json.loads(paths["results.json"].read_text()) == scored.results
    lines = [json.loads(line) for line in paths["predictions.jsonl"].read_text().splitlines()]
    assert [line["generation"] for line in lines] == HAND_MADE_GENERATIONS
    assert json.loads(paths["report.json"].read_text())["overall"] == 72.5
    assert paths["report.md"].read_text().startswith("# VQA accuracy: hand")


# ------------------------------------------------------------------------------------------------ compare


def hand_made_report(overall, per_type, *, name, question_ids=(1, 2, 3), legacy=False):
    return {
        "overall": overall, "perAnswerType": per_type, "perQuestionType": {}, "num_questions": len(question_ids),
        "question_set_sha256": question_set_hash(question_ids), "metric": METRIC_VERSIONS[legacy],
        "answer_marker_rate": 1.0, "settings": {"name": name},
    }


def write_report(directory: Path, report: dict) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "report.json").write_text(json.dumps(report))
    return directory


def test_compare_numbers_and_deltas(tmp_path):
    zero = write_report(tmp_path / "zs", hand_made_report(
        40.0, {"yes/no": 70.0, "number": 20.1, "other": 30.0}, name="zero-shot"))
    sit = write_report(tmp_path / "sit", hand_made_report(
        52.35, {"other": 41.1, "yes/no": 80.5, "number": 19.0}, name="sit"))
    comparison = compare_runs([zero, sit])
    assert comparison["reference"] == "zero-shot"
    assert comparison["columns"] == ["yes/no", "number", "other"]
    reference, row = comparison["rows"]
    assert reference["delta"] == {"overall": 0.0, "yes/no": 0.0, "number": 0.0, "other": 0.0}
    assert row["name"] == "sit" and row["overall"] == 52.35
    assert row["delta"] == {"overall": 12.35, "yes/no": 10.5, "number": -1.1, "other": 11.1}
    markdown = compare_markdown(comparison)
    assert "| zero-shot | 40.00 | 70.00 | 20.10 | 30.00 |" in markdown
    assert "| sit | 52.35 (+12.35) | 80.50 (+10.50) | 19.00 (-1.10) | 41.10 (+11.10) |" in markdown
    paths = write_comparison(comparison, tmp_path / "out")
    assert paths["compare.md"].read_text() == markdown
    assert json.loads(paths["compare.json"].read_text())["rows"][1]["delta"]["number"] == -1.1


def test_compare_row_names_and_missing_answer_types(tmp_path):
    first = write_report(tmp_path / "a", hand_made_report(10.0, {"yes/no": 10.0}, name=""))
    second = write_report(tmp_path / "b", hand_made_report(20.0, {"yes/no": 15.0, "other": 5.0}, name="b-run"))
    comparison = compare_runs([first, second])
    assert [row["name"] for row in comparison["rows"]] == ["a", "b-run"]  # the directory name without a name
    assert comparison["rows"][1]["delta"]["other"] is None
    assert "| b-run | 20.00 (+10.00) | 15.00 (+5.00) | 5.00 |" in compare_markdown(comparison)
    named = compare_runs([first, second / "report.json"], names=["base", "tuned"])
    assert [row["name"] for row in named["rows"]] == ["base", "tuned"]
    with pytest.raises(EvaluationError, match="2 names for 1 runs"):
        compare_runs([first], names=["x", "y"])
    same = write_report(tmp_path / "same-ckpt-baseline-prompt", hand_made_report(21.0, {"yes/no": 15.0}, name="b-run"))
    twins = compare_runs([second, same])  # one checkpoint asked two ways: the folders name the rows
    assert [row["name"] for row in twins["rows"]] == ["b", "same-ckpt-baseline-prompt"]


def test_compare_refuses_different_question_sets_and_metrics(tmp_path):
    base = write_report(tmp_path / "base", hand_made_report(10.0, {}, name="base"))
    other_questions = write_report(tmp_path / "q", hand_made_report(10.0, {}, name="q", question_ids=(1, 2, 4)))
    legacy = write_report(tmp_path / "legacy", hand_made_report(10.0, {}, name="legacy", legacy=True))
    with pytest.raises(EvaluationError, match="scored on different questions"):
        compare_runs([base, other_questions])
    with pytest.raises(EvaluationError, match="same metric"):
        compare_runs([base, legacy])
    with pytest.raises(EvaluationError, match="nothing not found: pass the directory an evaluation wrote"):
        compare_runs([base, tmp_path / "nothing"])
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "report.json").write_text('{"overall": 1}')
    with pytest.raises(EvaluationError, match="not an evaluation report"):
        compare_runs([tmp_path / "broken"])
