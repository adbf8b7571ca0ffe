"""Costs that show only at scale, checked for correctness here (their figures: bench/bench_finite_grads.py,
bench/bench_load_memory.py): DDP without the unused-parameter search, the fused non-finite-gradient check,
loading in the final dtype onto the device, checkpoint files that follow the umask."""

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from sit_vqa.modeling.collate import SampleTransform
from sit_vqa.config import load_config
from sit_vqa.modeling.loading import apply_lora, configure_trainable, load_instructblip
from sit_vqa.modeling.tiny import build_tiny_causal_lm, build_tiny_instructblip
from sit_vqa.training.trainer import gradients_are_finite

REPO = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------------- DDP find_unused_parameters


def params_without_gradient(model, batch) -> list[str]:
    model.train()
    model(**batch).loss.backward()
    return [name for name, p in model.named_parameters() if p.requires_grad and p.grad is None]


@pytest.mark.parametrize("lm_kind", ["decoder", "t5"])
@pytest.mark.parametrize("policy", [{}, {"train_vision_post_layernorm": True}, {"train_all": True}])
def test_every_trained_instructblip_parameter_gets_a_gradient(lm_kind, policy):
    """What makes ddp_find_unused_parameters: false right for every freezing policy."""
    model, processor = build_tiny_instructblip(lm_kind)
    configure_trainable(model, quiet=True, **policy)
    transform = SampleTransform.for_model(model, processor)
    record = {"instruction": "what color is the circle?", "target": "red", "image": Image.new("RGB", (32, 32))}
    assert params_without_gradient(model, transform.collator()([transform(record)])) == []


def test_every_lora_parameter_gets_a_gradient():
    model, tokenizer = build_tiny_causal_lm()
    model = apply_lora(model)
    transform = SampleTransform.for_model(model, tokenizer)
    batch = transform.collator()([transform({"instruction": "Say hi.", "target": "hi"})])
    assert params_without_gradient(model, batch) == []


def test_ddp_does_not_search_for_unused_parameters_unless_asked():
    assert load_config(REPO / "configs" / "quickstart.yaml").training.ddp_find_unused_parameters is False
    overridden = load_config(REPO / "configs" / "quickstart.yaml", ["--ddp_find_unused_parameters", "true"])
    assert overridden.training.ddp_find_unused_parameters is True


# ---------------------------------------------------------------------------- non-finite gradients


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("where", [0, 7, 19])
def test_the_fused_check_finds_one_bad_value_among_many_tensors(bad, where):
    grads = [torch.randn(5, 3) * 100 for _ in range(20)]
    grads[where][2, 1] = bad
    assert not gradients_are_finite(grads)


def test_the_fused_check_passes_finite_gradients_of_mixed_dtypes():
    grads = [torch.randn(4, 4), torch.randn(8).bfloat16(), torch.full((3,), 1e15)]
    assert gradients_are_finite(grads)


# --------------------------------------------------------------------------------- loading dtype


def test_loading_puts_frozen_weights_in_their_final_dtype_on_the_device(replica_dirs):
    model, _ = load_instructblip(replica_dirs["vicuna-7b"], dtype=torch.bfloat16, device="cpu")
    assert model.language_model.model.layers[0].mlp.down_proj.weight.dtype == torch.bfloat16
    assert model.vision_model.embeddings.patch_embedding.weight.dtype == torch.bfloat16
    assert model.query_tokens.dtype == torch.float32  # _keep_in_fp32_modules, also for bf16
    assert {p.device.type for p in model.parameters()} == {"cpu"}


# ----------------------------------------------------------------------------- checkpoint file modes


UMASK_SCRIPT = """
import os, sys
os.umask(int(sys.argv[2], 8))
from sit_vqa.modeling.checkpoint import save_trainable_weights
from sit_vqa.modeling.loading import configure_trainable
from sit_vqa.modeling.tiny import build_tiny_instructblip
model, _ = build_tiny_instructblip("decoder")
configure_trainable(model, quiet=True)
save_trainable_weights(model, sys.argv[1])
"""


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_checkpoint_weights_follow_the_umask(tmp_path, umask, mode):
    path = tmp_path / f"umask{umask:o}" / "trainable.safetensors"
    subprocess.run([sys.executable, "-c", UMASK_SCRIPT, str(path), f"{umask:o}"], cwd=REPO, check=True,
                   env={**os.environ, "PYTHONPATH": str(REPO)})
    assert stat.S_IMODE(path.stat().st_mode) == mode
    assert [p.name for p in path.parent.iterdir()] == ["trainable.safetensors"]  # no temp file left behind
