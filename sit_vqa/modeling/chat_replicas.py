"""Tiny offline replicas of today's chat vision-language models (model_type image_text_to_text), for tests.

Each is the real transformers model + processor classes at a tiny size, with the hub checkpoint's special
tokens and chat template (as published in its tokenizer / processor config), saved with save_pretrained so
that `AutoModelForImageTextToText` / `AutoProcessor` load it like the hub model:

    llava       llava-hf/llava-1.5-7b-hf: "USER: <image>\\n{text} ASSISTANT: {answer}</s>", CLIP image processor
    idefics3    HuggingFaceM4/Idefics3-8B-Llama3: "<|begin_of_text|>User:<image>{text}<end_of_utterance>\\n
                Assistant: {answer}<end_of_utterance>\\n", image splitting off (one 32 px tile)
    paligemma   google/paligemma-3b-pt-224: no chat template; "<image>"*n + "<bos>" + prefix + "\\n", the answer
                given as `suffix=` (the processor builds the labels)

The templates carry `{% generation %}` tags around the assistant's answer (the hub's LLaVA and Idefics3
templates have none) and end the answer with the model's end-of-turn token, so that a fine-tuned model learns
to stop. The space after "ASSISTANT:" / "Assistant:" lies inside the tags, so the learned tokens decode to
exactly " " + answer + end-of-turn: the generation prompt ends before that space (as the hub's), and the model
writes it at inference, fused into its first token (" Description"). Tokenizers are byte-level BPEs trained
in-process on the tiny vocabulary: any text encodes.
"""

from __future__ import annotations

from typing import Literal

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    CLIPImageProcessor,
    CLIPVisionConfig,
    GemmaConfig,
    Idefics3Config,
    Idefics3ForConditionalGeneration,
    Idefics3ImageProcessor,
    Idefics3Processor,
    Idefics3VisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PaliGemmaConfig,
    PaliGemmaForConditionalGeneration,
    PaliGemmaProcessor,
    PreTrainedTokenizerFast,
    SiglipImageProcessor,
    SiglipVisionConfig,
)

from sit_vqa.modeling.tiny import TINY_VOCAB_WORDS

ChatReplicaKind = Literal["llava", "idefics3", "paligemma"]
CHAT_REPLICA_KINDS: tuple[str, ...] = ("llava", "idefics3", "paligemma")
IMAGE_SIZE = 32
PATCH_SIZE = 8

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

IDEFICS3_TEMPLATE = (
    "<|begin_of_text|>{% for message in messages %}{{ message['role'] | capitalize }}"
    "{% if message['content'][0]['type'] == 'image' or message['role'] == 'assistant' %}{{ ':' }}"
    "{% else %}{{ ': ' }}{% endif %}"
    "{% if message['role'] == 'assistant' %}{% generation %}{{ ' ' }}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{ line['text'] }}{% endif %}{% endfor %}"
    "<end_of_utterance>{% endgeneration %}\n"
    "{% else %}{% for line in message['content'] %}{% if line['type'] == 'text' %}{{ line['text'] }}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)


def build_bpe_tokenizer(specials: list[str], **special_roles: str) -> PreTrainedTokenizerFast:
    """A byte-level BPE trained in-process on the tiny vocabulary, with `specials` first (ids 0..)."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    corpus = [" ".join(TINY_VOCAB_WORDS), " ".join(w.capitalize() for w in TINY_VOCAB_WORDS), "USER ASSISTANT User Assistant"]
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, **special_roles)


def _llama_text_config(vocab_size: int, hidden: int, layers: int, **ids) -> LlamaConfig:
    return LlamaConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                       num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512,
                       tie_word_embeddings=False, **ids)


def build_llava(hidden: int = 32, layers: int = 2):
    tokenizer = build_bpe_tokenizer(["<unk>", "<s>", "</s>", "<pad>", "<image>"], unk_token="<unk>", bos_token="<s>",
                                    eos_token="</s>", pad_token="<pad>")
    image_processor = CLIPImageProcessor(size={"shortest_edge": IMAGE_SIZE},
                                         crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=PATCH_SIZE,
                               vision_feature_select_strategy="default", chat_template=LLAVA_TEMPLATE,
                               num_additional_image_tokens=1)
    vision = CLIPVisionConfig(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                              num_attention_heads=2, image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, projection_dim=hidden)
    ids = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
               pad_token_id=tokenizer.pad_token_id)
    config = LlavaConfig(vision_config=vision, text_config=_llama_text_config(len(tokenizer), hidden, layers, **ids),
                         image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
                         vision_feature_layer=-1, vision_feature_select_strategy="default")
    return LlavaForConditionalGeneration(config), processor


def build_idefics3(hidden: int = 32, layers: int = 2):
    tokenizer = build_bpe_tokenizer(
        ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>", "<image>", "<fake_token_around_image>",
         "<global-img>", "<end_of_utterance>"],
        bos_token="<|begin_of_text|>", eos_token="<end_of_utterance>", pad_token="<|reserved_special_token_0|>",
        unk_token="<|end_of_text|>", extra_special_tokens={"image_token": "<image>",
                                                         "fake_image_token": "<fake_token_around_image>",
                                                         "global_image_token": "<global-img>",
                                                         "end_of_utterance_token": "<end_of_utterance>"},
    )
    image_processor = Idefics3ImageProcessor(do_image_splitting=False, size={"longest_edge": IMAGE_SIZE},
                                             max_image_size={"longest_edge": IMAGE_SIZE})
    scale_factor = 2
    seq_len = (IMAGE_SIZE // PATCH_SIZE) ** 2 // scale_factor**2
    processor = Idefics3Processor(image_processor=image_processor, tokenizer=tokenizer, image_seq_len=seq_len,
                                  chat_template=IDEFICS3_TEMPLATE)
    vision = Idefics3VisionConfig(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                                  num_attention_heads=2, image_size=IMAGE_SIZE, patch_size=PATCH_SIZE)
    ids = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
               pad_token_id=tokenizer.pad_token_id)
    config = Idefics3Config(vision_config=vision, text_config=_llama_text_config(len(tokenizer), hidden, layers, **ids),
                            image_token_id=tokenizer.convert_tokens_to_ids("<image>"), scale_factor=scale_factor,
                            pad_token_id=tokenizer.pad_token_id)
    return Idefics3ForConditionalGeneration(config), processor


def build_paligemma(hidden: int = 32, layers: int = 2):
    tokenizer = build_bpe_tokenizer(["<pad>", "<eos>", "<bos>", "<unk>", "<image>"], pad_token="<pad>", eos_token="<eos>",
                                    bos_token="<bos>", unk_token="<unk>")
    image_processor = SiglipImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    vision = SiglipVisionConfig(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                                num_attention_heads=2, image_size=IMAGE_SIZE, patch_size=PATCH_SIZE,
                                projection_dim=hidden)
    num_image_tokens = (IMAGE_SIZE // PATCH_SIZE) ** 2
    vision.num_image_tokens = num_image_tokens
    image_processor.image_seq_length = num_image_tokens
    processor = PaliGemmaProcessor(image_processor=image_processor, tokenizer=tokenizer)
    text = GemmaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
                       num_hidden_layers=layers, num_attention_heads=2, num_key_value_heads=1, head_dim=16,
                       max_position_embeddings=512, bos_token_id=tokenizer.bos_token_id,
                       eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    config = PaliGemmaConfig(vision_config=vision, text_config=text,
                             image_token_index=tokenizer.convert_tokens_to_ids("<image>"), projection_dim=hidden)
    return PaliGemmaForConditionalGeneration(config), processor


_BUILDERS = {"llava": build_llava, "idefics3": build_idefics3, "paligemma": build_paligemma}


def build_chat_replica(kind: ChatReplicaKind, *, seed: int = 0, hidden: int = 32, layers: int = 2):
    """(model, processor) of the tiny replica `kind`, random weights from `seed`."""
    if kind not in _BUILDERS:
        raise ValueError(f"unknown chat replica {kind!r}; choose one of {', '.join(CHAT_REPLICA_KINDS)}")
    torch.manual_seed(seed)
    model, processor = _BUILDERS[kind](hidden=hidden, layers=layers)
    model.generation_config.eos_token_id = processor.tokenizer.eos_token_id
    model.generation_config.pad_token_id = processor.tokenizer.pad_token_id
    return model.eval(), processor
