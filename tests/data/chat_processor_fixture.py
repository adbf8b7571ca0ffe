"""A tiny offline vision-language processor made of real transformers classes: a byte-level BPE trained here
(tokenizers), a Jinja chat template whose assistant turns sit in {% generation %} tags, CLIPImageProcessorPil
(PIL only, no torchvision) and LlavaProcessor, which expands each <image> into the image's patch tokens."""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import CLIPImageProcessorPil, LlavaProcessor, PreTrainedTokenizerFast

SPECIALS = ["<pad>", "<image>", "<|user|>", "<|assistant|>", "<|end|>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}<|user|>"
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}<image>{% else %}{{ part['text'] }}"
    "{% endif %}{% endfor %}<|end|>"
    "{% else %}<|assistant|>{% generation %}"
    "{% for part in message['content'] %}{{ part['text'] }}{% endfor %}{% endgeneration %}<|end|>"
    "{% endif %}{% endfor %}"
)


def tiny_chat_processor(texts: list[str]) -> LlavaProcessor:
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()  # decoding gives back the exact characters
    bpe.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=400, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, pad_token="<pad>",
                                        extra_special_tokens={"image_token": "<image>"})
    images = CLIPImageProcessorPil(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28})
    return LlavaProcessor(image_processor=images, tokenizer=tokenizer, patch_size=14,
                          vision_feature_select_strategy="full", chat_template=CHAT_TEMPLATE)
