"""model_type image_text_to_text end to end on tiny replicas of LLaVA, Idefics3 and PaliGemma (real transformers
classes, the hub checkpoints' special tokens and chat templates): train on the bundled sample through
run_training, resume, evaluate VQAv2, ask through the demo API, export and reload with plain transformers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor

from sit_vqa.apps.demo import VqaDemo
from sit_vqa.apps.export import export_model
from sit_vqa.config import load_config
from sit_vqa.errors import ConfigError
from sit_vqa.evaluation.options import EvalOptions
from sit_vqa.evaluation.runner import run_evaluation
from sit_vqa.modeling.builders_for_tests import save_chat_replica
from sit_vqa.modeling.chat_replicas import CHAT_REPLICA_KINDS, build_chat_replica
from sit_vqa.modeling.chat_vlm import IGNORE_INDEX, ChatSampleTransform, part_of
from sit_vqa.modeling.checkpoint import load_checkpoint
from sit_vqa.training.run import run_training

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "tests" / "configs" / "chat_vlm_sample.yaml"
ANSWER = "two red cubes"


@pytest.fixture(autouse=True)
def _repo_cwd(monkeypatch):
    monkeypatch.chdir(REPO)


def chat_config(tmp_path, base, *overrides):
    return load_config(CONFIG, [
        "--model_name_or_path", str(base), "--output_dir", str(tmp_path / "run"),
        "--prepared_cache_dir", str(tmp_path / "cache"), "--report_to", "none", "--subset_questions", "16",
        "--per_device_train_batch_size", "4", "--logging_steps", "1", "--save_steps", "2", "--max_steps", "2",
        *overrides])


@pytest.mark.parametrize("kind", CHAT_REPLICA_KINDS)
def test_labels_cover_only_the_answer_and_its_end_token(kind):
    _, processor = build_chat_replica(kind)
    transform = ChatSampleTransform(processor)
    sample = transform({"instruction": "What is on the table?", "target": ANSWER,
                        "image": Image.new("RGB", (40, 30), "red")})
    learned = sample["labels"][sample["labels"] != IGNORE_INDEX]
    tokenizer = processor.tokenizer
    assert tokenizer.decode(learned, skip_special_tokens=True).strip() == ANSWER
    assert learned[-1].item() == tokenizer.eos_token_id  # the model learns to stop
    prompt = transform({"instruction": "What is on the table?", "image": Image.new("RGB", (40, 30))}, with_target=False)
    assert "labels" not in prompt and len(prompt["input_ids"]) < len(sample["input_ids"])


def test_parts_are_told_apart_and_the_default_freezing_trains_projector_and_language_model():
    model, _ = build_chat_replica("llava")
    parts = {part_of(name) for name, _ in model.named_parameters()}
    assert parts == {"vision", "projector", "language"}
    from sit_vqa.modeling.arguments import ModelArguments
    from sit_vqa.modeling.chat_vlm import configure_chat_trainable
    configure_chat_trainable(model, ModelArguments(model_type="image_text_to_text", model_name_or_path="x"))
    trained = {part_of(name) for name, p in model.named_parameters() if p.requires_grad}
    assert trained == {"projector", "language"}  # the vision tower stays frozen; a tiny LM trains fully


def test_unsupported_model_type_names_the_supported_ones():
    from sit_vqa.modeling.arguments import ModelArguments
    with pytest.raises(ConfigError, match="instructblip, causal_lm, image_text_to_text"):
        ModelArguments(model_type="qformer_lora", model_name_or_path="x")


@pytest.mark.slow
@pytest.mark.parametrize("kind", CHAT_REPLICA_KINDS)
def test_train_resume_evaluate_ask_export(tmp_path, kind):
    base = save_chat_replica(kind, tmp_path / "base")
    final = run_training(chat_config(tmp_path, base, "--eval_vqa_steps", "2", "--eval_subset_questions", "4"))
    assert "eval_vqa_accuracy" in (tmp_path / "run" / "train_log.jsonl").read_text()  # the in-training VQA eval
    manifest = json.loads((final / "sit_vqa_checkpoint.json").read_text())
    assert manifest["model_type"] == "image_text_to_text" and manifest["global_step"] == 2
    losses = [json.loads(line)["loss"] for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()
              if "loss" in json.loads(line)]
    assert len(losses) == 2 and all(loss == loss for loss in losses)

    resumed = run_training(chat_config(tmp_path, base, "--max_steps", "4", "--resume"))
    assert json.loads((resumed / "sit_vqa_checkpoint.json").read_text())["global_step"] == 4

    loaded = load_checkpoint(resumed)
    vision = [name for name, _ in loaded.model.named_parameters() if part_of(name) == "vision"]
    base_model = AutoModelForImageTextToText.from_pretrained(base)
    assert torch.equal(dict(loaded.model.named_parameters())[vision[0]], dict(base_model.named_parameters())[vision[0]])

    config = chat_config(tmp_path, base)
    run = run_evaluation(config, EvalOptions(checkpoint=str(resumed), limit=4, out_dir=str(tmp_path / "eval")))
    assert run.report["num_questions"] == 4 and 0 <= run.report["overall"] <= 100

    image = sorted((REPO / "data" / "sample" / "val2014").iterdir())[0]
    reply = VqaDemo.load(resumed, device="cpu").ask(str(image), "What color is the cube?")
    assert isinstance(reply.raw, str)

    out = export_model(resumed, tmp_path / "export")
    card = (out / "README.md").read_text()
    assert "AutoModelForImageTextToText" in card and "InstructBlip" not in card
    model = AutoModelForImageTextToText.from_pretrained(out)
    processor = AutoProcessor.from_pretrained(out)
    trained = dict(loaded.model.named_parameters())
    language = next(name for name, p in trained.items() if part_of(name) == "language" and p.requires_grad is not None
                    and name in dict(model.named_parameters()))
    assert torch.equal(dict(model.named_parameters())[language], trained[language])
    assert type(processor).__name__ == type(AutoProcessor.from_pretrained(base)).__name__
    exported_reply = VqaDemo.load(out, device="cpu").ask(str(image), "What color is the cube?")
    assert exported_reply.raw == reply.raw  # the export answers as the checkpoint does


def test_a_template_without_generation_tags_masks_by_the_prompt_length():
    _, processor = build_chat_replica("llava")
    record = {"instruction": "What is on the table?", "target": ANSWER, "image": Image.new("RGB", (40, 30), "red")}
    tagged = ChatSampleTransform(processor)(record)
    processor.chat_template = processor.chat_template.replace("{% generation %}", "").replace("{% endgeneration %}", "")
    untagged = ChatSampleTransform(processor)(record)
    assert torch.equal(untagged["input_ids"], tagged["input_ids"])
    assert torch.equal(untagged["labels"], tagged["labels"])


def test_checkpoint_holds_only_the_trained_parts(tmp_path):
    from safetensors.torch import load_file
    base = save_chat_replica("llava", tmp_path / "base")
    final = run_training(chat_config(tmp_path, base, "--max_steps", "1", "--freeze_language_model", "true"))
    names = set(load_file(final / "trainable.safetensors"))
    assert names and {part_of(name) for name in names} == {"projector"}


def test_a_text_only_checkpoint_is_refused_naming_its_model_type(tmp_path):
    from sit_vqa.errors import ConfigError
    from sit_vqa.modeling.chat_vlm import load_chat_vlm
    from sit_vqa.modeling.tiny import build_tiny_causal_lm
    model, tokenizer = build_tiny_causal_lm()
    model.save_pretrained(tmp_path / "lm")
    tokenizer.save_pretrained(tmp_path / "lm")
    with pytest.raises(ConfigError, match="holds a 'llama' model .* set model_type: causal_lm"):
        load_chat_vlm(tmp_path / "lm")


@pytest.mark.parametrize("switches, trained", [
    (dict(freeze_multi_modal_projector=True, freeze_language_model=False), {"language"}),
    (dict(freeze_vision_tower=False, freeze_language_model=True), {"vision", "projector"}),
])
def test_each_freezing_switch_decides_its_part(switches, trained):
    from sit_vqa.modeling.arguments import ModelArguments
    from sit_vqa.modeling.chat_vlm import configure_chat_trainable
    model, _ = build_chat_replica("idefics3")
    configure_chat_trainable(model, ModelArguments(model_type="image_text_to_text", model_name_or_path="x", **switches))
    assert {part_of(name) for name, p in model.named_parameters() if p.requires_grad} == trained


@pytest.mark.slow
def test_lora_on_the_language_model_trains_and_exports_merged(tmp_path):
    from safetensors.torch import load_file
    base = save_chat_replica("llava", tmp_path / "base")
    final = run_training(chat_config(tmp_path, base, "--use_lora", "true", "--learning_rate", "1e-2"))
    names = set(load_file(final / "trainable.safetensors"))
    assert any("lora_" in name for name in names)
    assert {part_of(name) for name in names if "lora_" not in name} == {"projector"}
    out = export_model(final, tmp_path / "export")
    exported = AutoModelForImageTextToText.from_pretrained(out)
    assert not any("lora_" in name for name, _ in exported.named_parameters())
    plain = dict(AutoModelForImageTextToText.from_pretrained(base).named_parameters())
    changed = [name for name, p in exported.named_parameters()
               if part_of(name) == "language" and not torch.equal(p, plain[name])]
    assert any("q_proj" in name for name in changed)  # the adapters were merged into the weights
