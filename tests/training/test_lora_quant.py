"""use_lora on InstructBLIP (LoRA on the Q-Former through peft) and quantization_bit (a 4/8-bit frozen LLM,
bitsandbytes on the CPU): runs of the tiny model that train, resume bit-exactly, evaluate, answer in the demo and
export merged; the bad combinations are ConfigErrors (exit 2 from train.py)."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from transformers import InstructBlipForConditionalGeneration, TrainerCallback

import evaluate
import train
from sit_vqa.apps.demo import VqaDemo
from sit_vqa.apps.export import export_model
from sit_vqa.config import load_config
from sit_vqa.errors import ConfigError
from sit_vqa.modeling import checkpoint as ckpt
from sit_vqa.modeling.arguments import ModelArguments
from sit_vqa.modeling.checkpoint import load_checkpoint
from sit_vqa.modeling.quantization import quantization_config
from sit_vqa.modeling.tiny import build_tiny_instructblip
from sit_vqa.training.run import run_training
from tests.training.test_training import CrashAtStep, logged_losses

REPO = Path(__file__).resolve().parents[2]
SMALL_CONFIG = REPO / "tests" / "configs" / "bundled_sample.yaml"
IMAGE = sorted((REPO / "data" / "sample" / "val2014").glob("*.jpg"))[0]
LORA = ["--use_lora", "true", "--train_all", "false", "--lora_dropout", "0.0"]


def run_config(tmp_path: Path, *overrides: str, config: Path = SMALL_CONFIG):
    return load_config(config, [
        "--output_dir", str(tmp_path / "run"), "--prepared_cache_dir", str(tmp_path / "cache"), "--report_to", "none",
        "--per_device_train_batch_size", "4", "--subset_questions", "16", "--logging_steps", "1",
        "--save_steps", "2", "--max_steps", "4", "--learning_rate", "1e-2", *overrides])


@pytest.fixture(autouse=True)
def _repo_cwd(monkeypatch):
    monkeypatch.chdir(REPO)  # the config names data/sample/... relative to the repository


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    """A 4-step run of Q-Former LoRA (the default placements: self-attention query and value)."""
    out = tmp_path_factory.mktemp("lora")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(REPO)
        return run_training(run_config(out, *LORA)), out


def base_name(name: str) -> str:
    """A peft model's parameter name as the plain model names it."""
    return name.removeprefix("base_model.model.").replace(".base_layer.", ".")


def test_qformer_lora_trains_the_adapters_projection_and_query_tokens_only(lora_run):
    final, out = lora_run
    losses = logged_losses(out / "run")
    assert sorted(losses) == [1, 2, 3, 4] and all(torch.isfinite(torch.tensor(list(losses.values()))))
    trained_names = set(load_file(final / ckpt.WEIGHTS_NAME))
    adapters = {name for name in trained_names if ".lora_" in name}
    assert adapters and {name.split(".lora_")[0] for name in adapters} == {
        f"base_model.model.qformer.encoder.layer.{i}.attention.attention.{part}" for i in (0, 1)
        for part in ("query", "value")}
    assert trained_names - adapters == {"base_model.model.query_tokens", "base_model.model.language_projection.weight",
                                        "base_model.model.language_projection.bias"}

    initial = dict(build_tiny_instructblip("decoder", seed=0)[0].named_parameters())
    trained = load_checkpoint(final).model
    changed = set()
    for name, param in trained.named_parameters():
        if ".lora_" in name:
            changed |= {name} if name.endswith("lora_B.default.weight") and param.abs().sum() > 0 else set()
        elif not torch.equal(param, initial[base_name(name)]):
            changed.add(base_name(name))
    assert {"query_tokens", "language_projection.weight"} <= changed
    assert any("lora_B" in name for name in changed), "no adapter moved off its zero start"
    assert not {name for name in changed if name.startswith(("qformer.", "vision_model.", "language_model."))}


def test_a_target_list_can_put_lora_on_the_llm_and_freeze_the_projection(tmp_path, capsys):
    config = run_config(tmp_path, *LORA, "--max_steps", "1", "--save_steps", "1", "--lora_target_modules",
                        "crossattention.attention.key", "q_proj", "--train_query_tokens_and_projection", "false")
    final = run_training(config)
    names = set(load_file(final / ckpt.WEIGHTS_NAME))
    assert names and all(".lora_" in name for name in names)
    targets = {name.split(".lora_")[0].removeprefix("base_model.model.") for name in names}
    assert targets == {f"qformer.encoder.layer.{i}.crossattention.attention.key" for i in (0, 1)} | {
        f"language_model.model.layers.{i}.self_attn.q_proj" for i in (0, 1)}
    printed = capsys.readouterr().out
    assert f"trainable params: {sum(t.numel() for t in load_file(final / ckpt.WEIGHTS_NAME).values()):,} / total" in printed


def test_qformer_lora_resumes_bit_exactly(lora_run, tmp_path):
    final, _ = lora_run
    with pytest.raises(KeyboardInterrupt):
        run_training(run_config(tmp_path, *LORA), callbacks=[CrashAtStep(2)])
    resumed = run_training(run_config(tmp_path, *LORA, "--resume"))
    expected, got = load_file(final / ckpt.WEIGHTS_NAME), load_file(resumed / ckpt.WEIGHTS_NAME)
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[name], got[name]) for name in expected)


def test_qformer_lora_evaluates_answers_and_exports_merged(lora_run, tmp_path):
    final, _ = lora_run
    out = tmp_path / "eval"
    assert evaluate.main(["--config", str(SMALL_CONFIG), "--checkpoint", str(final), "--limit", "2", "--no-progress",
                          "--max-new-tokens", "3", "--out", str(out)]) == 0
    assert len(json.loads((out / "results.json").read_text())) == 2
    demo = VqaDemo.load(final)
    reply = demo.ask(IMAGE, "What color is the shape?")
    assert reply.raw == reply.raw.strip() and isinstance(reply.answer, str)

    exported = export_model(final, tmp_path / "exported")
    plain = InstructBlipForConditionalGeneration.from_pretrained(exported).eval()
    assert not any("lora" in name for name, _ in plain.named_parameters())
    inputs = demo.processor(images=[Image.open(IMAGE).convert("RGB")],
                            text=["What color is the shape?"], return_tensors="pt")
    with torch.no_grad():
        merged_logits = plain(**inputs).logits
        adapter_logits = demo.model(**inputs).logits
        base_logits = build_tiny_instructblip("decoder", seed=0)[0](**inputs).logits
    torch.testing.assert_close(merged_logits, adapter_logits, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(merged_logits, base_logits, atol=1e-4), "the export lost the adapters"


# --------------------------------------------------------------------------------------- a 4/8-bit LLM


@pytest.fixture(scope="module")
def saved_tiny_config(tmp_path_factory):
    """The small config on the tiny model saved to a directory (quantization loads through from_pretrained)."""
    root = tmp_path_factory.mktemp("saved_tiny")
    model, processor = build_tiny_instructblip("decoder", seed=0)
    model.save_pretrained(root / "model")
    processor.save_pretrained(root / "model")
    config = root / "saved_tiny.yaml"
    config.write_text(SMALL_CONFIG.read_text().replace("tiny_model: decoder", f"model_name_or_path: {root / 'model'}"))
    return config


class LanguageModelUnchanged(TrainerCallback):
    """Snapshots the LLM's weights (the quantized ones as stored) as training begins; compares as it ends."""

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.before = {name: param.detach().clone() for name, param in model.named_parameters()
                       if ".language_model." in name and ".lora_" not in name}

    def on_train_end(self, args, state, control, model=None, **kwargs):
        after = {name: param for name, param in model.named_parameters() if name in self.before}
        self.quantized_dtypes = {param.dtype for param in after.values() if not param.is_floating_point()}
        self.changed = [name for name, param in after.items() if not torch.equal(param, self.before[name])]


@pytest.mark.parametrize("bits, lora, extra", [(4, True, []), (8, True, []), (4, False, []),
                                               (4, True, ["--gradient_checkpointing", "true"])],
                         ids=["nf4-lora", "int8-lora", "nf4-full", "nf4-lora-checkpointing"])
def test_a_quantized_llm_stays_bit_identical_while_the_qformer_side_trains(saved_tiny_config, tmp_path, bits, lora,
                                                                           extra):
    watch = LanguageModelUnchanged()
    overrides = ["--quantization_bit", str(bits), "--train_all", "false", *(LORA if lora else []), *extra]
    final = run_training(run_config(tmp_path, *overrides, "--max_steps", "2", config=saved_tiny_config),
                         callbacks=[watch])
    assert watch.quantized_dtypes == {torch.uint8 if bits == 4 else torch.int8}
    assert watch.changed == []
    assert all(torch.isfinite(torch.tensor(list(logged_losses(tmp_path / "run").values()))))
    weights = load_file(final / ckpt.WEIGHTS_NAME)
    assert not any(".language_model." in name for name in weights)  # the quantized LLM is never saved
    initial = dict(build_tiny_instructblip("decoder", seed=0)[0].named_parameters())
    if lora:
        assert any(name.endswith("lora_B.default.weight") and tensor.abs().sum() > 0 for name, tensor in weights.items())
    else:
        changed = [name for name, tensor in weights.items() if name.startswith("base_model.model.qformer.")
                   and not torch.equal(tensor, initial[base_name(name)])]
        assert changed, "the Q-Former did not train"

    loaded = load_checkpoint(final)  # evaluation and the demo load the LLM quantized again
    assert loaded.model.get_base_model().is_quantized
    assert VqaDemo.load(final).ask(IMAGE, "What color is the shape?").raw is not None


@pytest.mark.parametrize("lora", [True, False], ids=["lora", "full-qformer"])
def test_a_quantized_run_exports_a_full_precision_model(saved_tiny_config, tmp_path, lora):
    final = run_training(run_config(tmp_path, "--quantization_bit", "4", "--train_all", "false", *(LORA if lora else []),
                                    "--max_steps", "1", "--save_steps", "1", config=saved_tiny_config))
    exported = export_model(final, tmp_path / "exported")
    assert "quantization_config" not in json.loads((exported / "config.json").read_text())
    plain = InstructBlipForConditionalGeneration.from_pretrained(exported)
    assert all(param.dtype == torch.float32 for param in plain.parameters())


# ------------------------------------------------------------------------------------ bad combinations


def test_train_py_exits_2_on_a_quantized_tiny_model_saying_to_save_it(tmp_path):
    done = subprocess.run([sys.executable, "train.py", "--config", str(SMALL_CONFIG), "--output_dir",
                           str(tmp_path / "run"), "--quantization_bit", "4"], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 2
    assert re.search("quantization_bit needs a model loaded through from_pretrained.*save it first", done.stderr)
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("flags, message", [
    (["--use_lora", "true", "--train_all", "true"], "use_lora and train_all contradict"),
    (["--quantization_bit", "3", "--train_all", "false"], "quantization_bit must be 4 or 8"),
])
def test_bad_combinations_are_config_errors(flags, message, tmp_path):
    with pytest.raises(ConfigError, match=message):
        train.main(["--config", str(SMALL_CONFIG), "--output_dir", str(tmp_path / "run"), *flags])


def test_a_target_list_matching_nothing_names_the_available_modules(tmp_path):
    argv = ["--config", str(SMALL_CONFIG), "--output_dir", str(tmp_path / "run"), "--prepared_cache_dir",
            str(tmp_path / "cache"), "--report_to", "none", *LORA, "--lora_target_modules", "qkv", "fc1"]
    with pytest.raises(ConfigError) as error:
        train.main(argv)
    assert "lora_target_modules ['qkv', 'fc1'] match no Linear layer" in str(error.value)
    assert "qformer: crossattention.attention.key" in str(error.value)
    assert "language_model: self_attn.q_proj" in str(error.value)


def test_missing_bitsandbytes_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # what an environment without it imports
    args = ModelArguments(model_name_or_path="some/dir", quantization_bit=8)
    with pytest.raises(ConfigError, match=r"needs bitsandbytes.*pip install 'sit-vqa\[quant\]'"):
        quantization_config(args, torch.float32)
