"""Evaluation throughput: questions/s of batched generation, SIT prompt vs baseline prompt.

    python bench/eval_throughput.py --size tiny                # CPU (tiny-t5: the T5 tiny model)
    python bench/eval_throughput.py --size vicuna-7b           # GPU: InstructBLIP-Vicuna-7B, random bf16 weights

Generation is `sit_vqa.modeling.generation.generate_texts`, the function evaluate.py runs: DataLoader over the
records (photo-like 640x480 JPEGs read and preprocessed per question), collator with left padding for
decoder-only LMs, greedy `generate` under bf16 autocast on GPU. Two prompts, alternating in rounds in one
process (median round reported):
- sit:      "First describe the image, then answer ...", --sit-new-tokens (30: "Description: <a COCO
            caption> Answer: <answer>" is ~25-30 LLaMA tokens);
- baseline: "Answer the input question ...", --baseline-new-tokens (5: an answer and its EOS).
Random weights pick EOS only by chance: the 7B models (vocab 32k) generate the full budget, the tiny ones
(vocab ~250) stop earlier now and then; the mean generated length is printed beside each figure.

evaluate.py runs this same generation through `sit_vqa.evaluation.sharded`: under torchrun / accelerate launch each
process generates its share of the batches (the figures here are per process), and every batch's outputs
are appended to OUT/partial/ with one write and one fsync, which these figures leave out.

Full-size models come from bench/train_throughput.py (same architectures, built on the GPU in bf16); their
prompts are tokenized with the tiny word-level tokenizers (ids valid in the real vocabularies), so prompt
lengths are close to, not equal to, the real tokenizers'.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from train_throughput import FULL_SIZE, build
from transformers import BlipImageProcessorPil, InstructBlipProcessor

from sit_vqa.modeling import loading as model_lib
from sit_vqa.modeling.builders_for_tests import write_photo_like_jpegs
from sit_vqa.data.prompts import Templates
from sit_vqa.modeling.generation import GenerationSettings, generate_texts

QUESTIONS = ("What color is the umbrella?", "How many people are in the picture?", "Is the man wearing a hat?",
             "What is the dog doing?", "Where is the bus parked?", "What sport is being played?")


def model_and_processor(size: str, device: torch.device):
    if size in ("tiny", "tiny-t5"):
        model, processor = model_lib.build_tiny_instructblip("decoder" if size == "tiny" else "t5")
        return model.to(device).eval(), processor
    lm_kind = "decoder" if size == "vicuna-7b" else "t5"
    tokenizer = model_lib.build_tiny_word_tokenizer(lm_kind=lm_kind)
    model = build(size, device, torch.bfloat16).eval()
    model.config.image_token_index = tokenizer.convert_tokens_to_ids(model_lib.IMAGE_TOKEN)
    processor = InstructBlipProcessor(
        image_processor=BlipImageProcessorPil(size={"height": 224, "width": 224}), tokenizer=tokenizer,
        qformer_tokenizer=model_lib.build_tiny_qformer_tokenizer(), num_query_tokens=model.config.num_query_tokens,
    )
    return model, processor


def records(kind: str, paths) -> list[dict]:
    templates = Templates()
    return [
        {"instruction": templates.render(kind, question=QUESTIONS[i % len(QUESTIONS)])[0], "image_path": str(path),
         "question_id": i}
        for i, path in enumerate(paths)
    ]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=("tiny", "tiny-t5", *FULL_SIZE), default="tiny")
    parser.add_argument("--questions", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--sit-new-tokens", type=int, default=30)
    parser.add_argument("--baseline-new-tokens", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--image-pipeline", choices=("plain", "fast"), default="plain")
    parser.add_argument("--workdir", default="/tmp/sit_vqa_photos")
    args = parser.parse_args(argv)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu" and args.size not in ("tiny", "tiny-t5"):
        parser.error(f"--size {args.size} needs a CUDA GPU; use --size tiny on CPU")
    model, processor = model_and_processor(args.size, device)
    paths = write_photo_like_jpegs(args.workdir, args.questions, seed=0)
    prompts = {
        "sit": (records("sit", paths), args.sit_new_tokens),
        "baseline": (records("baseline", paths), args.baseline_new_tokens),
    }

    def run(kind: str) -> tuple[float, float]:
        """(questions/s, mean generated tokens per question)."""
        batch, new_tokens = prompts[kind]
        settings = GenerationSettings(batch_size=args.batch_size, max_new_tokens=new_tokens,
                                      image_pipeline=args.image_pipeline)
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        texts = generate_texts(model, processor, batch, settings, progress=False)
        if device.type == "cuda":
            torch.cuda.synchronize()
        rate = len(batch) / (time.perf_counter() - start)
        tokens = [len(processor.tokenizer(text, add_special_tokens=False)["input_ids"]) for text in texts]
        return rate, statistics.fmean(tokens)

    for kind in prompts:  # warm-up
        run(kind)
    rates = {kind: [] for kind in prompts}
    lengths = {}
    for _ in range(args.rounds):
        for kind in prompts:
            rate, lengths[kind] = run(kind)
            rates[kind].append(rate)

    name = torch.cuda.get_device_name() if device.type == "cuda" else f"cpu (torch threads: {torch.get_num_threads()})"
    print(f"device: {name}; size {args.size}; {args.questions} questions, batch {args.batch_size}, greedy, "
          f"image pipeline {args.image_pipeline}; median of {args.rounds} alternating rounds")
    for kind, (_, new_tokens) in prompts.items():
        values = rates[kind]
        print(f"  {kind:<9} {statistics.median(values):7.1f} questions/s  (max {new_tokens} new tokens, "
              f"{lengths[kind]:.1f} generated on average; rounds {min(values):.1f}-{max(values):.1f})")
    ratios = [s / b for s, b in zip(rates["sit"], rates["baseline"])]
    print(f"ratio sit/baseline: {statistics.median(ratios):.2f}x questions/s")


if __name__ == "__main__":
    main()
