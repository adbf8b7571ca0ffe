"""LAVIS's own dataset builder and COCOVQADataset on a `--format lavis` export (written with --image-root).

    python check_lavis.py EXPORT_DIR WORK_DIR IMAGE_ROOT     # in a venv with salesforce-lavis

PyPI's salesforce-lavis is 1.0.2, which predates InstructBLIP: it has no `coco_vqa_instruct` builder (the one the
README's recipe names, on LAVIS's GitHub main). This runs its `coco_vqa` builder, whose train split is the same
COCOVQADataset, the README's way: the builder's default config merged with the recipe's `datasets:` section
(annotation `url` and `storage` both the export, images `storage` the image root, the README's identity text
processor `sit_verbatim` registered by the README's line). 1.0.2's default config also lists val and test splits
(downloads); main's coco_vqa_instruct has train only, so they are dropped here. Checks: the builder's train split
holds every record the join wrote; each item's `text_input` is the instruction verbatim and its `answers` /
`weights` are [target] / [1.0]; `displ_item` (which reads question_id) works; the collater batches them. The
labels here are the answer strings: LAVIS tokenizes them inside the model (not in 1.0.2 for InstructBLIP).
Also counts how many instructions LAVIS's own `blip_question` processor (BLIP's VQA fine-tuning) would change.
"""

import sys
from pathlib import Path

from omegaconf import OmegaConf

import lavis  # noqa: F401  (registers LAVIS's builders and processors)
from lavis.common.registry import registry
from lavis.processors.base_processor import BaseProcessor

from common import read_export, reported_records, verdict

# the README's line: an identity processor, so that the instruction reaches the model as written
registry.register_processor("sit_verbatim")(type("SitVerbatim", (BaseProcessor,), {}))


def build_train_split(annotations: str, image_root: str):
    builder_class = registry.get_builder_class("coco_vqa")
    default = OmegaConf.load(builder_class.default_config_path()).datasets.coco_vqa
    recipe = OmegaConf.create({
        "vis_processor": {"train": {"name": "blip_image_train", "image_size": 32}},
        "text_processor": {"train": {"name": "sit_verbatim"}, "eval": {"name": "sit_verbatim"}},
        "build_info": {"annotations": {"train": {"url": [annotations], "storage": [annotations]}},
                       "images": {"storage": image_root}}})
    config = OmegaConf.merge(default, recipe)
    for split in ("val", "test"):  # 1.0.2's default only; LAVIS main's coco_vqa_instruct lists train alone
        config.build_info.annotations.pop(split)
    return builder_class(config).build_datasets()["train"]


def main(export_dir: str, work_dir: str, image_root: str) -> None:
    annotations = str(Path(export_dir) / "sit_vqa_lavis.json")
    records = read_export(export_dir, "sit_vqa_lavis.json")
    train = build_train_split(annotations, image_root)
    failures, expected = [], reported_records(export_dir)
    if not len(train) == len(records) == expected:
        failures.append(f"records: builder {len(train)}, file {len(records)}, join report {expected}")
    items = [train[i] for i in range(len(train))]
    verbatim = sum(item["text_input"] == r["question"] for item, r in zip(items, records))
    exact = sum(item["answers"] == r["answer"] and item["weights"] == [1.0] for item, r in zip(items, records))
    if verbatim != len(records) or exact != len(records):
        failures.append(f"instructions verbatim {verbatim}/{len(records)}, answers exact {exact}/{len(records)}")
    shown = train.displ_item(0)
    if shown["question_id"] != records[0]["question_id"]:
        failures.append(f"displ_item question_id {shown['question_id']!r}")
    batch = train.collater(items[:8])
    if list(batch["image"].shape) != [8, 3, 32, 32] or batch["answer"] != [r["answer"][0] for r in records[:8]]:
        failures.append(f"collater: image {list(batch['image'].shape)}, answers {batch['answer'][:2]}")
    rewrite = registry.get_processor_class("blip_question").from_config()
    rewritten = sum(rewrite(r["question"]) != r["question"] for r in records)
    verdict("LAVIS", ("salesforce-lavis", "transformers", "torch", "torchvision"),
            {"records": len(train), "expected": expected, "instructions_verbatim": verbatim, "answers_exact": exact,
             "blip_question_rewrites": rewritten, "example_rewritten": rewrite(records[0]["question"])}, failures)


if __name__ == "__main__":
    main(*sys.argv[1:])
