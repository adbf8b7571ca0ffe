"""ms-swift's own loader and template on a `--format swift` export, as the README's recipe points it.

    python check_swift.py EXPORT_DIR WORK_DIR      # in a venv with ms-swift

Loads the processor of a tiny LLaVA-1.5 directory (tiny_llava.py) with ms-swift's `get_processor` and
`model_type="llava1_5_hf"` (a local directory needs it, as the README says), its `llava1_5_hf` template in train
mode, the JSON Lines file with ms-swift's `load_dataset` (a local path, no registration) and encodes every row with
its `EncodePreprocessor`. Checks: both hold every record the join wrote; each holds as many `<image>` tokens as
the template expands one image to (16 here); its labels are one span that spells " " + target + "</s>" in context
and target + "</s>" decoded alone. Then the README's command itself, `swift sft --model DIR --model_type
llava1_5_hf --tuner_type lora --dataset FILE --output_dir OUT`, for 2 steps: it must exit 0 and save a checkpoint.
"""

import subprocess
import sys
from pathlib import Path

from swift import EncodePreprocessor, get_processor, get_template, load_dataset

from common import first_differences, read_export, reported_records, supervised_text, verdict
from tiny_llava import IMAGE_TOKENS, build_tiny_llava


def main(export_dir: str, work_dir: str) -> None:
    path = str(Path(export_dir) / "sit_vqa.jsonl")
    records = read_export(export_dir, "sit_vqa.jsonl")
    texts = [m["content"].replace("<image>", "") for r in records for m in r["messages"]]
    model_dir = build_tiny_llava(Path(work_dir) / "tiny_llava", texts)
    processor = get_processor(str(model_dir), model_type="llava1_5_hf")
    template = get_template(processor)
    template.set_mode("train")
    train, _ = load_dataset([path])
    encoded = EncodePreprocessor(template)(train, num_proc=1)

    failures, expected = [], reported_records(export_dir)
    if not len(train) == len(encoded) == len(records) == expected:
        failures.append(f"records: load_dataset {len(train)}, encoded {len(encoded)}, file {len(records)}, "
                        f"join report {expected}")
    tokenizer = processor.tokenizer
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    image_counts = sorted({row["input_ids"].count(image_id) for row in encoded})
    if image_counts != [IMAGE_TOKENS]:
        failures.append(f"<image> tokens per record {image_counts}, expected [{IMAGE_TOKENS}]")
    eos = tokenizer.eos_token
    targets = [r["messages"][1]["content"] for r in records]
    spelled = [supervised_text(tokenizer, row["input_ids"], row["labels"]) for row in encoded]
    failures += first_differences([s[0] for s in spelled], [" " + t + eos for t in targets])
    failures += first_differences([s[1] for s in spelled], [t + eos for t in targets])
    exact = sum(s[0] == " " + t + eos for s, t in zip(spelled, targets))
    failures += recipe(model_dir, path, Path(work_dir) / "output")
    verdict("ms-swift", ("ms-swift", "transformers", "torch", "datasets"),
            {"records": len(encoded), "expected": expected, "labels_exact": exact, "image_tokens": image_counts,
             "template": template.template_meta.template_type}, failures)


def recipe(model_dir: Path, dataset: str, output_dir: Path) -> list[str]:
    """The README's swift sft line for a local model directory, 2 steps."""
    command = [str(Path(sys.executable).parent / "swift"), "sft", "--model", str(model_dir),
               "--model_type", "llava1_5_hf", "--tuner_type", "lora", "--dataset", dataset,
               "--output_dir", str(output_dir),
               "--max_steps", "2", "--per_device_train_batch_size", "2", "--report_to", "none"]
    run = subprocess.run(command, capture_output=True, text=True)
    if run.returncode != 0 or not list(output_dir.rglob("adapter_model.safetensors")):
        return [f"swift sft exit {run.returncode}: {run.stderr[-1500:]}"]
    return []


if __name__ == "__main__":
    main(*sys.argv[1:])
