"""A tiny LLaVA-1.5-style model directory, built offline in whichever venv runs it (nothing from a hub).

It has the structure of llava-hf/llava-1.5-7b-hf at a tiny size: a Llama sentencepiece tokenizer (<unk> 0, <s> 1,
</s> 2, byte fallback; `<image>` and `<pad>` added after the vocabulary), a CLIP image processor, a LlavaProcessor
whose `<image>` expands to 16 tokens (32 px image, 8 px patches), and a LlavaForConditionalGeneration with a
2-layer Llama. The sentencepiece model is trained in-process on the export's own texts, so the exported text
encodes as words; any other text still encodes (byte fallback).

The chat template is sit_vqa.modeling.chat_replicas.LLAVA_TEMPLATE (the hub's LLaVA-1.5 template plus
`{% generation %}` tags, which TRL's assistant_only_loss needs); tests/bench/test_clients_offline.py checks that the
two stay equal. LLaMA-Factory and ms-swift ignore it: they apply their own `llava` / `llava1_5_hf` templates.

Only `build_tokenizer` is needed by frameworks whose data code takes just a tokenizer (LLaVA's own repo pins
transformers 4.37, whose LlavaProcessor predates the arguments used here).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

IMAGE_SIZE = 32
PATCH_SIZE = 8
IMAGE_TOKENS = (IMAGE_SIZE // PATCH_SIZE) ** 2

LLAVA_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper() + ':' }}"
    "{% if message['role'] != 'assistant' %}{{ ' ' }}{% endif %}{% endif %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{% if message['role'] != 'assistant' %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] + ' ' }}"
    "{% endfor %}{% else %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{% generation %}{{ ' ' + content['text'] + eos_token }}{% endgeneration %}{% endfor %}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)


def build_tokenizer(directory: str | Path, texts: list[str], *, legacy: bool = False):
    """A Llama sentencepiece tokenizer trained on `texts`, saved into `directory` and loaded back through
    AutoTokenizer (the path a user's model directory takes), with `<image>` and `<pad>` added as in
    llava-1.5-7b-hf."""
    import sentencepiece
    from transformers import AutoTokenizer

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(sorted(set(texts)) + ["USER: ASSISTANT: A chat"]), model_writer=model,
        vocab_size=1000, hard_vocab_limit=False, model_type="bpe", byte_fallback=True, split_digits=True,
        # Llama's: no normalization (a newline stays a newline, <0x0A>), spaces kept, a dummy prefix
        normalization_rule_name="identity", remove_extra_whitespaces=False, add_dummy_prefix=True,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, minloglevel=2)
    (directory / "tokenizer.model").write_bytes(model.getvalue())
    (directory / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "LlamaTokenizer", "legacy": legacy, "add_bos_token": True, "add_eos_token": False,
        "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "model_max_length": 4096}))
    tokenizer = AutoTokenizer.from_pretrained(directory, use_fast=False)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})  # first, as in llava-1.5-7b-hf
    tokenizer.add_special_tokens({"pad_token": "<pad>"})
    tokenizer.save_pretrained(directory)
    return tokenizer


def build_tiny_llava(directory: str | Path, texts: list[str], *, hidden: int = 32, layers: int = 2, seed: int = 0):
    """Save a tiny LLaVA-1.5 (model + processor + tokenizer) into `directory`; returns the directory."""
    import torch
    from transformers import (CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, LlavaConfig,
                              LlavaForConditionalGeneration, LlavaProcessor)

    directory = Path(directory)
    tokenizer = build_tokenizer(directory, texts)
    image_processor = CLIPImageProcessor(size={"shortest_edge": IMAGE_SIZE},
                                         crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=PATCH_SIZE,
                               vision_feature_select_strategy="default", num_additional_image_tokens=1,
                               chat_template=LLAVA_TEMPLATE)
    ids = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
               pad_token_id=tokenizer.pad_token_id)
    text = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
                       num_hidden_layers=layers, num_attention_heads=2, num_key_value_heads=2,
                       max_position_embeddings=512, tie_word_embeddings=False, **ids)
    vision = CLIPVisionConfig(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                              num_attention_heads=2, image_size=IMAGE_SIZE, patch_size=PATCH_SIZE,
                              projection_dim=hidden)
    config = LlavaConfig(vision_config=vision, text_config=text, vision_feature_layer=-1,
                         vision_feature_select_strategy="default",
                         image_token_index=tokenizer.convert_tokens_to_ids("<image>"), **ids)
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory
