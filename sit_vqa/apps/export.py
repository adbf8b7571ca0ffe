"""Export a checkpoint as a standalone model directory that loads with plain transformers.

    python -m sit_vqa.apps.export --checkpoint runs/vqa_sit/final --out exported/sit-vicuna7b [--report runs/eval/sit]

A checkpoint holds only the trained weights and names its base model; the export merges the two into one
`save_pretrained` directory (config.json, model.safetensors, processor files), so that

    model = InstructBlipForConditionalGeneration.from_pretrained(DIR)
    processor = InstructBlipProcessor.from_pretrained(DIR)

is all a user needs. Its generation_config.json (and the LM's config) carry the tokenizer's EOS, which the
model was trained to end with: the hub checkpoints name another one, and generation would not stop.
Beside the model: README.md (a model card: base model, the SIT recipe, the prompt, the scores of an
evaluation if one is passed) and sit_vqa_export.json (the trained settings, `TrainedSettings`, for `sit_vqa.apps.demo`).
The directory is written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sit_vqa.errors import SitVqaError
from sit_vqa.evaluation.reports import read_report, report_task
from sit_vqa.files import atomic_path
from sit_vqa.modeling.checkpoint import CheckpointManifest, TrainedSettings, load_checkpoint
from sit_vqa.modeling.families import family_names, model_family
from sit_vqa.modeling.families import is_encoder_decoder
from sit_vqa.modeling.generation import align_generation_config, generation_kwargs

EXPORT_FORMAT = "sit-vqa-export/2"  # /2: the trained settings as one record ("trained")
EXPORT_MANIFEST_NAME = "sit_vqa_export.json"  # beside the standalone model; sit_vqa.apps.demo reads it


class ExportError(SitVqaError, ValueError):
    """A checkpoint that cannot be exported, or an output directory that would be overwritten."""


def export_model(checkpoint: str | Path, out_dir: str | Path, report: str | Path | None = None,
                 base_model: str | Path | None = None) -> Path:
    """Write the standalone model of `checkpoint` (a run or checkpoint directory) to `out_dir`; returns it.
    `base_model` replaces the base model the checkpoint names (a copy elsewhere)."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportError(f"--out {out_dir} is a file; pass the path of a new directory for the exported model")
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ExportError(f"{out_dir} exists and is not empty; pass a new --out directory (nothing is overwritten)")
    scores = _vqa_report(report) if report else None
    # a run with a 4/8-bit LLM is exported on its full-precision base model (the adapters merge into that)
    loaded = load_checkpoint(checkpoint, device="cpu", base_model=base_model, full_precision=True)
    model, processor, manifest = loaded
    if model_family(loaded.trained.model_type).export_card is None:
        raise ExportError(f"{loaded.directory}: only image-model checkpoints (model_type "
                          f"{family_names(lambda family: family.export_card is not None)}) can be exported, got "
                          f"{loaded.trained.model_type!r}")
    if scores is not None:
        _check_report_is_of(scores, report, loaded.directory)
    if hasattr(model, "merge_and_unload"):  # LoRA (a chat VLM's LM, InstructBLIP's Q-Former): merged into plain weights
        model = model.merge_and_unload()
    _set_trained_eos(model, processor)
    info = {
        "format": EXPORT_FORMAT,
        "source_checkpoint": str(loaded.directory.resolve()),
        "trained": loaded.trained.to_dict(),  # what the demo asks the exported model with
    }
    with atomic_path(out_dir) as staging:  # an export cut off leaves nothing under out_dir
        model.save_pretrained(staging)  # safetensors (transformers' default)
        processor.save_pretrained(staging)
        (staging / EXPORT_MANIFEST_NAME).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        (staging / "README.md").write_text(model_card(manifest, info, scores, encoder_decoder=is_encoder_decoder(model)), encoding="utf-8")
    return out_dir


def _check_report_is_of(scores: Mapping[str, Any], report: str | Path, checkpoint: Path) -> None:
    """The model card shows the report's scores as the exported model's: the report must be an evaluation of
    this very checkpoint (report.json's settings.checkpoint), not of another one or of the base model."""
    evaluated = scores.get("settings", {}).get("checkpoint")
    if evaluated is not None and Path(evaluated).resolve() == checkpoint.resolve():
        return
    what = f"checkpoint {evaluated}" if evaluated else "the base model (zero-shot)"
    raise ExportError(f"--report {report} is an evaluation of {what}, not of {checkpoint}: the model card would "
                      f"show its scores as this model's. Pass the report of an evaluation of this checkpoint "
                      f"(python evaluate.py --checkpoint {checkpoint} ...), or leave --report out")


def _set_trained_eos(model, processor) -> None:
    """Make every generation config of the export end at the tokenizer's EOS (the one the targets end with).

    InstructBLIP's generate() hands over to the language model's own generate(), whose generation config
    comes from the text config on loading: both need the id.
    """
    align_generation_config(model, processor.tokenizer)
    ids = generation_kwargs(processor.tokenizer)  # loaders rebuild the LM's generation config from its text config
    model.config.text_config.eos_token_id, model.config.text_config.pad_token_id = ids["eos_token_id"], ids["pad_token_id"]


def model_card(manifest: CheckpointManifest, info: Mapping[str, Any], report: Mapping[str, Any] | None, *,
               encoder_decoder: bool) -> str:
    """README.md of the export: what it is, how it was trained, how to prompt it, how well it scored. The
    family says what the model is and how to load it (`ModelFamily.export_card`).
    encoder_decoder: the language model is a T5 (generate returns the answer alone, no prompt to cut off)."""
    config = manifest.config
    trained = TrainedSettings.from_dict(info["trained"])
    templates, prompt = trained.templates, trained.prompt
    instruction = getattr(templates, f"{prompt}_instruction")
    card = model_family(trained.model_type).export_card(config, instruction, encoder_decoder=encoder_decoder)
    lines = [
        "# sit-vqa export", "",
        f"{card.model} with sequential instruction tuning (SIT) by sit-vqa, merged into one standalone "
        f"model directory. Base model: `{card.base}`. Exported from `{info['source_checkpoint']}` "
        f"(step {trained.global_step}).", "",
        "## Training recipe", "",
        f"- mode: `{trained.mode}` (sit: describe the image, then answer; baseline: answer only)",
        f"- trained: {card.trained}",
        f"- learning rate {config.get('learning_rate')}, batch {config.get('per_device_train_batch_size')} per device, "
        f"{_length(manifest)}, seed {config.get('seed')}",
        f"- target: `{(templates.sit_target if prompt == 'sit' else templates.baseline_target)!r}`", "",
        "## Prompt", "",
        f"Ask with the {prompt} instruction (the question at its end):", "",
        "```", instruction.replace("{question}", "<question>"), "```", "",
        "```python", *card.usage, "```", "",
        "`python -m sit_vqa.apps.demo --checkpoint DIR --serve` serves it as a web page; its output splits into "
        "description and answer at the \"Description:\" / \"Answer:\" markers.", "",
        "## Scores", "",
    ]
    lines += _score_lines(report) if report else ["Not evaluated at export time (pass `--report` to include scores)."]
    return "\n".join(lines) + "\n"


def _length(manifest: CheckpointManifest) -> str:
    """How long it trained, as run: the optimizer steps and the epochs they covered (not the configured
    num_train_epochs, which max_steps overrides)."""
    steps = f"{manifest.global_step} optimizer steps"
    if manifest.epoch is None:  # a checkpoint written before the epochs were recorded
        return steps
    return f"{steps} ({manifest.epoch:.2f} epochs of the training data)"


def _vqa_report(report: str | Path) -> dict:
    """The report the model card shows: a VQAv2 evaluation (its overall and per-answer-type accuracy)."""
    scores = read_report(report)
    if report_task(scores) != "vqa":
        raise ExportError(
            f"--report {report} is an evaluation on the {report_task(scores)} set; the model card shows VQAv2 "
            "accuracy: pass the report of a VQAv2 evaluation of this checkpoint (python evaluate.py --checkpoint "
            "CHECKPOINT --task vqa --out DIR), or leave out --report"
        )
    return scores


def _score_lines(report: Mapping[str, Any]) -> list[str]:
    settings = report.get("settings", {})
    lines = [
        f"VQA accuracy ({report['metric']}) on {report.get('num_questions')} {settings.get('split', '')} questions, "
        f"prompt {settings.get('prompt')}:", "",
        "| | Accuracy |", "|---|---:|", f"| overall | {report['overall']:.2f} |",
    ]
    lines += [f"| {name} | {value:.2f} |" for name, value in report["perAnswerType"].items()]
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sit_vqa.apps.export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="run directory or checkpoint-N / final directory")
    parser.add_argument("--out", required=True, help="new directory for the standalone model")
    parser.add_argument("--report", help="report.json of an evaluation of this checkpoint (or its directory)")
    parser.add_argument("--base-model", help="the checkpoint's base model (a save_pretrained directory or hub id), "
                        "when it is not where the checkpoint says")
    args = parser.parse_args(argv)
    try:
        out = export_model(args.checkpoint, args.out, args.report, args.base_model)
    except SitVqaError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"exported to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
