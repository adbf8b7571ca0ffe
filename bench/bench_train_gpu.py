"""Training throughput and peak memory of a full-size InstructBLIP-Vicuna-7B in the paper's setting (GPU).

    python bench/bench_train_gpu.py                    # 7B, bf16, batch 16, on the GPU (random weights, no download)
    python bench/bench_train_gpu.py --size tiny        # the same code path on CPU with the tiny model (a dry run)

The model is built from the published architecture numbers (EVA ViT-g/14 at 224 px, a 12-layer Q-Former with
32 query tokens, LLaMA-7B/Vicuna text model) with random weights directly on the device, frozen weights in
bf16 and the trained ones (Q-Former, query tokens, language projection) in fp32, exactly as train.py
prepares it (`sit_vqa.loading.prepare_for_training`). Each step is one forward/backward/AdamW update under
bf16 autocast on a batch of SIT-length samples (32 image tokens + instruction + "Description: ...
Answer: ..." target). Prints samples/s over the timed steps and the peak GPU memory.
"""

from __future__ import annotations

import argparse
import time

import torch
from transformers import (
    InstructBlipConfig,
    InstructBlipForConditionalGeneration,
    InstructBlipQFormerConfig,
    InstructBlipVisionConfig,
    LlamaConfig,
)

from sit_vqa import model as model_lib
from sit_vqa.collate import IGNORE_INDEX

VICUNA_7B = dict(
    vision=dict(hidden_size=1408, intermediate_size=6144, num_hidden_layers=39, num_attention_heads=16,
                image_size=224, patch_size=14),
    qformer=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                 encoder_hidden_size=1408, vocab_size=30523, cross_attention_frequency=2),
    text=dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
              vocab_size=32001, max_position_embeddings=2048),
    num_query_tokens=32,
)
TINY = dict(
    vision=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                image_size=32, patch_size=8),
    qformer=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                 encoder_hidden_size=32, vocab_size=100, cross_attention_frequency=1),
    text=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
              vocab_size=100, max_position_embeddings=512),
    num_query_tokens=4,
)
IMAGE_TOKEN_ID = 3  # any id outside the synthetic text range below


def build(sizes: dict, device: torch.device, dtype: torch.dtype) -> InstructBlipForConditionalGeneration:
    config = InstructBlipConfig(
        vision_config=InstructBlipVisionConfig(**sizes["vision"]),
        qformer_config=InstructBlipQFormerConfig(**sizes["qformer"]),
        text_config=LlamaConfig(**sizes["text"], pad_token_id=0, bos_token_id=1, eos_token_id=2),
        num_query_tokens=sizes["num_query_tokens"],
        image_token_index=IMAGE_TOKEN_ID,
    )
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # random init straight into the frozen dtype: no fp32 copy of 7B weights
    try:
        with torch.device(device):
            model = InstructBlipForConditionalGeneration(config)
    finally:
        torch.set_default_dtype(previous)
    model_lib.configure_trainable(model)
    model_lib.set_precision(model, dtype)
    return model.train()


def synthetic_batch(sizes: dict, batch: int, instruction_tokens: int, target_tokens: int, device) -> dict:
    queries = sizes["num_query_tokens"]
    text_vocab = sizes["text"]["vocab_size"]
    length = queries + instruction_tokens + target_tokens
    input_ids = torch.randint(10, text_vocab, (batch, length), device=device)
    input_ids[:, :queries] = IMAGE_TOKEN_ID
    labels = input_ids.clone()
    labels[:, : queries + instruction_tokens] = IGNORE_INDEX
    image_size = sizes["vision"]["image_size"]
    return {
        "pixel_values": torch.randn(batch, 3, image_size, image_size, device=device),
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
        "qformer_input_ids": torch.randint(10, sizes["qformer"]["vocab_size"], (batch, instruction_tokens), device=device),
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

    sizes = VICUNA_7B if args.size == "7b" else TINY
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model = build(sizes, device, dtype)
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    counts = model_lib.count_parameters(model)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5, weight_decay=0.05)
    batch = synthetic_batch(sizes, args.batch_size, args.instruction_tokens, args.target_tokens, device)

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
