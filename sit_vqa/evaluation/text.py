"""The held-out text evaluation: the config's Alpaca records never trained on (`eval_text_data`), asked as the
model was trained (text_mode plain / repeat / translate), an `EvaluationSet` (`sit_vqa.evaluation.protocol`)
that `sit_vqa.evaluation.runner` runs (evaluate.py --task text, the default for a causal_lm config).

    python evaluate.py --config text_sit.yaml --checkpoint runs/text_sit          # -> runs/eval/text_sit-text/
    python evaluate.py --config text_sit.yaml --zero-shot                          # the untrained model

Reported: how often the output has the sequence's layout (`sequence_rate`: the first step's marker, then a
line-start "Answer:"), the first step's fidelity (repeat: exact copy rate; translate: chrF against the English
input), the final answer's ROUGE-L (`overall`) and chrF against the reference output, and the exact checks of
`sit_vqa.metrics.text.follows_sequence` over every record (`exact`: the shares whose first line is the target's
first step character for character, whose marked answer is the target's, and both: the sequence carried out).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from sit_vqa.data.prompts import answer_line
from sit_vqa.data.text_sit import INPUT_MARKER, TRANSLATION_MARKER, build_text_sit, load_alpaca
from sit_vqa.errors import ConfigError
from sit_vqa.evaluation.options import EvalOptions, TaskOptions
from sit_vqa.evaluation.protocol import EvaluationSet, Scored, table
from sit_vqa.evaluation.sets import seeded_subset
from sit_vqa.metrics.text import (
    chrf,
    exact_copy_rate,
    follows_sequence,
    rouge_l,
    sequence_rate,
    sequence_scores,
    split_sequence,
)

if TYPE_CHECKING:
    from sit_vqa.modeling.checkpoint import TrainedSettings

TEXT_METRIC = "text-sit/1: sequence markers, chrF (sacrebleu), ROUGE-L (rouge-score)"


class TextSet(EvaluationSet):
    """The held-out Alpaca records of the config (eval_text_data), asked as the model was trained."""

    task, takes_images, metric = "text", False, TEXT_METRIC
    score_name = "text SIT: answer ROUGE-L"

    def __init__(self, options: TaskOptions, eval_options: EvalOptions, config):
        data = config.data
        if not data.eval_text_data:
            raise ConfigError(f"{config.source}: the text evaluation answers held-out records: set eval_text_data "
                              "(an Alpaca-format file never trained on; text_sit.yaml points at "
                              "data/alpaca_sample/alpaca_eval_en.json)")
        self.sources = (data.eval_text_data, data.eval_text_data_translated or "eval_text_data_translated")
        self.english = load_alpaca(data.eval_text_data)
        self.translated = load_alpaca(data.eval_text_data_translated) if data.eval_text_data_translated else None
        keys = list(range(len(self.english)))
        self.chosen = sorted(seeded_subset(keys, eval_options.limit, config.data.subset_seed))
        self.config_mode = data.text_mode

    def key(self, record: Mapping) -> int:
        return record["source_index"]

    def settings(self) -> dict:
        return {"task_data": self.sources[0]}

    def prompt(self, requested: str, trained: TrainedSettings) -> str:
        """auto: the text_mode the checkpoint trained with (zero-shot: the config's); baseline: plain; sit:
        the config's text_mode, repeat unless it says translate."""
        if requested == "auto":
            return trained.text_mode or self.config_mode
        if requested == "baseline":
            return "plain"
        return self.config_mode if self.config_mode != "plain" else "repeat"

    def records(self, prompt: str, trained: TrainedSettings, config) -> list[dict]:
        if prompt == "translate" and self.translated is None:
            raise ConfigError(f"{config.source}: text_mode translate shows the inputs in another language: set "
                              "eval_text_data_translated (eval_text_data's records, translated, in the same order)")
        built = build_text_sit(self.english, prompt, translated=self.translated, sources=self.sources)
        return [{**built[i], "input": self.english[i]["input"].strip(), "reference": self.english[i]["output"].strip(),
                 "source_instruction": self.english[i]["instruction"]} for i in self.chosen]

    def score(self, records: list[dict], generations: list[str]) -> Scored:
        mode = records[0]["text_mode"]
        marker = {"repeat": INPUT_MARKER, "translate": TRANSLATION_MARKER}.get(mode)
        predictions = [self._prediction(record, text, marker) for record, text in zip(records, generations)]
        answers = [p["answer"] for p in predictions]
        references = [r["reference"] for r in records]
        sequenced = [(r, g) for r, g in zip(records, generations) if marker and r["input"]]
        numbers = {"text_mode": mode, "records": len(records), "records_with_input": sum(bool(r["input"]) for r in records),
                   "sequence_rate": None, "first_step_fidelity": None, "first_step_metric": None,
                   "answer_rouge_l": rouge_l(answers, references), "answer_chrf": chrf(answers, references)}
        if sequenced:
            outputs, inputs = [g for _, g in sequenced], [r["input"] for r, _ in sequenced]
            numbers["sequence_rate"] = sequence_rate(outputs, marker)
            if mode == "repeat":
                numbers["first_step_metric"] = "exact copy rate (%)"
                numbers["first_step_fidelity"] = exact_copy_rate(outputs, inputs, marker)
            else:  # an output that does not follow the sequence has an empty translation
                numbers["first_step_metric"] = "chrF against the English input"
                steps = [split_sequence(output, marker) for output in outputs]
                numbers["first_step_fidelity"] = chrf([s[0] if s else "" for s in steps], inputs)
        # the exact check over every record (a record without input cannot carry out a sequence)
        numbers["exact"] = sequence_scores([r["target"] for r in records], generations)
        numbers["overall"] = numbers["answer_rouge_l"]
        numbers["columns"] = {"sequence_rate": numbers["sequence_rate"],
                              "first_step_fidelity": numbers["first_step_fidelity"],
                              "answer_chrf": numbers["answer_chrf"],
                              "exact_sequence": 100 * numbers["exact"]["sequence"]}
        results = [{"source_index": p["source_index"], "answer": p["answer"]} for p in predictions]
        keys = [f"{r['source_index']}:{r['source_instruction']}" for r in records]
        return Scored(predictions, {"results.json": results}, numbers, keys)

    def _prediction(self, record: dict, text: str, marker: str | None) -> dict:
        steps = split_sequence(text, marker) if marker and record["input"] else None
        exact = follows_sequence(record["target"], text)
        return {"source_index": record["source_index"], "prompt": record["instruction"], "generation": text,
                "sequence_layout": steps is not None if marker and record["input"] else None,
                "first_step": steps[0] if steps else None, "answer": text_answer(text, record, marker),
                "reference": record["reference"], "target": record["target"],
                **{f"exact_{check}": value for check, value in exact.items()}}

    def markdown_lines(self, report: Mapping) -> list[str]:
        rows = [["follows the sequence (%)", report["sequence_rate"]],
                [f"first step: {report['first_step_metric'] or '–'}", report["first_step_fidelity"]],
                ["answer ROUGE-L", report["answer_rouge_l"]], ["answer chrF", report["answer_chrf"]],
                *([f"exact {check.replace('_', ' ')} (% of all records)", 100 * share]
                  for check, share in report["exact"].items())]
        return [f"text_mode `{report['text_mode']}`, {report['records']} held-out records "
                f"({report['records_with_input']} with an input: the sequence is asked of those).", "",
                *table(["Score", "Value"], rows)]


def text_answer(output: str, record: Mapping, marker: str | None) -> str:
    """The final answer of a text output: everything after its first line-start "Answer:" (answers may span
    lines, unlike VQA's), or the whole output when the record was asked without a sequence or the model gave no
    marker (scored all the same)."""
    text = output.strip()
    if marker and record["input"]:
        found = answer_line(text)
        if found:
            return text[found.end():].strip()
    return text
