"""InstructBLIP through peft: LoRA on the Q-Former (and the LLM when its names are listed), and the peft wrapper a
quantized LLM needs to train at all.

- `use_lora`: adapters where `lora_target_modules` says (InstructBLIP_PEFT's placements, arXiv 2410.09489),
  matched against the module names of the Q-Former and the language model; the ViT never gets any. The query
  tokens and the language projection train whole unless `train_query_tokens_and_projection` is false.
- a quantized LLM without LoRA (the full Q-Former trains): the HF Trainer refuses a quantized model that is not
  a peft model (`validate_quantization_for_training`), so the model is wrapped in a peft model that holds no
  adapter, and the Q-Former, query tokens and projection train through plain `requires_grad`. peft's
  `modules_to_save` would make a trained copy of the whole Q-Former beside the frozen original (twice its
  memory) and cannot hold the query tokens (a bare parameter), so it is not used.

Trained weights are told apart by `requires_grad` as everywhere else (the checkpoint holds them by name); the
export's `merge_and_unload` folds the adapters into plain weights.
"""

from __future__ import annotations

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft.utils.constants import DUMMY_TARGET_MODULES

from sit_vqa.errors import ConfigError
from sit_vqa.modeling.arguments import ModelArguments

ADAPTABLE_PARTS = ("qformer.", "language_model.")  # the ViT stays frozen and whole


def lora_target_names(model: torch.nn.Module, targets: list[str]) -> list[str]:
    """The full names of the Linear layers of the Q-Former and the LLM that `targets` name, matched as peft matches
    a list (the whole name, or its end after a dot). A ConfigError listing the names there are when none match."""
    candidates = [name for name, module in model.named_modules()
                  if name.startswith(ADAPTABLE_PARTS) and isinstance(module, torch.nn.Linear)]
    chosen = [name for name in candidates if any(name == t or name.endswith("." + t) for t in targets)]
    if not chosen:
        raise ConfigError(f"lora_target_modules {targets} match no Linear layer of the Q-Former or the language "
                          f"model; the names there are: {', '.join(_short_names(candidates))} (a name matches "
                          "itself or the end of a dotted name, e.g. crossattention.attention.query)")
    return chosen


def _short_names(names: list[str]) -> list[str]:
    """The names without their layer prefix (qformer.encoder.layer.3.attention.attention.query -> qformer ...
    attention.attention.query), once each."""
    short = []
    for name in names:
        part, _, rest = name.partition(".")
        tail = rest.split(".layer.", 1)[-1].split(".layers.", 1)[-1]
        tail = tail.split(".", 1)[1] if tail.split(".", 1)[0].isdigit() else tail
        if f"{part}: {tail}" not in short:
            short.append(f"{part}: {tail}")
    return short


def prepare_instructblip_peft(model, args: ModelArguments) -> PeftModel:
    """The InstructBLIP model to train through peft: LoRA adapters (use_lora), or, for a quantized LLM, an empty peft
    wrapper with the Q-Former trained whole. The frozen weights' dtype is the caller's (`keep_trained_fp32`)."""
    if args.use_lora:
        config = LoraConfig(r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
                            target_modules=lora_target_names(model, args.lora_targets))
    else:  # no adapter: peft's own placeholder for a wrapper that adapts nothing
        config = LoraConfig(target_modules=DUMMY_TARGET_MODULES)
    # (peft's prepare_model_for_kbit_training is not used: it casts every bf16 weight, the ViT's too, to fp32)
    peft_model = get_peft_model(model, config)
    base = peft_model.get_base_model()  # get_peft_model froze every base weight
    if not args.use_lora:
        base.qformer.requires_grad_(True)
    if not args.use_lora or args.train_query_tokens_and_projection:
        base.language_projection.requires_grad_(True)
        base.query_tokens.requires_grad_(True)
    if args.train_vision_post_layernorm:
        base.vision_model.post_layernorm.requires_grad_(True)
    return peft_model
