"""The evaluation sets by --task name: `SETS`, the one list of them.

A new set is one module and one entry here: a subclass of `sit_vqa.evaluation.protocol.EvaluationSet`, built as
`SetClass(task, options, config)` (TaskOptions, EvalOptions, the run config) and reading its files there, and
naming in `reads` the set-specific options it takes. `evaluate.py --task NAME` then runs it through the one
runner (`sit_vqa.evaluation.runner`): sharded, resumable, its report comparable with --compare.
"""

from __future__ import annotations

import dataclasses

from sit_vqa.errors import EvaluationError
from sit_vqa.evaluation.options import EvalOptions, TaskOptions
from sit_vqa.evaluation.protocol import EvaluationSet
from sit_vqa.evaluation.sets import GqaSet, XgqaSet, XquadSet
from sit_vqa.evaluation.text import TextSet
from sit_vqa.evaluation.vqa import VqaSet
from sit_vqa.modeling.families import model_family

SETS: dict[str, type[EvaluationSet]] = {
    "vqa": VqaSet,  # the config's eval_* (or train_*, --split) VQAv2 data
    "okvqa": VqaSet,  # OK-VQA v1.1: VQAv2's format, its two files as the config's eval data
    "gqa": GqaSet,
    "xgqa": XgqaSet,
    "xquad": XquadSet,
    "text": TextSet,  # the config's held-out eval_text_data
}

# the TaskOptions fields only some sets read (a set names those it reads in `reads`); the others are refused
_SET_FLAGS = tuple(f.name for f in dataclasses.fields(TaskOptions) if f.name not in ("task", "task_data"))


def make_set(config, options: EvalOptions, task: TaskOptions) -> EvaluationSet:
    """The set of `task` ("auto" resolved from the config's model type), its files read and checked."""
    if task.task == "auto":
        task = dataclasses.replace(task, task=model_family(config.model.model_type).default_task)
    set_class = SETS.get(task.task)
    if set_class is None:
        raise EvaluationError(f"unknown task {task.task!r}; expected one of auto, {', '.join(SETS)}")
    _refuse_options_it_does_not_read(set_class, task, options)
    return set_class(task, options, config)


def _refuse_options_it_does_not_read(set_class: type[EvaluationSet], task: TaskOptions, options: EvalOptions) -> None:
    reads, name = set_class.reads, task.task
    if options.split != "val" and "split" not in reads:
        raise EvaluationError(f"--split chooses the config's VQAv2 data; --task {name} reads its own files")
    if options.legacy_metric and "legacy_metric" not in reads:
        raise EvaluationError("--legacy-metric is the pre-2021 VQAv2 evaluator; it applies to --task "
                              f"{_readers('legacy_metric')}")
    if options.prompt_variant != "trained" and "prompt_variant" not in reads:
        raise EvaluationError("--prompt-variant held-out asks VQAv2 / OK-VQA questions with unseen phrasings; "
                              f"--task {name} has no instruction pool")
    for flag in _SET_FLAGS:
        if getattr(task, flag) not in (None, False) and flag not in reads:
            raise EvaluationError(f"--{flag.replace('_', '-')} applies to --task {_readers(flag)}, not {name}")


def _readers(option: str) -> str:
    return " and ".join(name for name, set_class in SETS.items() if option in set_class.reads)
