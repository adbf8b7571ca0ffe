"""Frozen-ViT feature cache: encode every image once, reuse the features in every epoch and evaluation.

The ViT is frozen and preprocessing is deterministic (LAVIS trained with random resized crops and flips,
which would make every epoch's features different; this package does not), so the vision encoder's
output for an image never changes. Computing it once saves the ViT forward of every step -- EVA ViT-g/14
is 15% of a training sample's FLOPs with Vicuna-7B and 43% with Flan-T5-XL (bench/train_throughput.py),
repeated for each of an image's ~5 questions and every epoch.

    cache = build_feature_cache("cache/vit", model, processor, image_paths, pipeline="plain")
    use_cached_features(model)                      # model.vision_model accepts cached states
    transform = SampleTransform.for_model(model, processor, feature_cache=cache)

What is stored: the encoder's last hidden state *before* `post_layernorm` (B x 257 x 1408 for ViT-g at
224), bf16 by default (float32 on request: then the loss matches the uncached one exactly). The
model's own `post_layernorm` is applied by `CachedVisionEncoder`, so `train_vision_post_layernorm`
(LAVIS's trainable ln_vision) still trains and still acts.

On disk (`directory/`):
    cache.json            the key: format, ViT weights hash, ViT config, pipeline + image processor
                          settings, dtype, feature shape -- a cache built for anything else is refused
    shard-00000.npy       features, one row per image (numpy .npy, memory-mapped; bf16 stored as uint16)
    shard-00000.json      the images of that shard: path, size, mtime_ns, row. Written after the .npy is
                          complete, so a shard without it (a build that was cut off) is ignored and redone

An image is identified by its absolute path, size and modification time: a file that changed after the
build is refused at lookup, and rebuilt by the next build. Building is resumable (complete shards are
kept) and shows a tqdm bar. Nothing is unpickled: .npy files are opened with allow_pickle=False.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from tqdm.auto import tqdm
from transformers.modeling_outputs import BaseModelOutputWithPooling

from sit_vqa.errors import DataError
from sit_vqa.files import write_json_atomically
from sit_vqa.modeling.images import image_transform, pipeline_settings

logger = logging.getLogger(__name__)

FEATURE_CACHE_FORMAT = "sit-vqa-feature-cache/1"
KEY_FILE = "cache.json"
DTYPES = {"bfloat16": (torch.bfloat16, np.uint16), "float32": (torch.float32, np.float32)}


class FeatureCacheError(DataError):
    """The feature cache is stale (other weights, preprocessing or image files), incomplete or unreadable."""


@dataclass(frozen=True)
class _Entry:
    shard: int
    row: int
    size: int
    mtime_ns: int


# --------------------------------------------------------------------------------------------------- key


def features_depend_on(model, processor, pipeline: str, dtype: str = "bfloat16") -> dict:
    """Everything the cached features depend on, JSON-ready."""
    vision = model.vision_model
    config = {k: v for k, v in vision.config.to_dict().items() if k != "transformers_version"}
    key = {
        "format": FEATURE_CACHE_FORMAT,
        "states": "vision encoder last_hidden_state before post_layernorm",
        "vision_weights_sha256": vision_weights_hash(vision),
        "vision_config": config,
        **pipeline_settings(processor, pipeline),
        "dtype": dtype,
    }
    return json.loads(json.dumps(key, sort_keys=True, default=str))  # as read back from cache.json


def vision_weights_hash(vision_model: nn.Module) -> str:
    """sha256 over the names, dtypes, shapes and bytes of the ViT's weights, post_layernorm excepted (it is
    applied after the cache, and may train)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(vision_model.state_dict().items()):
        if name.startswith("post_layernorm."):
            continue
        tensor = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


# ------------------------------------------------------------------------------------------------ reader


class FeatureCache:
    """Read access to a built cache. Picklable (DataLoader workers open the memory maps themselves)."""

    def __init__(self, directory: str | Path, expected_key: dict | None = None):
        self.directory = Path(directory)
        self.key = _read_key(self.directory)
        if expected_key is not None:
            _check_key(self.directory, self.key, expected_key)
        self.torch_dtype, self.numpy_dtype = DTYPES[self.key["dtype"]]
        self.index = _read_index(self.directory)
        self._arrays: dict[int, np.ndarray] = {}

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_arrays"] = {}  # memory maps are reopened per process, never copied
        return state

    def __len__(self) -> int:
        return len(self.index)

    def missing(self, paths: Iterable[str | os.PathLike]) -> list[str]:
        """The paths whose features are absent or older than the file."""
        return [path for path in map(_image_key, paths) if not self._is_current(path)]

    def features(self, path: str | os.PathLike) -> torch.Tensor:
        """The cached (tokens, hidden) encoder states of an image file; refuses a changed or absent file."""
        key = _image_key(path)
        entry = self.index.get(key)
        if entry is None:
            raise FeatureCacheError(
                f"image {key} is not in the feature cache {self.directory} ({len(self)} images); build the cache "
                "over every image of the run (train.py does, with feature_cache_dir set) or unset feature_cache_dir"
            )
        if not self._is_current(key):
            raise FeatureCacheError(
                f"image {key} changed after the feature cache {self.directory} was built (size or modification "
                "time differ); rebuild the cache (train.py does, with feature_cache_dir set) or restore the file"
            )
        row = np.array(self._array(entry.shard)[entry.row])  # copy out of the memory map
        return torch.from_numpy(row).view(self.torch_dtype)

    def _is_current(self, key: str) -> bool:
        entry = self.index.get(key)
        if entry is None:
            return False
        try:
            stat = os.stat(key)
        except OSError:
            return False
        return stat.st_size == entry.size and stat.st_mtime_ns == entry.mtime_ns

    def _array(self, shard: int) -> np.ndarray:
        if shard not in self._arrays:
            path = _shard_path(self.directory, shard, ".npy")
            try:
                self._arrays[shard] = np.load(path, mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError) as error:
                raise FeatureCacheError(f"cannot read feature shard {path}: {error}; delete {self.directory} "
                                        "and build the cache again") from error
        return self._arrays[shard]


# ----------------------------------------------------------------------------------------------- builder


def build_feature_cache(
    directory: str | Path,
    model,
    processor,
    image_paths: Iterable[str | os.PathLike],
    *,
    pipeline: str = "plain",
    dtype: str = "bfloat16",
    batch_size: int = 32,
    shard_size: int = 1024,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> FeatureCache:
    """Encode the images not yet cached (or changed since) and return the cache. Resumable: complete
    shards are kept, a cut-off one is redone. A cache built with other settings is refused, not replaced."""
    if dtype not in DTYPES:
        raise FeatureCacheError(f"feature cache dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    directory = Path(directory)
    key = features_depend_on(model, processor, pipeline, dtype)
    if (directory / KEY_FILE).exists():
        _check_key(directory, _read_key(directory), key)
    else:
        directory.mkdir(parents=True, exist_ok=True)
        write_json_atomically(directory / KEY_FILE, key)
    _remove_incomplete_shards(directory)
    cache = FeatureCache(directory, key)
    todo = sorted(set(cache.missing(image_paths)))
    if todo:
        logger.info("feature cache %s: encoding %d images (%d cached)", directory, len(todo), len(cache))
        _encode_images(directory, model, processor, todo, pipeline, dtype, batch_size, shard_size, device, progress)
        cache = FeatureCache(directory, key)
    return cache


def _encode_images(directory, model, processor, paths, pipeline, dtype, batch_size, shard_size, device, progress):
    vision = model.vision_model
    original_device = next(vision.parameters()).device
    device = torch.device(device) if device is not None else original_device
    to_pixels = image_transform(processor, pipeline)
    torch_dtype, numpy_dtype = DTYPES[dtype]
    first_shard = max((shard for shard in _complete_shards(directory)), default=-1) + 1
    vision.to(device)
    try:
        with tqdm(total=len(paths), desc="encoding images (feature cache)", unit="image", disable=not progress) as bar:
            for shard_offset, start in enumerate(range(0, len(paths), shard_size)):
                shard_paths = paths[start:start + shard_size]
                _write_shard(directory, first_shard + shard_offset, vision, to_pixels, shard_paths,
                             batch_size, torch_dtype, numpy_dtype, device, bar)
    finally:
        vision.to(original_device)


def _write_shard(directory, shard, vision, to_pixels, paths, batch_size, torch_dtype, numpy_dtype, device, bar):
    array = None
    entries = []
    for start in range(0, len(paths), batch_size):
        batch_paths = paths[start:start + batch_size]
        stats = [os.stat(path) for path in batch_paths]  # before reading: a file changed meanwhile is redone later
        pixels = torch.stack([_read_pixels(path, to_pixels) for path in batch_paths])
        states = encoder_states(vision, pixels.to(device)).to(torch_dtype).cpu()
        if array is None:
            array = np.lib.format.open_memmap(
                _shard_path(directory, shard, ".npy"), mode="w+", dtype=numpy_dtype, shape=(len(paths), *states.shape[1:])
            )
        array[start:start + len(batch_paths)] = states.view(_same_width_int(torch_dtype)).numpy().view(numpy_dtype)
        entries += [{"path": p, "size": s.st_size, "mtime_ns": s.st_mtime_ns, "row": start + i}
                    for i, (p, s) in enumerate(zip(batch_paths, stats))]
        bar.update(len(batch_paths))
    array.flush()
    del array
    write_json_atomically(_shard_path(directory, shard, ".json"), {"images": entries})  # the shard is complete


@torch.no_grad()
def encoder_states(vision_model, pixel_values: torch.Tensor) -> torch.Tensor:
    """The ViT encoder's last hidden state before post_layernorm (what the cache stores). Under bf16 autocast
    when the ViT weights are low precision, as in training and evaluation."""
    weight_dtype = next(vision_model.parameters()).dtype
    autocast = torch.autocast(pixel_values.device.type, dtype=weight_dtype, enabled=weight_dtype != torch.float32)
    with autocast:
        embeddings = vision_model.embeddings(pixel_values)
        return vision_model.encoder(inputs_embeds=embeddings).last_hidden_state


def _read_pixels(path: str, to_pixels) -> torch.Tensor:
    try:
        with Image.open(path) as image:
            return to_pixels(image)
    except OSError as error:
        raise FeatureCacheError(f"cannot read image {path} while building the feature cache: {error}") from error


def _same_width_int(dtype: torch.dtype) -> torch.dtype:
    return torch.int16 if dtype == torch.bfloat16 else torch.int32  # a bit-for-bit view numpy can hold


# ----------------------------------------------------------------------------------------- model wiring


class CachedVisionEncoder(nn.Module):
    """Drop-in for `model.vision_model`: `pixel_values` may be cached encoder states (batch, tokens, hidden)
    or images (batch, 3, H, W), which it encodes with the ViT's own modules.

    It holds the original embeddings, encoder and post_layernorm under their original names, so parameter
    names, checkpoints and `train_vision_post_layernorm` are unchanged. The output is what
    InstructBlipVisionModel.forward returns (transformers 5.x, modeling_instructblip.py): post_layernorm
    over all tokens as last_hidden_state, and post_layernorm applied again to the first token as
    pooler_output. Attention maps and per-layer hidden states are not available from cached states.
    """

    def __init__(self, vision_model: nn.Module):
        super().__init__()
        self.config = vision_model.config
        self.embeddings = vision_model.embeddings
        self.encoder = vision_model.encoder
        self.post_layernorm = vision_model.post_layernorm

    def forward(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False, **kwargs):
        if pixel_values.dim() == 4:  # images, not cached states
            embeddings = self.embeddings(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding)
            states = self.encoder(inputs_embeds=embeddings).last_hidden_state
        else:
            states = pixel_values.to(self.post_layernorm.weight.dtype)
        last_hidden_state = self.post_layernorm(states)
        pooled_output = self.post_layernorm(last_hidden_state[:, 0, :])
        return BaseModelOutputWithPooling(last_hidden_state=last_hidden_state, pooler_output=pooled_output)


def use_cached_features(model) -> None:
    """Let the InstructBLIP model take cached encoder states as pixel_values (idempotent)."""
    if not isinstance(model.vision_model, CachedVisionEncoder):
        model.vision_model = CachedVisionEncoder(model.vision_model)


def record_image_paths(records) -> list[str]:
    """The distinct image files of the records (a datasets.Dataset or a list of dicts) with an image_path."""
    if hasattr(records, "column_names"):
        paths = records["image_path"] if "image_path" in records.column_names else []
    else:
        paths = [record.get("image_path") for record in records]
    return sorted({_image_key(path) for path in paths if path})


# ---------------------------------------------------------------------------------------------- files


def _image_key(path: str | os.PathLike) -> str:
    return os.path.abspath(os.fspath(path))


def _shard_path(directory: Path, shard: int, suffix: str) -> Path:
    return directory / f"shard-{shard:05d}{suffix}"


def _complete_shards(directory: Path) -> list[int]:
    return sorted(int(path.stem.split("-")[1]) for path in directory.glob("shard-*.json"))


def _remove_incomplete_shards(directory: Path) -> None:
    complete = set(_complete_shards(directory))
    for path in directory.glob("shard-*.npy"):
        if int(path.stem.split("-")[1]) not in complete:
            logger.info("feature cache: removing %s, left by a build that was cut off", path)
            path.unlink()


def _read_key(directory: Path) -> dict:
    path = directory / KEY_FILE
    if not path.is_file():
        raise FeatureCacheError(f"{directory} is not a feature cache (no {KEY_FILE}); build one with "
                                "sit_vqa.modeling.feature_cache.build_feature_cache or train.py with feature_cache_dir set")
    try:
        key = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise FeatureCacheError(f"cannot read {path}: {error}; delete {directory} and build it again") from error
    if key.get("format") != FEATURE_CACHE_FORMAT:
        raise FeatureCacheError(f"{path}: unknown feature cache format {key.get('format')!r}, expected {FEATURE_CACHE_FORMAT}; "
                                f"delete {directory} and build it again")
    return key


def _check_key(directory: Path, found: dict, expected: dict) -> None:
    differing = sorted(name for name in set(found) | set(expected) if found.get(name) != expected.get(name))
    if differing:
        raise FeatureCacheError(
            f"the feature cache {directory} was built for other settings ({', '.join(differing)} differ: "
            "other ViT weights, image preprocessing or storage dtype) and cannot be used; delete it or set "
            "another feature_cache_dir"
        )


def _read_index(directory: Path) -> dict[str, _Entry]:
    index: dict[str, _Entry] = {}
    for shard in _complete_shards(directory):  # later shards win: they hold rebuilt (changed) images
        path = _shard_path(directory, shard, ".json")
        try:
            images = json.loads(path.read_text(encoding="utf-8"))["images"]
        except (OSError, ValueError, KeyError) as error:
            raise FeatureCacheError(f"cannot read {path}: {error}; delete {directory} and build it again") from error
        for image in images:
            index[image["path"]] = _Entry(shard, image["row"], image["size"], image["mtime_ns"])
    return index
