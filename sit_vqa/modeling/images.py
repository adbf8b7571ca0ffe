"""Image -> pixel_values: the processor's own path ("plain") and a faster equivalent ("fast").

    transform = image_transform(processor, "fast")   # processor or its image_processor
    pixel_values = transform(Image.open(path))        # (3, H, W) float32 tensor

Both read every setting from the processor's image_processor (size, resample, rescale factor, mean,
std), so they follow whatever checkpoint the processor came from. The pipeline name is a config
option (`image_pipeline`), so it is written into the checkpoint manifest and evaluation and the demo
preprocess exactly as training did; the frozen-ViT feature cache records it in its key.

"plain": `image_processor(image, return_tensors="pt")["pixel_values"][0]` (BlipImageProcessorPil:
uint8 -> numpy -> PIL -> bicubic resize -> float64 rescale -> normalise -> CHW float32).

"fast", three changes, each cheaper and each close to the plain result:
1. JPEG draft decoding: when the file is at least twice the target size in both directions, libjpeg
   decodes it at 1/2, 1/4 or 1/8 scale (DCT scaling; `Image.draft`), never below the target size, so
   the bicubic resize that follows still only shrinks. This skips most of the decode work; the
   DCT-domain reduction averages pixels slightly differently from the bicubic filter.
2. PIL resize with `reducing_gap` (a box reduction by an integer factor first, then the processor's
   filter over the last >= REDUCING_GAP x step; Pillow's docs call 3 "indistinguishable from fair
   resampling"). For COCO sizes after the draft step it rarely applies; it bounds the cost of huge
   non-JPEG inputs.
3. rescale + normalise as one vectorised float32 multiply-add, written straight into CHW order.
Without a draft step (a PNG, an in-memory image, a small JPEG) and with no reducing step the fast
path's uint8 resize is the plain one exactly and pixel_values differ only by float rounding (< 1e-5).

Measured difference from "plain" (224x224, photo-like 640x480 JPEGs quality 90, 64 images;
`python bench/data_throughput.py` prints it): see docs/PERFORMANCE.md, and tests/modeling/test_images.py for
the bound on the tiny model's ViT features.

Preprocessing is deterministic in both pipelines (LAVIS trained with random resized crops and flips);
that is what makes the frozen-ViT feature cache (`sit_vqa.modeling.feature_cache`) valid.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from sit_vqa.errors import ConfigError

PIPELINES = ("plain", "fast")
REDUCING_GAP = 3.0


class ImagePipelineError(ConfigError):
    """The image processor's settings are not ones the chosen pipeline can reproduce."""


def image_transform(processor, pipeline: str) -> Callable[[Image.Image], torch.Tensor]:
    """A picklable callable: PIL image (opened lazily or loaded) -> (3, H, W) float32 pixel_values."""
    image_processor = getattr(processor, "image_processor", processor)
    if pipeline == "plain":
        return PlainImageTransform(image_processor)
    if pipeline == "fast":
        return FastImageTransform.from_image_processor(image_processor)
    raise ImagePipelineError(f"unknown image_pipeline {pipeline!r}; expected one of {', '.join(PIPELINES)}")


def pipeline_settings(processor, pipeline: str) -> dict:
    """Everything that decides the pixel values: the pipeline name and the image processor's settings
    (JSON-ready; the feature cache keys on it)."""
    image_processor = getattr(processor, "image_processor", processor)
    settings = {key: _jsonable(value) for key, value in sorted(image_processor.to_dict().items())}
    return {"image_pipeline": pipeline, "image_processor": settings}


@dataclass(frozen=True)
class PlainImageTransform:
    """The processor's own path, unchanged."""

    image_processor: Callable

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return self.image_processor(image.convert("RGB"), return_tensors="pt")["pixel_values"][0]


@dataclass(frozen=True)
class FastImageTransform:
    """Draft decode + PIL resize (reducing_gap) + one multiply-add; see the module docstring."""

    width: int
    height: int
    resample: int
    scale: tuple[float, float, float]  # rescale_factor / std, per channel (rescale folded into normalise)
    offset: tuple[float, float, float]  # -mean / std

    @classmethod
    def from_image_processor(cls, image_processor) -> FastImageTransform:
        settings = image_processor.to_dict()
        _require(settings, "do_resize", True)
        _require(settings, "do_convert_rgb", True, missing_ok=True)
        _require(settings, "do_center_crop", False, missing_ok=True)
        _require(settings, "do_pad", False, missing_ok=True)
        size = settings.get("size") or {}
        if set(size) != {"height", "width"}:
            raise ImagePipelineError(
                f"image_pipeline 'fast' needs an image processor size of {{height, width}}, got {size}; "
                "use image_pipeline: plain for this processor"
            )
        rescale = settings["rescale_factor"] if settings.get("do_rescale") else 1.0
        if settings.get("do_normalize"):
            mean = np.asarray(settings["image_mean"], np.float64) * np.ones(3)
            std = np.asarray(settings["image_std"], np.float64) * np.ones(3)
        else:
            mean, std = np.zeros(3), np.ones(3)
        return cls(
            width=int(size["width"]),
            height=int(size["height"]),
            resample=int(settings.get("resample", Image.Resampling.BICUBIC)),
            scale=tuple(float(s) for s in rescale / std),
            offset=tuple(float(o) for o in -mean / std),
        )

    def __call__(self, image: Image.Image) -> torch.Tensor:
        target = (self.width, self.height)
        box = self._draft(image)
        image.load()  # decodes here, at the draft scale
        rgb = image if image.mode == "RGB" else image.convert("RGB")
        if rgb.size != target:
            rgb = rgb.resize(target, resample=self.resample, box=box, reducing_gap=REDUCING_GAP)
        # uint8 CHW copy first, then float32 in place: about 4x faster than a strided mixed-type multiply
        pixels = np.ascontiguousarray(np.asarray(rgb).transpose(2, 0, 1)).astype(np.float32)
        pixels *= np.asarray(self.scale, np.float32)[:, None, None]
        pixels += np.asarray(self.offset, np.float32)[:, None, None]
        return torch.from_numpy(pixels)

    def _draft(self, image: Image.Image):
        """Ask a not-yet-decoded JPEG for a reduced-scale decode; return the resize box it implies (or None).

        Image.draft picks the largest scale 1/s (s in 8, 4, 2) that keeps the image at least the requested
        size; it does nothing on other formats or once the pixels are loaded (Pillow's documented behaviour,
        where it returns None: no private attribute needs asking)."""
        if image.format != "JPEG":
            return None
        drafted = image.draft("RGB", (self.width, self.height))
        return drafted[1] if drafted else None  # the original extent in the reduced image's coordinates


def _require(settings: dict, key: str, expected: bool, missing_ok: bool = False) -> None:
    value = settings.get(key)
    if value is None and missing_ok:
        return
    if bool(value) != expected:
        raise ImagePipelineError(
            f"image_pipeline 'fast' reproduces processors with {key}={expected}, this one has {key}={value!r}; "
            "use image_pipeline: plain for this processor"
        )


def _jsonable(value):
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in sorted(value.items())}
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return int(value) if isinstance(value, int) else str(value)
