"""The one evaluation runner: any set (VQAv2, OK-VQA, GQA, xGQA, XQuAD, held-out text), one process or many,
resumable after a crash.

    python evaluate.py --config quickstart.yaml --checkpoint runs/quickstart/final     # VQAv2 -> runs/eval/quickstart-val/
    torchrun --nproc_per_node 8 evaluate.py --config vqa_sit.yaml --checkpoint runs/vqa_sit --task gqa ...

`run_evaluation(config, options, task)`:
1. `make_set` (sit_vqa.evaluation.registry: the sets by --task name) reads and checks the set's files (bad input fails here, before the model loads);
2. `sharded.join_launch` joins a torchrun / accelerate launch; `load_model` loads the model once: a checkpoint
   (`load_checkpoint`, with --base-model and --allow-partial-load; a partial load is warned about and recorded
   in the report) or the config's base model, zero-shot (`TrainedSettings.zero_shot`);
3. the set's prompt and records, made as the model was trained; `generation_settings`, the one place the
   command line, the config and the checkpoint decide the generation;
4. `sharded.generate_to_disk`: every process generates its share of the batches into OUT/partial/; a rerun
   with the same fingerprint (`fingerprint`: weights, records, generation) continues what is there;
5. the main process scores (the set's official scorer) and writes the set's results files, predictions.jsonl,
   report.md and report.json (`write_report_files`), then removes OUT/partial/.

Default output folder (`default_out_dir`): runs/eval/<name>-<split> for VQAv2 (val / train: the config keys
read), runs/eval/<name>-<task> for the other sets, then what else sets the run apart (-held-out, -limit<N>, ...).
One evaluation at a time writes into a folder (`sharded.exclusive`: a second one refuses, naming the first's
pid), and a finished evaluation is never replaced by one with other settings (`check_not_replacing`).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from sit_vqa import run_layout
from sit_vqa.errors import EvaluationError
from sit_vqa.evaluation import sharded
from sit_vqa.evaluation.options import EvalOptions, TaskOptions
from sit_vqa.evaluation.protocol import EvaluationSet
from sit_vqa.evaluation.reports import write_report_files
from sit_vqa.evaluation.registry import make_set
from sit_vqa.modeling import precision
from sit_vqa.modeling.checkpoint import (
    WEIGHTS_NAME, CheckpointManifest, TrainedSettings, load_checkpoint, resolve_checkpoint,
)
from sit_vqa.modeling.generation import GenerationSettings, generate_batches
from sit_vqa.modeling.families import family_names, model_family
from sit_vqa.modeling.loading import build_model
from sit_vqa.modeling.threads import use_cpu_threads

logger = logging.getLogger(__name__)

_SHOWN_NAMES = 3


@dataclass
class EvalRun:
    out_dir: Path
    report: dict | None  # None on the processes of a multi-process run other than the main one
    paths: dict[str, Path] = field(default_factory=dict)
    reused: int = 0  # records whose outputs an interrupted earlier run had written (not generated again)
    summary: str = ""  # the line evaluate.py prints (main process only)


@dataclass
class LoadedModel:
    model: Any
    processor: Any
    trained: TrainedSettings
    checkpoint: Path | None = None  # None: the config's base model (zero-shot)
    manifest: CheckpointManifest | None = None
    partial_load: dict | None = None  # what a partial load lacked (--allow-partial-load)


# ---------------------------------------------------------------------------------------------- the model


def load_model(config, options: EvalOptions, device: str, takes_images: bool,
               directory: Path | None = None) -> LoadedModel:
    """The checkpoint `directory` (--checkpoint resolved; its base model from --base-model when given), or
    the config's base model when None, of the kind the set needs."""
    if directory is None:
        _require(takes_images, config.model.model_type, config.source)
        # build_model, not load_base_model: the Q-Former side gets the same dtype as in a trained checkpoint
        dtype = precision.frozen_dtype_for(config.model.model_dtype, config.training.bf16)
        model, processor = build_model(config.model, dtype=dtype, device=device, quiet=True)
        return LoadedModel(model.eval(), processor, TrainedSettings.zero_shot(config.model, config.data))
    loaded = load_checkpoint(directory, device=device, allow_partial=options.allow_partial_load,
                             base_model=options.base_model)
    _require(takes_images, loaded.trained.model_type, str(directory))
    return LoadedModel(loaded.model, loaded.processor, loaded.trained, directory, loaded.manifest,
                       _partial_load(loaded, directory))


def _partial_load(loaded, directory: Path) -> dict | None:
    if not loaded.missing_tensors:
        return None
    missing = list(loaded.missing_tensors)
    logger.warning("%s: partial load: %d of the %d trained tensors are missing from %s and keep the base model's "
                   "values (e.g. %s); the report records it", directory, len(missing), loaded.expected_tensors,
                   WEIGHTS_NAME, ", ".join(missing[:_SHOWN_NAMES]))
    return {"missing": len(missing), "expected": loaded.expected_tensors, "examples": missing[:_SHOWN_NAMES]}


def _require(takes_images: bool, found: str | None, source: str) -> None:
    if takes_images != model_family(found).answers_images:
        needed = family_names(lambda family: family.answers_images == takes_images)
        kind = f"an image model (model_type {needed})" if takes_images else \
            f"a text model (model_type {needed}, e.g. --config text_sit.yaml)"
        raise EvaluationError(f"{source}: this set is answered by {kind}, got model_type {found!r}")


def generation_settings(config, options: EvalOptions, trained: TrainedSettings) -> GenerationSettings:
    """The command line's, else the config's generation settings; inputs made as the model was trained."""
    training = config.training
    # a text answer (or a translated paragraph) is as long as the targets the model was trained on
    default_tokens = (training.generation_max_new_tokens if model_family(trained.model_type).answers_images
                      else trained.max_target_length)
    return trained.generation(
        batch_size=options.batch_size or training.per_device_eval_batch_size,
        max_new_tokens=options.max_new_tokens or default_tokens,
        num_beams=options.num_beams or training.generation_num_beams,
        num_workers=training.dataloader_num_workers,
    )


# ------------------------------------------------------------------------------------------- the whole run


def run_evaluation(config, options: EvalOptions = EvalOptions(), task: TaskOptions = TaskOptions()) -> EvalRun:
    """Evaluate a checkpoint (or the config's base model, zero-shot) on `task`'s set; write its files.

    Under torchrun / accelerate launch every process generates its share (`sit_vqa.evaluation.sharded`) and the
    main one scores and writes (the others return an EvalRun without report). Outputs are appended to
    OUT/partial/ as they are made: a rerun with the same settings continues an interrupted run
    (options.restart: starts over).
    """
    evaluation_set = make_set(config, options, task)  # bad files fail here, before the model loads
    ranks, device = sharded.join_launch(options.device)
    checkpoint = resolve_checkpoint(options.checkpoint) if options.checkpoint else None
    name = options.name or run_name(checkpoint, config)
    out_dir = Path(options.out_dir or default_out_dir(name, evaluation_set.task, options))
    with sharded.exclusive(out_dir, ranks):  # one evaluation at a time writes into out_dir
        loaded = load_model(config, options, device, evaluation_set.takes_images, checkpoint)
        use_cpu_threads(loaded.model, device, config.model.cpu_threads)
        prompt = evaluation_set.prompt(options.prompt, loaded.trained)
        records = evaluation_set.records(prompt, loaded.trained, config)
        generation = generation_settings(config, options, loaded.trained)
        settings = run_settings(config, options, evaluation_set, loaded, name=name, prompt=prompt,
                                generation=generation, device=device, records=records)
        if options.limit and settings["limit"] is None and ranks.is_main:
            logger.warning("--limit %d is more than the set holds (%d records): every question is scored, and the "
                           "report records limit null (limit_requested %d)", options.limit, len(records), options.limit)
        check_not_replacing(out_dir, settings)
        if ranks.is_main:
            logger.info("evaluating %s on %d %s records (prompt %s, %d process(es))", name, len(records),
                        evaluation_set.task, prompt, ranks.world_size)
        generate = functools.partial(generate_batches, loaded.model, loaded.processor, records, generation,
                                     progress=options.progress and ranks.is_main)
        keys = [evaluation_set.key(record) for record in _rows(records)]
        generated = sharded.generate_to_disk(
            keys, generation.batch_size, generate, out_dir,
            fingerprint(loaded, config, evaluation_set.task, records, generation, device),
            restart=options.restart, ranks=ranks,
        )
        if generated.texts is None:  # not the main process: that one merges, scores and writes
            return EvalRun(out_dir, None, reused=generated.reused)
        scored = evaluation_set.score(records, generated.texts)
        report = evaluation_set.report(scored, settings)
        paths = write_report_files(out_dir, scored.results, scored.predictions, report,
                                   evaluation_set.markdown(report))
        sharded.remove_partial(out_dir)  # only now: a crash before this line keeps every generated output
    return EvalRun(out_dir, report, paths, generated.reused, evaluation_set.summary(report))


# settings that do not change what a finished evaluation holds (the device: a GPU rerun of a CPU evaluation
# replaces it; the metric: report() adds it, legacy_metric decides it)
_SAME_EVALUATION_IGNORES = {"device", "metric"}


def check_not_replacing(out_dir: Path, settings: dict) -> None:
    """Refuse to replace the finished evaluation in `out_dir` (its report.json) by one with other settings:
    its numbers would be silently lost. The same settings again (a rerun) may replace it."""
    path = out_dir / "report.json"
    if not path.is_file():
        return
    try:
        stored = json.loads(path.read_text(encoding="utf-8")).get("settings") or {}
    except (OSError, ValueError, AttributeError):
        stored = {}  # unreadable or not ours: then every setting differs
    now = json.loads(json.dumps(settings, default=str))  # as report.json holds them (tuples as lists, ...)
    changed = sorted(key for key in (stored.keys() | now.keys()) - _SAME_EVALUATION_IGNORES
                     if stored.get(key) != now.get(key))
    if changed:
        shown = "; ".join(f"{key}: {sharded.short(stored.get(key))} there, {sharded.short(now.get(key))} now"
                          for key in changed)
        raise EvaluationError(
            f"{out_dir} holds a finished evaluation made with other settings ({shown}); a finished evaluation is "
            f"never replaced by another. Pass another --out, or remove {out_dir} first to replace it."
        )


def run_settings(config, options: EvalOptions, evaluation_set: EvaluationSet, loaded: LoadedModel, *, name: str,
                 prompt: str, generation: GenerationSettings, device: str, records) -> dict:
    """report.json's settings: what was evaluated, how, on which data (the same keys for every set)."""
    trained = loaded.trained
    limit = applied_limit(options.limit, records)
    return {
        "name": name, "task": evaluation_set.task,
        "checkpoint": str(loaded.checkpoint) if loaded.checkpoint else None,
        "zero_shot": loaded.checkpoint is None,
        "base_model": options.base_model,
        "partial_load": loaded.partial_load,
        "global_step": trained.global_step,
        "trained_mode": trained.mode if model_family(trained.model_type).answers_images else trained.text_mode,
        "config": config.source, **evaluation_set.settings(),
        "prompt": prompt, "prompt_requested": options.prompt, "limit": limit, "limit_requested": options.limit,
        "subset_seed": config.data.subset_seed if limit else None,
        "batch_size": generation.batch_size, "num_beams": generation.num_beams,
        "max_new_tokens": generation.max_new_tokens, "device": device,
    }


def applied_limit(limit: int | None, records) -> int | None:
    """--limit as it was applied: None when it left no question out (each language -- the sets sample per
    language -- holds fewer questions than it), so that the report does not claim a sample of N."""
    if limit is None:
        return None
    per_language = Counter(_column(records, "language"))
    return limit if max(per_language.values(), default=0) >= limit else None


def fingerprint(loaded: LoadedModel, config, task: str, records, generation: GenerationSettings,
                device: str) -> dict:
    """What decides the generated texts, beyond the records' keys and the batch size (sharded adds those):
    an interrupted run is continued only when all of it is the same. Not the metric: it scores afterwards."""
    if loaded.checkpoint is None:
        weights = {"base_model": dataclasses.asdict(config.model)}
    else:
        stat = (loaded.checkpoint / WEIGHTS_NAME).stat()  # a checkpoint saved again in place changes size or mtime
        weights = {"checkpoint": str(loaded.checkpoint.resolve()), "global_step": loaded.trained.global_step,
                   "weights_file": [stat.st_size, stat.st_mtime_ns], "partial_load": loaded.partial_load}
    inputs = json.dumps([_column(records, name) for name in ("image_path", "instruction")], ensure_ascii=False)
    return {
        "task": task, **weights,
        "inputs_sha256": hashlib.sha256(inputs.encode()).hexdigest(),  # images and prompts, in record order
        "max_new_tokens": generation.max_new_tokens,
        "num_beams": generation.num_beams,
        "max_instruction_length": generation.max_instruction_length,
        "image_pipeline": generation.image_pipeline,
        "device_type": torch.device(device).type,
        "dtypes": sorted({str(parameter.dtype) for parameter in loaded.model.parameters()}),
    }


def _column(records, name: str) -> list:
    if hasattr(records, "column_names"):  # a datasets.Dataset: read the column, not every decoded row
        return list(records[name]) if name in records.column_names else [None] * len(records)
    return [record.get(name) for record in records]


def _rows(records):
    if hasattr(records, "column_names"):  # the key columns only: images and answers stay undecoded
        return records.select_columns([c for c in ("question_id", "language", "id", "source_index")
                                       if c in records.column_names])
    return records


def run_name(checkpoint: Path | None, config) -> str:
    """The run's name in reports: the run directory (and checkpoint-N), or zero-shot-<config>."""
    if checkpoint is None:
        return f"zero-shot-{Path(config.source).stem}"
    return run_layout.run_name(checkpoint)


def default_out_dir(name: str, task: str, options: EvalOptions) -> Path:
    """runs/eval/<name>-<split> for VQAv2 (its --split), runs/eval/<name>-<task> for every other set (OK-VQA
    too: it never overwrites the VQAv2 evaluation of the same checkpoint); then what else sets the run apart,
    so that two evaluations of one checkpoint never share a default folder: -<prompt>-prompt with --prompt,
    -held-out with --prompt-variant held-out, -legacy-metric, -limit<N> with --limit."""
    parts = [name, options.split if task == "vqa" else task]
    if options.prompt != "auto":
        parts.append(f"{options.prompt}-prompt")
    if options.prompt_variant != "trained":
        parts.append(options.prompt_variant)
    if options.legacy_metric:
        parts.append("legacy-metric")
    if options.limit:
        parts.append(f"limit{options.limit}")
    return Path("runs") / "eval" / "-".join(parts)
