"""Training throughput and peak memory of a full-size InstructBLIP-Vicuna-7B in the paper's setting (GPU).

    python bench/bench_train_gpu.py                    # 7B, bf16, batch 16, on the GPU (random weights, no download)
    python bench/bench_train_gpu.py --size tiny        # the same code path on CPU with the tiny model (a dry run)

The model has the structure of the hub checkpoint (`sit_vqa.replicas.replica_config("vicuna-7b")` at full size:
EVA ViT-g/14 at 224 px, a 12-layer Q-Former with 32 query tokens, the LLaMA-7B/Vicuna text model with vocab
32064, [PAD] 32000, <image> 32001 and the hub's config ids), with random weights directly on the device, frozen weights in
bf16 and the trained ones (Q-Former, query tokens, language projection) in fp32, exactly as train.py
prepares it (`sit_vqa.model.prepare_for_training`). Each step is one forward/backward/AdamW update under
bf16 autocast on a batch of SIT-length samples (32 image tokens + instruction + "Description: ...
Answer: ..." target). Prints samples/s over the timed steps and the peak GPU memory.
"""

from __future__ import annotations

import argparse
import time

import torch
from transformers import InstructBlipForConditionalGeneration

from sit_vqa import model as model_lib
from sit_vqa.precision import keep_trained_fp32
from sit_vqa.collate import IGNORE_INDEX
from sit_vqa.replicas import VICUNA_IDS, replica_config

SIZES = {"7b": dict(hidden=None, layers=None), "tiny": dict(hidden=32, layers=2)}  # None: the hub's sizes


def build(size: str, device: torch.device, dtype: torch.dtype) -> InstructBlipForConditionalGeneration:
    """The Salesforce/instructblip-vicuna-7b structure (sit_vqa.replicas: vocab 32064, pad 32000, <image>
    32001, the hub's config ids), at full or tiny size, frozen / trained as train.py prepares it."""
    config = replica_config("vicuna-7b", **SIZES[size])
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # random init straight into the frozen dtype: no fp32 copy of 7B weights
    try:
        with torch.device(device):
            model = InstructBlipForConditionalGeneration(config)
    finally:
        torch.set_default_dtype(previous)
    model_lib.configure_trainable(model)
    keep_trained_fp32(model, dtype)
    return model.train()


def synthetic_batch(config, batch: int, instruction_tokens: int, target_tokens: int, device) -> dict:
    queries = config.num_query_tokens
    length = queries + instruction_tokens + target_tokens
    # text ids below the tokenizer's 32000 pieces (never [PAD] or <image>), ending in its EOS "</s>" = 2
    input_ids = torch.randint(3, VICUNA_IDS["pad"], (batch, length), device=device)
    input_ids[:, :queries] = config.image_token_index
    input_ids[:, -1] = 2
    labels = input_ids.clone()
    labels[:, : queries + instruction_tokens] = IGNORE_INDEX
    image_size = config.vision_config.image_size
    qformer_vocab = config.qformer_config.vocab_size
    return {
        "pixel_values": torch.randn(batch, 3, image_size, image_size, device=device),
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
        "qformer_input_ids": torch.randint(104, qformer_vocab - 1, (batch, instruction_tokens), device=device),
        "qformer_attention_mask": torch.ones(batch, instruction_tokens, dtype=torch.long, device=device),
        "labels": labels,
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=("7b", "tiny"), default="7b")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10, help="timed steps (after --warmup steps)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--instruction-tokens", type=int, default=40)
    parser.add_argument("--target-tokens", type=int, default=40)
    parser.add_argument("--gradient-checkpointing", action="store_true")
    args = parser.parse_args(argv)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model = build(args.size, device, dtype)
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    counts = model_lib.count_parameters(model)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5, weight_decay=0.05)
    batch = synthetic_batch(model.config, args.batch_size, args.instruction_tokens, args.target_tokens, device)

    def step() -> float:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()  # .item() synchronises, so the wall clock covers the GPU work

    for _ in range(args.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    losses = [step() for _ in range(args.steps)]
    elapsed = time.perf_counter() - start

    print(f"device: {torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}; size {args.size}; "
          f"frozen dtype {dtype}; trainable {counts.trainable:,} / total {counts.total:,}")
    print(f"batch {args.batch_size}, sequence {batch['input_ids'].shape[1]} tokens, "
          f"gradient checkpointing {args.gradient_checkpointing}; final loss {losses[-1]:.3f}")
    print(f"samples/s: {args.batch_size * args.steps / elapsed:.1f}  ({elapsed / args.steps * 1000:.0f} ms/step)")
    if device.type == "cuda":
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB allocated, "
              f"{torch.cuda.max_memory_reserved() / 2**30:.1f} GiB reserved")


if __name__ == "__main__":
    main()
