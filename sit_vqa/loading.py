"""Building models from config: hub id / local dir / tiny offline model, LoRA and freezing, and
rebuilding a trained model from a checkpoint directory (for evaluation and the demo)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from sit_vqa import checkpoint
from sit_vqa import model as model_lib
from sit_vqa.config import ModelArguments


def build_model(args: ModelArguments, device: str | None = None, quiet: bool = False):
    """(model, processor) ready to train: the base model with LoRA and freezing applied."""
    model, processor = load_base_model(args, device)
    return prepare_for_training(model, args, quiet=quiet), processor


def load_base_model(args: ModelArguments, device: str | None = None, dtype: torch.dtype | None = None):
    """(model, processor) from a hub id, a local dir or the tiny offline builder. For causal_lm the
    'processor' is the tokenizer. dtype (of the weights) defaults to the model_dtype setting."""
    dtype = dtype or _frozen_dtype(args, device)
    common = dict(dtype=dtype, local_files_only=args.local_files_only, trust_remote_code=args.trust_remote_code)
    if args.model_type == "instructblip":
        if args.tiny_model:
            model, processor = model_lib.build_tiny_instructblip(
                args.tiny_model, seed=args.tiny_model_seed, image_size=args.tiny_image_size,
                patch_size=args.tiny_patch_size, num_query_tokens=args.tiny_num_query_tokens,
                hidden_size=args.tiny_hidden_size, num_layers=args.tiny_num_layers,
            )
        else:
            model, processor = model_lib.load_instructblip(args.model_name_or_path, **common)
    elif args.tiny_model:
        model, processor = model_lib.build_tiny_causal_lm(
            seed=args.tiny_model_seed, hidden_size=args.tiny_hidden_size, num_layers=args.tiny_num_layers
        )
    else:
        model, processor = model_lib.load_causal_lm(args.model_name_or_path, **common)
    if device is not None:
        model.to(device)
    return model, processor


def prepare_for_training(model, args: ModelArguments, quiet: bool = False):
    """LoRA adapters (causal_lm, if asked) or the freezing policy; prints trainable / total counts."""
    if args.model_type == "causal_lm" and args.use_lora:
        return model_lib.apply_lora(
            model, r=args.lora_r, alpha=args.lora_alpha, dropout=args.lora_dropout,
            target_modules=args.lora_target_modules,
        )
    model_lib.configure_trainable(
        model,
        train_vision_post_layernorm=args.train_vision_post_layernorm,
        # a text-only causal LM without LoRA is fine-tuned fully
        train_all=args.train_all or args.model_type == "causal_lm",
        quiet=quiet,
    )
    _keep_trainable_weights_fp32(model)
    return model


def _keep_trainable_weights_fp32(model) -> None:
    """Frozen weights may be bf16 (half the memory); trained ones stay fp32 so that lr-1e-5 updates are
    not rounded away. Compute then runs under autocast (Trainer's bf16=True)."""
    low_precision = {p.dtype for p in model.parameters() if p.dtype != torch.float32}
    if low_precision:
        model_lib.set_precision(model, low_precision.pop())


def _frozen_dtype(args: ModelArguments, device: str | None) -> torch.dtype:
    if args.model_dtype == "auto":
        return model_lib.default_dtype(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    return getattr(torch, args.model_dtype)


def model_arguments_from_manifest(manifest: dict[str, Any]) -> ModelArguments:
    names = {f.name for f in dataclasses.fields(ModelArguments)}
    return ModelArguments(**{k: v for k, v in manifest["config"].items() if k in names})


def load_checkpoint(directory: str | Path, device: str | None = None):
    """Rebuild (model, processor, manifest) from a checkpoint directory, ready for generation."""
    directory = Path(directory)
    manifest = checkpoint.read_manifest(directory)
    args = model_arguments_from_manifest(manifest)
    base = manifest.get("base_model")
    if base and manifest.get("base_model_is_relative"):
        args = dataclasses.replace(args, model_name_or_path=str((directory / base).resolve()), tiny_model=None)
    model, processor = build_model(args, device=device, quiet=True)
    model_lib.load_trainable_weights(model, directory / checkpoint.WEIGHTS_NAME)
    model.eval()
    return model, processor, manifest
