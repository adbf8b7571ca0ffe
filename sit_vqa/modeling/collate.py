"""The collator of InstructBLIP image samples and text-only samples alike (chat VLMs have their own,
`sit_vqa.modeling.chat_vlm.ChatCollator`: their processor's chat template makes the inputs).

Two steps, as in torchtune: `SampleTransform` turns one record into model inputs (tokenize, load
and process the image), then `SitCollator` only pads and stacks a list of them.

A record is a mapping with "instruction", "target" (optional for generation) and, for image
samples, "image_path" (loaded here, lazily; relative paths resolve against `image_dir`) or "image"
(a PIL image). "question_id" (or "id"), when present, names the record in error messages.

Layout of one transformed image sample (q = num_query_tokens <image> placeholders):

    decoder-only LM   input_ids = q x <image> + instruction (tokenizer's own specials, e.g. BOS)
                                  + target + EOS
                      labels    = -100 on the image tokens and the instruction, then target + EOS
    encoder-decoder   input_ids = q x <image> + instruction (+ EOS, as the T5 tokenizer adds)
                      labels    = target + EOS
    Q-Former          qformer_input_ids = the instruction only (never the target)

Text-only samples are the same without image tokens, Q-Former ids or pixel values. Instructions
are cut from the left (the question sits at their end), targets from the right, as in LAVIS; the
tokenizer's special tokens and the EOS always stay.

Training batches pad on the right; batches for `generate()` with a decoder-only LM on the left.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
from PIL import Image
from torch.nn.utils.rnn import pad_sequence
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from sit_vqa.errors import ConfigError, DataError
from sit_vqa.modeling.images import image_transform
from sit_vqa.modeling.families import is_encoder_decoder

IGNORE_INDEX = -100
T = TypeVar("T")


class SampleError(DataError):
    """A record cannot be turned into a training or generation sample; the message names it."""


class UnreadableImageError(SampleError):
    """A record's image file is missing, unreadable, truncated or not an image. `record` names the record
    (e.g. "question_id=12"), `path` the file: training can skip such a record (sit_vqa.training.unreadable).
    Both are optional so that a DataLoader worker can re-raise it from its message alone."""

    def __init__(self, message: str, *, record: str = "", path: Path | None = None):
        super().__init__(message)
        self.record = record
        self.path = path


@dataclass(frozen=True)
class SitCollator:
    """Pad transformed samples to the longest in the batch and stack them into tensors.

    pad_token_id pads input_ids, qformer_pad_token_id qformer_input_ids, label_pad labels (padded
    positions are masked or ignored, so the pad ids only need to be valid ids). padding_side
    applies to the LM inputs: "right" for training, "left" for batched generation with a
    decoder-only LM. The Q-Former ids always pad on the right (a BERT encoder with absolute
    positions; its mask hides the padding).
    """

    pad_token_id: int
    qformer_pad_token_id: int = 0  # [PAD] of bert-base-uncased, every InstructBLIP's Q-Former tokenizer
    padding_side: str = "right"
    label_pad: int = IGNORE_INDEX

    def __post_init__(self):
        if self.padding_side not in ("right", "left"):
            raise ConfigError(f"padding_side must be 'right' or 'left', got {self.padding_side!r}")

    def __call__(self, samples: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        if not samples:
            raise SampleError("cannot collate an empty batch")
        keys = set(samples[0])
        for sample in samples[1:]:
            if set(sample) != keys:
                raise SampleError(
                    f"samples in one batch have different keys ({sorted(keys)} vs {sorted(sample)}): "
                    "image and text-only samples cannot share a batch"
                )
        batch = {}
        for key in sorted(keys):
            values = [sample[key] for sample in samples]
            if key == "pixel_values":
                batch[key] = torch.stack([torch.as_tensor(v) for v in values])
            elif key == "labels":
                batch[key] = self._pad(values, self.label_pad, self.padding_side)
            elif key == "input_ids":
                batch[key] = self._pad(values, self.pad_token_id, self.padding_side)
            elif key == "attention_mask":
                batch[key] = self._pad(values, 0, self.padding_side)
            elif key == "qformer_input_ids":
                batch[key] = self._pad(values, self.qformer_pad_token_id, "right")
            elif key == "qformer_attention_mask":
                batch[key] = self._pad(values, 0, "right")
            else:
                raise SampleError(f"the collator does not know how to batch the key {key!r}")
        return batch

    @staticmethod
    def _pad(sequences: list, value: int, side: str) -> torch.Tensor:
        tensors = [torch.as_tensor(s, dtype=torch.long) for s in sequences]
        return pad_sequence(tensors, batch_first=True, padding_value=value, padding_side=side)


@dataclass
class SampleTransform:
    """Turn one record into the inputs of one sample (python lists, plus a pixel_values tensor).

    tokenizer: the LM tokenizer. For image samples also: qformer_tokenizer, image_processor,
    num_query_tokens and image_token_id (from the model config). is_encoder_decoder: T5-style LM.
    image_pipeline: "plain" (the image processor's own path) or "fast" (see sit_vqa.modeling.images).
    feature_cache: a sit_vqa.modeling.feature_cache.FeatureCache; pixel_values are then the image file's cached ViT
    encoder states (the model needs `use_cached_features`), and records must name their image by path.
    Use `SampleTransform.for_model(model, processor_or_tokenizer)` to read all of it from a model.
    """

    tokenizer: PreTrainedTokenizerBase
    is_encoder_decoder: bool = False
    qformer_tokenizer: PreTrainedTokenizerBase | None = None
    image_processor: Callable | None = None
    num_query_tokens: int = 0
    image_token_id: int | None = None
    max_instruction_length: int = 128
    max_target_length: int = 256
    image_dir: str | Path | None = None
    image_pipeline: str = "plain"
    feature_cache: Any = None

    def __post_init__(self):
        if self.tokenizer.eos_token_id is None:
            raise ConfigError("the LM tokenizer has no eos_token; targets must end with EOS (set one in its "
                              "tokenizer_config.json / special_tokens_map.json)")
        if self.max_instruction_length < 1 or self.max_target_length < 1:
            raise ConfigError("max_instruction_length and max_target_length must be positive")
        if self.image_processor is not None:
            missing = [
                name
                for name, value in [
                    ("qformer_tokenizer", self.qformer_tokenizer),
                    ("image_token_id", self.image_token_id),
                    ("num_query_tokens", self.num_query_tokens or None),
                ]
                if value is None
            ]
            if missing:
                raise ConfigError(f"image samples need {', '.join(missing)} as well as the image_processor")
            self._image_to_pixels = image_transform(self.image_processor, self.image_pipeline)
        # Instructions are cut from the left; the shared tokenizers keep their own setting.
        self._left_tokenizer = _left_truncating(self.tokenizer)
        self._left_qformer_tokenizer = _left_truncating(self.qformer_tokenizer) if self.qformer_tokenizer else None

    @classmethod
    def for_model(cls, model: PreTrainedModel, processor_or_tokenizer, **options) -> SampleTransform:
        """Build from an InstructBLIP model + InstructBlipProcessor, or a plain LM + its tokenizer."""
        if hasattr(processor_or_tokenizer, "qformer_tokenizer"):
            processor = processor_or_tokenizer
            return cls(
                tokenizer=processor.tokenizer,
                is_encoder_decoder=is_encoder_decoder(model),
                qformer_tokenizer=processor.qformer_tokenizer,
                image_processor=processor.image_processor,
                num_query_tokens=model.config.num_query_tokens,
                image_token_id=model.config.image_token_index,
                **options,
            )
        return cls(tokenizer=processor_or_tokenizer, is_encoder_decoder=is_encoder_decoder(model), **options)

    @property
    def pad_token_id(self) -> int:
        """The LM tokenizer's pad id, or its EOS id when it has none (LLaMA): padding is masked anyway."""
        pad_id = self.tokenizer.pad_token_id
        return self.tokenizer.eos_token_id if pad_id is None else pad_id

    def collator(self, padding_side: str = "right") -> SitCollator:
        """The SitCollator matching this transform's tokenizers ("left" for decoder-only generation)."""
        qformer_pad = self.qformer_tokenizer.pad_token_id if self.qformer_tokenizer is not None else None
        return SitCollator(
            pad_token_id=self.pad_token_id,
            qformer_pad_token_id=0 if qformer_pad is None else qformer_pad,
            padding_side=padding_side,
        )

    def __call__(self, record: Mapping[str, Any], *, with_target: bool = True) -> dict[str, Any]:
        """One sample; with_target=False gives the prompt only (for generate())."""
        instruction = text_field(record, "instruction")
        has_image = _has_image(record)
        if has_image and self.image_processor is None:
            raise SampleError(f"record {record_name(record)} has an image but this transform is text-only")
        pixel_values = self._pixel_values(record) if has_image else None
        num_image_tokens = self.num_query_tokens if has_image else 0

        prompt = [self.image_token_id] * num_image_tokens + self._left_tokenizer(
            instruction, truncation=True, max_length=self.max_instruction_length
        )["input_ids"]
        self._check_image_tokens(prompt, num_image_tokens, record)

        sample: dict[str, Any] = {}
        if has_image:
            sample["pixel_values"] = pixel_values
            qformer_ids = self._left_qformer_tokenizer(
                instruction, truncation=True, max_length=self.max_instruction_length
            )["input_ids"]
            sample["qformer_input_ids"] = qformer_ids
            sample["qformer_attention_mask"] = [1] * len(qformer_ids)

        if not with_target:
            input_ids, labels = prompt, None
        else:
            target_ids = self._target_ids(text_field(record, "target"), record)
            if self.is_encoder_decoder:
                input_ids, labels = prompt, target_ids
            else:
                input_ids, labels = prompt + target_ids, [IGNORE_INDEX] * len(prompt) + target_ids
        sample["input_ids"] = input_ids
        sample["attention_mask"] = [1] * len(input_ids)
        if labels is not None:
            sample["labels"] = labels
        return sample

    def check_records(self, records) -> None:
        """Refuse, before training starts, records whose instruction or target holds the image token text: it
        would become an image placeholder (the decoder-only forward then fails deep inside transformers, and a
        T5 model learns to emit the token). `records`: a datasets.Dataset or a list of mappings."""
        text = self.image_token_text
        if text is None:
            return
        for key in ("instruction", "target"):
            values = records[key] if hasattr(records, "column_names") else [r.get(key) for r in records]
            index = next((i for i, value in enumerate(values) if isinstance(value, str) and text in value), None)
            if index is not None:
                raise SampleError(
                    f"record {record_name(records[index])}: its {key} contains the image token text {text!r}, "
                    "which the model reserves for the image placeholders; remove it from the data (the caption, "
                    "question or answer it came from)"
                )

    @property
    def image_token_text(self) -> str | None:
        if self.image_token_id is None:
            return None
        return self.tokenizer.convert_ids_to_tokens(self.image_token_id)

    def _target_ids(self, target: str, record: Mapping[str, Any]) -> list[int]:
        if not target.strip():
            raise SampleError(f"record {record_name(record)} has an empty target")
        ids = self.tokenizer(target, add_special_tokens=False)["input_ids"]
        if self.image_token_id is not None and self.image_token_id in ids:
            raise SampleError(f"record {record_name(record)}: the target contains the image token text "
                              f"{self.image_token_text!r}; remove it from the data")
        return ids[: self.max_target_length - 1] + [self.tokenizer.eos_token_id]

    def _check_image_tokens(self, prompt: list[int], expected: int, record: Mapping[str, Any]) -> None:
        # transformers silently drops or truncates the image when the placeholder count is wrong
        found = sum(1 for token in prompt if token == self.image_token_id) if self.image_token_id is not None else 0
        if found != expected:
            raise SampleError(
                f"record {record_name(record)}: {found} image tokens in the LM input, expected {expected} "
                f"(num_query_tokens); does the instruction contain the image token text?"
            )

    def _pixel_values(self, record: Mapping[str, Any]) -> torch.Tensor:
        image = record.get("image")
        if self.feature_cache is not None:
            if image is not None:
                raise SampleError(f"record {record_name(record)} holds an in-memory image, which the feature cache "
                                  "cannot look up; give it an image_path or unset feature_cache_dir")
            return self.feature_cache.features(self.image_path(record))
        # the image transform reads the pixels (the fast one at a reduced JPEG scale): it gets the file undecoded
        return with_record_image(record, self.image_dir, self._image_to_pixels)

    def image_path(self, record: Mapping[str, Any]) -> Path:
        return image_file(record, self.image_dir)


def _left_truncating(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    left = copy.deepcopy(tokenizer)
    left.truncation_side = "left"
    return left


def _has_image(record: Mapping[str, Any]) -> bool:
    return record.get("image") is not None or bool(record.get("image_path"))


def text_field(record: Mapping[str, Any], key: str) -> str:
    value = record.get(key)
    if not isinstance(value, str):
        raise SampleError(
            f"record {record_name(record)} needs a text field {key!r}, got {type(value).__name__} "
            f"(record keys: {sorted(record)})"
        )
    return value


def record_name(record: Mapping[str, Any]) -> str:
    for key in ("question_id", "id", "source_index"):
        if record.get(key) is not None:
            return f"{key}={record[key]}"
    return "<without question_id>"


def image_file(record: Mapping[str, Any], image_dir) -> Path:
    """The record's image file, relative paths resolved against image_dir."""
    path = Path(record["image_path"])
    if image_dir is not None and not path.is_absolute():
        path = Path(image_dir) / path
    return path


def with_record_image(record: Mapping[str, Any], image_dir, use: Callable[[Image.Image], T]) -> T:
    """`use` of the record's image: its in-memory PIL `image` (as RGB), else its image file opened but not yet
    decoded (so that `use` may decode at a reduced JPEG scale). The file is checked here: missing, unreadable,
    truncated or not an image, an UnreadableImageError names the file and the record (the collator of
    InstructBLIP and text samples and the chat VLM samples both read their images through here)."""
    image = record.get("image")
    if image is not None:
        if not isinstance(image, Image.Image):
            raise SampleError(f"record {record_name(record)}: 'image' must be a PIL image, got {type(image).__name__}")
        return use(image.convert("RGB"))
    path = image_file(record, image_dir)
    try:
        with Image.open(path) as opened:
            return use(opened)
    except OSError as error:  # UnidentifiedImageError is an OSError
        name = record_name(record)
        raise UnreadableImageError(f"cannot read image {path} of record {name}: {error}", record=name,
                                   path=path) from error


class TransformedDataset(torch.utils.data.Dataset):
    """Records (a datasets.Dataset or a list of dicts) with the model transform applied on access.

    Images are read lazily here, per sample, in the DataLoader workers — never in the collator.
    """

    def __init__(self, records, transform):
        self.records = records
        self.transform = transform

    def __len__(self):
        return len(self.records)

    def __getitem__(self, index):
        return self.transform(self.records[int(index)])
