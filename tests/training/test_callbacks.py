"""VqaEvalCallback in a real transformers Trainer: VQA accuracy logged every N steps next to the loss."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import Trainer, TrainerCallback

from sit_vqa.training.callbacks import METRIC_PREFIX, VqaEvalCallback, metric_logs
from sit_vqa.modeling.collate import SampleTransform, TransformedDataset
from sit_vqa.config import load_config
from sit_vqa.data.prompts import SIT_TASK
from sit_vqa.errors import ConfigError
from sit_vqa.evaluation.options import EvalOptions
from sit_vqa.evaluation.runner import run_evaluation
from sit_vqa.evaluation.vqa import load_eval_records
from sit_vqa.modeling.loading import build_model
from sit_vqa.training.trainer import JsonlLogCallback

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _repo_cwd(monkeypatch):
    monkeypatch.chdir(REPO)


class TrainModeProbe(TrainerCallback):
    """Runs after the VQA callback at every step end: was the model handed back in train mode?"""

    def __init__(self):
        self.modes = {}

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.modes[state.global_step] = model.training


def test_vqa_accuracy_is_logged_every_n_steps_next_to_the_loss(tmp_path):
    config = load_config(REPO / "tests" / "configs" / "bundled_sample.yaml", [
        "--output_dir", str(tmp_path), "--report_to", "none", "--train_all", "false", "--save_strategy", "no",
        "--max_steps", "4", "--logging_steps", "1", "--per_device_train_batch_size", "2",
        "--eval_vqa_steps", "2", "--eval_subset_questions", "4", "--generation_max_new_tokens", "8",
    ])
    model, processor = build_model(config.model, quiet=True)
    train_records = load_eval_records(config.data, prompt="sit", limit=6, seed=1).dataset
    transform = SampleTransform.for_model(model, processor)
    trainer = Trainer(
        model=model, args=config.training, train_dataset=TransformedDataset(train_records, transform),
        data_collator=transform.collator(), processing_class=processor,
        callbacks=[JsonlLogCallback(tmp_path / "log.jsonl")],
    )
    callback = VqaEvalCallback.from_config(trainer, config)
    probe = TrainModeProbe()
    trainer.add_callback(callback)
    trainer.add_callback(probe)
    assert len(callback.records) == 4
    assert all(instruction.startswith(SIT_TASK) for instruction in callback.records["instruction"])  # mode sit

    trainer.train()

    history = trainer.state.log_history
    vqa_logs = {entry["step"]: entry for entry in history if "eval_vqa_accuracy" in entry}
    assert sorted(vqa_logs) == [2, 4]
    assert [entry["step"] for entry in history if "loss" in entry] == [1, 2, 3, 4]  # no loss log was swallowed
    per_type = {"eval_vqa_accuracy_" + kind.replace("/", "_") for kind in callback.records["answer_type"]}
    for entry in vqa_logs.values():
        assert 0.0 <= entry["eval_vqa_accuracy"] <= 100.0
        assert 0.0 <= entry["eval_vqa_answer_marker_rate"] <= 1.0
        assert per_type <= set(entry)
    assert probe.modes == {1: True, 2: True, 3: True, 4: True}
    # the numbers of step 4 are those of the final weights
    final = callback.evaluate(model)
    assert {key: vqa_logs[4][key] for key in final} == final
    logged = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [line["step"] for line in logged if "eval_vqa_accuracy" in line] == [2, 4]  # reached the other loggers


def test_metric_log_names_are_flat_tags():
    metrics = {"overall": 50.0, "perAnswerType": {"yes/no": 100.0, "number": 0.0, "other": 25.0}}
    assert metric_logs(metrics) == {
        "eval_vqa_accuracy": 50.0, "eval_vqa_accuracy_yes_no": 100.0,
        "eval_vqa_accuracy_number": 0.0, "eval_vqa_accuracy_other": 25.0,
    }


def test_bad_settings_are_config_errors():
    records = [{"question_id": 1}]
    with pytest.raises(ConfigError, match="every_n_steps must be a positive"):
        VqaEvalCallback(None, records, every_n_steps=0, processor=object())
    with pytest.raises(ConfigError, match="at least one evaluation record"):
        VqaEvalCallback(None, [], every_n_steps=5, processor=object())


def test_a_text_only_run_cannot_score_vqa(tmp_path):
    config = load_config(REPO / "tests" / "configs" / "text_lora.yaml", ["--output_dir", str(tmp_path), "--eval_vqa_steps", "5"])
    with pytest.raises(ConfigError, match="needs an image model"):
        VqaEvalCallback.from_config(None, config)


@pytest.mark.slow
def test_under_two_process_ddp_every_rank_generates_and_the_numbers_equal_one_process(tmp_path):
    """Two gloo processes train and score 12 questions in batches of 4 (rank 0 two batches, rank 1 one). A
    rank that skipped its share, or waited while another generated, would hit ddp_timeout (60 s) and fail."""
    run_dir = tmp_path / "ddp"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "train.py", "--config", "quickstart.yaml", "--output_dir", str(run_dir), "--max_steps", "2",
        "--save_steps", "100", "--logging_steps", "1", "--subset_questions", "16", "--per_device_train_batch_size", "2",
        "--prepared_cache_dir", str(tmp_path / "cache"), "--report_to", "none", "--ddp_backend", "gloo",
        "--ddp_timeout", "60", "--train_all", "false",
        "--eval_vqa_steps", "2", "--eval_subset_questions", "12", "--per_device_eval_batch_size", "4",
        "--generation_max_new_tokens", "24",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    log = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    logged = [entry for entry in log if "eval_vqa_accuracy" in entry]
    assert [entry["step"] for entry in logged] == [2]  # written once, by the main process

    # the final weights are those of step 2: one process evaluating them must give the logged numbers
    config = load_config(REPO / "configs" / "quickstart.yaml", ["--output_dir", str(tmp_path / "unused")])
    options = EvalOptions(checkpoint=str(run_dir / "final"), limit=12, batch_size=4, max_new_tokens=24,
                          device="cpu", progress=False, out_dir=str(tmp_path / "eval"))
    report = run_evaluation(config, options).report
    expected = metric_logs(report)
    expected[f"{METRIC_PREFIX}_answer_marker_rate"] = report["answer_marker_rate"]
    assert {key: logged[0][key] for key in expected} == expected
