"""The precision rules, decided here and nowhere else.

- Compute: bf16 mixed precision (autocast) by default on a CUDA GPU that supports it, fp32 otherwise
  (`bf16_by_default`). Never fp16 by default: Flan-T5 overflows to NaN in fp16 and the Q-Former is unstable.
- Frozen weights: bf16 only when the compute runs under bf16 autocast (`frozen_dtype_for`); trained weights and
  `query_tokens` stay fp32, so small updates are not rounded away (`keep_trained_fp32`).
- Quantized weights (a 4/8-bit LLM, `sit_vqa.modeling.quantization`) are integers: never cast, never counted here.
- A model holding low-precision weights runs forward and generate under autocast to that dtype
  (`autocast_for`): fp32 trained weights and bf16 frozen ones would otherwise meet in one matmul.

The frozen dtype a run trained with is recorded in its checkpoint manifest; evaluation and the demo load
the base model in that dtype.
"""

from __future__ import annotations

import contextlib
from typing import Literal

import torch

ModelDtype = Literal["auto", "bfloat16", "float32"]


def bf16_by_default(use_cpu: bool = False) -> bool:
    """Whether training computes in bf16 when the config leaves `bf16` unset."""
    return bool(not use_cpu and torch.cuda.is_available() and torch.cuda.is_bf16_supported())


def frozen_dtype_for(model_dtype: ModelDtype, bf16: bool) -> torch.dtype:
    """Dtype of the frozen weights: bfloat16 when asked, or with `auto` when the compute is bf16; else float32."""
    if model_dtype == "bfloat16" or (model_dtype == "auto" and bf16):
        return torch.bfloat16
    return torch.float32


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def dtype_from_name(name: str) -> torch.dtype:
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"unknown dtype {name!r}")
    return dtype


def low_precision_dtype(model: torch.nn.Module) -> torch.dtype | None:
    """The non-fp32 float dtype some of the model's weights have (None when all are fp32). Quantized weights
    (bitsandbytes' packed integers) compute in their own configured dtype and do not count."""
    return next((p.dtype for p in model.parameters() if p.is_floating_point() and p.dtype != torch.float32), None)


def keep_trained_fp32(model: torch.nn.Module, dtype: torch.dtype) -> None:
    """Cast frozen weights to `dtype`; keep trainable weights and `_keep_in_fp32_modules` in fp32.

    Call after the freezing policy. The model then mixes dtypes: run it under `autocast_for(model, device)`
    (the HF Trainer does with bf16=True).
    """
    keep_fp32 = tuple(getattr(model, "_keep_in_fp32_modules", None) or ())
    for name, param in model.named_parameters():
        if not param.is_floating_point():
            continue  # a quantized weight (4/8-bit integers): a cast would destroy it
        fp32 = param.requires_grad or any(name == k or name.startswith(k + ".") for k in keep_fp32)
        param.data = param.data.to(torch.float32 if fp32 else dtype)


def autocast_for(model: torch.nn.Module, device: torch.device | str):
    """Autocast to the model's low-precision dtype, or nothing when all its weights are fp32."""
    dtype = low_precision_dtype(model)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)
