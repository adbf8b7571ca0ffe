"""VQA accuracy during training: a Trainer callback that scores a held-out subset every N steps.

Wiring (the callback logs through the trainer, so the numbers reach every logger -- TensorBoard,
train_log.jsonl, the console -- and `trainer.state.log_history`):

    trainer = SitTrainer(...)
    if config.training.eval_vqa_steps:
        trainer.add_callback(VqaEvalCallback.from_config(trainer, config))

Logged keys: eval_vqa_accuracy, eval_vqa_accuracy_<answer type> (yes_no, number, other) and
eval_vqa_answer_marker_rate; TensorBoard shows them under eval/. The questions are the eval split's
seeded sample of `eval_subset_questions` (the same ones `evaluate.py --limit N` picks with that N),
asked with the prompt of the training mode (SIT for sit and mixed).

Under DDP every rank generates its share of the questions (the batches evaluate.py would make, dealt out as
`sit_vqa.evaluation.sharded` deals them to evaluate.py's processes) on the unwrapped model -- plain DDP keeps no
collective in generation -- and the texts are gathered on every rank, so the numbers equal a one-process
evaluation of the same weights. (Generating on one rank alone left the others waiting in the next gradient
all-reduce; a large eval_subset_questions passed ddp_timeout and killed the run.) Every rank scores and logs
the same numbers, as the Trainer logs its loss on every rank; the loggers write on the main process only.
Not for FSDP / DeepSpeed ZeRO-3, whose sharded forward needs every rank in step.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping

from transformers import TrainerCallback

from sit_vqa.evaluation import sharded
from sit_vqa.errors import ConfigError
from sit_vqa.data.prompts import prompt_for_mode
from sit_vqa.evaluation.vqa import load_eval_records, score_generations
from sit_vqa.modeling.families import family_names, model_family
from sit_vqa.modeling.generation import GenerationSettings, generate_batches

logger = logging.getLogger(__name__)

METRIC_PREFIX = "eval_vqa"


class VqaEvalCallback(TrainerCallback):
    """Every `every_n_steps` optimizer steps: generate answers for `records`, score them, log the accuracy.

    trainer: the Trainer whose `log` receives the numbers. records: evaluation records with "instruction"
    (the prompt), image and answers, e.g. `load_eval_records(...).dataset`. processor: the image model's
    processor (InstructBlipProcessor, or a chat VLM's; default: the trainer's processing_class).
    """

    def __init__(
        self, trainer, records, *, every_n_steps: int, generation: GenerationSettings = GenerationSettings(),
        processor=None, legacy_metric: bool = False,
    ):
        if every_n_steps < 1:
            raise ConfigError(f"every_n_steps must be a positive number of steps, got {every_n_steps}")
        if not len(records):
            raise ConfigError("VqaEvalCallback needs at least one evaluation record")
        self.trainer = trainer
        self.records = records
        self.every_n_steps = every_n_steps
        self.generation = generation
        self.processor = processor if processor is not None else trainer.processing_class
        self.legacy_metric = legacy_metric

    @classmethod
    def from_config(cls, trainer, config) -> VqaEvalCallback:
        """The callback a RunConfig asks for: eval_vqa_steps, eval_subset_questions, generation_* keys."""
        data, training = config.data, config.training
        if not model_family(config.model.model_type).answers_images:
            raise ConfigError(
                f"{config.source}: eval_vqa_steps scores VQA accuracy, which needs an image model "
                f"(model_type {family_names(lambda family: family.answers_images)}), not {config.model.model_type}; set "
                "eval_vqa_steps: 0"
            )
        records = load_eval_records(
            data, split="val", prompt=prompt_for_mode(data.mode), templates=data.template_set,
            limit=data.eval_subset_questions, seed=data.subset_seed,
        )
        generation = GenerationSettings(
            batch_size=training.per_device_eval_batch_size,
            max_new_tokens=training.generation_max_new_tokens,
            num_beams=training.generation_num_beams,
            max_instruction_length=config.model.max_instruction_length,
            image_pipeline=config.model.image_pipeline,
            model_type=config.model.model_type,
        )
        return cls(trainer, records.dataset, every_n_steps=training.eval_vqa_steps, generation=generation)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step % self.every_n_steps:
            return control
        metrics = self.evaluate(model if model is not None else self.trainer.model)
        # Trainer.log ends in on_log, which clears should_log: keep a loss log that falls on this step.
        should_log = control.should_log
        self.trainer.log(metrics)
        control.should_log = should_log
        return control

    def evaluate(self, model) -> dict[str, float]:
        """The logged numbers for `model` on the records; the model's train/eval mode is left as it was.
        Under torch.distributed every rank must call it (each generates its share)."""
        generate = functools.partial(generate_batches, model, self.processor, self.records, self.generation,
                                     progress=False)
        ranks = sharded.Ranks.current()
        texts = sharded.generate_gathered(len(self.records), self.generation.batch_size, generate, ranks)
        scored = score_generations(self.records, texts, legacy=self.legacy_metric)
        metrics = metric_logs(scored.metrics)
        marked = sum(p["has_answer_marker"] for p in scored.predictions)
        metrics[f"{METRIC_PREFIX}_answer_marker_rate"] = round(marked / len(scored.predictions), 4)
        if ranks.is_main:
            logger.info("VQA accuracy %.2f on %d held-out questions", metrics[f"{METRIC_PREFIX}_accuracy"],
                        len(texts))
        return metrics


def metric_logs(metrics: Mapping) -> dict[str, float]:
    """{"eval_vqa_accuracy": overall, "eval_vqa_accuracy_yes_no": ..., ...} from the official metric's output."""
    logs = {f"{METRIC_PREFIX}_accuracy": metrics["overall"]}
    for answer_type, value in metrics["perAnswerType"].items():
        logs[f"{METRIC_PREFIX}_accuracy_{_tag(answer_type)}"] = value
    return logs


def _tag(answer_type: str) -> str:
    """"yes/no" -> "yes_no": a "/" would nest the TensorBoard tag."""
    return "".join(char if char.isalnum() else "_" for char in answer_type)
