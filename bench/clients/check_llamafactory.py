"""LLaMA-Factory's own data pipeline on a `--format llamafactory` export, as the README's recipe points it.

    python check_llamafactory.py EXPORT_DIR WORK_DIR [MEDIA_DIR]   # in a venv with llamafactory

Parses the README's arguments (`--stage sft --do_train --dataset sit_vqa --dataset_dir EXPORT_DIR`, plus
`--media_dir MEDIA_DIR` for an export written with `--image-root MEDIA_DIR`) with LLaMA-Factory's own
`get_train_args`, on a tiny LLaVA-1.5 (tiny_llava.py) with LLaMA-Factory's `llava` template, and runs its
`get_dataset`. Checks: every record the join wrote is in the tokenized dataset; each holds as many `<image>`
tokens as LLaMA-Factory's llava plugin expands one image to (16 here); its labels are one span that spells
" " + target + "</s>" in context (the answer's first token carries the space after "ASSISTANT:") and
target + "</s>" decoded alone. Then the README's command itself, `llamafactory-cli train` with its flags
(`--finetuning_type lora`), on the tiny model with `--template llava` for 2 steps: it must exit 0 and save the
LoRA adapter.
"""

import subprocess
import sys
from pathlib import Path

from llamafactory.data import get_dataset, get_template_and_fix_tokenizer
from llamafactory.hparams import get_train_args
from llamafactory.model import load_tokenizer

from common import first_differences, read_export, reported_records, supervised_text, verdict
from tiny_llava import IMAGE_TOKENS, build_tiny_llava


def main(export_dir: str, work_dir: str, media_dir: str | None = None) -> None:
    records = read_export(export_dir, "sit_vqa.json")
    texts = [m["content"].replace("<image>", "") for r in records for m in r["messages"]]
    model_dir = build_tiny_llava(Path(work_dir) / "tiny_llava", texts)
    arguments = dict(stage="sft", do_train=True, model_name_or_path=str(model_dir), template="llava",
                     dataset="sit_vqa", dataset_dir=export_dir, finetuning_type="full", cutoff_len=2048,
                     output_dir=str(Path(work_dir) / "out"), overwrite_cache=True, report_to="none",
                     preprocessing_num_workers=None)
    if media_dir is not None:
        arguments["media_dir"] = media_dir
    model_args, data_args, training_args, _, _ = get_train_args(arguments)
    tokenizer_module = load_tokenizer(model_args)
    tokenizer = tokenizer_module["tokenizer"]
    template = get_template_and_fix_tokenizer(tokenizer, data_args)
    dataset = get_dataset(template, model_args, data_args, training_args, stage="sft", **tokenizer_module)
    train = dataset["train_dataset"]

    failures, expected = [], reported_records(export_dir)
    if not len(train) == len(records) == expected:
        failures.append(f"records: get_dataset {len(train)}, file {len(records)}, join report {expected}")
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    image_counts = sorted({row["input_ids"].count(image_id) for row in train})
    if image_counts != [IMAGE_TOKENS]:
        failures.append(f"<image> tokens per record {image_counts}, expected [{IMAGE_TOKENS}]")
    eos = tokenizer.eos_token
    targets = [r["messages"][1]["content"] for r in records]
    spelled = [supervised_text(tokenizer, row["input_ids"], row["labels"]) for row in train]
    failures += first_differences([s[0] for s in spelled], [" " + t + eos for t in targets])
    failures += first_differences([s[1] for s in spelled], [t + eos for t in targets])
    exact = sum(s[0] == " " + t + eos for s, t in zip(spelled, targets))
    failures += recipe(model_dir, export_dir, Path(work_dir) / "saves", media_dir)
    verdict("LLaMA-Factory", ("llamafactory", "transformers", "torch", "datasets"),
            {"records": len(train), "expected": expected, "labels_exact": exact, "image_tokens": image_counts,
             "media_dir": media_dir is not None}, failures)


def recipe(model_dir: Path, export_dir: str, output_dir: Path, media_dir: str | None) -> list[str]:
    """The README's llamafactory-cli line (model and template swapped for the tiny one), 2 steps."""
    command = [str(Path(sys.executable).parent / "llamafactory-cli"), "train", "--stage", "sft", "--do_train",
               "--model_name_or_path", str(model_dir), "--template", "llava", "--dataset", "sit_vqa",
               "--dataset_dir", export_dir, "--finetuning_type", "lora", "--output_dir", str(output_dir),
               "--max_steps", "2", "--per_device_train_batch_size", "2", "--report_to", "none"]
    if media_dir is not None:
        command += ["--media_dir", media_dir]
    run = subprocess.run(command, capture_output=True, text=True)
    if run.returncode != 0 or not (output_dir / "adapter_model.safetensors").is_file():
        return [f"llamafactory-cli train exit {run.returncode}: {run.stderr[-1500:]}"]
    return []


if __name__ == "__main__":
    main(*sys.argv[1:])
