"""sit-vqa checkpoints and exported models as an lmms-eval model, `--model sit_vqa` (the only module that imports
lmms_eval; pyproject.toml registers MANIFEST in lmms-eval's `lmms_eval.models` entry-point group).

    lmms-eval --model sit_vqa --model_args pretrained=runs/quickstart/final,device=cpu --batch_size 8 \\
        --include_path "$(python -c 'import sit_vqa.integrations.lmms_eval as m; print(m.TASKS_DIR)')" \\
        --tasks sit_vqav2

model_args: pretrained (a run dir, a checkpoint-N / final dir, or a model written by sit_vqa.apps.export: loaded
by the demo's loader, VqaDemo.load), device (default cuda if available, else cpu), dtype (auto: as trained;
or float32 / bfloat16 / float16), prompt (auto: the instruction the checkpoint was trained with, rendered with
its own templates from the document's "question", as evaluate.py asks; sit / baseline; task: lmms-eval's context
as the task wrote it), allow_partial_load, base_model (as evaluate.py's --allow-partial-load / --base-model).

Unlike lmms-eval's own InstructBLIP wrapper (which asserts batch size 1, ignores `until` and `dtype`, and turns a
generation error into an empty answer that scores 0; lmms-eval #635, #672), this one generates `--batch_size`
requests at a time through the package's one generation function, cuts each output at the first of the task's
`until` strings, and lets any error propagate. One process only (no data-parallel launch).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from lmms_eval.api.instance import Instance
from lmms_eval.api.model import lmms
from lmms_eval.models.registry_v2 import ModelManifest
from tqdm import tqdm

from sit_vqa.apps.demo import VqaDemo
from sit_vqa.data.prompts import PROMPTS, resolve_prompt
from sit_vqa.errors import EvaluationError
from sit_vqa.modeling import precision
from sit_vqa.modeling.generation import GenerationSettings, generate_batch

PROMPT_CHOICES = (*PROMPTS, "task")
# the generation_kwargs of a task this model applies; any other is refused (never silently dropped)
GENERATION_KEYS = frozenset({"until", "max_new_tokens", "temperature", "do_sample", "top_p", "num_beams",
                             "repetition_penalty"})


class SitVqa(lmms):
    is_simple = True

    def __init__(self, pretrained: str, device: str | None = None, dtype: str | None = "auto",
                 batch_size: int | str = 1, max_batch_size: int | None = None, prompt: str = "auto",
                 allow_partial_load: bool = False, base_model: str | None = None, **unknown) -> None:
        super().__init__()
        if unknown:
            raise EvaluationError(f"unknown sit_vqa model_args {sorted(unknown)}; it takes pretrained, device, dtype, "
                                  f"prompt ({', '.join(PROMPT_CHOICES)}), allow_partial_load, base_model")
        if prompt not in PROMPT_CHOICES:
            raise EvaluationError(f"sit_vqa model_args prompt={prompt!r}; expected one of {', '.join(PROMPT_CHOICES)}")
        self.batch_size_per_gpu = _positive_int(batch_size, "batch_size")
        self.prompt = prompt
        self.demo = VqaDemo.load(pretrained, device, dtype=None if dtype in (None, "auto") else _dtype(dtype),
                                 allow_partial=_flag(allow_partial_load), base_model=base_model)
        self._rank, self._world_size = 0, 1

    @property
    def batch_size(self) -> int:
        return self.batch_size_per_gpu

    @property
    def device(self) -> torch.device:
        return next(self.demo.model.parameters()).device

    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        raise NotImplementedError("the sit_vqa model generates answers (output_type generate_until); it does not "
                                  "score loglikelihoods")

    def generate_until_multi_round(self, requests) -> list[str]:
        raise NotImplementedError("the sit_vqa model answers one question per image (generate_until)")

    def generate_until(self, requests: list[Instance]) -> list[str]:
        """Each request's output, in request order: requests with the same generation settings go in batches of
        `batch_size`, in the order lmms-eval gives them (document order, as evaluate.py batches)."""
        outputs: list[str | None] = [None] * len(requests)
        groups: dict[str, list[int]] = {}
        for index, request in enumerate(requests):
            groups.setdefault(json.dumps(request.args[1], sort_keys=True, default=str), []).append(index)
        progress = tqdm(total=len(requests), desc="sit_vqa generating", disable=None)
        for indices in groups.values():
            gen_kwargs = requests[indices[0]].args[1]
            settings, until = self._settings(gen_kwargs)
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start:start + self.batch_size]
                records = [self._record(requests[index]) for index in chunk]
                texts = generate_batch(self.demo.model, self.demo.tokenizer, self.demo.inputs.batch(records), settings)
                for index, text in zip(chunk, texts):
                    outputs[index] = _cut(text, until)
                    self.cache_hook.add_partial("generate_until", (requests[index].args[0], gen_kwargs), outputs[index])
                progress.update(len(chunk))
        progress.close()
        return outputs

    def _settings(self, gen_kwargs: Mapping[str, Any]) -> tuple[GenerationSettings, list[str]]:
        """(the generation settings, the stop strings) of a task's generation_kwargs."""
        unknown = sorted(set(gen_kwargs) - GENERATION_KEYS)
        if unknown:
            raise EvaluationError(f"the task's generation_kwargs {unknown} are not applied by the sit_vqa model; it "
                                  f"applies {', '.join(sorted(GENERATION_KEYS))}: remove them from the task")
        until = gen_kwargs.get("until") or []
        until = [until] if isinstance(until, str) else list(until)
        temperature = float(gen_kwargs.get("temperature") or 0)
        do_sample = bool(gen_kwargs.get("do_sample", temperature > 0))
        if do_sample and temperature <= 0:
            raise EvaluationError("the task asks for do_sample with temperature 0; set a temperature above 0 or "
                                  "do_sample: false")
        settings = self.demo.trained.generation(
            max_new_tokens=int(gen_kwargs.get("max_new_tokens", GenerationSettings.max_new_tokens)),
            num_beams=int(gen_kwargs.get("num_beams") or 1), do_sample=do_sample,
            temperature=temperature if do_sample else 1.0, top_p=float(gen_kwargs.get("top_p") or 1.0),
            repetition_penalty=float(gen_kwargs.get("repetition_penalty") or 1.0), batch_size=self.batch_size,
        )
        return settings, until

    def _record(self, request: Instance) -> dict[str, Any]:
        context, _, doc_to_visual, doc_id, task, split = request.args
        doc = self.task_dict[task][split][doc_id]
        visuals = doc_to_visual(doc)
        if len(visuals) != 1:
            raise EvaluationError(f"task {task}, document {doc_id}: the sit_vqa model answers about one image, the "
                                  f"task gives {len(visuals)}")
        return {"instruction": self._instruction(context, doc, task, doc_id), "image": visuals[0], "id": doc_id}

    def _instruction(self, context: str, doc: Mapping[str, Any], task: str, doc_id) -> str:
        """The checkpoint's own instruction for the document's question (prompt=auto/sit/baseline), or the task's
        context (prompt=task)."""
        if self.prompt == "task":
            return context
        if not isinstance(doc.get("question"), str):
            raise EvaluationError(f"task {task}, document {doc_id} has no 'question' to ask with the checkpoint's "
                                  "instruction; pass model_args prompt=task to ask with the task's own text")
        trained = self.demo.trained
        return trained.templates.render(resolve_prompt(self.prompt, trained.mode), question=doc["question"])[0]


def _cut(text: str, until: Sequence[str]) -> str:
    """The text up to the first of the stop strings (lmms-eval's `until`)."""
    for stop in until:
        if stop:
            text = text.split(stop, 1)[0]
    return text


def _positive_int(value, name: str) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = 0
    if number < 1 or str(number) != str(value).strip():
        raise EvaluationError(f"sit_vqa: {name} must be a positive integer, got {value!r} (auto is not supported)")
    return number


def _flag(value) -> bool:
    if isinstance(value, bool):
        return value
    if str(value).lower() in ("true", "1", "yes"):
        return True
    if str(value).lower() in ("false", "0", "no"):
        return False
    raise EvaluationError(f"sit_vqa: expected true or false, got {value!r}")


def _dtype(name: str) -> torch.dtype:
    try:
        return precision.dtype_from_name(name)
    except ValueError:
        raise EvaluationError(f"sit_vqa: unknown dtype {name!r}; pass auto (as trained), float32, bfloat16 or "
                              "float16") from None


MANIFEST = ModelManifest(model_id="sit_vqa", simple_class_path="sit_vqa.integrations.lmms_eval.model.SitVqa")
