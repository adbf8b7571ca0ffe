"""LLaVA's own data code (LazySupervisedDataset / preprocess_v1) on a `--format llava` export.

    python check_llava.py EXPORT_DIR WORK_DIR IMAGE_ROOT     # in a venv with llava-torch

LLaVA's GitHub repository is not reachable here; PyPI's `llava-torch` 1.2.2.post1 is that repository's package
at v1.2.2.post1 (the LLaVA-1.5 code: llava/train/train.py with LazySupervisedDataset and preprocess_v1). Sets
things up as its train.py does for `--version v1` (LLaVA-1.5's finetune script): a slow LlamaTokenizer
(use_fast=False, padding right, pad = unk), the `v1` conversation template, `image_aspect_ratio pad`,
`mm_use_im_start_end False`, `--image_folder IMAGE_ROOT`; the tokenizer is a tiny sentencepiece Llama one
(tiny_llava.build_tokenizer; LLaVA's data code needs no model), and the image processor a 32 px CLIP one.
Checks: the dataset holds every record the join wrote; each item has one image (IMAGE_TOKEN_INDEX once) and
3x32x32 pixels; no "tokenization mismatch" (which would mask the whole record); its labels are one span that
spells " " + target + "</s>" in context and target + "</s>" decoded alone.
"""

import contextlib
import io
import sys
from pathlib import Path

from transformers import CLIPImageProcessor

from llava import conversation as conversation_lib
from llava.constants import IMAGE_TOKEN_INDEX
from llava.train.train import DataArguments, LazySupervisedDataset

from common import first_differences, read_export, reported_records, supervised_text, verdict
from tiny_llava import IMAGE_SIZE, build_tokenizer


def main(export_dir: str, work_dir: str, image_root: str) -> None:
    records = read_export(export_dir, "sit_vqa_llava.json")
    texts = [turn["value"].replace("<image>\n", "") for r in records for turn in r["conversations"]]
    tokenizer = build_tokenizer(Path(work_dir) / "tokenizer", texts)
    tokenizer.padding_side = "right"
    tokenizer.pad_token = tokenizer.unk_token  # train.py, for --version v1
    conversation_lib.default_conversation = conversation_lib.conv_templates["v1"]
    data_args = DataArguments(data_path=str(Path(export_dir) / "sit_vqa_llava.json"), lazy_preprocess=True,
                              is_multimodal=True, image_folder=image_root, image_aspect_ratio="pad")
    data_args.image_processor = CLIPImageProcessor(size={"shortest_edge": IMAGE_SIZE},
                                                   crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    data_args.mm_use_im_start_end = False
    dataset = LazySupervisedDataset(data_args.data_path, tokenizer, data_args)

    failures, expected = [], reported_records(export_dir)
    if not len(dataset) == len(records) == expected:
        failures.append(f"records: LazySupervisedDataset {len(dataset)}, file {len(records)}, join report {expected}")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):  # preprocess_v1 prints its "tokenization mismatch" warnings
        items = [dataset[i] for i in range(len(dataset))]
    mismatches = printed.getvalue().count("tokenization mismatch")
    if mismatches:
        failures.append(f"{mismatches} tokenization mismatches: {printed.getvalue().splitlines()[0]}")
    images = sorted({(item["input_ids"] == IMAGE_TOKEN_INDEX).sum().item() for item in items})
    shapes = sorted({tuple(item["image"].shape) for item in items})
    if images != [1] or shapes != [(3, IMAGE_SIZE, IMAGE_SIZE)]:
        failures.append(f"image tokens per record {images}, pixel shapes {shapes}")
    eos = tokenizer.eos_token
    targets = [r["conversations"][1]["value"] for r in records]
    spelled = []
    for item in items:  # IMAGE_TOKEN_INDEX (-200) is no vocabulary id: decode it as <image>
        ids = [tokenizer.convert_tokens_to_ids("<image>") if i == IMAGE_TOKEN_INDEX else i
               for i in item["input_ids"].tolist()]
        try:
            spelled.append(supervised_text(tokenizer, ids, item["labels"].tolist()))
        except AssertionError as error:
            spelled.append((f"<{error}>", f"<{error}>"))
    failures += first_differences([s[0] for s in spelled], [" " + t + eos for t in targets])
    failures += first_differences([s[1] for s in spelled], [t + eos for t in targets])
    exact = sum(s[0] == " " + t + eos for s, t in zip(spelled, targets))
    verdict("LLaVA", ("llava-torch", "transformers", "tokenizers", "torch"),
            {"records": len(dataset), "expected": expected, "labels_exact": exact, "mismatches": mismatches},
            failures)


if __name__ == "__main__":
    main(*sys.argv[1:])
