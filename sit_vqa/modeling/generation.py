"""Generation: one settings type and one function that turns a batch of (image, instruction) records into
texts. Evaluation, the in-training evaluation, the demo and the export check all generate through here.

    settings = GenerationSettings(max_new_tokens=64)
    texts = generate_texts(model, processor, records, settings)      # records: "instruction" and an image

- `GenerationInputs` makes a model's inputs from records (the collator's transform, with the instruction
  length and image pipeline the checkpoint was trained with) and pads them on the side generation needs:
  left for decoder-only LMs (new tokens follow the prompt), right for T5 (the encoder reads the prompt).
- `generate_batch` is the one `model.generate` call: greedy, beam search or sampling from the settings, the
  EOS the targets were trained with (`generation_kwargs`), bf16 autocast where the run used it, and the
  prompt echo of decoder-only LMs cut off (`decode_generated`).
- `generate_batches` / `generate_texts` run it over records in batches of record indices (what
  `sit_vqa.evaluation.sharded` deals out to the processes of a launch).
"""

from __future__ import annotations

import functools
import logging
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from sit_vqa.errors import ConfigError, EvaluationError, InputError
from sit_vqa.modeling import precision
from sit_vqa.modeling.collate import TransformedDataset
from sit_vqa.modeling.families import is_encoder_decoder, model_family

logger = logging.getLogger(__name__)

PROGRESS_LOG_SECONDS = 60.0  # a log line this often when stderr is no terminal (no bar to watch)


class InvalidGenerationSettings(EvaluationError, InputError):
    """A generation setting that cannot be used (a count below 1, top_p above 1, ...): an evaluation cannot
    run with it, and the demo refuses the request."""


@dataclass(frozen=True)
class GenerationSettings:
    """How to generate, everywhere: the decoding (greedy by default), the batch, and how inputs are made
    (instruction length and image pipeline: as the checkpoint was trained, `TrainedSettings` gives them)."""

    max_new_tokens: int = 64
    num_beams: int = 1
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    batch_size: int = 16
    max_instruction_length: int = 128
    image_pipeline: str = "plain"  # sit_vqa.modeling.images
    num_workers: int = 0
    model_type: str = "instructblip"  # the family whose sample transform makes the inputs

    def __post_init__(self):
        for name in ("batch_size", "max_new_tokens", "num_beams", "max_instruction_length"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidGenerationSettings(f"{name} must be a positive integer, got {value!r}")
        for name in ("temperature", "top_p", "repetition_penalty"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise InvalidGenerationSettings(f"{name} must be a positive number, got {value!r}")
        if self.top_p > 1:
            raise InvalidGenerationSettings(f"top_p must be at most 1, got {self.top_p}")

    def generate_kwargs(self) -> dict[str, Any]:
        """The decoding arguments of `model.generate`."""
        kwargs = dict(max_new_tokens=self.max_new_tokens, num_beams=self.num_beams, do_sample=self.do_sample,
                      repetition_penalty=self.repetition_penalty)
        if self.do_sample:  # transformers warns about temperature / top_p set without sampling
            kwargs.update(temperature=self.temperature, top_p=self.top_p)
        return kwargs


class GenerationInputs:
    """Records -> the model's padded generation inputs, on the model's device."""

    def __init__(self, model, processor, settings: GenerationSettings, *, feature_cache=None):
        self.transform = model_family(settings.model_type).sample_transform(
            model, processor, max_instruction_length=settings.max_instruction_length,
            image_pipeline=settings.image_pipeline, feature_cache=feature_cache,
        )
        # decoder-only LMs continue the prompt: pad it on the left; T5's encoder reads it: right
        self.collator = self.transform.collator(padding_side="right" if is_encoder_decoder(model) else "left")

    @property
    def tokenizer(self):
        return self.transform.tokenizer

    def sample(self, record: Mapping[str, Any]) -> dict[str, Any]:
        return self.transform(record, with_target=False)

    def batch(self, records: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        return self.collator([self.sample(record) for record in records])


def generate_batch(model, tokenizer, batch: Mapping[str, torch.Tensor], settings: GenerationSettings,
                   **extra) -> list[str]:
    """The texts `model` generates for one padded batch (GenerationInputs.batch), prompts cut off.
    `extra`: more `generate` arguments (a streamer, stopping criteria)."""
    device = next(model.parameters()).device
    with torch.inference_mode(), precision.autocast_for(model, device):
        batch = {key: value.to(device) for key, value in batch.items()}
        generated = model.generate(
            **batch, **settings.generate_kwargs(), **extra,
            **generation_kwargs(tokenizer),  # stop at the targets' EOS (the hub LM config names another)
        )
        return decode_generated(model, tokenizer, generated, batch["input_ids"].shape[1])


def generate_texts(
    model, processor, records, settings: GenerationSettings, *, progress: bool = True, feature_cache=None,
    log_every: float = PROGRESS_LOG_SECONDS,
) -> list[str]:
    """The model's output for every record (prompt = its "instruction" and image), in record order.

    The model is put in eval mode for the call and left in the mode it was in. feature_cache: a
    sit_vqa.modeling.feature_cache.FeatureCache holding the records' images (the model needs use_cached_features).
    """
    batches = batches_of(len(records), settings.batch_size)
    generated = generate_batches(model, processor, records, settings, batches, progress=progress,
                                 feature_cache=feature_cache, log_every=log_every)
    return [text for texts in generated for text in texts]


def batches_of(count: int, batch_size: int) -> list[list[int]]:
    """The batches one process makes of `count` records: consecutive indices, `batch_size` each."""
    return [list(range(start, min(start + batch_size, count))) for start in range(0, count, batch_size)]


def generate_batches(
    model, processor, records, settings: GenerationSettings, batches: Sequence[Sequence[int]], *,
    progress: bool = True, feature_cache=None, log_every: float = PROGRESS_LOG_SECONDS,
) -> Iterator[list[str]]:
    """The outputs of each batch of `batches` (lists of record indices) in turn: the generate function that
    `sit_vqa.evaluation.sharded` runs on every rank. The model is in eval mode until the last batch is out.
    progress: a bar on a terminal, else a log line every `log_every` seconds (records done, rate, ETA)."""
    inputs = GenerationInputs(model, processor, settings, feature_cache=feature_cache)
    loader = torch.utils.data.DataLoader(
        TransformedDataset(records, functools.partial(inputs.transform, with_target=False)),
        batch_sampler=[list(batch) for batch in batches], collate_fn=inputs.collator,
        num_workers=settings.num_workers,
    )
    log = _ProgressLog(sum(len(batch) for batch in batches), log_every) if progress and not _on_terminal() else None
    was_training = model.training
    model.eval()
    try:
        for batch in _progress(loader, progress):
            # inference mode per batch (inside generate_batch), not around the yield: the caller's code
            # between batches runs as usual
            texts = generate_batch(model, inputs.tokenizer, batch, settings)
            if log:
                log.update(len(texts))
            yield texts
    finally:
        model.train(was_training)


def _progress(loader, enabled: bool):
    # disable=None: tqdm turns itself off when stderr is not a terminal (logs stay clean)
    return tqdm(loader, desc="generating", unit="batch", disable=None if enabled else True)


def _on_terminal() -> bool:
    return hasattr(sys.stderr, "isatty") and sys.stderr.isatty()


class _ProgressLog:
    """What the bar shows, as a log line at intervals, for runs whose stderr goes to a file (tqdm is off there)."""

    def __init__(self, total: int, every: float):
        self.total, self.every, self.done = total, every, 0
        self.start = self.last = time.monotonic()

    def update(self, count: int) -> None:
        self.done += count
        now = time.monotonic()
        if now - self.last < self.every and self.done < self.total:
            return
        self.last = now
        rate = self.done / max(now - self.start, 1e-9)
        eta = (self.total - self.done) / rate
        logger.info("generated %d of %d records (%.2f records/s, ETA %s)", self.done, self.total, rate,
                    time.strftime("%H:%M:%S", time.gmtime(eta)))


# ---------------------------------------------------------------------------------- the EOS and the prompt echo


def generation_kwargs(tokenizer: PreTrainedTokenizerBase) -> dict[str, int]:
    """eos_token_id and pad_token_id for `generate()`, from the tokenizer the targets were built with.

    Every `generate()` call (evaluation, the in-training evaluation, the demo) passes these. The hub's
    Salesforce/instructblip-vicuna-7b says eos 1 in its LM config and generation config while its tokenizer's
    EOS (ending every training target) is "</s>" = 2; InstructBLIP's generate runs the language model's
    generate with the LM's own generation config, so without these it never stops.
    """
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ConfigError("the LM tokenizer has no eos_token: generation could not stop (set one in its "
                          "tokenizer_config.json)")
    pad = tokenizer.pad_token_id
    return {"eos_token_id": eos, "pad_token_id": eos if pad is None else pad}


def align_generation_config(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    """Write `generation_kwargs(tokenizer)` into the model's generation configs: its own (saved by
    save_pretrained, so an exported model stops at the right EOS) and, for InstructBLIP, the language model's
    (the one InstructBLIP's generate actually uses). The model configs keep the hub's values."""
    ids = generation_kwargs(tokenizer)
    language_model = getattr(model, "language_model", None)
    for owner in (model, language_model):
        config = getattr(owner, "generation_config", None)
        if config is not None:
            for key, value in ids.items():
                setattr(config, key, value)


def decode_generated(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, generated_ids: torch.Tensor, prompt_length: int
) -> list[str]:
    """Decode `generate()` output to texts, without the prompt.

    Decoder-only LMs return prompt + new tokens, so the first prompt_length (the padded prompt
    width, `input_ids.shape[1]`) columns are dropped; encoder-decoders return only decoder ids.
    """
    new_ids = generated_ids if is_encoder_decoder(model) else generated_ids[:, prompt_length:]
    return [text.strip() for text in tokenizer.batch_decode(new_ids, skip_special_tokens=True)]
