"""Real models: the model families InstructBLIP, the text-only causal LM and chat VLMs (their `ModelFamily`
objects; `sit_vqa.modeling.families.FAMILIES` lists them), loading InstructBLIP or a causal LM (hub id or local directory), what trains
(the paper's freezing policy, LoRA), and the precision of the weights (`sit_vqa.modeling.precision` decides it).

    model, processor = build_model(config.model, dtype=torch.bfloat16)   # loaded, frozen, fp32 trained weights
    model_family(config.model.model_type).answers_images                  # what the code asks of a family

`build_model` builds the tiny offline models of `sit_vqa.modeling.tiny` when the config asks for one; checkpoints
(trainable weights, manifest, resolving and loading one) are `sit_vqa.modeling.checkpoint`, which uses this module.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from peft import LoraConfig
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    InstructBlipForConditionalGeneration,
    InstructBlipProcessor,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.models.auto.modeling_auto import (
    MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
    MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES,
)

from sit_vqa.modeling import precision
from sit_vqa.modeling.arguments import ModelArguments
from sit_vqa.modeling.lora import get_peft_model
from sit_vqa.modeling.chat_vlm import ChatSampleTransform, configure_chat_trainable, load_chat_vlm
from sit_vqa.modeling.collate import SampleTransform
from sit_vqa.errors import ModelLoadError
from sit_vqa.modeling.export_cards import chat_vlm_card, instructblip_card
from sit_vqa.modeling.families import ModelFamily, model_family
from sit_vqa.modeling.generation import align_generation_config
from sit_vqa.modeling.model_dirs import load_pretrained
from sit_vqa.modeling.qformer_lora import prepare_instructblip_peft
from sit_vqa.modeling.quantization import quantization_config
from sit_vqa.modeling.tiny import IMAGE_TOKEN, build_tiny_causal_lm, build_tiny_instructblip

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ParamCounts:
    trainable: int
    total: int

    @property
    def fraction(self) -> float:
        return self.trainable / self.total if self.total else 0.0

    def __str__(self) -> str:
        return f"trainable params: {self.trainable:,} / total {self.total:,} ({100 * self.fraction:.2f}%)"


# ----------------------------------------------------------------------------------------------
# Loading from the hub or a local directory
# ----------------------------------------------------------------------------------------------


def load_instructblip(
    name_or_path: str | os.PathLike,
    *,
    dtype: torch.dtype | None = None,
    device: str | torch.device | None = None,
    local_files_only: bool = False,
    trust_remote_code: bool = False,
    quantization_config=None,
) -> tuple[InstructBlipForConditionalGeneration, InstructBlipProcessor]:
    """Load InstructBLIP and its processor from a hub id or a local directory (save_pretrained layout).

    dtype: weights dtype, default float32 (`precision.frozen_dtype_for` decides it for a run).
    device: where the weights go, each tensor straight from the file in `dtype` (default: the CPU). A GPU
    rank then never holds a CPU copy of the model (7B in fp32: 15.8 GB of RAM per rank otherwise).
    `query_tokens` stay fp32 whatever the dtype (the Q-Former casts them to its own dtype).
    quantization_config: a `BitsAndBytesConfig` (`sit_vqa.modeling.quantization`) for a 4/8-bit LLM; bitsandbytes
    quantizes while loading, onto `device` (default: the CPU).
    Raises ModelLoadError, saying how to use a local copy, when the files cannot be found or fetched.
    """
    model, processor = load_pretrained(
        str(name_or_path), "instructblip", "InstructBLIP", InstructBlipForConditionalGeneration, InstructBlipProcessor,
        dtype=dtype, device=device, quantization_config=quantization_config,
        options=dict(local_files_only=local_files_only, trust_remote_code=trust_remote_code))
    _ensure_image_token(model, processor)
    align_generation_config(model, processor.tokenizer)
    # transformers upcasts `_keep_in_fp32_modules` (query_tokens) only for fp16 loads, not bf16
    model.query_tokens.data = model.query_tokens.data.float()
    return model.eval(), processor


def load_causal_lm(
    name_or_path: str | os.PathLike,
    *,
    dtype: torch.dtype | None = None,
    device: str | torch.device | None = None,
    local_files_only: bool = False,
    trust_remote_code: bool = False,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer (text-only path) from a hub id or a local directory (dtype and
    device as for `load_instructblip`)."""
    model, tokenizer = load_pretrained(
        str(name_or_path), "causal_lm", "a causal LM", AutoModelForCausalLM, AutoTokenizer, dtype=dtype, device=device,
        options=dict(local_files_only=local_files_only, trust_remote_code=trust_remote_code),
        other_architecture="model_type causal_lm takes AutoModelForCausalLM checkpoints (set model_type: "
                           "instructblip or image_text_to_text for an image model)")
    align_generation_config(model, tokenizer)
    return model.eval(), tokenizer


def _ensure_image_token(model: InstructBlipForConditionalGeneration, processor: InstructBlipProcessor) -> None:
    """Make config.image_token_index and the processor agree on the <image> placeholder.

    Older hub configs have image_token_index=None, and forward then fails cryptically; older
    processors have num_query_tokens=None (transformers #25426 is the pad-id twin of this).
    """
    tokenizer = processor.tokenizer
    image_token_id = tokenizer.convert_tokens_to_ids(str(processor.image_token))
    configured = model.config.image_token_index
    if configured is None:
        logger.warning("config.image_token_index is None; using the tokenizer's %s id %d", IMAGE_TOKEN, image_token_id)
        model.config.image_token_index = image_token_id
    elif configured != image_token_id:
        raise ModelLoadError(
            f"config.image_token_index={configured} but the tokenizer maps {IMAGE_TOKEN} to {image_token_id}: "
            "the model and processor files come from different checkpoints"
        )
    if image_token_id >= model.get_input_embeddings().num_embeddings:
        # The processor added <image> to an old tokenizer; its embedding row is always overwritten
        # by the Q-Former output (masked_scatter), so a new random row is harmless.
        logger.warning("resizing the LM embeddings to %d to make room for %s", len(tokenizer), IMAGE_TOKEN)
        model.resize_token_embeddings(len(tokenizer))
    if processor.num_query_tokens is None:
        processor.num_query_tokens = model.config.num_query_tokens


# ----------------------------------------------------------------------------------------------
# What trains, LoRA, and the model a config asks for
# ----------------------------------------------------------------------------------------------


def count_parameters(model: torch.nn.Module) -> ParamCounts:
    params = list(model.parameters())
    return ParamCounts(
        trainable=sum(p.numel() for p in params if p.requires_grad), total=sum(_weights_held(p) for p in params)
    )


def _weights_held(param: torch.nn.Parameter) -> int:
    quant_state = getattr(param, "quant_state", None)  # a bitsandbytes 4-bit weight: packed two to a byte
    return quant_state.shape.numel() if quant_state is not None else param.numel()


def configure_trainable(
    model: PreTrainedModel,
    *,
    train_vision_post_layernorm: bool = False,
    train_all: bool = False,
    quiet: bool = False,
) -> ParamCounts:
    """Freeze InstructBLIP as in the paper: only the Q-Former, query tokens and language projection train.

    train_vision_post_layernorm: also train the ViT's last layer norm (LAVIS's `ln_vision` trains).
    train_all: train every weight (the tiny-model experiments; any model, e.g. a causal LM).
    Prints "trainable params: X / total Y (Z%)" unless quiet, and returns the counts.
    """
    if not train_all and not isinstance(model, InstructBlipForConditionalGeneration):
        raise TypeError(  # a programming error: configs route causal_lm to train_all or LoRA
            f"the Q-Former freezing policy needs InstructBlipForConditionalGeneration, got {type(model).__name__}; "
            "pass train_all=True to train every weight, or use apply_lora"
        )
    model.requires_grad_(train_all)
    if not train_all:
        for module in (model.qformer, model.language_projection):
            module.requires_grad_(True)
        model.query_tokens.requires_grad_(True)
        if train_vision_post_layernorm:
            model.vision_model.post_layernorm.requires_grad_(True)
    counts = count_parameters(model)
    if not quiet:
        print(counts)
    return counts


def apply_lora(
    model: PreTrainedModel,
    *,
    r: int = 8,
    alpha: int = 16,
    dropout: float = 0.05,
    target_modules: Sequence[str] = ("q_proj", "v_proj"),
) -> PreTrainedModel:
    """Wrap a causal LM with LoRA adapters (peft); only the adapters train. Prints the counts."""
    config = LoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(target_modules), task_type="CAUSAL_LM"
    )
    peft_model = get_peft_model(model, config)
    print(count_parameters(peft_model))
    return peft_model


def build_model(args: ModelArguments, *, dtype: torch.dtype = torch.float32, device: str | None = None, quiet: bool = False):
    """(model, processor) as a config asks: the base model (hub id, local directory or tiny offline model) with
    its frozen weights in `dtype` (decide it with `precision.frozen_dtype_for`), LoRA or the freezing policy applied,
    trained weights in fp32. For causal_lm the 'processor' is the tokenizer. Prints trainable / total counts
    unless quiet."""
    model, processor = load_base_model(args, dtype=dtype, device=device)
    return prepare_for_training(model, args, dtype, quiet=quiet), processor


def load_base_model(args: ModelArguments, *, dtype: torch.dtype = torch.float32, device: str | None = None):
    """(model, processor) before freezing: from a hub id, a local directory or the tiny offline builder."""
    # loaded straight onto `device` in `dtype`: no full CPU copy per rank
    model, processor = model_family(args.model_type).load(args, dtype=dtype, device=device)
    if device is not None and not getattr(model, "is_quantized", False):  # bitsandbytes placed those already
        model.to(device)  # the tiny models; a no-op for loaded ones
    return model, processor


def prepare_for_training(model, args: ModelArguments, dtype: torch.dtype, quiet: bool = False):
    """What trains (the family's freezing policy or LoRA), then frozen weights in `dtype`."""
    return model_family(args.model_type).prepare_for_training(model, args, dtype, quiet=quiet)


# ----------------------------------------------------------------------------------------------
# The families: InstructBLIP and the text-only causal LM here, chat VLMs in sit_vqa.modeling.chat_vlm
# ----------------------------------------------------------------------------------------------


def _hub_options(args: ModelArguments) -> dict:
    return dict(local_files_only=args.local_files_only, trust_remote_code=args.trust_remote_code)


def _load_instructblip_family(args: ModelArguments, *, dtype: torch.dtype, device: str | None):
    if not args.tiny_model:
        return load_instructblip(args.model_name_or_path, dtype=dtype, device=device, **_hub_options(args),
                                 quantization_config=quantization_config(args, dtype))
    return build_tiny_instructblip(
        args.tiny_model, seed=args.tiny_model_seed, image_size=args.tiny_image_size,
        patch_size=args.tiny_patch_size, num_query_tokens=args.tiny_num_query_tokens,
        hidden_size=args.tiny_hidden_size, num_layers=args.tiny_num_layers,
        num_heads=args.tiny_num_heads, dropout=args.tiny_dropout,
        random_query_tokens=args.tiny_random_query_tokens, init=args.tiny_init,
    )


def _prepare_instructblip(model, args: ModelArguments, dtype: torch.dtype, *, quiet: bool = False):
    """The paper's freezing policy (Q-Former, query tokens, projection train), or every weight (train_all); through
    peft with LoRA (use_lora) or a quantized LLM (sit_vqa.modeling.qformer_lora)."""
    if args.use_lora or args.quantization_bit:
        model = prepare_instructblip_peft(model, args)
        if not quiet:
            print(count_parameters(model))
        precision.keep_trained_fp32(model.get_base_model(), dtype)  # its names: _keep_in_fp32_modules's
        return model
    configure_trainable(model, train_vision_post_layernorm=args.train_vision_post_layernorm,
                        train_all=args.train_all, quiet=quiet)
    precision.keep_trained_fp32(model, dtype)
    return model


def _load_causal_lm_family(args: ModelArguments, *, dtype: torch.dtype, device: str | None):
    if not args.tiny_model:
        return load_causal_lm(args.model_name_or_path, dtype=dtype, device=device, **_hub_options(args))
    return build_tiny_causal_lm(seed=args.tiny_model_seed, hidden_size=args.tiny_hidden_size,
                                num_layers=args.tiny_num_layers)


def _prepare_causal_lm(model, args: ModelArguments, dtype: torch.dtype, *, quiet: bool = False):
    """LoRA adapters (use_lora), else every weight trains (a text-only LM is fine-tuned fully)."""
    if args.use_lora:
        return apply_lora(model, r=args.lora_r, alpha=args.lora_alpha, dropout=args.lora_dropout,
                          target_modules=args.lora_targets)
    configure_trainable(model, train_all=True, quiet=quiet)
    precision.keep_trained_fp32(model, dtype)
    return model


def _load_chat_vlm_family(args: ModelArguments, *, dtype: torch.dtype, device: str | None):
    return load_chat_vlm(args.model_name_or_path, dtype=dtype, device=device, **_hub_options(args))


def _prepare_chat_vlm(model, args: ModelArguments, dtype: torch.dtype, *, quiet: bool = False):
    """The freezing switches (freeze_vision_tower, ...), LoRA on the language model where it applies."""
    model = configure_chat_trainable(model, args)
    if not quiet:
        print(count_parameters(model))
    precision.keep_trained_fp32(model, dtype)
    return model


def _chat_sample_transform(model, processor, **options):
    """The processor makes its own pixels (through its chat template): image_pipeline and feature_cache do not
    apply."""
    kept = {key: options[key] for key in ("max_instruction_length", "max_target_length", "image_dir") if key in options}
    return ChatSampleTransform(processor, **kept)


INSTRUCTBLIP = ModelFamily(
    name="instructblip", answers_images=True, load=_load_instructblip_family,
    prepare_for_training=_prepare_instructblip, sample_transform=SampleTransform.for_model,
    # use_lora's default: the Q-Former's self-attention query / value (InstructBLIP_PEFT, arXiv 2410.09489)
    default_lora_targets=("attention.attention.query", "attention.attention.value"),
    quantizes_llm=True, caches_vision_features=True, loads=frozenset({"instructblip"}), export_card=instructblip_card,
)
CAUSAL_LM = ModelFamily(  # use_lora's default: the attention query / value (peft's usual choice)
    name="causal_lm", answers_images=False, load=_load_causal_lm_family,
    prepare_for_training=_prepare_causal_lm, sample_transform=SampleTransform.for_model,
    loads=frozenset(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES),
)
CHAT_VLM = ModelFamily(  # any AutoModelForImageTextToText chat VLM: sit_vqa.modeling.chat_vlm
    name="image_text_to_text", answers_images=True, load=_load_chat_vlm_family,
    prepare_for_training=_prepare_chat_vlm, sample_transform=_chat_sample_transform,
    builds_tiny=False, loads=frozenset(MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES), export_card=chat_vlm_card,
)
