"""Training throughput, peak memory, FLOPs per sample and MFU: plain baseline vs frozen-ViT feature cache.

    python bench/train_throughput.py --size vicuna-7b          # GPU: InstructBLIP-Vicuna-7B, random bf16 weights
    python bench/train_throughput.py --size flan-t5-xl         # GPU: InstructBLIP-Flan-T5-XL
    python bench/train_throughput.py --size tiny               # CPU dry run (tiny-t5: the T5 tiny model)

(Replaces the earlier GPU training benchmark.) Full-size models are built from their published architectures
(EVA ViT-g/14: 1408 hidden, 39 layers, 224 px; Q-Former: BERT-base, 12 layers, cross-attention every
2nd, 32 queries; Vicuna-7B: LLaMA 4096 x 32 layers, MLP 11008, vocab 32064 (the hub config's: 32003
tokens, padded); Flan-T5-XL: 2048 x 24+24, gated-GELU 5120, vocab 32128) with random weights created directly
on the GPU in bf16: no download, no fp32 copy. They are prepared as train.py prepares them (frozen weights bf16, Q-Former, query tokens and projection
fp32) and each step is forward + backward + AdamW under bf16 autocast on synthetic SIT-length batches
(32 image tokens + instruction + "Description: ... Answer: ..." target).

Two arms in the same process, same model, same batches, alternating in blocks (median block reported):
- baseline: pixel_values in, the frozen ViT runs every step, the attention the config defaults to;
- cached:   the ViT's encoder states come in (sit_vqa.modeling.feature_cache: use_cached_features), as they
            would from the feature cache; with --attention, that attention implementation too.
It prints samples/s, ms/step and peak memory of each arm, the ratio, the model FLOPs per sample
counted from the config (below), and MFU against a bf16 matmul peak measured on the same GPU in the
same run (8192^3 matmuls).

FLOPs per sample (2 x multiply-adds of the matmuls, attention scores included, non-causal count; norms,
softmax and elementwise ops left out):
    ViT        forward only (frozen, no gradient needed; 0 in the cached arm)
    Q-Former   forward + backward (its weights train): 3 x forward
    LLM        forward + the backward to its inputs that the Q-Former's gradient needs (activation
               gradients only, no weight gradients: ~1 x forward): 2 x forward
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
from dataclasses import dataclass

import torch
from transformers import (
    InstructBlipConfig,
    InstructBlipForConditionalGeneration,
)

from sit_vqa.modeling import loading as model_lib
from sit_vqa.modeling.collate import IGNORE_INDEX
from sit_vqa.modeling.feature_cache import encoder_states, use_cached_features
from sit_vqa.modeling.precision import keep_trained_fp32
from sit_vqa.modeling.replicas import replica_config
from sit_vqa.modeling.tiny import build_tiny_instructblip

FULL_SIZE = ("vicuna-7b", "flan-t5-xl")  # the hub checkpoints' structure at full size: sit_vqa.modeling.replicas


# ------------------------------------------------------------------------------------------- models


def build(size: str, device: torch.device, dtype: torch.dtype) -> InstructBlipForConditionalGeneration:
    if size in ("tiny", "tiny-t5"):
        model, _ = build_tiny_instructblip("decoder" if size == "tiny" else "t5")
        model.to(device)
    else:
        config = replica_config(size, hidden=None, layers=None)
        previous = torch.get_default_dtype()
        torch.set_default_dtype(dtype)  # random init straight into the frozen dtype: no fp32 copy of 8B weights
        try:
            with torch.device(device):
                model = InstructBlipForConditionalGeneration(config)
        finally:
            torch.set_default_dtype(previous)
    model_lib.configure_trainable(model, quiet=True)
    keep_trained_fp32(model, dtype)
    return model.train()


def synthetic_batch(model, batch: int, instruction_tokens: int, target_tokens: int, device) -> dict:
    config = model.config
    queries, text_vocab = config.num_query_tokens, config.text_config.vocab_size
    generator = torch.Generator().manual_seed(0)
    image_token = config.image_token_index

    def ids(*shape, high=text_vocab):
        drawn = torch.randint(10, high, shape, generator=generator)
        drawn[drawn == image_token] = 10  # only the query placeholders may be image tokens
        return drawn

    image_size = config.vision_config.image_size
    sample = {
        "pixel_values": torch.randn(batch, 3, image_size, image_size, generator=generator),
        "qformer_input_ids": ids(batch, instruction_tokens, high=config.qformer_config.vocab_size),
        "qformer_attention_mask": torch.ones(batch, instruction_tokens, dtype=torch.long),
    }
    prompt = torch.cat([torch.full((batch, queries), image_token), ids(batch, instruction_tokens)], dim=1)
    target = ids(batch, target_tokens)
    if config.use_decoder_only_language_model:
        sample["input_ids"] = torch.cat([prompt, target], dim=1)
        sample["labels"] = torch.cat([torch.full_like(prompt, IGNORE_INDEX), target], dim=1)
    else:
        sample["input_ids"], sample["labels"] = prompt, target
    sample["attention_mask"] = torch.ones_like(sample["input_ids"])
    return {key: value.to(device) for key, value in sample.items()}


# -------------------------------------------------------------------------------------------- FLOPs


@dataclass(frozen=True)
class Flops:
    vit: float
    qformer: float
    llm: float

    def total(self, cached: bool) -> float:
        return (0.0 if cached else self.vit) + self.qformer + self.llm


def flops_per_sample(config: InstructBlipConfig, instruction_tokens: int, target_tokens: int) -> Flops:
    """Training FLOPs of one sample, counted from the config (see the module docstring)."""
    vision, qformer, text = config.vision_config, config.qformer_config, config.text_config
    patches = (vision.image_size // vision.patch_size) ** 2
    image_tokens = patches + 1
    h, i = vision.hidden_size, vision.intermediate_size
    vit = 2 * patches * 3 * vision.patch_size**2 * h  # patch embedding
    vit += vision.num_hidden_layers * _layer(image_tokens, h, i, image_tokens)

    queries = config.num_query_tokens
    qh, qi = qformer.hidden_size, qformer.intermediate_size
    q_tokens = queries + instruction_tokens
    qformer_forward = 0.0
    for layer in range(qformer.num_hidden_layers):
        qformer_forward += _layer(q_tokens, qh, qi, q_tokens)
        if layer % qformer.cross_attention_frequency == 0:  # queries attend to the image tokens
            qformer_forward += 2 * (2 * queries * qh * qh + 2 * image_tokens * qformer.encoder_hidden_size * qh
                                    + 2 * queries * image_tokens * qh)
    qformer_forward += 2 * queries * qh * text.hidden_size  # language_projection

    prompt = queries + instruction_tokens
    if config.use_decoder_only_language_model:
        tokens = prompt + target_tokens
        mlp = 3 * text.hidden_size * text.intermediate_size  # gate, up, down
        per_layer = 2 * tokens * (4 * text.hidden_size**2 + mlp) + 2 * 2 * tokens * tokens * text.hidden_size
        llm_forward = text.num_hidden_layers * per_layer + 2 * tokens * text.hidden_size * text.vocab_size
    else:
        d, inner = text.d_model, text.num_heads * text.d_kv
        mlp = (3 if text.is_gated_act else 2) * d * text.d_ff
        encoder = text.num_layers * (2 * prompt * (4 * d * inner + mlp) + 4 * prompt * prompt * inner)
        decoder = text.num_decoder_layers * (
            2 * target_tokens * (4 * d * inner + 2 * d * inner + mlp) + 2 * prompt * 2 * d * inner
            + 4 * target_tokens * target_tokens * inner + 4 * target_tokens * prompt * inner
        )
        llm_forward = encoder + decoder + 2 * target_tokens * d * text.vocab_size
    return Flops(vit=float(vit), qformer=3.0 * qformer_forward, llm=2.0 * llm_forward)


def _layer(tokens: int, hidden: int, intermediate: int, attended: int) -> float:
    """A transformer encoder layer: q, k, v, o projections, a 2-matrix MLP, attention scores and sums."""
    return 2 * tokens * (4 * hidden * hidden + 2 * hidden * intermediate) + 2 * 2 * tokens * attended * hidden


def matmul_peak(device: torch.device, size: int = 8192, repeats: int = 20) -> float:
    """Measured bf16 matmul FLOP/s on this GPU (the MFU denominator)."""
    a = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    b = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    torch.cuda.synchronize()
    return 2 * size**3 * repeats / (time.perf_counter() - start)


# -------------------------------------------------------------------------------------------- timing


def make_step(model, device: torch.device):
    """One forward + backward + AdamW update; returns the loss (its .item() synchronises with the GPU)."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5, weight_decay=0.05)

    def step(batch: dict) -> float:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    return step


def time_arms(step, arms: dict, steps: int, rounds: int, device: torch.device) -> dict:
    """{arm: (median seconds per step, peak GPU GiB or nan)}. The arms alternate in `rounds` blocks of
    steps // rounds steps each, so a noisy machine slows both alike; `arms` maps a name to
    (batch, a function that switches the model to that arm)."""
    seconds = {name: [] for name in arms}
    peaks = dict.fromkeys(arms, 0.0)
    per_block = max(steps // rounds, 1)
    for _ in range(rounds):
        for name, (batch, switch) in arms.items():
            switch()
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            for _ in range(per_block):
                step(batch)
            seconds[name].append((time.perf_counter() - start) / per_block)
            if device.type == "cuda":
                peaks[name] = max(peaks[name], torch.cuda.max_memory_allocated() / 2**30)
    return {name: (statistics.median(seconds[name]), peaks[name] if device.type == "cuda" else float("nan"))
            for name in arms}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=("tiny", "tiny-t5", *FULL_SIZE), default="vicuna-7b")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per arm (after --warmup steps)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating blocks per arm; median block reported")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--instruction-tokens", type=int, default=40)
    parser.add_argument("--target-tokens", type=int, default=40)
    parser.add_argument("--attention", default=None, help="cached arm: attn implementation (sdpa, eager, ...)")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu" and args.size not in ("tiny", "tiny-t5"):
        parser.error(f"--size {args.size} needs a CUDA GPU (random weights in bf16); use --size tiny on CPU")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model = build(args.size, device, dtype)
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    counts = model_lib.count_parameters(model)
    batch = synthetic_batch(model, args.batch_size, args.instruction_tokens, args.target_tokens, device)
    flops = flops_per_sample(model.config, args.instruction_tokens, args.target_tokens)

    use_cached_features(model)  # encodes 4-d pixel_values exactly as the ViT itself (tests/modeling/test_feature_cache.py)
    cached_batch = dict(batch, pixel_values=encoder_states(model.vision_model, batch["pixel_values"].to(dtype)).to(dtype))
    default_attention = model.config._attn_implementation
    attention = args.attention or default_attention
    arms = {
        "baseline": (batch, lambda: model.set_attn_implementation(default_attention)),
        "cached": (cached_batch, lambda: model.set_attn_implementation(attention)),
    }
    step = make_step(model, device)
    for batch_of_arm, switch in arms.values():  # warm-up: kernels, allocator, optimizer state
        switch()
        for _ in range(args.warmup):
            step(batch_of_arm)
    timings = time_arms(step, arms, args.steps, args.rounds, device)
    baseline, cached = timings["baseline"], timings["cached"]
    peak_flops = matmul_peak(device) if device.type == "cuda" else None

    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu (1 process, torch threads: " \
        f"{torch.get_num_threads()})"
    print(f"device: {name}; size {args.size}; frozen dtype {dtype}; trainable {counts.trainable:,} / {counts.total:,}")
    print(f"batch {args.batch_size}, LM input {batch['input_ids'].shape[1]} tokens, {args.steps} timed steps per arm "
          f"in {args.rounds} alternating blocks, attention {default_attention} (cached arm: {attention}), "
          f"gradient checkpointing {args.gradient_checkpointing}")
    print(f"model FLOPs per sample: ViT fwd {flops.vit / 1e9:.4g} G, Q-Former fwd+bwd {flops.qformer / 1e9:.4g} G, "
          f"LLM fwd+input-grad {flops.llm / 1e9:.4g} G; total {flops.total(False) / 1e9:.4g} G "
          f"(cached: {flops.total(True) / 1e9:.4g} G)")
    if peak_flops:
        print(f"measured bf16 matmul peak: {peak_flops / 1e12:.0f} TFLOP/s")
    for label, (seconds, peak), is_cached in (("baseline", baseline, False), ("cached", cached, True)):
        rate = args.batch_size / seconds
        line = f"{label:<9} {rate:8.1f} samples/s  {seconds * 1000:7.1f} ms/step"
        if device.type == "cuda":
            line += f"  peak {peak:.1f} GiB  MFU {rate * flops.total(is_cached) / peak_flops:.1%}"
        print(line)
    print(f"ratio cached/baseline: {baseline[0] / cached[0]:.2f}x samples/s")
    if device.type == "cpu":
        print(f"peak RSS of the process (both arms): {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
