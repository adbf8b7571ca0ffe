"""Step time of 2-process DDP (gloo, CPU) with find_unused_parameters True (the Trainer's default) vs False.

    python bench/bench_ddp_find_unused.py                      # Vicuna-7B replica, hidden 256, 4 layers
    python bench/bench_ddp_find_unused.py --hidden 512 --steps 10

The model is the Salesforce/instructblip-vicuna-7b structure (`sit_vqa.modeling.replicas.replica_config`) with the
paper's freezing (Q-Former, query tokens and projection train), on a synthetic SIT-length batch; each step is
forward, backward and AdamW. Both settings run in the same processes, alternating, and the median step times
and their ratio are printed. find_unused_parameters=True walks the autograd graph after every forward to find
parameters without a gradient; this model has none (tests/training/test_scale_costs.py).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from transformers import InstructBlipForConditionalGeneration

from sit_vqa.modeling.loading import configure_trainable
from sit_vqa.modeling.replicas import replica_config


def batch(config, size: int = 2, text: int = 48) -> dict:
    generator = torch.Generator().manual_seed(0)
    queries = config.num_query_tokens
    input_ids = torch.randint(3, 32000, (size, queries + text), generator=generator)
    input_ids[:, :queries] = config.image_token_index
    labels = input_ids.clone()
    labels[:, : queries + text // 2] = -100
    return {
        "pixel_values": torch.randn(size, 3, 224, 224, generator=generator),
        "input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "labels": labels,
        "qformer_input_ids": torch.randint(104, 30000, (size, 16), generator=generator),
        "qformer_attention_mask": torch.ones(size, 16, dtype=torch.long),
    }


def worker(rank: int, args) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(args.port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.manual_seed(0)
    config = replica_config("vicuna-7b", hidden=args.hidden, layers=args.layers)
    inputs = batch(config)
    models = {}
    for find_unused in (True, False):
        model = InstructBlipForConditionalGeneration(config).train()
        configure_trainable(model, quiet=True)
        ddp = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=find_unused)
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
        models[find_unused] = (ddp, optimizer)
    times = {True: [], False: []}
    for step in range(args.warmup + args.steps):
        for find_unused, (ddp, optimizer) in models.items():
            start = time.perf_counter()
            ddp(**inputs).loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if step >= args.warmup:
                times[find_unused].append((time.perf_counter() - start) * 1000)
    if rank == 0:
        before, after = statistics.median(times[True]), statistics.median(times[False])
        params = sum(p.numel() for p in models[True][0].module.parameters())
        print(f"2 ranks (gloo, 1 thread each), {params / 1e6:.1f} M parameters, hidden {args.hidden}, {args.layers} layers")
        print(f"find_unused_parameters=True  (before): {before:7.1f} ms/step")
        print(f"find_unused_parameters=False (after):  {after:7.1f} ms/step")
        print(f"ratio before/after: {before / after:.3f}x")
    dist.destroy_process_group()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--port", type=int, default=29561)
    args = parser.parse_args(argv)
    mp.spawn(worker, args=(args,), nprocs=2, join=True)


if __name__ == "__main__":
    main()
