"""A model family is one module plus one entry in `FAMILIES`: a toy family registered here (the tiny causal LM,
of which only the final norm trains) trains through train.py's code, writes a checkpoint that loads back through
the family, and is evaluated on the held-out text set, without any other change to the package."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from sit_vqa.config import load_config
from sit_vqa.errors import ConfigError
from sit_vqa.evaluation.options import EvalOptions, TaskOptions
from sit_vqa.evaluation.runner import run_evaluation
from sit_vqa.modeling.checkpoint import load_checkpoint, read_manifest
from sit_vqa.modeling.arguments import ModelArguments
from sit_vqa.modeling.collate import SampleTransform
from sit_vqa.modeling.families import FAMILIES, ModelFamily, model_family
from sit_vqa.modeling.loading import build_model
from sit_vqa.modeling.tiny import build_tiny_causal_lm
from sit_vqa.training.run import run_training

REPO = Path(__file__).resolve().parents[2]
TEXT_CONFIG = REPO / "tests" / "configs" / "text_lora.yaml"
TRAINED = "model.norm.weight"


def _load(args, *, dtype, device):
    return build_tiny_causal_lm(seed=args.tiny_model_seed, hidden_size=args.tiny_hidden_size,
                                num_layers=args.tiny_num_layers)


def _prepare(model, args, dtype, *, quiet=False):
    model.requires_grad_(False)
    model.get_parameter(TRAINED).requires_grad_(True)
    return model


NORM_ONLY = ModelFamily(name="norm_only_lm", answers_images=False, load=_load, prepare_for_training=_prepare,
                        sample_transform=SampleTransform.for_model)
LOADED_ONLY = dataclasses.replace(NORM_ONLY, name="loaded_only_lm", builds_tiny=False, default_lora_targets=("o_proj",))


@pytest.fixture
def registered(monkeypatch):
    monkeypatch.chdir(REPO)
    monkeypatch.setitem(FAMILIES, NORM_ONLY.name, f"{__name__}:NORM_ONLY")  # the one entry a new family adds
    monkeypatch.setitem(FAMILIES, LOADED_ONLY.name, f"{__name__}:LOADED_ONLY")


def toy_config(tmp_path, *overrides: str):
    return load_config(TEXT_CONFIG, ["--model_type", "norm_only_lm", "--use_lora", "false", "--output_dir",
                                     str(tmp_path / "run"), "--max_steps", "2", "--per_device_train_batch_size", "2",
                                     "--report_to", "none", *overrides])


def test_a_registered_family_trains_saves_loads_and_is_evaluated(registered, tmp_path):
    config = toy_config(tmp_path)
    before = dict(build_model(config.model, quiet=True)[0].named_parameters())
    final = run_training(config)
    assert read_manifest(final).trained_tensors == (TRAINED,)  # what the family's prepare_for_training chose
    model, _, manifest = load_checkpoint(final)
    assert manifest.model_type == "norm_only_lm"
    changed = {name for name, param in model.named_parameters() if not torch.equal(param, before[name])}
    assert changed == {TRAINED}
    run = run_evaluation(toy_config(tmp_path), EvalOptions(checkpoint=str(final), limit=2, max_new_tokens=4,
                                                            out_dir=str(tmp_path / "eval"), progress=False),
                         TaskOptions())  # --task auto: the text set, as for every family that takes no images
    assert run.report["task"] == "text" and run.report["num_questions"] == 2


def test_the_code_asks_the_family_not_the_name(registered):
    assert model_family("norm_only_lm") is NORM_ONLY and model_family("causal_lm").default_task == "text"
    assert ModelArguments(model_type="norm_only_lm", tiny_model="decoder").model_type == "norm_only_lm"
    assert [f.answers_images for f in map(model_family, ("instructblip", "image_text_to_text"))] == [True, True]
    with pytest.raises(ConfigError, match="unsupported model_type 'llava'; supported: instructblip, causal_lm, "
                                          "image_text_to_text, norm_only_lm"):
        model_family("llava")


def test_the_config_rules_are_the_family_s(registered):
    """use_lora's default placements, tiny_model, quantization_bit and feature_cache_dir are checked against
    the family's fields, for a registered family as for the built-in ones."""
    def lora_targets(model_type, **source):
        return ModelArguments(model_type=model_type, use_lora=True, **source).lora_targets
    assert lora_targets("norm_only_lm", tiny_model="decoder") == ["q_proj", "v_proj"]  # the default
    assert lora_targets("loaded_only_lm", model_name_or_path="m") == ["o_proj"]
    assert lora_targets("instructblip", tiny_model="decoder") == ["attention.attention.query", "attention.attention.value"]
    with pytest.raises(ConfigError, match="model_type loaded_only_lm has no tiny offline model"):
        ModelArguments(model_type="loaded_only_lm", tiny_model="decoder")
    with pytest.raises(ConfigError, match="quantization_bit applies to model_type instructblip .* not norm_only_lm"):
        ModelArguments(model_type="norm_only_lm", model_name_or_path="m", quantization_bit=4)
    with pytest.raises(ConfigError, match="feature_cache_dir caches the frozen ViT of an instructblip model; .* "
                                          "model_type norm_only_lm"):
        toy_config(Path("/tmp/unused"), "--feature_cache_dir", "/tmp/unused-cache")
