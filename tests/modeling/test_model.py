"""Tiny models, loading (local dir, unreachable hub id), freezing, precision, trainable-only checkpoints
and generation, all on the real transformers classes."""

import json
import re
from pathlib import Path

import huggingface_hub.constants
import pytest
import torch
from safetensors import safe_open
from transformers import (
    InstructBlipForConditionalGeneration,
    LlamaForCausalLM,
    T5ForConditionalGeneration,
)

from sit_vqa.modeling.checkpoint import (
    load_trainable_weights,
    save_trainable_weights,
    trainable_state_dict,
)
from sit_vqa.modeling.collate import SampleTransform
from sit_vqa.data.prompts import Templates, parse_sit_output
from sit_vqa.errors import CheckpointError, ModelLoadError
from sit_vqa.modeling.loading import (
    ParamCounts,
    apply_lora,
    configure_trainable,
    count_parameters,
    load_causal_lm,
    load_instructblip,
)
from sit_vqa.modeling.generation import decode_generated
from sit_vqa.modeling.precision import bf16_by_default, frozen_dtype_for, keep_trained_fp32
from sit_vqa.modeling.tiny import (
    IMAGE_TOKEN,
    TINY_VOCAB_WORDS,
    build_tiny_byte_tokenizer,
    build_tiny_causal_lm,
    build_tiny_instructblip,
    build_tiny_word_tokenizer,
)

SAMPLE_DIR = Path(__file__).resolve().parents[2] / "data" / "sample"
TRAINABLE_PREFIXES = ("qformer.", "query_tokens", "language_projection.")


def trainable_names(model):
    return {name for name, param in model.named_parameters() if param.requires_grad}


# ------------------------------------------------------------------------------------ tiny models


@pytest.mark.parametrize(("kind", "lm_class"), [("decoder", LlamaForCausalLM), ("t5", T5ForConditionalGeneration)])
def test_tiny_instructblip_is_the_real_architecture(kind, lm_class):
    model, processor = build_tiny_instructblip(kind)
    assert isinstance(model, InstructBlipForConditionalGeneration)
    assert isinstance(model.language_model, lm_class)
    assert model.config.use_decoder_only_language_model == (kind == "decoder")
    assert model.config.image_token_index == processor.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    assert processor.num_query_tokens == model.config.num_query_tokens == 4
    assert type(processor.image_processor).__name__ == "BlipImageProcessorPil"  # no torchvision
    assert model.get_input_embeddings().num_embeddings == len(processor.tokenizer)
    assert model.qformer.config.vocab_size == len(processor.qformer_tokenizer)


def test_tiny_weights_depend_only_on_the_seed():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    first, _ = build_tiny_instructblip("decoder", seed=1)
    assert torch.equal(torch.rand(1), before)  # the caller's RNG stream is untouched
    second, _ = build_tiny_instructblip("decoder", seed=1)
    other, _ = build_tiny_instructblip("decoder", seed=2)
    first_state, second_state, other_state = first.state_dict(), second.state_dict(), other.state_dict()
    assert all(torch.equal(first_state[k], second_state[k]) for k in first_state)
    assert not torch.equal(first_state["language_projection.weight"], other_state["language_projection.weight"])


def test_pytorch_init_starts_linear_layers_as_pytorch_does_and_only_them():
    """init="pytorch": every linear and convolution layer uniform in +-1/sqrt(fan_in) (PyTorch's own start),
    embeddings and norms as transformers starts them; still a function of the seed alone."""
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    model, _ = build_tiny_instructblip("decoder", seed=1, hidden_size=64, init="pytorch")
    assert torch.equal(torch.rand(1), before)  # the caller's RNG stream is untouched
    default, _ = build_tiny_instructblip("decoder", seed=1, hidden_size=64)
    again, _ = build_tiny_instructblip("decoder", seed=1, hidden_size=64, init="pytorch")
    layers = [m for m in model.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]
    for layer in layers:
        bound = 1 / layer.weight[0].numel() ** 0.5  # fan_in
        assert layer.weight.abs().max() <= bound and layer.weight.abs().max() > 0.9 * bound
    projection = model.language_projection.weight  # fan_in 64: std 1/sqrt(3 * 64) = 0.072, 3.6x transformers'
    assert projection.std() > 2.5 * default.language_projection.weight.std()
    state, again_state, default_state = model.state_dict(), again.state_dict(), default.state_dict()
    assert all(torch.equal(state[k], again_state[k]) for k in state)
    embedding = "language_model.model.embed_tokens.weight"
    assert torch.equal(state[embedding], default_state[embedding])
    with pytest.raises(ValueError, match="init must be"):
        build_tiny_instructblip("decoder", init="xavier")


def test_unknown_lm_kind_is_refused():
    with pytest.raises(ValueError, match="lm_kind must be 'decoder'"):
        build_tiny_instructblip("opt")


def test_tiny_vocabulary_has_contiguous_unique_ids():
    assert len(set(TINY_VOCAB_WORDS)) == len(TINY_VOCAB_WORDS)
    tokenizer = build_tiny_word_tokenizer(lm_kind="decoder")
    assert sorted(tokenizer.get_vocab().values()) == list(range(len(tokenizer)))


def test_template_words_are_in_the_tiny_vocabulary():
    tokenizer = build_tiny_word_tokenizer(lm_kind="decoder")
    for kind in ("baseline", "sit", "describe"):
        for text in Templates().render(kind, question="Is there a star?", caption="A red circle.", answer="yes"):
            assert tokenizer.unk_token_id not in tokenizer(text)["input_ids"], text


def test_bundled_sample_words_are_in_the_tiny_vocabulary():
    """Every question, answer and caption of data/sample tokenizes without <unk> (else extend TINY_VOCAB_WORDS)."""
    texts = []
    for split in ("train2014", "val2014"):
        questions = json.loads((SAMPLE_DIR / f"v2_OpenEnded_mscoco_{split}_questions.json").read_text())
        annotations = json.loads((SAMPLE_DIR / f"v2_mscoco_{split}_annotations.json").read_text())
        captions = json.loads((SAMPLE_DIR / f"captions_{split}.json").read_text())
        texts += [q["question"] for q in questions["questions"]] + [c["caption"] for c in captions["annotations"]]
        texts += [a["answer"] for annotation in annotations["annotations"] for a in annotation["answers"]]
    assert len(texts) > 100
    tokenizer = build_tiny_word_tokenizer(lm_kind="decoder")
    unknown = {
        word
        for text in texts
        for word in re.findall(r"\w+|[^\w\s]", text.lower())
        if tokenizer.convert_tokens_to_ids(word) == tokenizer.unk_token_id
    }
    assert not unknown


@pytest.mark.parametrize("kind", ["decoder", "t5"])
@pytest.mark.parametrize(
    ("caption", "answer"),
    [("A red circle and a blue square on a white background.", "red"), ("Two green stars.", "2"),
     ("A simple drawing of a yellow triangle.", "yes"), ("Three shapes on a plain gray background.", "three")],
)
def test_sit_target_survives_tokenize_decode_parse(kind, caption, answer):
    tokenizer = build_tiny_word_tokenizer(lm_kind=kind)
    _, target = Templates().render("sit", question="q", caption=caption, answer=answer)
    decoded = tokenizer.decode(tokenizer(target)["input_ids"], skip_special_tokens=True)
    parsed = parse_sit_output(decoded)
    assert parsed.answer == answer
    assert parsed.has_answer_marker
    assert re.sub(r"\s+([.,:])", r"\1", parsed.description) == caption.lower()


def test_byte_tokenizer_round_trips_any_text():
    tokenizer = build_tiny_byte_tokenizer()
    text = "Übersetze: «naïve» café — 3 × 4 = 12?\nSELECT * FROM users;\t🙂"
    encoded = tokenizer(text)["input_ids"]
    assert encoded[0] == tokenizer.bos_token_id and tokenizer.unk_token_id not in encoded
    assert tokenizer.decode(encoded, skip_special_tokens=True) == text


# ------------------------------------------------------------------------------------ freezing


def test_paper_freezing_trains_qformer_query_tokens_and_projection_only(capsys):
    model, _ = build_tiny_instructblip("decoder")
    counts = configure_trainable(model)

    names = trainable_names(model)
    assert names == {n for n, _ in model.named_parameters() if n.startswith(TRAINABLE_PREFIXES)}
    assert "query_tokens" in names and any(n.startswith("qformer.") for n in names)
    assert not any(n.startswith(("vision_model.", "language_model.")) for n in names)
    expected = sum(p.numel() for n, p in model.named_parameters() if n.startswith(TRAINABLE_PREFIXES))
    assert counts == ParamCounts(trainable=expected, total=sum(p.numel() for p in model.parameters()))
    assert f"trainable params: {expected:,} / total {counts.total:,}" in capsys.readouterr().out


def test_vision_post_layernorm_switch_adds_exactly_that_layer():
    model, _ = build_tiny_instructblip("t5")
    base = configure_trainable(model, quiet=True)
    with_ln = configure_trainable(model, train_vision_post_layernorm=True, quiet=True)
    added = trainable_names(model) - {n for n in trainable_names(model) if n.startswith(TRAINABLE_PREFIXES)}
    assert added == {"vision_model.post_layernorm.weight", "vision_model.post_layernorm.bias"}
    assert with_ln.trainable - base.trainable == 2 * model.config.vision_config.hidden_size


def test_train_all_and_back_to_the_paper_setting():
    model, _ = build_tiny_instructblip("decoder")
    everything = configure_trainable(model, train_all=True, quiet=True)
    assert everything.trainable == everything.total == count_parameters(model).total
    configure_trainable(model, quiet=True)  # switching back freezes again
    assert not any(n.startswith("language_model.") for n in trainable_names(model))


def test_freezing_policy_needs_instructblip(tiny_causal_lm):
    with pytest.raises(TypeError, match="pass train_all=True"):
        configure_trainable(tiny_causal_lm[0], quiet=True)


def test_backward_reaches_only_trainable_weights(red_image):
    model, processor = build_tiny_instructblip("decoder")
    configure_trainable(model, quiet=True)
    transform = SampleTransform.for_model(model, processor)
    batch = transform.collator()([transform({"instruction": "What color?", "target": "red", "image": red_image})])
    model(**batch).loss.backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert "query_tokens" in with_grad and "language_projection.weight" in with_grad
    assert with_grad <= trainable_names(model)


# ------------------------------------------------------------------------------------ precision


def test_one_precision_rule_frozen_bf16_only_with_bf16_compute():
    assert not bf16_by_default(use_cpu=True)
    assert frozen_dtype_for("auto", bf16=False) == torch.float32
    assert frozen_dtype_for("auto", bf16=True) == torch.bfloat16
    assert frozen_dtype_for("float32", bf16=True) == torch.float32
    assert frozen_dtype_for("bfloat16", bf16=True) == torch.bfloat16


def test_set_precision_keeps_trainable_weights_and_query_tokens_fp32(red_image):
    model, processor = build_tiny_instructblip("t5")
    configure_trainable(model, quiet=True)
    keep_trained_fp32(model, torch.bfloat16)
    dtypes = {name: param.dtype for name, param in model.named_parameters()}
    assert dtypes["query_tokens"] == torch.float32
    assert all(dtypes[n] == torch.float32 for n in trainable_names(model))
    assert {dtypes[n] for n in dtypes if n.startswith(("vision_model.", "language_model."))} == {torch.bfloat16}

    transform = SampleTransform.for_model(model, processor)
    batch = transform.collator()([transform({"instruction": "What color?", "target": "red", "image": red_image})])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(**batch).loss
    loss.backward()
    assert torch.isfinite(loss)
    assert model.query_tokens.grad.dtype == torch.float32


# ------------------------------------------------------------------------------------ checkpoints


def test_checkpoint_holds_exactly_the_trainable_weights_and_round_trips(tmp_path):
    trained, _ = build_tiny_instructblip("decoder", seed=0)
    configure_trainable(trained, train_vision_post_layernorm=True, quiet=True)
    with torch.no_grad():
        trained.query_tokens.add_(0.5)  # not the zero init a fresh model has
    path = save_trainable_weights(trained, tmp_path / "ckpt" / "trainable.safetensors")

    with safe_open(path, framework="pt") as handle:
        saved = set(handle.keys())
    assert saved == trainable_names(trained)
    assert not any(n.startswith("language_model.") for n in saved)
    assert {n for n in saved if n.startswith("vision_model.")} == {
        "vision_model.post_layernorm.weight", "vision_model.post_layernorm.bias"
    }
    assert [p.name for p in path.parent.iterdir()] == ["trainable.safetensors"]  # no temp file left

    fresh, _ = build_tiny_instructblip("decoder", seed=1)
    frozen_before = {n: p.clone() for n, p in fresh.named_parameters() if n not in saved}
    loaded = load_trainable_weights(fresh, path)
    assert set(loaded) == saved
    expected = trainable_state_dict(trained)
    fresh_params = dict(fresh.named_parameters())
    assert all(torch.equal(fresh_params[n], expected[n]) for n in saved)
    assert all(torch.equal(fresh_params[n], before) for n, before in frozen_before.items())


def test_checkpoint_of_another_lm_kind_names_the_file_and_the_key(tmp_path):
    t5, _ = build_tiny_instructblip("t5")
    configure_trainable(t5, train_all=True, quiet=True)
    path = save_trainable_weights(t5, tmp_path / "t5.safetensors")
    decoder, _ = build_tiny_instructblip("decoder")
    with pytest.raises(CheckpointError, match=r"t5\.safetensors: \d+ tensor\(s\) are not parameters of .*, e\.g\. language_model\."):
        load_trainable_weights(decoder, path)


def test_checkpoint_shape_mismatch_names_the_key(tmp_path):
    wider, _ = build_tiny_instructblip("decoder", num_query_tokens=8)
    configure_trainable(wider, quiet=True)
    path = save_trainable_weights(wider, tmp_path / "wide.safetensors")
    model, _ = build_tiny_instructblip("decoder")
    with pytest.raises(CheckpointError, match=r"wide\.safetensors: key 'query_tokens' has shape \(1, 8, 32\)"):
        load_trainable_weights(model, path)


def test_non_strict_load_skips_unknown_keys(tmp_path):
    t5, _ = build_tiny_instructblip("t5", seed=3)
    configure_trainable(t5, train_all=True, quiet=True)
    path = save_trainable_weights(t5, tmp_path / "t5.safetensors")
    decoder, _ = build_tiny_instructblip("decoder")
    loaded = load_trainable_weights(decoder, path, strict=False)
    assert "query_tokens" in loaded and not any(n.startswith("language_model.") for n in loaded)
    query = "qformer.encoder.layer.0.attention.attention.query.weight"
    assert torch.equal(decoder.state_dict()[query], t5.state_dict()[query])


def test_unreadable_checkpoint_is_a_checkpoint_error(tmp_path):
    model, _ = build_tiny_instructblip("decoder")
    (tmp_path / "bad.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match="bad.safetensors"):
        load_trainable_weights(model, tmp_path / "bad.safetensors")
    with pytest.raises(CheckpointError, match="missing.safetensors"):
        load_trainable_weights(model, tmp_path / "missing.safetensors")


def test_lora_trains_adapters_only_and_checkpoints_them(tmp_path, capsys):
    model, tokenizer = build_tiny_causal_lm()
    lora = apply_lora(model, r=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj"])
    names = trainable_names(lora)
    assert names and all("lora_" in n for n in names)
    assert "trainable params:" in capsys.readouterr().out

    transform = SampleTransform.for_model(lora, tokenizer)
    batch = transform.collator()([transform({"instruction": "Name a color.", "target": "Red"})])
    assert torch.isfinite(lora(**batch).loss)

    with torch.no_grad():
        for name, param in lora.named_parameters():
            if param.requires_grad:
                param.add_(0.25)
    path = save_trainable_weights(lora, tmp_path / "lora.safetensors")
    other = apply_lora(build_tiny_causal_lm()[0], r=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj"])
    assert set(load_trainable_weights(other, path)) == names
    other_params = dict(other.named_parameters())
    assert all(torch.equal(other_params[n], p) for n, p in trainable_state_dict(lora).items())


# ------------------------------------------------------------------------------------ loading


@pytest.mark.parametrize("kind", ["decoder", "t5"])
def test_load_instructblip_from_a_local_directory(kind, tmp_path, red_image):
    model, processor = build_tiny_instructblip(kind, seed=5)
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)

    loaded, loaded_processor = load_instructblip(tmp_path, local_files_only=True)
    assert type(loaded_processor.image_processor).__name__ == "BlipImageProcessorPil"
    original_state, loaded_state = model.state_dict(), loaded.state_dict()
    assert original_state.keys() == loaded_state.keys()
    assert all(torch.equal(original_state[k], loaded_state[k]) for k in original_state)
    record = {"instruction": "What color is the circle?", "target": "red", "image": red_image}
    original_sample = SampleTransform.for_model(model, processor)(record)
    loaded_sample = SampleTransform.for_model(loaded, loaded_processor)(record)
    assert loaded_sample["input_ids"] == original_sample["input_ids"]
    assert loaded_sample["qformer_input_ids"] == original_sample["qformer_input_ids"]
    assert torch.equal(loaded_sample["pixel_values"], original_sample["pixel_values"])


def test_missing_image_token_index_is_restored_from_the_tokenizer(tmp_path):
    model, processor = build_tiny_instructblip("decoder")
    image_token_id = model.config.image_token_index
    model.config.image_token_index = None  # what older hub configs hold
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    loaded, _ = load_instructblip(tmp_path)
    assert loaded.config.image_token_index == image_token_id


@pytest.mark.parametrize("kind", ["decoder", "t5"])
def test_bf16_load_keeps_query_tokens_fp32_and_runs(kind, tmp_path, red_image):
    model, processor = build_tiny_instructblip(kind)
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    loaded, processor = load_instructblip(tmp_path, dtype=torch.bfloat16)
    assert loaded.query_tokens.dtype == torch.float32
    assert loaded.language_projection.weight.dtype == torch.bfloat16

    transform = SampleTransform.for_model(loaded, processor)
    record = {"instruction": "What color is the circle?", "target": "red", "image": red_image}
    with torch.no_grad():  # no autocast needed: the model itself casts the fp32 query tokens
        assert torch.isfinite(loaded(**transform.collator()([transform(record)])).loss)
        prompt = transform.collator("left")([transform(record, with_target=False)])
        assert loaded.generate(**prompt, max_new_tokens=2, do_sample=False).shape[0] == 1


@pytest.fixture
def hub_offline(monkeypatch):
    """Offline mode, as HF_HUB_OFFLINE=1 gives: huggingface_hub reads the variable once, at import,
    so the constant is set too. Without it, an unreachable hub costs ~25 s of retries."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


@pytest.mark.parametrize("loader", [load_instructblip, load_causal_lm])
def test_unreachable_hub_id_says_how_to_use_a_local_copy(loader, hub_offline):
    with pytest.raises(ModelLoadError) as error:
        loader("sit-vqa-tests/no-such-model")
    message = str(error.value)
    assert "'sit-vqa-tests/no-such-model'" in message
    assert "hf download sit-vqa-tests/no-such-model --local-dir DIR" in message
    assert "pass DIR instead of the hub id" in message


def test_local_files_only_with_an_uncached_hub_id_says_how_to_use_a_local_copy():
    with pytest.raises(ModelLoadError, match="hf download sit-vqa-tests/no-such-model --local-dir DIR"):
        load_instructblip("sit-vqa-tests/no-such-model", local_files_only=True)


def test_incomplete_local_directory_is_named(tmp_path):
    pattern = rf"(?s)the directory '{re.escape(str(tmp_path))}'.*complete save_pretrained"
    with pytest.raises(ModelLoadError, match=pattern):
        load_instructblip(tmp_path, local_files_only=True)


def test_load_causal_lm_from_a_local_directory(tmp_path):
    model, tokenizer = build_tiny_causal_lm(seed=4)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    loaded, loaded_tokenizer = load_causal_lm(tmp_path, local_files_only=True)
    assert loaded_tokenizer("Grüße!")["input_ids"] == tokenizer("Grüße!")["input_ids"]
    assert torch.equal(loaded.lm_head.weight, model.lm_head.weight)


# ------------------------------------------------------------------------------------ generation


def test_decoder_only_generation_on_a_left_padded_batch(tiny_decoder, red_image, blue_image):
    model, processor = tiny_decoder
    transform = SampleTransform.for_model(model, processor)
    records = [
        {"instruction": "What color is the circle?", "image": red_image},
        {"instruction": "Is there a blue square on the left of the image?", "image": blue_image},
    ]
    prompts = [transform(record, with_target=False) for record in records]
    batch = transform.collator("left")(prompts)
    options = dict(max_new_tokens=3, do_sample=False, output_scores=True, return_dict_in_generate=True)
    out = model.generate(**batch, **options)

    width = batch["input_ids"].shape[1]
    assert torch.equal(out.sequences[:, :width], batch["input_ids"])  # decoder-only output repeats the prompt
    texts = decode_generated(model, processor.tokenizer, out.sequences, width)
    new_tokens = processor.tokenizer.batch_decode(out.sequences[:, width:], skip_special_tokens=True)
    assert texts == [text.strip() for text in new_tokens]
    for row, prompt in enumerate(prompts):  # left padding changes nothing: same first-step scores alone
        alone = model.generate(**transform.collator("left")([prompt]), **options)
        assert torch.allclose(out.scores[0][row], alone.scores[0][0], atol=1e-4)
        assert decode_generated(model, processor.tokenizer, alone.sequences, len(prompt["input_ids"]))[0] == texts[row]


def test_t5_generation_returns_decoder_ids_only(tiny_t5, red_image):
    model, processor = tiny_t5
    transform = SampleTransform.for_model(model, processor)
    prompt = transform({"instruction": "What color is the circle?", "image": red_image}, with_target=False)
    batch = transform.collator()([prompt])
    generated = model.generate(**batch, max_new_tokens=3, do_sample=False)
    assert generated[0, 0].item() == model.config.text_config.decoder_start_token_id
    texts = decode_generated(model, processor.tokenizer, generated, batch["input_ids"].shape[1])
    assert texts == [processor.tokenizer.decode(generated[0], skip_special_tokens=True).strip()]
    assert texts[0]  # not sliced away
