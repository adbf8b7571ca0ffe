"""Training memory of InstructBLIP-Vicuna recipes: computed from the real structure, measured on a CPU replica.

    python bench/memory.py                       # 7B and 13B tables + one measured step (~1 B replica)
    python bench/memory.py --no-measure          # arithmetic only (seconds)
    python bench/memory.py --hidden 1536 --layers 4

Computed: the model is built from its config on the meta device (no weights are allocated): the real
Salesforce/instructblip-vicuna-7b structure (sit_vqa.modeling.replicas.replica_config with the hub sizes:
Vicuna-7B 4096 hidden / 32 layers / 11008 FFN / 32000+ vocab, ViT-g 1408 / 39 layers / 6144 FFN, patch 14,
224 px, Q-Former 768 / 12 layers, 32 query tokens, cross-attention every 2 layers) and its 13B sibling
(Vicuna-13B: 5120 / 40 layers / 13824 FFN). Bytes per parameter:

    frozen ViT, frozen Q-Former base (LoRA)     2    (bf16)
    frozen LLM linear weights                   2 bf16 | 1 + 4/row (int8, fp32 row scale) | 0.5 + 1/64 + 4/(64*256) (nf4, double quant)
    frozen LLM embeddings, lm_head, norms       2    (kept bf16 by bitsandbytes' defaults)
    each trainable parameter                    16   (fp32 weight 4 + fp32 grad 4 + AdamW exp_avg 4 + exp_avg_sq 4)

LoRA Q-Former: r=8 adapters on every `query` and `value` Linear of the Q-Former's self- and cross-attention,
r * (in + out) parameters each, counted from the module shapes; query tokens and language projection train.
Activations, CUDA context and allocator slack are NOT in the computed figure.

Measured: a fresh subprocess builds a scaled replica (same code, --hidden/--layers for every tower),
frozen weights bf16, trainable fp32 (as run_training), runs one AdamW step under bf16 autocast on the CPU
(batch 1) and reports peak RSS (ru_maxrss) minus the RSS before the model was built, beside the same
arithmetic for that replica.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import dataclass

import torch
from transformers import InstructBlipForConditionalGeneration, LlamaConfig

from sit_vqa.modeling.loading import configure_trainable
from sit_vqa.modeling.replicas import replica_config

GIB = 2**30
TRAINABLE_BYTES = 16  # fp32 weight + grad + two AdamW moments
LORA_R = 8
LORA_TARGETS = ("query", "value")
VICUNA_13B = dict(hidden_size=5120, intermediate_size=13824, num_hidden_layers=40, num_attention_heads=40)
LLM_BYTES = {  # bytes per weight of a frozen LLM Linear in a decoder layer, plus bytes per output row
    "bf16": (2.0, 0.0),
    "int8": (1.0, 4.0),
    "nf4": (0.5 + 1 / 64 + 4 / (64 * 256), 0.0),
}


@dataclass(frozen=True)
class Counts:
    vision: int
    qformer: int  # Q-Former body + query tokens
    projection: int
    llm_linear: int  # weights of the Linear layers inside the decoder layers (what 8/4-bit quantizes)
    llm_linear_rows: int
    llm_other: int  # embeddings, lm_head, norms
    lora: int  # r=8 adapters on the Q-Former's query/value Linears

    @property
    def total(self) -> int:
        return self.vision + self.qformer + self.projection + self.llm_linear + self.llm_other


def build_meta(config) -> InstructBlipForConditionalGeneration:
    with torch.device("meta"):
        model = InstructBlipForConditionalGeneration(config)
    configure_trainable(model, quiet=True)
    return model


def count(model: InstructBlipForConditionalGeneration) -> Counts:
    numel = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    linear, rows = 0, 0
    for module in model.language_model.model.layers.modules():
        if isinstance(module, torch.nn.Linear):
            linear += module.weight.numel()
            rows += module.weight.shape[0]
    lora = sum(LORA_R * (m.in_features + m.out_features) for name, m in model.qformer.named_modules()
               if isinstance(m, torch.nn.Linear) and name.split(".")[-1] in LORA_TARGETS)
    llm = numel(model.language_model)
    return Counts(vision=numel(model.vision_model), qformer=numel(model.qformer) + model.query_tokens.numel(),
                  projection=numel(model.language_projection), llm_linear=linear, llm_linear_rows=rows,
                  llm_other=llm - linear, lora=lora)


def recipe_bytes(c: Counts, llm: str, qformer: str) -> dict[str, float]:
    per_weight, per_row = LLM_BYTES[llm]
    frozen = 2 * c.vision + per_weight * c.llm_linear + per_row * c.llm_linear_rows + 2 * c.llm_other
    if qformer == "full":
        trainable = c.qformer + c.projection
    else:
        frozen += 2 * (c.qformer - 32 * 768)  # the base stays, frozen bf16; query tokens train
        trainable = c.lora + 32 * 768 + c.projection
    return dict(frozen=frozen, trainable_params=trainable, train_state=TRAINABLE_BYTES * trainable,
                total=frozen + TRAINABLE_BYTES * trainable)


def print_table(name: str, c: Counts) -> None:
    print(f"\n## {name}: {c.total / 1e9:.3f} B parameters (ViT {c.vision / 1e6:.1f} M, Q-Former+queries "
          f"{c.qformer / 1e6:.1f} M, projection {c.projection / 1e6:.2f} M, LLM {(c.llm_linear + c.llm_other) / 1e9:.3f} B"
          f" of which decoder Linear {c.llm_linear / 1e9:.3f} B; LoRA r={LORA_R} q/v adapters {c.lora / 1e6:.3f} M)")
    print("| LLM | Q-Former | frozen GiB | trainable params | weights+grads+AdamW GiB | total GiB (computed, no activations) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for llm in LLM_BYTES:
        for qformer in ("full", "lora"):
            b = recipe_bytes(c, llm, qformer)
            print(f"| {llm} | {qformer} | {b['frozen'] / GIB:.2f} | {b['trainable_params'] / 1e6:.2f} M | "
                  f"{b['train_state'] / GIB:.2f} | {b['total'] / GIB:.2f} |")


CHILD = r"""
import json, resource, sys, torch
from transformers import InstructBlipForConditionalGeneration
from sit_vqa.modeling.loading import configure_trainable
from sit_vqa.modeling.replicas import replica_config
hidden, layers = int(sys.argv[1]), int(sys.argv[2])
torch.manual_seed(0)
def rss():  # GiB; ru_maxrss is KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
def current():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS:")) / 2**20
base = current()
torch.set_default_dtype(torch.bfloat16)
model = InstructBlipForConditionalGeneration(replica_config("vicuna-7b", hidden=hidden, layers=layers))
torch.set_default_dtype(torch.float32)
configure_trainable(model, quiet=True)
for p in model.parameters():
    if p.requires_grad:
        p.data = p.data.float()  # trainable weights stay fp32, as in run_training
optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
n_img = model.config.num_query_tokens
ids = torch.cat([torch.full((1, n_img), model.config.image_token_index), torch.randint(3, 1000, (1, 32))], 1)
batch = dict(pixel_values=torch.randn(1, 3, 224, 224), qformer_input_ids=torch.randint(3, 1000, (1, 16)),
             input_ids=ids, attention_mask=torch.ones_like(ids), labels=ids.masked_fill(ids >= 32000, -100))
with torch.autocast("cpu", dtype=torch.bfloat16):
    loss = model(**batch).loss
loss.backward()
optimizer.step()
print(json.dumps(dict(base_gib=base, peak_gib=rss(), loss=float(loss))))
"""


def measure(hidden: int, layers: int) -> None:
    config = replica_config("vicuna-7b", hidden=hidden, layers=layers)
    c = count(build_meta(config))
    computed = recipe_bytes(c, "bf16", "full")["total"] / GIB
    out = subprocess.run([sys.executable, "-c", CHILD, str(hidden), str(layers)], check=True,
                         capture_output=True, text=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    measured = result["peak_gib"] - result["base_gib"]
    print(f"\n## measured: replica hidden {hidden}, {layers} layers per tower, {c.total / 1e9:.3f} B parameters, "
          f"bf16 frozen + full Q-Former ({(c.qformer + c.projection) / 1e6:.1f} M trainable), one AdamW step, batch 1, CPU")
    print(f"peak RSS above baseline {measured:.2f} GiB (measured) | {computed:.2f} GiB (computed, no activations)"
          f" | ratio measured/computed {measured / computed:.2f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=2048, help="measured replica width (default ~1.1 B params)")
    parser.add_argument("--layers", type=int, default=5, help="measured replica depth per tower")
    parser.add_argument("--no-measure", action="store_true")
    args = parser.parse_args(argv)
    config = replica_config("vicuna-7b", hidden=None, layers=None)
    print_table("instructblip-vicuna-7b", count(build_meta(config)))
    config.text_config = LlamaConfig(**{**config.text_config.to_dict(), **VICUNA_13B})
    print_table("instructblip-vicuna-13b", count(build_meta(config)))
    if not args.no_measure:
        measure(args.hidden, args.layers)


if __name__ == "__main__":
    main()
