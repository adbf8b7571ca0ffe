"""TRL's own SFT path on a `--format trl` export, as the README's TRL recipe runs it.

    python check_trl.py EXPORT_DIR WORK_DIR      # in a venv with trl (run.sh builds /work/venvs/trl)

Loads the JSON Lines with `datasets.load_dataset("json")`, casts `images` to images (the README's lines), builds
`trl.SFTTrainer` with `SFTConfig(assistant_only_loss=True)` on a tiny LLaVA-1.5 (tiny_llava.py), and checks:
the trainer's dataset holds every record the join wrote; the trainer's own collator, on every record in order,
keeps exactly one span of labels that spells " " + target + "</s>" in context (the space after "ASSISTANT:" is
the answer's first character, fused into its first token) and target + "</s>" decoded alone; two training steps
give a finite loss and change the weights.
"""

import math
import sys
from pathlib import Path

import datasets
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor
from trl import SFTConfig, SFTTrainer

from common import first_differences, read_export, reported_records, supervised_text, verdict
from tiny_llava import build_tiny_llava

BATCH = 16


def main(export_dir: str, work_dir: str) -> None:
    records = read_export(export_dir, "sit_vqa.jsonl")
    texts = [part["text"] for r in records for m in r["messages"] for part in m["content"] if part["type"] == "text"]
    model_dir = build_tiny_llava(Path(work_dir) / "tiny_llava", texts)
    dataset = (datasets.load_dataset("json", data_files=str(Path(export_dir) / "sit_vqa.jsonl"), split="train")
               .cast_column("images", datasets.Sequence(datasets.Image())))
    processor = AutoProcessor.from_pretrained(model_dir)
    model = AutoModelForImageTextToText.from_pretrained(model_dir)
    args = SFTConfig(output_dir=str(Path(work_dir) / "out"), assistant_only_loss=True, max_steps=2,
                     per_device_train_batch_size=4, learning_rate=1e-3, report_to="none", save_strategy="no",
                     use_cpu=True, bf16=False, logging_steps=1, seed=0)  # SFTConfig defaults to bf16
    trainer = SFTTrainer(model=model, processing_class=processor, train_dataset=dataset, args=args)
    failures, expected = [], reported_records(export_dir)
    loaded = len(trainer.train_dataset)
    if not loaded == len(records) == expected:
        failures.append(f"records: trainer {loaded}, file {len(records)}, join report {expected}")

    eos = processor.tokenizer.eos_token
    targets = [r["messages"][1]["content"][0]["text"] for r in records]
    in_context, alone = [], []
    for start in range(0, loaded, BATCH):
        rows = [trainer.train_dataset[i] for i in range(start, min(start + BATCH, loaded))]
        batch = trainer.data_collator([{"messages": row["messages"], "images": row["images"]} for row in rows])
        for ids, labels in zip(batch["input_ids"].tolist(), batch["labels"].tolist()):
            spelled, decoded = supervised_text(processor.tokenizer, ids, labels)
            in_context.append(spelled)
            alone.append(decoded)
    failures += first_differences(in_context, [" " + t + eos for t in targets])
    failures += first_differences(alone, [t + eos for t in targets])
    exact = sum(got == " " + t + eos for got, t in zip(in_context, targets))

    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer.train()
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    changed = sum(not torch.equal(before[n], p) for n, p in model.named_parameters())
    if len(losses) != 2 or not all(math.isfinite(loss) for loss in losses) or not changed:
        failures.append(f"training: losses {losses}, tensors changed {changed}")
    verdict("TRL", ("trl", "transformers", "torch", "datasets"),
            {"records": loaded, "expected": expected, "labels_exact": exact, "losses": losses}, failures)


if __name__ == "__main__":
    main(*sys.argv[1:])
