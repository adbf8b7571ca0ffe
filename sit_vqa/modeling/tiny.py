"""Tiny offline models built in code from the real config classes, for the quickstart and the tests.

Same classes as the hub models (InstructBlipConfig, InstructBlipForConditionalGeneration, an
InstructBlipProcessor with BlipImageProcessorPil, LlamaForCausalLM), so every code path the real model
takes is exercised; no download, about 0.1 M parameters. The tiny InstructBLIP tokenizer is a word-level
one over `TINY_VOCAB_WORDS` (readable ids in tests); words outside it become `<unk>`. The causal LM's is
byte-level, for open-vocabulary Alpaca text.
"""

from __future__ import annotations

import torch
from tokenizers import (
    Regex,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
)
from transformers import (
    BertTokenizer,
    BlipImageProcessorPil,
    InstructBlipConfig,
    InstructBlipForConditionalGeneration,
    InstructBlipProcessor,
    InstructBlipQFormerConfig,
    InstructBlipVisionConfig,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
    T5Config,
)

from sit_vqa.errors import ConfigError

IMAGE_TOKEN = "<image>"  # the processor's placeholder text, as on the hub

# Special tokens of the tiny LM tokenizers, in id order: <pad>=0, </s>=1, <unk>=2, <s>=3, <image>=4.
# Id 0 = pad and 1 = eos is what T5 expects (decoder_start_token_id = pad); the LLaMA side reads the
# same ids from the tokenizer, never from constants.
TINY_SPECIAL_TOKENS = ("<pad>", "</s>", "<unk>", "<s>", IMAGE_TOKEN)

# Every word of the tiny InstructBLIP vocabulary (lowercase: the tokenizer lowercases its input).
# It covers the SIT templates (sit_vqa/data/prompts.py) and the bundled coloured-shapes sample:
# colours, shapes, counts as digits and words, positions, yes/no and the usual question words.
TINY_VOCAB_WORDS: tuple[str, ...] = tuple(
    """
    first describe description then answer the input question based image picture photo scene
    what which how many much is are there a an of on in at to and or with this that these those it its
    color colour colors colours shape shapes object objects thing things kind type size
    red green blue yellow orange purple pink brown black white gray grey cyan magenta
    circle circles square squares triangle triangles rectangle rectangles star stars ellipse ellipses
    oval ovals diamond diamonds dot dots line lines cross crosses heart hearts hexagon hexagons
    background foreground left right top bottom center centre middle corner above below under over
    next beside near between inside outside front behind side upper lower
    small large big tiny little medium huge same different other another both all each every only
    filled empty solid outlined striped dark light bright simple plain drawing drawn colored coloured
    against backdrop any some rhombus box triangular round circular
    yes no not none zero one two three four five six seven eight nine ten
    0 1 2 3 4 5 6 7 8 9 10
    do does can you see visible shown show shows s count number total
    has have having contains containing placed lies lying sits sitting
    """.split()
) + tuple(".,:;?!'\"-()") + ("\n",)

# The Q-Former tokenizer of the tiny model (BERT-style WordPiece) gets the same words; BERT splits
# on whitespace, so it has no newline token.
_QFORMER_SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def build_tiny_word_tokenizer(*, lm_kind: str) -> PreTrainedTokenizerFast:
    """Word-level LM tokenizer over TINY_VOCAB_WORDS, lowercasing, with "\\n" and punctuation as tokens.

    lm_kind="decoder" prepends <s> like LLaMA/Vicuna; lm_kind="t5" appends </s> like T5.
    Decoding joins words with spaces ("description : a red circle. \\n answer : red"), which
    `parse_sit_output` reads back to the same answer.
    """
    _check_lm_kind(lm_kind)
    vocab = {token: i for i, token in enumerate(TINY_SPECIAL_TOKENS + TINY_VOCAB_WORDS)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.add_special_tokens(list(TINY_SPECIAL_TOKENS))  # never split, never lowercased
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            # drop blanks except the newline, which must survive as a token ("...\nAnswer: ...")
            pre_tokenizers.Split(Regex(r"[^\S\n]+"), behavior="removed"),
            pre_tokenizers.Split(Regex(r"\n|[^\w\s]"), behavior="isolated"),
        ]
    )
    special, template = ("<s>", "<s> $A") if lm_kind == "decoder" else ("</s>", "$A </s>")
    backend.post_processor = processors.TemplateProcessing(single=template, special_tokens=[(special, vocab[special])])
    backend.decoder = decoders.WordPiece(prefix="##", cleanup=True)  # word join + "a ." -> "a." cleanup
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>" if lm_kind == "decoder" else None,
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
    )


def build_tiny_qformer_tokenizer() -> BertTokenizer:
    words = [w for w in TINY_VOCAB_WORDS if w != "\n"]
    return BertTokenizer(vocab={token: i for i, token in enumerate(_QFORMER_SPECIAL_TOKENS + tuple(words))})


def build_tiny_instructblip(
    lm_kind: str = "decoder",
    *,
    seed: int = 0,
    image_size: int = 32,
    num_query_tokens: int = 4,
    hidden_size: int = 32,
    num_layers: int = 2,
    patch_size: int | None = None,
    num_heads: int = 2,
    dropout: float = 0.0,
    random_query_tokens: bool = False,
    init: str = "transformers",
) -> tuple[InstructBlipForConditionalGeneration, InstructBlipProcessor]:
    """A randomly initialised InstructBLIP, built offline (about 0.1 M parameters at the defaults).

    lm_kind: "decoder" (LLaMA language model, like Vicuna) or "t5" (encoder-decoder, like Flan-T5).
    hidden_size and num_layers apply to the ViT, the Q-Former and the LM alike (feed-forward 2 x hidden);
    patch_size defaults to a quarter of image_size (a 4 x 4 patch grid). The defaults keep the tests
    fast; the quickstart and the miniature experiment ask for a larger model (their configs' tiny_* keys).
    num_heads applies to every part. dropout is that of the Q-Former and the LM (the config classes'
    default, 0.1, is meant for pretrained models; on a random tiny model it slows learning to look).
    random_query_tokens: start the query tokens random (std 0.02, as LAVIS does) instead of at zero
    (transformers' init); off by default, so the tests' untrained models keep their outputs.
    init: "transformers" (every linear layer normal with std 0.02, the hub configs' initializer_range) or
    "pytorch" (the linear and convolution layers start as PyTorch builds them, uniform in +-1/sqrt(fan_in):
    2-2.5x larger at these widths; embeddings and norms as transformers starts them). With "transformers" the
    image reaches a random tiny model's LM two 0.02-std projections deep and its ViT barely trains unless
    captions are in the targets (docs/MINIATURE.md, Sizing).
    Same classes as the hub models (config, model, processor with BlipImageProcessorPil), so every
    code path the real model takes is exercised. Weights are a deterministic function of seed.
    """
    _check_lm_kind(lm_kind)
    tokenizer = build_tiny_word_tokenizer(lm_kind=lm_kind)
    qformer_tokenizer = build_tiny_qformer_tokenizer()
    sizes = dict(hidden_size=hidden_size, intermediate_size=2 * hidden_size, num_hidden_layers=num_layers,
                 num_attention_heads=num_heads)
    vision_config = InstructBlipVisionConfig(
        image_size=image_size, patch_size=patch_size or max(image_size // 4, 1),
        initializer_range=0.02,  # the default (1e-10) would make a random ViT's output ignore the image
        **sizes,
    )
    qformer_config = InstructBlipQFormerConfig(
        vocab_size=len(qformer_tokenizer), cross_attention_frequency=1, max_position_embeddings=512,
        pad_token_id=qformer_tokenizer.pad_token_id, hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout, **sizes,
    )
    text_config = _tiny_text_config(lm_kind, tokenizer, hidden_size, num_layers, num_heads, dropout)
    config = InstructBlipConfig(
        vision_config=vision_config,
        qformer_config=qformer_config,
        text_config=text_config,
        num_query_tokens=num_query_tokens,
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
    )
    with torch.random.fork_rng(devices=[]):  # seed the init without touching the caller's RNG
        torch.manual_seed(seed)
        model = InstructBlipForConditionalGeneration(config)
        if init == "pytorch":
            for module in model.modules():
                if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
                    module.reset_parameters()
        elif init != "transformers":
            raise ValueError(f"init must be 'transformers' or 'pytorch', not {init!r}")
        if random_query_tokens:
            # transformers starts the query tokens at zero: identical queries, whose symmetry only the LM's
            # positions break, slowly. LAVIS (and the hub checkpoints' pretraining) start them random.
            torch.nn.init.normal_(model.query_tokens, std=qformer_config.initializer_range)
    processor = InstructBlipProcessor(
        image_processor=BlipImageProcessorPil(size={"height": image_size, "width": image_size}),
        tokenizer=tokenizer,
        qformer_tokenizer=qformer_tokenizer,
        num_query_tokens=num_query_tokens,
    )
    return model.eval(), processor


def _tiny_text_config(
    lm_kind: str, tokenizer: PreTrainedTokenizerBase, hidden: int, layers: int = 2, heads: int = 2,
    dropout: float = 0.0,
) -> LlamaConfig | T5Config:
    ids = dict(pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    if lm_kind == "decoder":
        return LlamaConfig(
            vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
            num_attention_heads=heads, num_key_value_heads=heads, max_position_embeddings=512,
            attention_dropout=dropout, bos_token_id=tokenizer.bos_token_id, **ids,
        )
    return T5Config(
        vocab_size=len(tokenizer), d_model=hidden, d_kv=hidden // heads, d_ff=2 * hidden, num_layers=layers,
        num_decoder_layers=layers, num_heads=heads, dropout_rate=dropout, decoder_start_token_id=tokenizer.pad_token_id,
        **ids,
    )


def build_tiny_byte_tokenizer() -> PreTrainedTokenizerFast:
    """Byte-level tokenizer (one token per UTF-8 byte, no merges): any text round-trips exactly.

    Chosen for the text-only path because Alpaca-style instructions are open vocabulary; a word
    list could not cover them. Prepends <s> like LLaMA.
    """
    specials = ("<pad>", "</s>", "<unk>", "<s>")
    vocab = {token: i for i, token in enumerate(specials + tuple(sorted(pre_tokenizers.ByteLevel.alphabet())))}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    backend.add_special_tokens(list(specials))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", vocab["<s>"])])
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>"
    )


def build_tiny_causal_lm(
    *, seed: int = 0, hidden_size: int = 32, num_layers: int = 2
) -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast]:
    """A tiny LLaMA (2 layers, hidden 32 by default) with a byte-level tokenizer, for the text-only SIT path."""
    tokenizer = build_tiny_byte_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    return model.eval(), tokenizer


def _check_lm_kind(lm_kind: str) -> None:
    if lm_kind not in ("decoder", "t5"):
        raise ConfigError(f"lm_kind must be 'decoder' (LLaMA/Vicuna/OPT style) or 't5', got {lm_kind!r}")
