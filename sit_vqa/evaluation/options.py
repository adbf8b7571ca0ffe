"""What an evaluation is asked to do, beyond the run config: `EvalOptions` (the checkpoint, the questions, the
generation, the output folder) and `TaskOptions` (which evaluation set, where its files are). evaluate.py builds
its command line from these fields; `sit_vqa.evaluation.runner.run_evaluation` takes them. No model, no torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from sit_vqa.data.prompts import PROMPTS
from sit_vqa.errors import DataError, EvaluationError

SPLIT_ROLES = {"val": "eval", "train": "train"}  # --split -> the config's data keys (eval_* / train_*)
DEFAULT_DATA = {  # where data/README.md puts the real files
    "okvqa": "data/okvqa",
    "gqa": "data/gqa/testdev_balanced_questions.json",
    "xgqa": "data/xgqa",
    "xquad": "data/xquad",
}
DEFAULT_IMAGE_DIR = "data/gqa/images"
OKVQA_FILES = {"eval_questions": "OpenEnded_mscoco_val2014_questions.json",
               "eval_annotations": "mscoco_val2014_annotations.json"}


@dataclass(frozen=True)
class EvalOptions:
    """What `run_evaluation` does beyond the run config; evaluate.py builds its command line from these fields.
    None means: from the config (or the default)."""

    checkpoint: str | None = field(default=None, metadata={
        "help": "checkpoint or run directory (its final/, else its latest checkpoint-N/); leave out for the base "
                "model (zero-shot)"})
    split: Literal["val", "train"] = field(default="val", metadata={
        "help": "val: the config's eval_* data; train: its train_* data"})
    limit: int | None = field(default=None, metadata={"help": "score a seeded sample of N questions (default: all)"})
    out_dir: str | None = field(default=None, metadata={
        "aliases": ["--out"], "help": "output directory (default: runs/eval/<name>-<split> for vqa, "
                                       "runs/eval/<name>-<task> for the other sets, then -held-out, -limit<N>, ... "
                                       "for the options that set the run apart); a finished evaluation there "
                                       "with other settings is never replaced"})
    prompt_variant: Literal["trained", "held-out"] = field(default="trained", metadata={
        "help": "vqa, okvqa: trained asks with the phrasing of the templates; held-out with the instruction pool's "
                "held_out phrasings, never trained on (the config's instruction_pool, else "
                "configs/prompts/instruction_pool.yaml): robustness to an unseen phrasing"})
    prompt: Literal["auto", "sit", "baseline"] = field(default="auto", metadata={
        "help": "instruction: auto follows the checkpoint's training mode"})
    batch_size: int | None = field(default=None, metadata={
        "help": "generation batch (default: the config's per_device_eval_batch_size)"})
    max_new_tokens: int | None = field(default=None, metadata={
        "help": "default: the config's generation_max_new_tokens"})
    num_beams: int | None = field(default=None, metadata={
        "help": "default: the config's generation_num_beams (1: greedy)"})
    legacy_metric: bool = field(default=False, metadata={
        "help": "the pre-2021 official evaluator, as LAVIS ships it (for numbers published from LAVIS)"})
    device: str | None = field(default=None, metadata={
        "help": "e.g. cuda, cuda:1, cpu (default: cuda if available, else cpu)"})
    name: str | None = field(default=None, metadata={"help": "the run's name in its report and in --compare tables"})
    progress: bool = field(default=True, metadata={"help": "show a progress bar (--no-progress: none)"})
    allow_partial_load: bool = field(default=False, metadata={
        "help": "load a checkpoint whose weights file lacks some trained tensors (they keep the base model's values)"})
    restart: bool = field(default=False, metadata={
        "help": "discard the outputs an interrupted run left in OUT/partial/ and start over (default: continue "
                "that run, when its settings are these)"})
    base_model: str | None = field(default=None, metadata={
        "help": "the checkpoint's base model (a save_pretrained directory or hub id), when it is not where it says"})

    def __post_init__(self):
        if self.split not in SPLIT_ROLES:
            raise EvaluationError(f"unknown split {self.split!r}; expected one of {', '.join(SPLIT_ROLES)}")
        if self.prompt not in PROMPTS:
            raise EvaluationError(f"unknown prompt {self.prompt!r}; expected one of {', '.join(PROMPTS)}")
        for name in ("limit", "batch_size", "max_new_tokens", "num_beams"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise EvaluationError(f"{name} must be a positive integer, got {value!r}")



@dataclass(frozen=True)
class TaskOptions:
    """Which evaluation set evaluate.py runs, and where its files are (None: the layout of data/README.md)."""

    task: str = field(default="auto", metadata={  # the names: sit_vqa.evaluation.registry.SETS
        "help": "vqa: the config's eval_* VQAv2 split; okvqa: OK-VQA v1.1 (VQAv2 format); gqa; xgqa; xquad; "
                "text: the config's held-out eval_text_data; auto: text for a causal_lm config, else vqa"})
    task_data: str | None = field(default=None, metadata={
        "help": "okvqa: folder with OpenEnded_mscoco_val2014_questions.json and mscoco_val2014_annotations.json "
                "(default data/okvqa); gqa: a questions file (data/gqa/testdev_balanced_questions.json); xgqa: "
                "folder of testdev_balanced_questions_<lang>.json (data/xgqa); xquad: folder of xquad.<lang>.json "
                "(data/xquad)"})
    image_dir: str | None = field(default=None, metadata={
        "help": f"gqa, xgqa: folder of the GQA images <imageId>.jpg (default {DEFAULT_IMAGE_DIR})"})
    languages: list[str] | None = field(default=None, metadata={
        "help": "xgqa, xquad: the languages to evaluate (default: every language file in --task-data)"})
    translate_first: bool = field(default=False, metadata={
        "help": "xgqa, xquad: ask to translate the question (xquad: the input) into English first"})
    gqa_normalize: bool = field(default=False, metadata={
        "help": "gqa, xgqa: lower-case, strip and drop a trailing period before the exact match (common "
                "practice, not the official metric; the report says which)"})

    @property
    def data_path(self) -> Path:
        return Path(self.task_data or DEFAULT_DATA[self.task])


def config_overrides(task: TaskOptions) -> list[str]:
    """Config overrides a task implies (okvqa: its two files as the eval questions and annotations), to go
    before the user's own, which win."""
    if task.task != "okvqa":
        return []
    folder = task.data_path
    if not folder.is_dir():
        raise DataError(f"OK-VQA folder not found: {folder}; pass --task-data DIR holding "
                        f"{' and '.join(OKVQA_FILES.values())} (see data/README.md)")
    return [argument for key, name in OKVQA_FILES.items() for argument in (f"--{key}", str(folder / name))]
