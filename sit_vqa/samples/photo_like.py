"""Procedural photo-like JPEGs (COCO size), for the image-pipeline benchmarks and tests (a directory of them:
`sit_vqa.modeling.builders_for_tests.write_photo_like_jpegs`).

The flat coloured shapes of `sit_vqa.samples.scenes` compress to almost nothing and resize without
error; real photographs do not. These images have what makes decoding and resampling work hard and
differ: smooth colour gradients (sky, walls), blurred shapes with soft and hard edges (objects), fine
texture and sensor-like noise (grass, fabric), saved as JPEG quality 90 with 4:2:0 chroma subsampling,
as COCO's are. A function of the seed only (numpy's PCG64), so every run sees the same pixels.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

COCO_SIZE = (640, 480)  # width, height of most COCO images


def photo_like_image(seed: int, size: tuple[int, int] = COCO_SIZE) -> Image.Image:
    """An RGB image of `size` (width, height) with gradients, shapes, texture and noise."""
    rng = np.random.default_rng(seed)
    width, height = size
    image = Image.fromarray(_gradient(rng, width, height))
    _draw_shapes(image, rng)
    image = image.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.6, 1.6))))
    pixels = np.asarray(image, dtype=np.float32)
    pixels += _texture(rng, width, height)
    pixels += rng.normal(0.0, 4.0, size=pixels.shape)  # sensor noise
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def photo_like_jpeg(seed: int, size: tuple[int, int] = COCO_SIZE, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    photo_like_image(seed, size).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def _gradient(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Two colours blended along a random direction, with a low-frequency wave."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, np.pi)
    t = (x * np.cos(angle) + y * np.sin(angle)) / (width + height)
    t = (t - t.min()) / max(float(np.ptp(t)), 1e-6)
    t += 0.08 * np.sin(x / rng.uniform(30, 120)) * np.cos(y / rng.uniform(30, 120))
    start, end = rng.uniform(20, 235, size=(2, 3))
    pixels = start + np.clip(t, 0, 1)[..., None] * (end - start)
    return pixels.astype(np.uint8)


def _draw_shapes(image: Image.Image, rng: np.random.Generator) -> None:
    draw = ImageDraw.Draw(image)
    width, height = image.size
    for _ in range(int(rng.integers(6, 14))):
        x0, y0 = rng.uniform(-0.1, 0.9) * width, rng.uniform(-0.1, 0.9) * height
        w, h = rng.uniform(0.05, 0.4) * width, rng.uniform(0.05, 0.4) * height
        colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
        box = [x0, y0, x0 + w, y0 + h]
        kind = rng.integers(0, 3)
        if kind == 0:
            draw.ellipse(box, fill=colour)
        elif kind == 1:
            draw.rectangle(box, fill=colour, outline=(0, 0, 0), width=int(rng.integers(1, 4)))
        else:
            draw.polygon([(x0, y0 + h), (x0 + w / 2, y0), (x0 + w, y0 + h)], fill=colour)
    for _ in range(int(rng.integers(5, 15))):  # thin lines: wires, branches, text-like strokes
        points = [tuple(rng.uniform(0, 1, 2) * (width, height)) for _ in range(2)]
        draw.line(points, fill=tuple(int(c) for c in rng.integers(0, 256, 3)), width=int(rng.integers(1, 3)))


def _texture(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Band-limited noise at a few scales (texture), the same in all channels plus a little colour."""
    texture = np.zeros((height, width), np.float32)
    for scale, amplitude in ((2, 6.0), (6, 8.0), (24, 10.0)):
        coarse = rng.normal(0, amplitude, size=(height // scale + 2, width // scale + 2)).astype(np.float32)
        texture += np.asarray(
            Image.fromarray(coarse).resize((width + 2 * scale, height + 2 * scale), Image.BICUBIC)
        )[:height, :width]
    return texture[..., None] * rng.uniform(0.6, 1.0, size=3).astype(np.float32)
