"""A 4- or 8-bit frozen LLM for InstructBLIP (`quantization_bit`, bitsandbytes; its PyPI wheel has a CPU backend).

Only the language model is quantized. A plain `BitsAndBytesConfig` quantizes every Linear layer but lm_head,
InstructBLIP's ViT, Q-Former and language projection included (DESIGN.md): they are listed in the skip modules,
so they keep `model_dtype` and the Q-Former trains as usual. The quantized weights are frozen; they are never
cast (`sit_vqa.modeling.precision` leaves non-float storage alone) and never written to a checkpoint (which holds
the trained weights only; its manifest records quantization_bit, so evaluation, the demo and --resume load the
base model the same way). The export loads the base model in full precision (`without_quantization`).
"""

from __future__ import annotations

import dataclasses
import importlib.util

import torch

from sit_vqa.errors import ConfigError
from sit_vqa.modeling.arguments import ModelArguments

# InstructBLIP's parts that stay unquantized: all but the language model (and its lm_head, as bitsandbytes does)
UNQUANTIZED_MODULES = ["vision_model", "qformer", "language_projection", "lm_head"]
EXTRA = "quant"  # pyproject's optional dependencies that install bitsandbytes


def quantization_config(args: ModelArguments, compute_dtype: torch.dtype):
    """The `BitsAndBytesConfig` that quantizes the LLM only, or None when the run does not ask for quantization.
    compute_dtype: the dtype the 4-bit layers compute in (the frozen weights' dtype). A ConfigError naming the
    extra to install when bitsandbytes is missing."""
    if args.quantization_bit is None:
        return None
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ConfigError(f"quantization_bit: {args.quantization_bit} needs bitsandbytes, which is not installed: "
                          f"pip install 'sit-vqa[{EXTRA}]' (or pip install bitsandbytes), or leave out "
                          "quantization_bit for an unquantized LLM")
    from transformers import BitsAndBytesConfig  # its import checks nothing; loading with it needs bitsandbytes

    return BitsAndBytesConfig(
        load_in_4bit=args.quantization_bit == 4,
        load_in_8bit=args.quantization_bit == 8,
        llm_int8_skip_modules=list(UNQUANTIZED_MODULES),
        bnb_4bit_quant_type="nf4",  # QLoRA's 4-bit type, for normally distributed weights
        bnb_4bit_compute_dtype=compute_dtype,
    )


def without_quantization(args: ModelArguments) -> ModelArguments:
    """The same settings with an unquantized LLM (the export writes full-precision weights)."""
    return dataclasses.replace(args, quantization_bit=None)


def is_quantized(model: torch.nn.Module) -> bool:
    return bool(getattr(model, "is_quantized", False))
