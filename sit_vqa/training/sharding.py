"""FSDP: the model sharded over the processes of a run, with the Trainer's own switches.

    torchrun --nproc_per_node 8 train.py --config vqa_sit_13b.yaml    # fsdp: true + fsdp_config in the YAML
    accelerate launch --num_processes 8 train.py --config vqa_sit_13b.yaml

`fsdp: true` and `fsdp_config` are TrainingArguments' keys: transformers hands them to accelerate's FSDP plugin,
which wraps the model with torch's FSDP2 `fully_shard` (each parameter a DTensor, split over the processes):
every `transformer_layer_cls_to_wrap` block becomes one unit that is gathered for its forward and backward and
sharded again after. Frozen weights are sharded like the rest and never get optimizer state (the Trainer gives
the optimizer the trainable parameters only). Checkpoints hold the same trainable-only safetensors file as without
FSDP: each trained tensor is gathered whole from the shards, and the main process writes it once
(`sit_vqa.training.trainer.SitTrainer.save_model`); the optimizer state is gathered the same way (the Trainer's
FSDP format, optimizer.bin); the frozen base model is never written. Such a checkpoint loads in one process.

The settings that cannot work are refused here, before anything trains, each with its fix (a ConfigError, exit 2).
"""

from __future__ import annotations

from sit_vqa.config import RunConfig
from sit_vqa.errors import ConfigError

FSDP_VERSION = 2  # FSDP2 (per-parameter DTensor shards): what checkpoints are gathered from
FULL_STATE_DICT = "FULL_STATE_DICT"


def refuse_unworkable_fsdp(config: RunConfig) -> None:
    """A ConfigError for an FSDP setting that cannot work, before the model is loaded."""
    args = config.training
    if not args.fsdp:
        return
    options = args.fsdp_config or {}
    version = int(options.get("version", FSDP_VERSION))
    if version != FSDP_VERSION:
        raise ConfigError(
            f"{config.source}: fsdp_config version {version}: sit-vqa shards with FSDP2 (version: 2, the default) "
            "and gathers its checkpoints' trained tensors from FSDP2's per-parameter shards; FSDP1 is deprecated in "
            "transformers. Drop `version` from fsdp_config (or set 2)")
    state_dict_type = str(options.get("state_dict_type", FULL_STATE_DICT))
    if state_dict_type != FULL_STATE_DICT:
        raise ConfigError(
            f"{config.source}: fsdp_config state_dict_type {state_dict_type}: a sit-vqa checkpoint holds the trained "
            "tensors whole (gathered from the shards, written once), which loads in any number of processes; drop "
            "state_dict_type from fsdp_config")
    if config.model.quantization_bit is not None:
        raise ConfigError(
            f"{config.source}: fsdp with quantization_bit {config.model.quantization_bit}: the installed stack cannot "
            "shard a bitsandbytes LLM -- accelerate keeps 4-bit weights stored as uint8 (bitsandbytes' default "
            "storage) out of FSDP's shards, so every process would hold the whole LLM, and FSDP does not shard "
            "8-bit weights at all. Use one: fsdp with an unquantized LLM in bf16 (configs/vqa_sit_13b.yaml), or "
            "quantization_bit without fsdp (configs/vqa_sit_24gb.yaml, one process per GPU)")
    if args.eval_vqa_steps:
        raise ConfigError(
            f"{config.source}: eval_vqa_steps {args.eval_vqa_steps} with fsdp: generation under FSDP would need "
            "every process to run the same number of decoding steps in lockstep; set eval_vqa_steps: 0 and score "
            "the checkpoints with evaluate.py (it loads a checkpoint written under FSDP in one process, or in "
            "several under torchrun)")
    if args.world_size < 2:
        raise ConfigError(
            f"{config.source}: fsdp is set but this run has one process: FSDP shards the model over the processes "
            "of a run, so one process has nothing to shard it with. Launch several: torchrun --nproc_per_node "
            "N train.py ... (or accelerate launch --num_processes N), or set fsdp: false for one process")


def refuse_unknown_layer_classes(config: RunConfig, model) -> None:
    """A ConfigError when the wrapping policy names a layer class the model does not have (accelerate would stop
    with a bare ValueError once training starts), naming the layer classes the model has."""
    args = config.training
    if not args.fsdp:
        return
    options = args.fsdp_config or {}
    named = options.get("transformer_layer_cls_to_wrap")
    source = "fsdp_config transformer_layer_cls_to_wrap"
    if named is None and options.get("auto_wrap_policy", "TRANSFORMER_BASED_WRAP") == "TRANSFORMER_BASED_WRAP":
        named = list(getattr(model, "_no_split_modules", None) or [])  # accelerate's default: the model's own list
        source = f"the default wrapping policy (the model's _no_split_modules, as fsdp_config names none)"
    present = {type(module).__name__ for module in model.modules()}
    missing = [name for name in named or [] if name not in present]
    if missing:
        layers = sorted(name for name in present if name.endswith(("Layer", "Block")))
        raise ConfigError(
            f"{config.source}: {source} names {', '.join(missing)}, which {type(_unwrapped(model)).__name__} does not "
            f"have. Its layer classes: {', '.join(layers) or 'none'}. List those the model should be sharded by in "
            "fsdp_config: transformer_layer_cls_to_wrap: [...] (the decoder layers of the language model and "
            "vision encoder, e.g. LlamaDecoderLayer, InstructBlipEncoderLayer)")


def _unwrapped(model):
    """The transformers model inside a peft wrapper (for the message)."""
    base = getattr(model, "base_model", model)
    return getattr(base, "model", base)
