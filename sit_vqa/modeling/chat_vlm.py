"""model_type image_text_to_text: any `AutoModelForImageTextToText` checkpoint (LLaVA, Idefics3 / SmolVLM,
PaliGemma, Qwen2.5-VL, ...) with its `AutoProcessor`, trained through the same trainer as InstructBLIP.

- `load_chat_vlm`: model + processor from a hub id or a local directory.
- `configure_chat_trainable`: the freezing switches (LLaMA-Factory's names) freeze_vision_tower,
  freeze_multi_modal_projector, freeze_language_model (None: LoRA on the language model above
  `LORA_ABOVE_PARAMS`, else trained); parts are told apart by parameter name (`part_of`).
- `ChatSampleTransform`: a record -> the model's inputs as a chat (user: image + instruction; assistant: the
  target) through the processor's own chat template; `answer_labels` is the one place that decides which
  tokens are learned.
- `ChatCollator`: pads the token keys, stacks the processor's image tensors.
"""

from __future__ import annotations

import os
from pathlib import Path
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image
from torch.nn.utils.rnn import pad_sequence
from transformers import AutoModelForImageTextToText, AutoProcessor

from sit_vqa.errors import ConfigError, ModelLoadError
from sit_vqa.modeling.generation import align_generation_config
from sit_vqa.modeling.collate import IGNORE_INDEX, SampleError, image_file, record_name, text_field, with_record_image
from sit_vqa.modeling.model_dirs import load_pretrained

LORA_ABOVE_PARAMS = 1_000_000_000  # freeze_language_model unset: LoRA on LMs above this size, full training below
PROJECTOR_NAMES = ("multi_modal_projector", "connector", "visual.merger", "mm_projector")
VISION_NAMES = ("vision_tower", "vision_model", "visual", "image_encoder")
SUFFIX_PROCESSORS = {"PaliGemmaProcessor"}  # no chat template; labels from suffix=
TOKEN_KEYS = {"input_ids": "pad", "attention_mask": 0, "labels": IGNORE_INDEX, "token_type_ids": 0,
              "mm_token_type_ids": 0}


def load_chat_vlm(name_or_path: str | os.PathLike, *, dtype: torch.dtype | None = None, device=None,
                  local_files_only: bool = False, trust_remote_code: bool = False):
    """(model, processor) of an AutoModelForImageTextToText checkpoint; ModelLoadError when it cannot load."""
    source = str(name_or_path)
    model, processor = load_pretrained(
        source, "image_text_to_text", "an image-text-to-text model", AutoModelForImageTextToText, AutoProcessor,
        dtype=dtype, device=device, options=dict(local_files_only=local_files_only, trust_remote_code=trust_remote_code),
        other_architecture="model_type image_text_to_text takes AutoModelForImageTextToText checkpoints (LLaVA, "
                           "Idefics3, SmolVLM, PaliGemma, Gemma 3, Qwen2.5-VL, ...)")
    if not hasattr(processor, "image_processor") or not hasattr(processor, "tokenizer"):
        raise ModelLoadError(f"{source!r}: its processor ({type(processor).__name__}) has no image processor and "
                             "tokenizer; model_type image_text_to_text needs a multimodal processor")
    align_generation_config(model, processor.tokenizer)  # stops at the end-of-turn token the answers end with
    return model.eval(), processor


def part_of(parameter_name: str) -> str:
    """'projector', 'vision' or 'language': which part of a chat VLM a parameter belongs to."""
    if any(name in parameter_name for name in PROJECTOR_NAMES):
        return "projector"
    if any(name in parameter_name for name in VISION_NAMES):
        return "vision"
    return "language"


def language_model_size(model) -> int:
    return sum(p.numel() for name, p in model.named_parameters() if part_of(name) == "language")


def wants_lora(model, args) -> bool:
    """LoRA on the language model: asked (use_lora), or freeze_language_model unset and the LM is large."""
    if args.use_lora:
        return True
    return args.freeze_language_model is None and language_model_size(model) > LORA_ABOVE_PARAMS


def configure_chat_trainable(model, args):
    """Apply the freezing switches (and LoRA on the language model where `wants_lora`); returns the model
    (a peft model with LoRA)."""
    lora = wants_lora(model, args)
    if lora:
        from peft import LoraConfig  # peft only where LoRA is used

        from sit_vqa.modeling.lora import get_peft_model

        targets = sorted({name for name, module in model.named_modules()
                          if part_of(name) == "language" and name.rsplit(".", 1)[-1] in args.lora_targets
                          and isinstance(module, torch.nn.Linear)})
        if not targets:
            raise ConfigError(f"no language-model module is named one of lora_target_modules {args.lora_targets}")
        model = get_peft_model(model, LoraConfig(r=args.lora_r, lora_alpha=args.lora_alpha,
                                                 lora_dropout=args.lora_dropout, target_modules=targets))
    train_language = not lora and not args.freeze_language_model
    trains = {"vision": not args.freeze_vision_tower, "projector": not args.freeze_multi_modal_projector,
              "language": train_language}
    for name, parameter in model.named_parameters():
        if "lora_" in name:
            continue  # the adapters train
        parameter.requires_grad_(args.train_all or trains[part_of(name)])
    return model


def is_chat_processor(processor) -> bool:
    """A multimodal processor of model_type image_text_to_text (not InstructBLIP's, not a bare tokenizer)."""
    return (hasattr(processor, "image_processor") and hasattr(processor, "tokenizer")
            and not hasattr(processor, "qformer_tokenizer"))


def uses_suffix_labels(processor) -> bool:
    """PaliGemma-style processors: no chat template, the answer goes in as `suffix=` and they build the labels."""
    return type(processor).__name__ in SUFFIX_PROCESSORS


@dataclass
class ChatSampleTransform:
    """One record -> one sample's tensors (batch dimension removed), through the processor's chat template.
    max_instruction_length / max_target_length are kept for the callers that read them (the demo refuses longer
    questions); samples are not truncated, since a cut could split the image placeholders."""

    processor: Any
    max_instruction_length: int = 128
    max_target_length: int = 256
    image_dir: Any = None

    def __post_init__(self):
        self.tokenizer = self.processor.tokenizer
        if self.tokenizer.eos_token_id is None:
            raise ConfigError("the tokenizer has no eos_token; answers must end with it")
        self.suffix_labels = uses_suffix_labels(self.processor)
        if not self.suffix_labels and not getattr(self.processor, "chat_template", None):
            raise ConfigError(f"{type(self.processor).__name__} has no chat template: set one in the checkpoint's "
                              "chat_template.jinja (model_type image_text_to_text builds chat samples)")

    @property
    def pad_token_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return self.tokenizer.eos_token_id if pad is None else pad

    def collator(self, padding_side: str = "right") -> ChatCollator:
        return ChatCollator(self.pad_token_id, padding_side)

    def check_records(self, records) -> None:
        """Records are checked per sample (the processor counts image tokens itself)."""

    def image_path(self, record: Mapping[str, Any]) -> Path:
        return image_file(record, self.image_dir)

    def __call__(self, record: Mapping[str, Any], *, with_target: bool = True) -> dict[str, Any]:
        instruction = text_field(record, "instruction")
        image = self._image(record)
        target = text_field(record, "target") if with_target else None
        if target is not None and not target.strip():
            raise SampleError(f"record {record_name(record)} has an empty target")
        encoded = answer_labels(self.processor, image, instruction, target, self.suffix_labels)
        return {key: value[0] for key, value in encoded.items()}

    def _image(self, record: Mapping[str, Any]) -> Image.Image:
        if record.get("image") is None and not record.get("image_path"):
            raise SampleError(f"record {record_name(record)} has no image (image_path or image)")
        return with_record_image(record, self.image_dir, lambda image: image.convert("RGB"))


def chat_messages(image: Image.Image, instruction: str, target: str | None) -> list[dict]:
    messages = [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": instruction}]}]
    if target is not None:
        messages.append({"role": "assistant", "content": [{"type": "text", "text": target}]})
    return messages


def answer_labels(processor, image: Image.Image, instruction: str, target: str | None,
                  suffix_labels: bool) -> dict[str, torch.Tensor]:
    """The one place that decides what is learned: the inputs of one sample, and (with a target) labels that
    are IGNORE_INDEX everywhere but the assistant's answer (its end-of-turn token included).

    - suffix processors (PaliGemma): the processor builds the labels from `suffix=`;
    - templates with `{% generation %}` tags: the assistant-token mask of apply_chat_template;
    - other templates: everything after the prompt rendered with add_generation_prompt=True.
    """
    if suffix_labels:
        encoded = dict(processor(text=instruction, images=image, suffix=target, return_tensors="pt"))
        if target is None:
            encoded.pop("labels", None)  # a generation prompt learns nothing
        return encoded
    if target is None:
        return dict(processor.apply_chat_template(chat_messages(image, instruction, None), add_generation_prompt=True,
                                                  tokenize=True, return_dict=True, return_tensors="pt"))
    messages = chat_messages(image, instruction, target)
    encoded = dict(processor.apply_chat_template(messages, tokenize=True, return_dict=True, return_tensors="pt",
                                                 return_assistant_tokens_mask=True))
    mask = torch.as_tensor(encoded.pop("assistant_masks"))
    if mask.sum() == 0:  # no {% generation %} tags: mask by the prompt's length
        prompt = processor.apply_chat_template(chat_messages(image, instruction, None), add_generation_prompt=True,
                                               tokenize=True, return_dict=True, return_tensors="pt")
        mask = torch.zeros_like(encoded["input_ids"])
        mask[:, prompt["input_ids"].shape[1]:] = 1
    encoded["labels"] = torch.where(mask.bool(), encoded["input_ids"], IGNORE_INDEX)
    return encoded


@dataclass(frozen=True)
class ChatCollator:
    """Pad the token keys to the longest sample (right for training, left for generation); stack the rest."""

    pad_token_id: int
    padding_side: str = "right"

    def __call__(self, samples: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        if not samples:
            raise SampleError("cannot collate an empty batch")
        batch = {}
        for key in samples[0]:
            values = [torch.as_tensor(sample[key]) for sample in samples]
            if key in TOKEN_KEYS:
                pad = self.pad_token_id if TOKEN_KEYS[key] == "pad" else TOKEN_KEYS[key]
                batch[key] = pad_sequence(values, batch_first=True, padding_value=pad, padding_side=self.padding_side)
            else:
                batch[key] = torch.stack(values)
        return batch
