"""The model's settings of a run (the `ModelArguments` section of the config): which model, what trains, its
precision and the tiny offline model's sizes. Kept in the modeling layer, so that loading and checkpoints
take their settings without importing the config parser (and through it the join and the sample generator).
`sit_vqa.config` reads it from YAML and the command line with the other two sections."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from sit_vqa.errors import ConfigError
from sit_vqa.modeling import precision
from sit_vqa.modeling.families import FAMILIES, family_names, model_family, unknown_model_type


@dataclass
class ModelArguments:
    model_type: str = field(  # the model family: one of sit_vqa.modeling.families.FAMILIES
        default="instructblip",
        metadata={"help": "instructblip: image QA with a frozen ViT and LLM; causal_lm: the text-only path; "
                  "image_text_to_text: any AutoModelForImageTextToText chat VLM (LLaVA, Idefics3, PaliGemma, ...)."},
    )
    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Hub id (e.g. Salesforce/instructblip-vicuna-7b) or a local directory. "
                  "Leave empty and set tiny_model to build a small offline model in code."},
    )
    tiny_model: Literal["decoder", "t5"] | None = field(
        default=None,
        metadata={"help": "Build a tiny random model offline instead of loading one: 'decoder' (LLaMA-style LM) "
                  "or 't5' (encoder-decoder LM). For causal_lm any value builds the tiny causal LM."},
    )
    tiny_model_seed: int = field(default=0, metadata={"help": "Seed of the tiny model's random weights."})
    tiny_hidden_size: int = field(default=32, metadata={"help": "Tiny model: width of every part (ViT, Q-Former, LM)."})
    tiny_num_layers: int = field(default=2, metadata={"help": "Tiny model: layers of every part."})
    tiny_image_size: int = field(default=32, metadata={"help": "Tiny InstructBLIP: image side in pixels."})
    tiny_patch_size: int | None = field(default=None, metadata={"help": "Tiny InstructBLIP: ViT patch side (default: image side / 4)."})
    tiny_num_query_tokens: int = field(default=4, metadata={"help": "Tiny InstructBLIP: Q-Former query tokens."})
    tiny_num_heads: int = field(default=2, metadata={"help": "Tiny InstructBLIP: attention heads of every part."})
    tiny_dropout: float = field(default=0.0, metadata={"help": "Tiny InstructBLIP: dropout of the Q-Former and LM "
                                "(0: a random tiny model learns to look sooner; the config classes' default is 0.1)."})
    tiny_random_query_tokens: bool = field(default=False, metadata={"help": "Tiny InstructBLIP: start the query "
                                           "tokens random (std 0.02, as LAVIS) instead of at zero (transformers)."})
    tiny_init: Literal["transformers", "pytorch"] = field(default="transformers", metadata={
        "help": "Tiny InstructBLIP: initial weights of the linear and convolution layers: transformers' (std 0.02) "
                "or PyTorch's (uniform +-1/sqrt(fan_in)), with which the baseline arm learns to look sooner."})
    train_vision_post_layernorm: bool = field(
        default=False, metadata={"help": "Also train the ViT's final layer norm (LAVIS trains ln_vision)."}
    )
    train_all: bool = field(default=False, metadata={"help": "Train every weight (tiny-model experiments)."})
    model_dtype: precision.ModelDtype = field(
        default="auto",
        metadata={"help": "Dtype of the frozen weights. auto: bfloat16 on a CUDA GPU that supports it, else float32. "
                  "Trainable weights stay float32; use bf16: true for mixed-precision compute."},
    )
    cpu_threads: int | None = field(
        default=None,
        metadata={"help": "Intra-op CPU threads. Default: OMP_NUM_THREADS when set, else 1 for a model under 50 M "
                  "weights on the CPU (the tiny models: a second thread only slows them), else PyTorch's default."},
    )
    local_files_only: bool = field(default=False, metadata={"help": "Never contact the hub."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow code from the model repo to run."})
    max_instruction_length: int = field(default=128, metadata={"help": "Instruction tokens (truncated from the left)."})
    max_target_length: int = field(default=256, metadata={"help": "Target tokens (truncated from the right)."})
    image_pipeline: Literal["plain", "fast"] = field(
        default="plain",
        metadata={"help": "Image -> pixel_values. plain: the image processor's own path; fast: JPEG draft decoding "
                  "+ one vectorised normalise, ~3x the samples/s, pixels close to plain (docs/PERFORMANCE.md). "
                  "Saved in the checkpoint, so evaluation and the demo preprocess as training did."},
    )
    use_lora: bool = field(default=False, metadata={"help": "Train LoRA adapters (peft) instead of whole weights: "
                           "causal_lm and chat VLMs on the language model; instructblip where lora_target_modules "
                           "says (the Q-Former, and the LLM when its names are listed)."})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA alpha."})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout."})
    lora_target_modules: list[str] | None = field(
        default=None,
        metadata={"help": "Module names that get LoRA adapters, matched as peft does (a name, or the end of a dotted "
                  "name). Default: q_proj, v_proj (causal_lm, chat VLMs); for instructblip the Q-Former's "
                  "self-attention query and value (attention.attention.query, attention.attention.value). "
                  "Q-Former names: crossattention.attention.query/key/value, crossattention.output.dense, "
                  "intermediate_query.dense / output_query.dense (the queries' feed-forward), query, key, value, "
                  "dense (all); LLM names (q_proj, v_proj, ...) add LoRA on the LLM."},
    )
    train_query_tokens_and_projection: bool = field(
        default=True, metadata={"help": "instructblip with use_lora: also train the query tokens and the language "
                                "projection whole (false: only the adapters train)."})
    quantization_bit: int | None = field(
        default=None,
        metadata={"help": "instructblip: load the LLM in 4 or 8 bits (bitsandbytes; pip install 'sit-vqa[quant]'), "
                  "frozen; the ViT, Q-Former and projection stay in model_dtype. Needs a model loaded by path or "
                  "hub id (not tiny_model). The export writes full precision."},
    )

    # image_text_to_text: what trains (LLaMA-Factory's names; sit_vqa.modeling.chat_vlm applies them)
    freeze_vision_tower: bool = field(default=True, metadata={"help": "image_text_to_text: keep the vision tower frozen."})
    freeze_multi_modal_projector: bool = field(
        default=False, metadata={"help": "image_text_to_text: keep the projector frozen (it trains by default)."})
    freeze_language_model: bool | None = field(
        default=None, metadata={"help": "image_text_to_text: true: frozen (LoRA only with use_lora); false: trained "
                                "fully; unset: LoRA above 1B language-model parameters, else trained fully."})

    def __post_init__(self):
        if self.model_name_or_path is None and self.tiny_model is None:
            raise ConfigError("set model_name_or_path (a hub id or local directory) or tiny_model (decoder or t5)")
        if self.model_name_or_path is not None and self.tiny_model is not None:
            raise ConfigError(
                f"both model_name_or_path ({self.model_name_or_path}) and tiny_model ({self.tiny_model}) are set; "
                "keep one (the tiny-model configs set tiny_model: start from vqa_sit.yaml or text_sit.yaml "
                "without it for a real model)"
            )
        if self.model_type not in FAMILIES:
            raise ConfigError(unknown_model_type(self.model_type))
        self._check_lora_and_quantization()
        if self.tiny_model is not None and not model_family(self.model_type).builds_tiny:
            raise ConfigError(f"model_type {self.model_type} has no tiny offline model: it loads model_name_or_path "
                              "(a hub id or a local directory; tests build chat VLMs with "
                              "sit_vqa.modeling.chat_replicas); unset tiny_model")
        for name in ("max_instruction_length", "max_target_length", "lora_r", "tiny_hidden_size", "tiny_num_layers",
                     "tiny_image_size", "tiny_num_query_tokens", "cpu_threads"):
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")

    @property
    def lora_targets(self) -> list[str]:
        """lora_target_modules, or the family's default placements (`ModelFamily.default_lora_targets`)."""
        if self.lora_target_modules is not None:
            return list(self.lora_target_modules)
        return list(model_family(self.model_type).default_lora_targets)

    def _check_lora_and_quantization(self) -> None:
        if self.use_lora and self.train_all:
            raise ConfigError("use_lora and train_all contradict each other (use_lora: adapters on frozen weights; "
                              "train_all: every weight trained); set one of them to false")
        if self.lora_target_modules is not None and not self.lora_target_modules:
            raise ConfigError("lora_target_modules is empty: name the modules that get LoRA adapters, or leave it "
                              "out for the default placements")
        if self.quantization_bit is None:
            return
        if self.quantization_bit not in (4, 8):
            raise ConfigError(f"quantization_bit must be 4 or 8 (bitsandbytes), got {self.quantization_bit}; leave "
                              "it out for an unquantized LLM")
        if not model_family(self.model_type).quantizes_llm:
            raise ConfigError(f"quantization_bit applies to model_type {family_names(lambda f: f.quantizes_llm)} "
                              f"(its frozen LLM), not {self.model_type}")
        if self.tiny_model is not None:
            raise ConfigError("quantization_bit needs a model loaded through from_pretrained, and tiny_model builds "
                              "one in code: save it first (build_tiny_instructblip(...) then model.save_pretrained(DIR) "
                              "and processor.save_pretrained(DIR), as the tests do) and set model_name_or_path: DIR "
                              "instead of tiny_model")
        if self.train_all:
            raise ConfigError("quantization_bit freezes the LLM in 4/8 bits, and train_all trains every weight: drop "
                              "one of them")
