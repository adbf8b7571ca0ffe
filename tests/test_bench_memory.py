"""bench/memory.py's logic on a tiny replica (its figures: docs/PERFORMANCE.md): every recipe runs in its own child
process through the package's loading path, and the arithmetic that the 7B / 13B tables rest on counts exactly
what the runs hold -- the trainable parameters and the bytes of the weights, bitsandbytes' scales included."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HIDDEN, LAYERS = 64, 2  # a tiny Vicuna-7B replica (heads 2; every Linear a multiple of nf4's 64-weight block)
CELLS = ["bf16-full", "int8-lora", "nf4-full", "nf4-lora"]  # each LLM storage and each Q-Former recipe, in < 60 s


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_memory", REPO / "bench" / "memory.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)  # dataclasses look their module up while the class is made
    spec.loader.exec_module(sys.modules[spec.name])
    return sys.modules[spec.name]


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    out = tmp_path_factory.mktemp("memory")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, str(REPO / "bench" / "memory.py"), "--hidden", str(HIDDEN), "--layers",
                           str(LAYERS), "--cells", *CELLS, "--replica-dir", str(out / "replica"), "--json", str(out / "cells.json")],
                          capture_output=True, text=True, env=env, cwd=out)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((out / "cells.json").read_text()), done.stdout


def test_every_recipe_is_measured_as_it_runs_and_counted_exactly(measured):
    results, stdout = measured
    bench = load_bench()
    counts = bench.count(bench.build_meta(bench.replica_config("vicuna-7b", hidden=HIDDEN, layers=LAYERS)))
    assert [r["cell"] for r in results] == CELLS
    expected_storage = {"bf16": ["bfloat16"], "int8": ["int8"], "nf4": ["uint8"]}
    for r in results:
        llm, qformer = r["cell"].split("-")
        computed = bench.recipe_bytes(counts, llm, qformer)
        assert r["llm_weight_dtypes"] == expected_storage[llm], r  # the LLM really is quantized (or not)
        assert r["trainable_params"] == computed["trainable_params"], r
        assert r["weight_bytes"] == computed["weights"], r
        assert r["step_peak_gib"] > 0 and r["loaded_gib"] > 0 and r["loss"] == r["loss"]  # a finite loss, not NaN
    lora = {r["cell"]: r["trainable_params"] for r in results if r["cell"].endswith("lora")}
    full = {r["cell"]: r["trainable_params"] for r in results if r["cell"].endswith("full")}
    assert max(lora.values()) < min(full.values())
    assert "## instructblip-vicuna-7b" in stdout and "## instructblip-vicuna-13b" in stdout
    assert "| nf4-lora | uint8 |" in stdout and "step peak / bf16-full" in stdout


def test_the_7b_arithmetic_counts_the_hub_models_trained_parameters_and_the_default_lora_placements():
    bench = load_bench()
    counts = bench.count(bench.build_meta(bench.replica_config("vicuna-7b", hidden=None, layers=None)))
    full = bench.recipe_bytes(counts, "bf16", "full")
    assert full["trainable_params"] == 188_834_560  # the hub model's Q-Former + queries + projection
    # r=8 on the 12 self-attention query and value Linears (768 -> 768): 12 * 2 * 8 * (768 + 768)
    assert counts.lora == 294_912
