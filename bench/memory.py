"""Training memory of InstructBLIP-Vicuna recipes: computed for the 7B and 13B structures, measured on a CPU replica.

    ../shared/tools/slot python bench/memory.py   # 7B and 13B tables + the six recipes measured (~1 B replica, ~15 min)
    python bench/memory.py --no-measure           # arithmetic only (seconds)
    python bench/memory.py --cells bf16-full nf4-lora --hidden 1024 --layers 3 --json out.json

Recipes: the frozen LLM in bf16, int8 or nf4 (`quantization_bit: 8 | 4`) x the Q-Former trained whole ("full")
or through LoRA adapters ("lora": `use_lora: true` with the package's default placements and rank).

Computed: the model is built from its config on the meta device (no weights are allocated): the real
Salesforce/instructblip-vicuna-7b structure (sit_vqa.modeling.replicas.replica_config with the hub sizes:
Vicuna-7B 4096 hidden / 32 layers / 11008 FFN / 32000+ vocab, ViT-g 1408 / 39 layers / 6144 FFN, patch 14,
224 px, Q-Former 768 / 12 layers, 32 query tokens, cross-attention every 2 layers) and its 13B sibling
(Vicuna-13B: 5120 / 40 layers / 13824 FFN). Bytes per parameter:

    frozen ViT, frozen Q-Former base (LoRA)     2    (bf16)
    frozen LLM linear weights                   2 bf16 | 1 + 4/row (int8, fp32 row scale) | 0.5 + 4/64 (nf4: fp32
                                                absmax per 64-weight block; quantization.py asks no double quant)
    frozen LLM embeddings, lm_head, norms       2    (bitsandbytes leaves them; lm_head is in the skip list)
    each trainable parameter                    16   (fp32 weight 4 + fp32 grad 4 + AdamW exp_avg 4 + exp_avg_sq 4)

LoRA: adapters on the Linear layers the package's default `lora_target_modules` name (matched by
`sit_vqa.modeling.qformer_lora.lora_target_names`, as a run matches them), r * (in + out) parameters each at the
default rank; the query tokens and the language projection train (`train_query_tokens_and_projection`).
Activations, CUDA context and allocator slack are NOT in the computed figure.

Measured: the replica (same structure, --hidden/--layers for every tower; 2048 / 5: 1.08 B parameters) is
written once with `save_replica` (bf16 safetensors) and each recipe runs in a fresh child process, one after the
other: it loads the directory through the package's own path (`load_base_model` with the recipe's
`ModelArguments`, so bitsandbytes quantizes the LLM while loading; `prepare_for_training`: frozen weights bf16,
trained ones fp32, peft for LoRA or a quantized LLM), then runs one AdamW step under bf16 autocast (batch 1,
32 image + 32 text tokens). Memory is the child's resident set (/proc/self/status), against its own RSS after
its imports (torch, transformers, peft, bitsandbytes, sit_vqa):

    loaded     RSS after loading and preparing - baseline: the model as it sits before the step
    step peak  peak RSS (VmHWM) of the step - baseline; the high-water mark is reset (/proc/self/clear_refs = 5)
               after loading, so the load's transient (bf16 file pages plus their int8/nf4 copies) is not the
               figure -- ru_maxrss cannot be reset, and would report the load for the quantized recipes

A fresh process per recipe keeps one recipe's freed memory (which glibc and PyTorch's allocator rarely return)
out of the next one's figure. Ratios are against bf16-full measured in the same invocation. CPU figures: a GPU
adds its context and allocator slack, and the CPU kernels of bitsandbytes may hold other temporaries than CUDA's.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import InstructBlipForConditionalGeneration, LlamaConfig

from sit_vqa.modeling.arguments import ModelArguments
from sit_vqa.modeling.families import model_family
from sit_vqa.modeling.loading import configure_trainable
from sit_vqa.modeling.qformer_lora import lora_target_names
from sit_vqa.modeling.replicas import replica_config

GIB = 2**30
TRAINABLE_BYTES = 16  # fp32 weight + grad + two AdamW moments
LORA_R = next(f.default for f in dataclasses.fields(ModelArguments) if f.name == "lora_r")  # a run's default rank
LORA_TARGETS = list(model_family("instructblip").default_lora_targets)
VICUNA_13B = dict(hidden_size=5120, intermediate_size=13824, num_hidden_layers=40, num_attention_heads=40)
LLM_BYTES = {  # bytes per weight of a frozen LLM Linear in a decoder layer, plus bytes per output row
    "bf16": (2.0, 0.0),
    "int8": (1.0, 4.0),
    "nf4": (0.5 + 4 / 64, 0.0),
}
QUANTIZATION_BIT = {"bf16": None, "int8": 8, "nf4": 4}
CARDS_GIB = (24, 40, 80)
# The static figure leaves out activations (batch, sequence and gradient checkpointing decide them), the CUDA
# context and allocator slack: a recipe "fits" a card when the static figure takes at most 60% of it, is "tight"
# (small batches, gradient checkpointing) up to 90%, and does not fit above.
FITS, TIGHT = 0.6, 0.9
QFORMER_RECIPES = ("full", "lora")
CELLS = [f"{llm}-{qformer}" for llm in LLM_BYTES for qformer in QFORMER_RECIPES]
REFERENCE_CELL = "bf16-full"


@dataclass(frozen=True)
class Counts:
    vision: int
    qformer: int  # Q-Former body
    query_tokens: int
    projection: int
    llm_linear: int  # weights of the Linear layers inside the decoder layers (what 8/4-bit quantizes)
    llm_linear_rows: int
    llm_other: int  # embeddings, lm_head, norms
    lora: int  # adapters at the default rank and placements

    @property
    def total(self) -> int:
        return self.vision + self.qformer + self.query_tokens + self.projection + self.llm_linear + self.llm_other


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
    modules = dict(model.named_modules())
    lora = sum(LORA_R * (modules[name].in_features + modules[name].out_features)
               for name in lora_target_names(model, LORA_TARGETS))
    return Counts(vision=numel(model.vision_model), qformer=numel(model.qformer),
                  query_tokens=model.query_tokens.numel(), projection=numel(model.language_projection),
                  llm_linear=linear, llm_linear_rows=rows, llm_other=numel(model.language_model) - linear, lora=lora)


def recipe_bytes(c: Counts, llm: str, qformer: str) -> dict[str, float]:
    per_weight, per_row = LLM_BYTES[llm]
    frozen = 2 * c.vision + per_weight * c.llm_linear + per_row * c.llm_linear_rows + 2 * c.llm_other
    if qformer == "full":
        trainable = c.qformer + c.query_tokens + c.projection
    else:
        frozen += 2 * c.qformer  # the base stays, frozen bf16
        trainable = c.lora + c.query_tokens + c.projection
    return dict(frozen=frozen, trainable_params=trainable, train_state=TRAINABLE_BYTES * trainable,
                weights=frozen + 4 * trainable, total=frozen + TRAINABLE_BYTES * trainable)


def fits(total_bytes: float, card_gib: int) -> str:
    share = total_bytes / GIB / card_gib
    return "yes" if share <= FITS else "tight" if share <= TIGHT else "no"


def print_table(name: str, c: Counts) -> None:
    print(f"\n## {name}: {c.total / 1e9:.3f} B parameters (ViT {c.vision / 1e6:.1f} M, Q-Former+queries "
          f"{(c.qformer + c.query_tokens) / 1e6:.1f} M, projection {c.projection / 1e6:.2f} M, LLM "
          f"{(c.llm_linear + c.llm_other) / 1e9:.3f} B of which decoder Linear {c.llm_linear / 1e9:.3f} B; "
          f"LoRA r={LORA_R} on {', '.join(LORA_TARGETS)}: {c.lora / 1e6:.3f} M)")
    cards = " / ".join(str(card) for card in CARDS_GIB)
    print(f"| LLM | Q-Former | frozen GiB | trainable params | weights+grads+AdamW GiB | total GiB (computed, no activations) "
          f"| fits {cards} GiB (static <= {FITS:.0%}: yes, <= {TIGHT:.0%}: tight) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for cell in CELLS:
        llm, qformer = cell.split("-")
        b = recipe_bytes(c, llm, qformer)
        print(f"| {llm} | {qformer} | {b['frozen'] / GIB:.2f} | {b['trainable_params'] / 1e6:.2f} M | "
              f"{b['train_state'] / GIB:.2f} | {b['total'] / GIB:.2f} | "
              f"{' / '.join(fits(b['total'], card) for card in CARDS_GIB)} |")


# ------------------------------------------------------------------------------------------ measured


def cell_arguments(cell: str, replica_dir: str | Path) -> ModelArguments:
    """The run settings of a recipe, as a config file would give them."""
    llm, qformer = cell.split("-")
    return ModelArguments(model_name_or_path=str(replica_dir), model_type="instructblip",
                          quantization_bit=QUANTIZATION_BIT[llm], use_lora=qformer == "lora")


def _rss_gib(key: str) -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(key + ":")) / 2**20


def weight_bytes(model: torch.nn.Module) -> int:
    """Bytes the parameters hold, bitsandbytes' scales included (int8: fp32 SCB per row, on the weight until the
    first forward moves it to the layer's `state`; nf4: fp32 absmax per block, in the weight's quant_state)."""
    held = sum(param.numel() * param.element_size() for param in model.parameters())
    for module in model.modules():
        weight = getattr(module, "weight", None)
        row_scales = getattr(weight, "SCB", None)
        if row_scales is None:
            row_scales = getattr(getattr(module, "state", None), "SCB", None)
        block_scales = getattr(getattr(weight, "quant_state", None), "absmax", None)
        held += sum(s.numel() * s.element_size() for s in (row_scales, block_scales) if s is not None)
    return held


def llm_weight_dtypes(model: torch.nn.Module) -> list[str]:
    """The storage dtypes of the LLM decoder layers' Linear weights (what quantization_bit changes)."""
    return sorted({str(p.dtype).removeprefix("torch.") for name, p in model.named_parameters()
                   if ".language_model." in f".{name}" and ".layers." in name and name.endswith("proj.weight")})


def measure_cell(cell: str, replica_dir: str) -> dict:
    """One recipe in this (fresh) process: load and prepare as a run does, one AdamW step; RSS figures in GiB."""
    import gc

    import bitsandbytes  # noqa: F401  (imported before the baseline, like everything the step needs)
    import peft  # noqa: F401

    from sit_vqa.modeling.loading import count_parameters, load_base_model, prepare_for_training

    baseline = _rss_gib("VmRSS")
    args = cell_arguments(cell, replica_dir)
    model, _ = load_base_model(args, dtype=torch.bfloat16)
    model = prepare_for_training(model, args, torch.bfloat16, quiet=True)
    model.train()
    counts = count_parameters(model)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    gc.collect()
    loaded = _rss_gib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS: the step's peak, not the load's
    config = model.config
    torch.manual_seed(0)
    n_img = config.num_query_tokens
    ids = torch.cat([torch.full((1, n_img), config.image_token_index), torch.randint(3, 1000, (1, 32))], 1)
    size = config.vision_config.image_size
    batch = dict(pixel_values=torch.randn(1, 3, size, size), qformer_input_ids=torch.randint(3, 1000, (1, 16)),
                 input_ids=ids, attention_mask=torch.ones_like(ids), labels=ids.masked_fill(ids == ids[0, 0], -100))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(**batch).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return dict(cell=cell, baseline_gib=baseline, loaded_gib=loaded - baseline, step_peak_gib=_rss_gib("VmHWM") - baseline,
                trainable_params=counts.trainable, total_params=counts.total, weight_bytes=weight_bytes(model),
                llm_weight_dtypes=llm_weight_dtypes(model), loss=float(loss))


def run_cells(cells: list[str], replica_dir: Path) -> list[dict]:
    """Each recipe in a fresh child process, one after the other (a child's JSON is its last stdout line; each is
    also printed to stderr as it comes, so a later failure loses none)."""
    results = []
    for cell in cells:
        print(f"[memory] measuring {cell} ...", file=sys.stderr, flush=True)
        done = subprocess.run([sys.executable, __file__, "--child", cell, "--replica-dir", str(replica_dir)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"bench/memory.py: the {cell} child failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(f"[memory] {json.dumps(results[-1])}", file=sys.stderr, flush=True)
    return results


def print_measured(results: list[dict], c: Counts, hidden: int, layers: int) -> None:
    reference = next((r for r in results if r["cell"] == REFERENCE_CELL), None)
    print(f"\n## measured: replica hidden {hidden}, {layers} layers per tower, {c.total / 1e9:.3f} B parameters; "
          "one AdamW step, batch 1, bf16 autocast, CPU; GiB above the child's RSS after its imports")
    print(f"| recipe | LLM Linear dtype | trainable params (run / computed) | weights GiB (run / computed) | loaded GiB "
          f"| step peak GiB | computed GiB (weights + grads + AdamW) | step peak / {REFERENCE_CELL} |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        computed = recipe_bytes(c, *r["cell"].split("-"))
        ratio = f"{r['step_peak_gib'] / reference['step_peak_gib']:.2f}" if reference else "-"
        print(f"| {r['cell']} | {', '.join(r['llm_weight_dtypes'])} | {r['trainable_params']:,} / "
              f"{computed['trainable_params']:,} | {r['weight_bytes'] / GIB:.3f} / {computed['weights'] / GIB:.3f} | "
              f"{r['loaded_gib']:.2f} | {r['step_peak_gib']:.2f} | {computed['total'] / GIB:.2f} | {ratio} |")


def measure(cells: list[str], hidden: int, layers: int, replica_dir: str | None) -> list[dict]:
    c = count(build_meta(replica_config("vicuna-7b", hidden=hidden, layers=layers)))
    with tempfile.TemporaryDirectory(prefix="memory-replica-") as scratch:
        directory = Path(replica_dir or scratch)
        if not (directory / "config.json").is_file():  # in a child too: this process stays small while cells run
            print(f"[memory] writing the replica to {directory} ...", file=sys.stderr, flush=True)
            subprocess.run([sys.executable, "-c", "import sys, torch; from sit_vqa.modeling.replicas import save_replica; "
                            "save_replica('vicuna-7b', sys.argv[1], hidden=int(sys.argv[2]), layers=int(sys.argv[3]), "
                            "dtype=torch.bfloat16)", str(directory), str(hidden), str(layers)], check=True)
        results = run_cells(cells, directory)
    print_measured(results, c, hidden, layers)
    return results


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=2048, help="measured replica width (default ~1.08 B params)")
    parser.add_argument("--layers", type=int, default=5, help="measured replica depth per tower")
    parser.add_argument("--cells", nargs="+", choices=CELLS, default=CELLS, help="the recipes measured")
    parser.add_argument("--replica-dir", help="where the replica is (written there when missing; default: a "
                        "temporary directory, deleted afterwards)")
    parser.add_argument("--json", help="also write the measured figures here")
    parser.add_argument("--no-measure", action="store_true", help="the arithmetic only")
    parser.add_argument("--child", choices=CELLS, help=argparse.SUPPRESS)  # one recipe, in a fresh process
    return parser


def main(argv: list[str] | None = None) -> None:
    args = make_parser().parse_args(argv)
    if args.child:
        print(json.dumps(measure_cell(args.child, args.replica_dir)))
        return
    config = replica_config("vicuna-7b", hidden=None, layers=None)
    print_table("instructblip-vicuna-7b", count(build_meta(config)))
    config.text_config = LlamaConfig(**{**config.text_config.to_dict(), **VICUNA_13B})
    print_table("instructblip-vicuna-13b", count(build_meta(config)))
    if not args.no_measure:
        results = measure(args.cells, args.hidden, args.layers, args.replica_dir)
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
