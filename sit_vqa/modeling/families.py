"""What a model family is (`ModelFamily`: how the code loads, trains, feeds and asks one kind of model), and
what a loaded model is, read off its config (`is_encoder_decoder`, never its name). Imports nothing, so that the
collator can ask without loading the loading code (peft, the Auto classes).

`FAMILIES` lists the families, one entry per config `model_type`; the code asks `model_family(model_type)`
instead of comparing model_type strings. Adding a family is one module that defines its functions and its
`ModelFamily`, plus one entry in FAMILIES (README: "How to add a model family").
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sit_vqa.errors import ConfigError

# model_type -> "module:NAME" of its ModelFamily. Named, and imported on first use: the family modules load
# the model code (transformers' Auto classes, peft), which the config, the collator and the checkpoint manifest
# must not need, and they read ModelArguments, which checks its model_type against this list.
FAMILIES: dict[str, str] = {
    "instructblip": "sit_vqa.modeling.loading:INSTRUCTBLIP",
    "causal_lm": "sit_vqa.modeling.loading:CAUSAL_LM",
    "image_text_to_text": "sit_vqa.modeling.loading:CHAT_VLM",  # chat VLMs: sit_vqa.modeling.chat_vlm
}


@dataclass(frozen=True)
class ModelFamily:
    """The per-family behaviour, as functions of the config's `ModelArguments` (args) and the loaded model."""

    name: str  # the config's model_type
    # takes images: the image sets (VQAv2, GQA), the demo, the export; otherwise the text path (Alpaca records,
    # text_mode, the held-out text set)
    answers_images: bool
    # (args, *, dtype, device) -> (model, processor or tokenizer), before freezing: from a hub id, a local
    # directory or a tiny builder; frozen weights in `dtype`, straight onto `device`
    load: Callable[..., tuple[Any, Any]]
    # (model, args, dtype, *, quiet) -> the model to train: what trains (freezing, LoRA), frozen weights in dtype
    prepare_for_training: Callable[..., Any]
    # (model, processor, **options) -> a sample transform (record -> one sample's inputs) whose .collator()
    # pads a batch; generation makes its inputs with it too. options: max_instruction_length,
    # max_target_length, image_pipeline, feature_cache, image_dir (a family takes those that apply to it)
    sample_transform: Callable[..., Any]
    # the rules a config is checked against (sit_vqa.modeling.arguments, sit_vqa.config): use_lora without
    # lora_target_modules places adapters on these module names
    default_lora_targets: tuple[str, ...] = ("q_proj", "v_proj")
    builds_tiny: bool = True  # tiny_model builds one offline; otherwise only model_name_or_path loads
    quantizes_llm: bool = False  # quantization_bit applies (a frozen LLM loaded in 4/8 bits)
    caches_vision_features: bool = False  # feature_cache_dir applies (a frozen ViT whose features are cached)
    # the config.json model_type values a model directory may hold (sit_vqa.modeling.model_dirs checks it
    # before loading); empty: not checked
    loads: frozenset[str] = field(default_factory=frozenset)
    # (config, instruction, *, encoder_decoder) -> ExportCard: what the exported model's README says about
    # the model and how to load and prompt it (sit_vqa.apps.export); None: the family does not export
    export_card: Callable[..., Any] | None = None

    @property
    def default_task(self) -> str:
        """The set evaluate.py runs for --task auto."""
        return "vqa" if self.answers_images else "text"


def model_family(model_type: str | None) -> ModelFamily:
    """The family of a config's (or a checkpoint's) model_type; a ConfigError naming the known ones."""
    if model_type not in FAMILIES:
        raise ConfigError(unknown_model_type(model_type))
    module, name = FAMILIES[model_type].split(":")
    return getattr(importlib.import_module(module), name)


def family_names(wanted: Callable[[ModelFamily], bool]) -> str:
    """'a or b': the model_types whose family has a property, for messages ("the demo needs model_type ...")."""
    return " or ".join(name for name in FAMILIES if wanted(model_family(name)))


def unknown_model_type(model_type) -> str:
    return f"unsupported model_type {model_type!r}; supported: {', '.join(FAMILIES)}"


def is_encoder_decoder(model) -> bool:
    """True when the language model is an encoder-decoder (T5), for InstructBLIP and plain LMs alike."""
    config = model.config
    if hasattr(config, "use_decoder_only_language_model"):
        return not config.use_decoder_only_language_model
    return bool(getattr(config, "is_encoder_decoder", False))
