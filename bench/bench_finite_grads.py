"""Cost of the non-finite-gradient check per optimizer step: one test per tensor vs one fused pass.

    python bench/bench_finite_grads.py            # the 331 trained tensors (188.8 M values) of InstructBLIP-Vicuna-7B
    python bench/bench_finite_grads.py --repeats 20 --device cuda

The stand-in gradients have the shapes of the parameters train.py trains on the hub model (Q-Former, query
tokens, language projection of `sit_vqa.modeling.replicas.replica_config("vicuna-7b")` at full size, read on the meta
device: no 7B weights are built), filled with random fp32 values. Times, in the same run, the check this
package used before (`isfinite().all()` per tensor, stacked: two kernels per tensor) and
`sit_vqa.training.trainer.gradients_are_finite` (torch's multi-tensor 2-norm, then one isfinite), and prints the median of each
and their ratio.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from transformers import InstructBlipForConditionalGeneration

from sit_vqa.modeling.loading import configure_trainable
from sit_vqa.modeling.replicas import replica_config
from sit_vqa.training.trainer import gradients_are_finite


def trained_shapes() -> list[torch.Size]:
    with torch.device("meta"):
        model = InstructBlipForConditionalGeneration(replica_config("vicuna-7b", hidden=None, layers=None))
    configure_trainable(model, quiet=True)
    return [p.shape for p in model.parameters() if p.requires_grad]


def per_tensor_check(grads: list[torch.Tensor]) -> bool:
    """The check before: one isfinite + all per tensor, then a stack (one device sync)."""
    return bool(torch.stack([g.isfinite().all() for g in grads]).all())


def median_ms(check, grads, repeats: int, device: torch.device) -> float:
    times = []
    for _ in range(repeats + 1):  # the first call warms up
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        assert check(grads)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times[1:])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    shapes = trained_shapes()
    generator = torch.Generator().manual_seed(0)
    grads = [torch.randn(shape, generator=generator).to(device) for shape in shapes]
    values = sum(g.numel() for g in grads)
    print(f"{len(grads)} gradient tensors, {values / 1e6:.1f} M fp32 values, {device}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    before = median_ms(per_tensor_check, grads, args.repeats, device)
    after = median_ms(gradients_are_finite, grads, args.repeats, device)
    print(f"per-tensor isfinite (before): {before:8.1f} ms/step")
    print(f"fused 2-norm (after):          {after:8.1f} ms/step")
    print(f"ratio before/after: {before / after:.1f}x")


if __name__ == "__main__":
    main()
