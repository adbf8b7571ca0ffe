"""The one `from_pretrained` path of every family (`load_pretrained`): is a model directory what the config's
model_type loads, and did loading fill every weight?

transformers loads whatever it is given: a LLaVA directory loaded as InstructBLIP becomes a randomly initialised
InstructBLIP (only a MISSING/UNEXPECTED report hints at it) that trains "fine". So the directory's config.json is
checked against model_type before loading (naming the model_type that fits), and after loading any weight
left at its random init is an error.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from huggingface_hub.errors import HFValidationError

from sit_vqa.errors import ConfigError, ModelLoadError
from sit_vqa.modeling.families import FAMILIES, model_family

_SHOWN = 3


def load_pretrained(source: str, model_type: str, what: str, model_class, processor_class, *,
                    dtype: torch.dtype | None = None, device=None, options: dict, quantization_config=None,
                    other_architecture: str | None = None):
    """(model, processor or tokenizer) from a hub id or a local directory (save_pretrained layout), as every
    family loads: the directory checked against `model_type` first; each weight straight from the file onto
    `device` (default: the CPU) in `dtype` (default float32), or quantized there by bitsandbytes
    (`quantization_config`); every weight filled from the files. `what` names the model in messages
    ("InstructBLIP", "a causal LM"). Raises ModelLoadError, saying how to use a local copy, when the files cannot
    be found or fetched; with `other_architecture` (the fix to say), also when `model_class` does not map the
    checkpoint's architecture.
    """
    check_model_directory(source, model_type)
    placement = dict(device_map=device_map(device))
    if quantization_config is not None:  # bitsandbytes quantizes on the device the weights are placed on
        placement = dict(quantization_config=quantization_config, device_map=device_map(device or "cpu"))
    try:
        processor = processor_class.from_pretrained(source, **options)
        model, loading_info = model_class.from_pretrained(
            source, dtype=dtype or torch.float32, output_loading_info=True, **placement, **options)
    except (OSError, HFValidationError) as error:
        raise ModelLoadError(load_error_message(what, source, error)) from error
    except ValueError as error:  # an architecture model_class does not map
        if other_architecture is None:
            raise
        raise ModelLoadError(f"{source!r} is not {what} ({str(error).strip().splitlines()[0]}); "
                             f"{other_architecture}") from error
    check_all_weights_loaded(source, model, loading_info)
    return model, processor


def device_map(device: str | torch.device | None) -> dict[str, torch.device] | None:
    # the whole model on one device (no accelerate dispatch across devices)
    return None if device is None else {"": torch.device(device)}


def load_error_message(what: str, source: str, error: Exception) -> str:
    first_line = str(error).strip().split("\n", 1)[0]
    if Path(source).is_dir():
        return (
            f"Could not load {what} from the directory {source!r}: {first_line}\n"
            "The directory must hold a complete save_pretrained() copy (config.json, the weights, and the "
            "tokenizer / processor files). Re-download it with `hf download <hub id> --local-dir "
            f"{source}`."
        )
    return (
        f"Could not load {what} {source!r}: {first_line}\n"
        f"It is not a local directory, and the Hugging Face Hub could not serve it (no network, offline mode, "
        f"a gated or misspelled repo). On a machine with network run `hf download {source} --local-dir DIR` "
        "(`huggingface-cli download` in older huggingface_hub releases), copy DIR here and pass DIR instead of "
        "the hub id. If the model is already in the local Hugging Face cache, set local_files_only=True "
        "(or HF_HUB_OFFLINE=1)."
    )


def check_model_directory(source: str, model_type: str) -> None:
    """A ConfigError when the local directory `source` holds a model that `model_type` does not load. A hub id,
    a directory without a readable config.json (the loader says what is missing) and remote code (auto_map:
    its own classes) are left to the loader."""
    config_file = Path(source) / "config.json"
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    found = config.get("model_type") if isinstance(config, dict) else None
    loads = model_family(model_type).loads  # empty: the family does not say, nothing to check
    if not isinstance(found, str) or "auto_map" in config or not loads or found in loads:
        return
    architectures = ", ".join(map(str, config.get("architectures") or [])) or "no architectures listed"
    # the family that loads it (`ModelFamily.loads`: the config.json model_types each family takes); an image
    # family first: a VLM such as Gemma 3 also loads as a causal LM, without its images
    fits = sorted((name for name in FAMILIES if found in model_family(name).loads),
                  key=lambda name: not model_family(name).answers_images)
    fix = (f"set model_type: {fits[0]} (or pass --model_type {fits[0]})" if fits else
           f"sit-vqa loads model_type {', '.join(FAMILIES)} (README: the model families); pick one of those")
    raise ConfigError(
        f"model_name_or_path {source} holds a {found!r} model ({architectures}, per {config_file}), which "
        f"model_type: {model_type} does not load (it would build a randomly initialised model or fail); {fix}, "
        "or point model_name_or_path at the model you meant"
    )


def check_all_weights_loaded(source: str, model, loading_info: dict) -> None:
    """A ModelLoadError when loading `source` left weights at their random init (missing from its files) or
    dropped weights of another shape."""
    missing = sorted(loading_info.get("missing_keys") or [])
    mismatched = sorted(str(key[0] if isinstance(key, tuple) else key)
                        for key in loading_info.get("mismatched_keys") or [])
    if not missing and not mismatched:
        return
    problems = []
    if missing:
        problems.append(f"{len(missing)} weight(s) are not in its files ({_first(missing)})")
    if mismatched:
        problems.append(f"{len(mismatched)} have another shape there ({_first(mismatched)})")
    raise ModelLoadError(
        f"loading {source} as {type(model).__name__} left weights at their random initialisation: "
        + "; ".join(problems) + ". Training would start from a partly random model. The directory is incomplete "
        "or holds another architecture: check model_type against its config.json, or save the model again "
        "(save_pretrained) / re-download it"
    )


def _first(names: list[str]) -> str:
    return ", ".join(names[:_SHOWN]) + (", ..." if len(names) > _SHOWN else "")
