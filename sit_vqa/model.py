"""InstructBLIP and causal-LM building, loading, freezing, precision and trainable-only checkpoints.

Typical use (training)::

    model, processor = load_instructblip("Salesforce/instructblip-vicuna-7b", dtype=default_dtype(device))
    counts = configure_trainable(model)          # Q-Former + query tokens + projection, as in the paper
    set_precision(model, default_dtype(device))  # frozen weights bf16, trainable ones fp32 (run under autocast)
    ...
    save_trainable_weights(model, "run/trainable.safetensors")

and for evaluation / the demo: load the base model again, then `load_trainable_weights(model, path)`.

Offline tiny models with the same classes as the real ones (`build_tiny_instructblip`,
`build_tiny_causal_lm`) serve the quickstart and the tests: no download, about 0.1 M parameters.
The tiny InstructBLIP tokenizer is a word-level one over `TINY_VOCAB_WORDS` (readable ids in tests);
words outside it become `<unk>`.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from huggingface_hub.errors import HFValidationError
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    BertTokenizer,
    BlipImageProcessorPil,
    InstructBlipConfig,
    InstructBlipForConditionalGeneration,
    InstructBlipProcessor,
    InstructBlipQFormerConfig,
    InstructBlipVisionConfig,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
    T5Config,
)

from sit_vqa.errors import SitVqaError

logger = logging.getLogger(__name__)

IMAGE_TOKEN = "<image>"

# Special tokens of the tiny LM tokenizers, in id order: <pad>=0, </s>=1, <unk>=2, <s>=3, <image>=4.
# Id 0 = pad and 1 = eos is what T5 expects (decoder_start_token_id = pad); the LLaMA side reads the
# same ids from the tokenizer, never from constants.
TINY_SPECIAL_TOKENS = ("<pad>", "</s>", "<unk>", "<s>", IMAGE_TOKEN)

# Every word of the tiny InstructBLIP vocabulary (lowercase: the tokenizer lowercases its input).
# It covers the SIT templates (sit_vqa/data/templates.py) and the bundled coloured-shapes sample:
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


class ModelLoadError(SitVqaError, RuntimeError):
    """A model or processor could not be loaded; the message says how to point at a local copy."""


class CheckpointError(SitVqaError, ValueError):
    """A trainable-weights file does not fit the model it is loaded into."""


@dataclass(frozen=True)
class ParamCounts:
    trainable: int
    total: int

    @property
    def fraction(self) -> float:
        return self.trainable / self.total if self.total else 0.0

    def __str__(self) -> str:
        return f"trainable params: {self.trainable:,} / total {self.total:,} ({100 * self.fraction:.2f}%)"


# ----------------------------------------------------------------------------------------------
# Tiny offline models
# ----------------------------------------------------------------------------------------------


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
) -> tuple[InstructBlipForConditionalGeneration, InstructBlipProcessor]:
    """A randomly initialised InstructBLIP, built offline (about 0.1 M parameters at the defaults).

    lm_kind: "decoder" (LLaMA language model, like Vicuna) or "t5" (encoder-decoder, like Flan-T5).
    hidden_size and num_layers apply to the ViT, the Q-Former and the LM alike (feed-forward 2 x hidden);
    patch_size defaults to a quarter of image_size (a 4 x 4 patch grid). The defaults keep the tests
    fast; the quickstart and the miniature experiment ask for a larger model (their configs' tiny_* keys).
    Same classes as the hub models (config, model, processor with BlipImageProcessorPil), so every
    code path the real model takes is exercised. Weights are a deterministic function of seed.
    """
    _check_lm_kind(lm_kind)
    tokenizer = build_tiny_word_tokenizer(lm_kind=lm_kind)
    qformer_tokenizer = build_tiny_qformer_tokenizer()
    sizes = dict(hidden_size=hidden_size, intermediate_size=2 * hidden_size, num_hidden_layers=num_layers,
                 num_attention_heads=2)
    vision_config = InstructBlipVisionConfig(
        image_size=image_size, patch_size=patch_size or max(image_size // 4, 1),
        initializer_range=0.02,  # the default (1e-10) would make a random ViT's output ignore the image
        **sizes,
    )
    qformer_config = InstructBlipQFormerConfig(
        vocab_size=len(qformer_tokenizer), cross_attention_frequency=1, max_position_embeddings=512,
        pad_token_id=qformer_tokenizer.pad_token_id, **sizes,
    )
    text_config = _tiny_text_config(lm_kind, tokenizer, hidden_size, num_layers)
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
    processor = InstructBlipProcessor(
        image_processor=BlipImageProcessorPil(size={"height": image_size, "width": image_size}),
        tokenizer=tokenizer,
        qformer_tokenizer=qformer_tokenizer,
        num_query_tokens=num_query_tokens,
    )
    return model.eval(), processor


def _tiny_text_config(
    lm_kind: str, tokenizer: PreTrainedTokenizerBase, hidden: int, layers: int = 2
) -> LlamaConfig | T5Config:
    ids = dict(pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    if lm_kind == "decoder":
        return LlamaConfig(
            vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
            num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512,
            bos_token_id=tokenizer.bos_token_id, **ids,
        )
    return T5Config(
        vocab_size=len(tokenizer), d_model=hidden, d_kv=hidden // 2, d_ff=2 * hidden, num_layers=layers,
        num_decoder_layers=layers, num_heads=2, decoder_start_token_id=tokenizer.pad_token_id, **ids,
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
        raise ValueError(f"lm_kind must be 'decoder' (LLaMA/Vicuna/OPT style) or 't5', got {lm_kind!r}")


# ----------------------------------------------------------------------------------------------
# Loading from the hub or a local directory
# ----------------------------------------------------------------------------------------------


def load_instructblip(
    name_or_path: str | os.PathLike,
    *,
    dtype: torch.dtype | None = None,
    local_files_only: bool = False,
    trust_remote_code: bool = False,
) -> tuple[InstructBlipForConditionalGeneration, InstructBlipProcessor]:
    """Load InstructBLIP and its processor from a hub id or a local directory (save_pretrained layout).

    dtype: weights dtype, default float32 (pass `default_dtype(device)` for bf16 on GPU).
    `query_tokens` stay fp32 whatever the dtype (the Q-Former casts them to its own dtype).
    Raises ModelLoadError, saying how to use a local copy, when the files cannot be found or fetched.
    """
    source = str(name_or_path)
    options = dict(local_files_only=local_files_only, trust_remote_code=trust_remote_code)
    try:
        processor = InstructBlipProcessor.from_pretrained(source, **options)
        model = InstructBlipForConditionalGeneration.from_pretrained(source, dtype=dtype or torch.float32, **options)
    except (OSError, HFValidationError) as error:
        raise ModelLoadError(_load_error_message("InstructBLIP", source, error)) from error
    _ensure_image_token(model, processor)
    # transformers upcasts `_keep_in_fp32_modules` (query_tokens) only for fp16 loads, not bf16
    model.query_tokens.data = model.query_tokens.data.float()
    return model.eval(), processor


def load_causal_lm(
    name_or_path: str | os.PathLike,
    *,
    dtype: torch.dtype | None = None,
    local_files_only: bool = False,
    trust_remote_code: bool = False,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer (text-only path) from a hub id or a local directory."""
    source = str(name_or_path)
    options = dict(local_files_only=local_files_only, trust_remote_code=trust_remote_code)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **options)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype or torch.float32, **options)
    except (OSError, HFValidationError) as error:
        raise ModelLoadError(_load_error_message("the causal LM", source, error)) from error
    return model.eval(), tokenizer


def _load_error_message(what: str, source: str, error: Exception) -> str:
    first_line = str(error).strip().split("\n", 1)[0]
    if Path(source).is_dir():
        return (
            f"Could not load {what} from the directory {source!r}: {first_line}\n"
            "The directory must hold a complete save_pretrained() copy (config.json, the weights, and the "
            "tokenizer / processor files). Re-download it with `hf download <hub id> --local-dir "
            f"{source}`."
        )
    return (
        f"Could not load {what} {source!r}: {first_line}\n"
        f"It is not a local directory, and the Hugging Face Hub could not serve it (no network, offline mode, "
        f"a gated or misspelled repo). On a machine with network run `hf download {source} --local-dir DIR` "
        "(`huggingface-cli download` in older huggingface_hub releases), copy DIR here and pass DIR instead of "
        "the hub id. If the model is already in the local Hugging Face cache, set local_files_only=True "
        "(or HF_HUB_OFFLINE=1)."
    )


def _ensure_image_token(model: InstructBlipForConditionalGeneration, processor: InstructBlipProcessor) -> None:
    """Make config.image_token_index and the processor agree on the <image> placeholder.

    Older hub configs have image_token_index=None, and forward then fails cryptically; older
    processors have num_query_tokens=None. See DESIGN.md "Pitfalls".
    """
    tokenizer = processor.tokenizer
    image_token_id = tokenizer.convert_tokens_to_ids(str(processor.image_token))
    configured = model.config.image_token_index
    if configured is None:
        logger.warning("config.image_token_index is None; using the tokenizer's %s id %d", IMAGE_TOKEN, image_token_id)
        model.config.image_token_index = image_token_id
    elif configured != image_token_id:
        raise ModelLoadError(
            f"config.image_token_index={configured} but the tokenizer maps {IMAGE_TOKEN} to {image_token_id}: "
            "the model and processor files come from different checkpoints"
        )
    if image_token_id >= model.get_input_embeddings().num_embeddings:
        # The processor added <image> to an old tokenizer; its embedding row is always overwritten
        # by the Q-Former output (masked_scatter), so a new random row is harmless.
        logger.warning("resizing the LM embeddings to %d to make room for %s", len(tokenizer), IMAGE_TOKEN)
        model.resize_token_embeddings(len(tokenizer))
    if processor.num_query_tokens is None:
        processor.num_query_tokens = model.config.num_query_tokens


# ----------------------------------------------------------------------------------------------
# What trains, precision, LoRA
# ----------------------------------------------------------------------------------------------


def count_parameters(model: torch.nn.Module) -> ParamCounts:
    params = list(model.parameters())
    return ParamCounts(
        trainable=sum(p.numel() for p in params if p.requires_grad), total=sum(p.numel() for p in params)
    )


def configure_trainable(
    model: PreTrainedModel,
    *,
    train_vision_post_layernorm: bool = False,
    train_all: bool = False,
    quiet: bool = False,
) -> ParamCounts:
    """Freeze InstructBLIP as in the paper: only the Q-Former, query tokens and language projection train.

    train_vision_post_layernorm: also train the ViT's last layer norm (LAVIS's `ln_vision` trains).
    train_all: train every weight (the tiny-model experiments; any model, e.g. a causal LM).
    Prints "trainable params: X / total Y (Z%)" unless quiet, and returns the counts.
    """
    if not train_all and not isinstance(model, InstructBlipForConditionalGeneration):
        raise TypeError(
            f"the Q-Former freezing policy needs InstructBlipForConditionalGeneration, got {type(model).__name__}; "
            "pass train_all=True to train every weight, or use apply_lora"
        )
    model.requires_grad_(train_all)
    if not train_all:
        for module in (model.qformer, model.language_projection):
            module.requires_grad_(True)
        model.query_tokens.requires_grad_(True)
        if train_vision_post_layernorm:
            model.vision_model.post_layernorm.requires_grad_(True)
    counts = count_parameters(model)
    if not quiet:
        print(counts)
    return counts


def default_dtype(device: str | torch.device) -> torch.dtype:
    """bf16 on a CUDA device that supports it, else fp32.

    Never fp16: Flan-T5 overflows to NaN in fp16 and the Q-Former is unstable in it.
    """
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def set_precision(model: PreTrainedModel, dtype: torch.dtype) -> None:
    """Cast frozen weights to dtype; keep trainable weights and `_keep_in_fp32_modules` in fp32.

    Call after `configure_trainable`. Frozen bf16 weights halve memory; fp32 trainable weights keep
    small optimizer updates from being rounded away. The model then mixes dtypes, so run forward
    and generate under `torch.autocast(device_type, dtype)` (the HF Trainer does with bf16=True).
    """
    keep_fp32 = tuple(getattr(model, "_keep_in_fp32_modules", None) or ())
    for name, param in model.named_parameters():
        fp32 = param.requires_grad or any(name == k or name.startswith(k + ".") for k in keep_fp32)
        param.data = param.data.to(torch.float32 if fp32 else dtype)


def apply_lora(
    model: PreTrainedModel,
    *,
    r: int = 8,
    alpha: int = 16,
    dropout: float = 0.05,
    target_modules: Sequence[str] = ("q_proj", "v_proj"),
) -> PreTrainedModel:
    """Wrap a causal LM with LoRA adapters (peft); only the adapters train. Prints the counts."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(target_modules), task_type="CAUSAL_LM"
    )
    peft_model = get_peft_model(model, config)
    print(count_parameters(peft_model))
    return peft_model


# ----------------------------------------------------------------------------------------------
# Trainable-only checkpoints
# ----------------------------------------------------------------------------------------------


def trainable_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The parameters that require grad, by name, detached (what a checkpoint needs to hold)."""
    return {name: param.detach() for name, param in model.named_parameters() if param.requires_grad}


def save_trainable_weights(model: torch.nn.Module, path: str | os.PathLike) -> Path:
    """Write the trainable parameters to a safetensors file atomically (temp file + os.replace)."""
    path = Path(path)
    tensors = {name: tensor.contiguous().cpu() for name, tensor in trainable_state_dict(model).items()}
    if not tensors:
        raise CheckpointError(f"refusing to write {path}: the model has no trainable parameters")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp_name, metadata={"format": "pt", "model_class": type(model).__name__})
        os.replace(tmp_name, path)
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
    return path


def load_trainable_weights(model: torch.nn.Module, path: str | os.PathLike, *, strict: bool = True) -> list[str]:
    """Copy the weights of a `save_trainable_weights` file into model; return the names loaded.

    Every key must name a parameter of the model (strict=False skips unknown keys instead) and
    every shape must match. Values are cast to each parameter's dtype and device.
    """
    path = Path(path)
    try:
        tensors = load_file(path)
    except (OSError, SafetensorError) as error:
        raise CheckpointError(f"cannot read trainable weights from {path}: {error}") from error
    params = dict(model.named_parameters())
    loaded = []
    for name, tensor in tensors.items():
        param = params.get(name)
        if param is None:
            if strict:
                raise CheckpointError(
                    f"{path}: key {name!r} is not a parameter of {type(model).__name__} "
                    "(a checkpoint of another model or LM kind?); pass strict=False to skip unknown keys"
                )
            logger.warning("%s: skipping unknown key %s", path, name)
            continue
        if param.shape != tensor.shape:
            raise CheckpointError(
                f"{path}: key {name!r} has shape {tuple(tensor.shape)} but the model's parameter has "
                f"{tuple(param.shape)} (a checkpoint of a different model size?)"
            )
        with torch.no_grad():
            param.copy_(tensor)
        loaded.append(name)
    return loaded


# ----------------------------------------------------------------------------------------------
# Generation helpers
# ----------------------------------------------------------------------------------------------


def is_encoder_decoder(model: PreTrainedModel) -> bool:
    """True when the language model is an encoder-decoder (T5), for InstructBLIP and plain LMs alike."""
    config = model.config
    if hasattr(config, "use_decoder_only_language_model"):
        return not config.use_decoder_only_language_model
    return bool(getattr(config, "is_encoder_decoder", False))


def decode_generated(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, generated_ids: torch.Tensor, prompt_length: int
) -> list[str]:
    """Decode `generate()` output to texts, without the prompt.

    Decoder-only LMs return prompt + new tokens, so the first prompt_length (the padded prompt
    width, `input_ids.shape[1]`) columns are dropped; encoder-decoders return only decoder ids.
    """
    new_ids = generated_ids if is_encoder_decoder(model) else generated_ids[:, prompt_length:]
    return [text.strip() for text in tokenizer.batch_decode(new_ids, skip_special_tokens=True)]
