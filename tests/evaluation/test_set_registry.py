"""An evaluation set is one class plus one entry in `SETS`: a toy set registered here runs through evaluate.py
(`--task toy`) with the runner's sharding-ready outputs, its own options checked against what it reads."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

import evaluate
from sit_vqa.data.prompts import resolve_prompt
from sit_vqa.evaluation.protocol import EvaluationSet, Scored
from sit_vqa.evaluation.registry import SETS

REPO = Path(__file__).resolve().parents[2]
CONFIG = str(REPO / "tests" / "configs" / "bundled_sample.yaml")
IMAGES = sorted((REPO / "data" / "sample" / "val2014").glob("*.jpg"))[:3]


class ToySet(EvaluationSet):
    """Three bundled images, asked what they show; an answer scores when it is not empty."""

    task, takes_images, metric, score_name = "toy", True, "toy-non-empty/1", "toy: non-empty answers (%)"
    reads = frozenset({"translate_first"})  # it takes the flag (and ignores it): any other set-specific one is refused

    def __init__(self, task, options, config):
        self.images = IMAGES[: options.limit]

    def prompt(self, requested: str, trained) -> str:
        return resolve_prompt(requested, trained.mode)

    def records(self, prompt: str, trained, config) -> list[dict]:
        instruction = getattr(trained.templates, f"{prompt}_instruction").format(question="What is this?")
        return [{"key": path.name, "image_path": str(path), "instruction": instruction} for path in self.images]

    def score(self, records: Sequence[Mapping], generations: Sequence[str]) -> Scored:
        predictions = [{"key": r["key"], "generation": text, "answer": text.strip()} for r, text in zip(records, generations)]
        rate = 100 * sum(bool(p["answer"]) for p in predictions) / len(predictions)
        results = {p["key"]: p["answer"] for p in predictions}
        return Scored(predictions, {"toy_results.json": results}, {"overall": rate, "columns": {"non_empty": rate}},
                      [r["key"] for r in records])


@pytest.fixture
def toy_registered(monkeypatch):
    monkeypatch.chdir(REPO)
    monkeypatch.setitem(SETS, "toy", ToySet)  # the one entry a new set adds


def run(out: Path, *argv: str) -> int:
    return evaluate.main(["--config", CONFIG, "--zero-shot", "--no-progress", "--task", "toy", "--out", str(out),
                          "--max-new-tokens", "3", *argv])


def test_a_registered_set_runs_through_evaluate_py(toy_registered, tmp_path, capsys):
    out = tmp_path / "toy"
    assert run(out, "--limit", "2") == 0
    assert {path.name for path in out.iterdir()} == {"toy_results.json", "predictions.jsonl", "report.json", "report.md"}
    report = json.loads((out / "report.json").read_text())
    predictions = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [p["key"] for p in predictions] == [path.name for path in IMAGES[:2]]
    assert (report["task"], report["metric"], report["num_questions"]) == ("toy", "toy-non-empty/1", 2)
    assert report["overall"] == 100 * sum(bool(p["answer"]) for p in predictions) / 2
    assert json.loads((out / "toy_results.json").read_text()) == {p["key"]: p["answer"] for p in predictions}
    assert "toy: non-empty answers (%)" in capsys.readouterr().out


def test_a_set_is_refused_the_options_it_does_not_read(toy_registered, tmp_path, capsys):
    assert run(tmp_path / "a", "--languages", "de") == 2
    assert "--languages applies to --task xgqa and xquad, not toy" in capsys.readouterr().err
    assert run(tmp_path / "b", "--legacy-metric") == 2
    assert "it applies to --task vqa and okvqa" in capsys.readouterr().err
    # the sets that read an option are named from the registry: the toy set is one of those taking --translate-first
    assert evaluate.main(["--config", CONFIG, "--zero-shot", "--task", "gqa", "--translate-first",
                          "--out", str(tmp_path / "c")]) == 2
    assert "--translate-first applies to --task xgqa and xquad and toy, not gqa" in capsys.readouterr().err


def test_an_unknown_task_names_the_registered_ones(toy_registered, tmp_path, capsys):
    assert evaluate.main(["--config", CONFIG, "--zero-shot", "--task", "tyo", "--out", str(tmp_path / "x")]) == 2
    assert "unknown task 'tyo'; expected one of auto, vqa, okvqa, gqa, xgqa, xquad, text, toy" in capsys.readouterr().err
