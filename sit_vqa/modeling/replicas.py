"""Tiny replicas of the hub checkpoints' structure: `Salesforce/instructblip-vicuna-7b` and `-flan-t5-xl`.

    save_replica("vicuna-7b", "/tmp/vicuna-replica")      # hidden 32, 2 layers: a few MB, a second
    model, processor = load_instructblip("/tmp/vicuna-replica")   # the real loading path, as for the hub copy

The tiny models of `sit_vqa.modeling.tiny` have special-token ids that all agree; the real checkpoints' do not, and
tests on the tiny models hide the bugs that follow. A replica keeps everything of the hub repo except the
sizes (and the learned weights): the config ids, architectures and model_type fields, the tokenizer kinds and
their vocabulary sizes, the added tokens, processor_config.json and generation_config.json, written with
`save_pretrained` and read back with `from_pretrained`.

What the hub files say (read from the repos' config.json, generation_config.json, added_tokens.json,
special_tokens_map.json, tokenizer_config.json, processor_config.json and qformer_tokenizer/):

vicuna-7b   LLaMA tokenizer (BPE, byte fallback, "▁" metaspace), 32000 pieces: <unk> 0, <s> 1, </s> 2; its
            bos, eos and unk are all "</s>" (2); added [PAD] 32000, <image> 32001, <video> 32002; LM vocab
            32064. config.json: image_token_index 32001, video_token_index 32002, text_config bos 0, eos 1,
            pad 32000, architectures ["LLaMAForCausalLM"]; generation_config.json bos 0, eos 1, pad 32000;
            processor_config.json names InstructBlipVideoProcessor.
flan-t5-xl  T5 tokenizer (unigram, "▁" metaspace), 32100 entries: <pad> 0, </s> 1, <unk> 2, <extra_id_99..0>
            at 32000..32099; added <image> 32100, <video> 32101; LM vocab 32128. text_config pad 0, eos 1,
            bos 1, decoder_start 0; image_token_index 32100, video_token_index 32101.
both        Q-Former tokenizer: bert-base-uncased (30522) + [DEC] (30523, LAVIS's bos); Q-Former vocab 30523;
            32 query tokens; 224 px images, patch 14; BLIP image processor with the CLIP mean and std.

Vocabularies keep their real sizes; pieces beyond the tiny word list of `sit_vqa.modeling.tiny.TINY_VOCAB_WORDS`
are fillers (`<filler_N>`), so that every id of the real files exists and lands where it does there.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import torch
from transformers import (
    BertTokenizer,
    BlipImageProcessorPil,
    GenerationConfig,
    InstructBlipConfig,
    InstructBlipForConditionalGeneration,
    InstructBlipProcessor,
    InstructBlipQFormerConfig,
    InstructBlipVisionConfig,
    LlamaConfig,
    LlamaTokenizer,
    T5Config,
    T5Tokenizer,
)

from sit_vqa.modeling.tiny import TINY_VOCAB_WORDS

ReplicaKind = Literal["vicuna-7b", "flan-t5-xl"]
KINDS = ("vicuna-7b", "flan-t5-xl")

NUM_QUERY_TOKENS = 32
IMAGE_SIZE = 224
LLAMA_PIECES = 32000  # sentencepiece pieces of the LLaMA tokenizer, before the added tokens
T5_PIECES = 32000  # sentencepiece pieces of the T5 tokenizer, before the 100 <extra_id_*>
BERT_VOCAB = 30522  # bert-base-uncased, before LAVIS's [DEC]

# Full sizes, from the hub configs (EVA ViT-g/14, a 12-layer BERT-base Q-Former, LLaMA-7B, T5-XL).
FULL_VISION = dict(hidden_size=1408, intermediate_size=6144, num_hidden_layers=39, num_attention_heads=16)
FULL_QFORMER = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                    cross_attention_frequency=2)
FULL_TEXT = {
    "vicuna-7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32),
    "flan-t5-xl": dict(d_model=2048, d_ff=5120, num_layers=24, num_heads=32),
}
VICUNA_IDS = dict(pad=32000, image=32001, video=32002, vocab=32064, config_bos=0, config_eos=1)
T5_IDS = dict(pad=0, eos=1, image=32100, video=32101, vocab=32128)


# ------------------------------------------------------------------------------------------ tokenizers


def _words() -> list[str]:
    """The tiny word list, lower-case and capitalised (LLaMA and T5 do not lower-case: "Answer:")."""
    words = [w for w in TINY_VOCAB_WORDS if w.isalnum()]
    return list(dict.fromkeys(words + [w.capitalize() for w in words]))


def _symbols() -> list[str]:
    letters = "abcdefghijklmnopqrstuvwxyz"
    return list(dict.fromkeys(list(letters + letters.upper() + "0123456789") + [s for s in TINY_VOCAB_WORDS if not s.isalnum() and s != "\n"]))


def build_vicuna_tokenizer() -> LlamaTokenizer:
    """The Vicuna-7B LM tokenizer's structure: LLaMA BPE with byte fallback, bos = eos = unk = "</s>" (2),
    [PAD] 32000, <image> 32001, <video> 32002 (len 32003)."""
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    vocab.update({f"<0x{b:02X}>": 3 + b for b in range(256)})  # byte fallback: any text encodes
    merges = []
    for symbol in ["▁", *_symbols()]:
        vocab.setdefault(symbol, len(vocab))
    for word in _words():  # "▁red" from "▁" + "r" + "e" + "d", merged left to right
        piece = "▁"
        for char in word:
            merged = piece + char
            if merged not in vocab:
                merges.append((piece, char))
                vocab[merged] = len(vocab)
            piece = merged
    for i in range(len(vocab), LLAMA_PIECES):
        vocab[f"<filler_{i}>"] = i
    tokenizer = LlamaTokenizer(
        vocab=vocab, merges=merges, bos_token="</s>", eos_token="</s>", unk_token="</s>",
        add_bos_token=True, add_prefix_space=True, legacy=False, model_max_length=2048, truncation_side="left",
    )
    tokenizer.add_special_tokens({"pad_token": "[PAD]"})
    tokenizer.add_tokens(["<image>", "<video>"], special_tokens=True)
    return tokenizer


def build_flan_t5_tokenizer() -> T5Tokenizer:
    """The Flan-T5 tokenizer's structure: T5 unigram, <pad> 0, </s> 1, <unk> 2, <extra_id_99..0> at
    32000..32099, <image> 32100, <video> 32101 (len 32102)."""
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    pieces += [(f"▁{word}", -5.0) for word in _words()]
    pieces += [(symbol, -8.0) for symbol in _symbols()]
    pieces += [(f"<filler_{i}>", -20.0) for i in range(len(pieces), T5_PIECES)]
    pieces += [(f"<extra_id_{i}>", 0.0) for i in range(99, -1, -1)]
    tokenizer = T5Tokenizer(vocab=pieces, extra_ids=100, model_max_length=512)
    tokenizer.add_tokens(["<image>", "<video>"], special_tokens=True)
    return tokenizer


def build_qformer_tokenizer() -> BertTokenizer:
    """bert-base-uncased's layout ([PAD] 0, [unused*], [UNK] 100, [CLS] 101, [SEP] 102, [MASK] 103; 30522
    entries) plus LAVIS's [DEC] as bos (30522): 30523, the Q-Former's vocab_size."""
    tokens = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokens += [s for s in dict.fromkeys([w for w in TINY_VOCAB_WORDS if w != "\n"]) if s not in tokens]
    tokens += [f"##filler{i}" for i in range(len(tokens), BERT_VOCAB)]
    tokenizer = BertTokenizer(vocab={token: i for i, token in enumerate(tokens)})
    tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    return tokenizer


# -------------------------------------------------------------------------------------------- configs


def replica_config(kind: ReplicaKind, *, hidden: int | None = 32, layers: int | None = 2) -> InstructBlipConfig:
    """The InstructBlipConfig of the hub checkpoint `kind`, with every id field as there.

    hidden/layers: the width and depth of the ViT, Q-Former and LM (None: the real sizes). Heads are
    hidden // 64 (at least 2); feed-forward widths 2 x hidden (4 x for the Q-Former as in BERT).
    """
    _check_kind(kind)
    sized = hidden is not None
    heads = max(hidden // 64, 2) if sized else None
    vision = FULL_VISION if not sized else dict(
        hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers, num_attention_heads=heads)
    qformer = FULL_QFORMER if not sized else dict(
        hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=layers, num_attention_heads=heads,
        cross_attention_frequency=1)
    config = InstructBlipConfig(
        vision_config=InstructBlipVisionConfig(**vision, image_size=IMAGE_SIZE, patch_size=14),
        qformer_config=InstructBlipQFormerConfig(**qformer, vocab_size=BERT_VOCAB + 1, pad_token_id=0),
        text_config=_text_config(kind, hidden, layers, heads),
        num_query_tokens=NUM_QUERY_TOKENS,
        image_token_index=VICUNA_IDS["image"] if kind == "vicuna-7b" else T5_IDS["image"],
        use_decoder_only_language_model=kind == "vicuna-7b",
    )
    config.qformer_config.encoder_hidden_size = config.vision_config.hidden_size
    config.video_token_index = VICUNA_IDS["video"] if kind == "vicuna-7b" else T5_IDS["video"]  # as on the hub
    config.architectures = ["InstructBlipForConditionalGeneration"]
    return config


def _text_config(kind: str, hidden: int | None, layers: int | None, heads: int | None) -> LlamaConfig | T5Config:
    if kind == "vicuna-7b":
        sizes = FULL_TEXT[kind] if hidden is None else dict(
            hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers, num_attention_heads=heads)
        text = LlamaConfig(
            **sizes, num_key_value_heads=sizes["num_attention_heads"], vocab_size=VICUNA_IDS["vocab"],
            max_position_embeddings=2048, rms_norm_eps=1e-6, tie_word_embeddings=False,
            # the hub's ids, which disagree with its tokenizer (eos "</s>" = 2): what the eos fix is for
            bos_token_id=VICUNA_IDS["config_bos"], eos_token_id=VICUNA_IDS["config_eos"], pad_token_id=VICUNA_IDS["pad"],
        )
        text.architectures = ["LLaMAForCausalLM"]  # sic, the hub's spelling
        return text
    sizes = FULL_TEXT[kind] if hidden is None else dict(d_model=hidden, d_ff=2 * hidden, num_layers=layers, num_heads=heads)
    text = T5Config(
        **sizes, d_kv=64 if hidden is None else hidden // heads, num_decoder_layers=sizes["num_layers"], vocab_size=T5_IDS["vocab"],
        feed_forward_proj="gated-gelu", tie_word_embeddings=False,
        pad_token_id=T5_IDS["pad"], eos_token_id=T5_IDS["eos"], bos_token_id=1, decoder_start_token_id=T5_IDS["pad"],
    )
    text.architectures = ["T5ForConditionalGeneration"]
    return text


def replica_generation_config(kind: ReplicaKind) -> GenerationConfig:
    """generation_config.json of the hub repo (Vicuna: eos 1, not the tokenizer's 2)."""
    if kind == "vicuna-7b":
        ids = dict(bos_token_id=VICUNA_IDS["config_bos"], eos_token_id=VICUNA_IDS["config_eos"],
                   pad_token_id=VICUNA_IDS["pad"])
    else:
        ids = dict(bos_token_id=1, eos_token_id=T5_IDS["eos"], pad_token_id=T5_IDS["pad"],
                   decoder_start_token_id=T5_IDS["pad"])
    return GenerationConfig(**ids)


def build_replica_processor(kind: ReplicaKind) -> InstructBlipProcessor:
    _check_kind(kind)
    tokenizer = build_vicuna_tokenizer() if kind == "vicuna-7b" else build_flan_t5_tokenizer()
    return InstructBlipProcessor(
        image_processor=BlipImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}),
        tokenizer=tokenizer,
        qformer_tokenizer=build_qformer_tokenizer(),
        num_query_tokens=NUM_QUERY_TOKENS,
    )


# --------------------------------------------------------------------------------------------- saving


def save_replica(
    kind: ReplicaKind, directory: str | Path, *, seed: int = 0, hidden: int = 32, layers: int = 2,
    dtype: torch.dtype = torch.float32,
) -> Path:
    """Write a random replica of the hub checkpoint `kind` into `directory` (save_pretrained layout).

    Weights are a deterministic function of seed. dtype: the dtype the weights are written in (the hub
    files hold fp32 for the current revisions).
    """
    directory = Path(directory)
    config = replica_config(kind, hidden=hidden, layers=layers)
    with torch.random.fork_rng(devices=[]):  # seed the init without touching the caller's RNG
        torch.manual_seed(seed)
        model = InstructBlipForConditionalGeneration(config).to(dtype)
    model.generation_config = replica_generation_config(kind)
    model.save_pretrained(directory)
    del model
    processor = build_replica_processor(kind)
    processor.save_pretrained(directory)
    # The hub layout: the image processor in preprocessor_config.json, and a processor_config.json that holds
    # only the query count and a class name -- for vicuna-7b the video processor's.
    processor.image_processor.save_pretrained(directory)
    processor_class = "InstructBlipVideoProcessor" if kind == "vicuna-7b" else "InstructBlipProcessor"
    _write_json(directory / "processor_config.json",
                {"num_query_tokens": NUM_QUERY_TOKENS, "processor_class": processor_class})
    return directory


def _write_json(path: Path, payload: dict) -> None:
    path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
