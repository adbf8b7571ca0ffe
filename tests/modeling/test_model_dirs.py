"""A model directory of another architecture than model_type, or one missing weights, is refused before
training (issue #28 item 2: a LLaVA directory loaded as InstructBLIP trained a random model; causal_lm on an
InstructBLIP directory ended in a ValueError traceback). Real directories written with save_pretrained."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from sit_vqa.errors import ConfigError, ModelLoadError
from sit_vqa.modeling.arguments import ModelArguments
from sit_vqa.modeling.builders_for_tests import save_chat_replica
from sit_vqa.modeling.loading import load_base_model
from sit_vqa.modeling.tiny import build_tiny_causal_lm

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def llava_dir(tmp_path_factory):
    return save_chat_replica("llava", tmp_path_factory.mktemp("llava") / "llava")


@pytest.fixture(scope="module")
def causal_lm_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("lm") / "lm"
    model, tokenizer = build_tiny_causal_lm()
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def load(model_type: str, directory: Path):
    return load_base_model(ModelArguments(model_type=model_type, model_name_or_path=str(directory)))


@pytest.mark.parametrize("model_type, which, found, fix", [
    ("instructblip", "llava", "'llava' model (LlavaForConditionalGeneration", "model_type: image_text_to_text"),
    ("causal_lm", "vicuna", "'instructblip' model (InstructBlipForConditionalGeneration", "model_type: instructblip"),
    ("image_text_to_text", "lm", "'llama' model (LlamaForCausalLM", "model_type: causal_lm"),
])
def test_a_directory_of_another_architecture_names_the_model_type_that_fits(
        model_type, which, found, fix, llava_dir, causal_lm_dir, replica_dirs):
    directory = {"llava": llava_dir, "lm": causal_lm_dir, "vicuna": replica_dirs["vicuna-7b"]}[which]
    with pytest.raises(ConfigError) as refused:
        load(model_type, directory)
    message = str(refused.value)
    for words in (str(directory / "config.json"), found, f"model_type: {model_type} does not load", fix):
        assert words in message, (words, message)


def test_each_directory_loads_under_its_own_model_type(llava_dir, causal_lm_dir, replica_dirs):
    for model_type, directory, architecture in [("image_text_to_text", llava_dir, "LlavaForConditionalGeneration"),
                                                ("causal_lm", causal_lm_dir, "LlamaForCausalLM"),
                                                ("instructblip", replica_dirs["flan-t5-xl"],
                                                 "InstructBlipForConditionalGeneration")]:
        model, _ = load(model_type, directory)
        assert type(model).__name__ == architecture


def test_a_weight_missing_from_the_files_is_an_error_not_a_random_init(tmp_path, replica_dirs):
    directory = tmp_path / "vicuna"
    shutil.copytree(replica_dirs["vicuna-7b"], directory)
    weights = load_file(directory / "model.safetensors")
    del weights["language_projection.weight"]
    save_file(weights, directory / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ModelLoadError, match=r"1 weight\(s\) are not in its files \(language_projection.weight\)"):
        load("instructblip", directory)


def test_train_py_refuses_a_wrong_model_type_with_exit_2(tmp_path, llava_dir, replica_dirs):
    text_config = tmp_path / "text.yaml"  # text_lora.yaml with a model directory instead of the tiny model
    text_config.write_text("".join(line for line in (REPO / "tests" / "configs" / "text_lora.yaml").read_text()
                                   .splitlines(keepends=True) if not line.startswith("tiny_model:")))
    cases = [
        (REPO / "tests" / "configs" / "chat_vlm_sample.yaml", "instructblip", llava_dir, "image_text_to_text"),
        (text_config, "causal_lm", replica_dirs["vicuna-7b"], "instructblip"),
    ]
    for config, model_type, directory, fix in cases:
        result = subprocess.run(
            [sys.executable, "train.py", "--config", str(config), "--model_type", model_type,
             "--model_name_or_path", str(directory), "--output_dir", str(tmp_path / "run"), "--report_to", "none"],
            cwd=REPO, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        assert result.returncode == 2, result.stderr[-3000:]
        assert "Traceback" not in result.stderr, result.stderr[-3000:]
        assert f"model_type: {fix}" in result.stderr[result.stderr.index("error: "):]
        assert not (tmp_path / "run" / "checkpoint-1").exists()
