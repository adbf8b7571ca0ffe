"""The hub checkpoints' structure (sit_vqa.modeling.replicas), loaded through the real path: ids, generation stopping at
the tokenizer's EOS, and train -> resume -> evaluate with `model_name_or_path: DIR`."""

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

import evaluate
import train
from sit_vqa.modeling import checkpoint as ckpt
from sit_vqa.modeling.generation import GenerationSettings, generate_texts
from sit_vqa.modeling.generation import generation_kwargs
from sit_vqa.modeling.loading import load_instructblip
from sit_vqa.modeling.builders_for_tests import force_lm_output

REPO = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------------------------------ structure


def test_vicuna_replica_has_the_hub_ids(replica_dirs):
    model, processor = load_instructblip(replica_dirs["vicuna-7b"])
    tokenizer = processor.tokenizer
    assert type(tokenizer).__name__ == "LlamaTokenizer"
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.unk_token) == ("</s>", "</s>", "</s>")
    assert (tokenizer.eos_token_id, tokenizer.pad_token_id) == (2, 32000)
    assert tokenizer.convert_tokens_to_ids(["<unk>", "<s>", "<image>", "<video>"]) == [0, 1, 32001, 32002]
    assert len(tokenizer) == 32003 and model.get_input_embeddings().num_embeddings == 32064
    text = model.config.text_config
    assert (text.bos_token_id, text.eos_token_id, text.pad_token_id) == (0, 1, 32000)  # the hub's mismatch
    assert text.architectures == ["LLaMAForCausalLM"] and text.model_type == "llama"
    assert model.config.image_token_index == 32001 and model.config.video_token_index == 32002
    assert json.loads((replica_dirs["vicuna-7b"] / "processor_config.json").read_text())["processor_class"] == (
        "InstructBlipVideoProcessor"
    )
    assert len(processor.qformer_tokenizer) == 30523 == model.config.qformer_config.vocab_size
    assert processor.qformer_tokenizer.convert_tokens_to_ids("[DEC]") == 30522
    # byte fallback: text outside the pieces still round-trips
    ids = tokenizer("Grüße ✓", add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == "Grüße ✓"


def test_flan_t5_replica_has_the_hub_ids(replica_dirs):
    model, processor = load_instructblip(replica_dirs["flan-t5-xl"])
    tokenizer = processor.tokenizer
    assert type(tokenizer).__name__ == "T5Tokenizer"
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id) == (0, 1, 2)
    assert tokenizer.convert_tokens_to_ids(["<extra_id_0>", "<extra_id_99>", "<image>", "<video>"]) == [
        32099, 32000, 32100, 32101
    ]
    assert len(tokenizer) == 32102 and model.get_input_embeddings().num_embeddings == 32128
    text = model.config.text_config
    assert (text.pad_token_id, text.eos_token_id, text.decoder_start_token_id) == (0, 1, 0)
    assert model.config.image_token_index == 32100 and not model.config.use_decoder_only_language_model


# ------------------------------------------------------------------------------------ stopping at EOS


def red_then_eos_then_blue(directory: Path):
    """The Vicuna replica scripted to emit "red", </s> (id 2, the tokenizer's EOS), then "blue" forever."""
    model, processor = load_instructblip(directory)
    tokenizer = processor.tokenizer
    red, blue = tokenizer.convert_tokens_to_ids(["▁red", "▁blue"])
    force_lm_output(model, [red, tokenizer.eos_token_id, blue])
    return model, processor


def test_generation_stops_at_the_tokenizer_eos_on_the_vicuna_structure(replica_dirs):
    model, processor = red_then_eos_then_blue(replica_dirs["vicuna-7b"])
    image = Image.new("RGB", (64, 48), (200, 30, 30))
    records = [{"instruction": "What color is the circle?", "image": image},
               {"instruction": "Which color is the shape in this picture?", "image": image}]
    texts = generate_texts(model, processor, records, GenerationSettings(batch_size=2, max_new_tokens=8), progress=False)
    assert texts == ["red", "red"]  # not "red blue blue ...": the words after </s> are no part of the answer


def test_generation_kwargs_read_the_tokenizer_not_the_lm_config(replica_dirs):
    model, processor = red_then_eos_then_blue(replica_dirs["vicuna-7b"])
    assert generation_kwargs(processor.tokenizer) == {"eos_token_id": 2, "pad_token_id": 32000}
    inputs = processor(images=Image.new("RGB", (32, 32)), text="What color is it?", return_tensors="pt")
    with torch.inference_mode():
        generated = model.generate(**inputs, max_new_tokens=8, **generation_kwargs(processor.tokenizer))
    new = generated[0, inputs["input_ids"].shape[1]:].tolist()
    assert new[:2] == [processor.tokenizer.convert_tokens_to_ids("▁red"), 2]
    assert len(new) == 2  # stopped at </s>, nothing after it


def test_loaded_model_and_its_export_carry_the_tokenizer_eos(replica_dirs, tmp_path):
    model, processor = load_instructblip(replica_dirs["vicuna-7b"])
    assert model.generation_config.eos_token_id == 2
    assert model.language_model.generation_config.eos_token_id == 2  # what InstructBLIP's generate uses
    model.save_pretrained(tmp_path / "export")
    exported = json.loads((tmp_path / "export" / "generation_config.json").read_text())
    assert (exported["eos_token_id"], exported["pad_token_id"]) == (2, 32000)


# ------------------------------------------------------------------ train, resume, evaluate from DIR


def replica_config_file(tmp_path: Path, directory: Path) -> Path:
    """The quickstart recipe with `model_name_or_path: DIR` instead of `tiny_model`, shrunk to a few steps."""
    replaced = ("tiny_model:", "train_all:", "output_dir:", "per_device_train_batch_size:", "logging_steps:")
    lines = [line for line in (REPO / "configs" / "quickstart.yaml").read_text().splitlines()
             if not line.startswith(replaced)]  # each key once: a key written twice is an error
    lines += [f"model_name_or_path: {directory}", f"output_dir: {tmp_path / 'run'}",
              f"prepared_cache_dir: {tmp_path / 'cache'}", "report_to: none", "subset_questions: 8",
              "per_device_train_batch_size: 4", "per_device_eval_batch_size: 4", "logging_steps: 1"]
    path = tmp_path / "replica.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("kind", ["vicuna-7b", "flan-t5-xl"])
def test_train_resume_evaluate_from_a_replica_dir(replica_dirs, tmp_path, kind, monkeypatch):
    monkeypatch.chdir(REPO)  # the config names data/sample/... relative to the repository
    config = str(replica_config_file(tmp_path, replica_dirs[kind]))
    train.main(["--config", config, "--max_steps", "2", "--save_steps", "2"])
    run = tmp_path / "run"
    assert ckpt.read_manifest(run / "checkpoint-2").base_model == str(replica_dirs[kind])
    final = train.main(["--config", config, "--max_steps", "3", "--save_steps", "2", "--resume", "true"])
    assert ckpt.read_manifest(final).global_step == 3
    steps = [json.loads(line)["step"] for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert steps.count(3) >= 1 and steps.count(1) == 1  # resumed at step 3, not restarted
    out = tmp_path / "eval"
    status = evaluate.main(["--config", config, "--checkpoint", str(final), "--limit", "4", "--out", str(out),
                            "--max-new-tokens", "6", "--no-progress"])
    assert status == 0
    report = json.loads((out / "report.json").read_text())
    assert report["num_questions"] == 4
