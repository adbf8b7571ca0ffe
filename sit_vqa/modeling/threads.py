"""How many intra-op CPU threads a run uses: decided here, once, for training and evaluation.

PyTorch starts one intra-op thread per core. A small model's matmuls are too short for a second thread to pay
for its synchronisation, and where two runs share a 2-core machine the OpenMP threads spin for each other's
cores: two quickstarts side by side ran at 0.35 steps/s each against 10 steps/s alone (issue #28;
bench/threads.py measures it). So a small model on the CPU runs on one thread unless the user says otherwise.
"""

from __future__ import annotations

import logging
import os

import torch

logger = logging.getLogger(__name__)

# Below this many weights a second intra-op thread gains nothing on a CPU (the quickstart: 0.38 M; the tiny
# replicas of real checkpoints: a few M). The ~1 B replicas of bench/memory.py keep PyTorch's default.
SMALL_MODEL_PARAMETERS = 50_000_000


def cpu_threads_for(model: torch.nn.Module, device: str | torch.device, configured: int | None) -> tuple[int | None, str]:
    """(threads, why): the intra-op thread count to set (None: leave PyTorch's choice) and the reason, for the log.
    The config's cpu_threads wins, then OMP_NUM_THREADS, then the rule for small models on the CPU."""
    if configured is not None:
        return configured, "cpu_threads in the config"
    if os.environ.get("OMP_NUM_THREADS"):
        return None, f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}"
    if torch.device(device).type != "cpu":
        return None, f"PyTorch's default (the model runs on {device})"
    weights = sum(parameter.numel() for parameter in model.parameters())
    if weights < SMALL_MODEL_PARAMETERS:
        return 1, (f"a small model ({weights / 1e6:.2f} M weights) gains nothing from a second thread; set "
                   "cpu_threads or OMP_NUM_THREADS to change it")
    return None, "PyTorch's default"


def use_cpu_threads(model: torch.nn.Module, device: str | torch.device, configured: int | None) -> None:
    """Set (and log) the intra-op thread count for `model` running on `device`."""
    threads, why = cpu_threads_for(model, device, configured)
    if threads is not None:
        torch.set_num_threads(threads)
    logger.info("CPU intra-op threads: %d (%s)", torch.get_num_threads(), why)
