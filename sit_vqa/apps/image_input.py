"""Images handed to the demo (a path, the bytes of an uploaded file, a PIL image), read safely; shared by the
command line and API (`sit_vqa.apps.demo`) and the web page (`sit_vqa.apps.demo_page`), which import it, not
each other."""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Union

from PIL import Image

from sit_vqa.errors import InputError

ImageSource = Union[str, Path, bytes, Image.Image]


def load_image(source: ImageSource, name: str | None = None, *, reduce_above: int | None = None) -> Image.Image:
    """An RGB PIL image from a path, the bytes of an image file or a PIL image; InputError otherwise.

    Images over PIL's decompression-bomb limit (`Image.MAX_IMAGE_PIXELS`) are refused, not just warned
    about: one such upload would take the server's memory. `reduce_above` (a side in pixels): an image whose
    short side exceeds it is decoded reduced, to a short side of at least half of it -- JPEGs at a smaller
    DCT scale (never fully decoded), others box-reduced by a whole factor right after decoding -- so a
    9400 px photo is not turned into a 2 GB float array only to be resized to 224. The demo passes 4x the
    model's input side, so images up to that size (every COCO image) are decoded exactly as evaluation does.
    """
    if isinstance(source, Image.Image):
        return _reduced(source.convert("RGB"), reduce_above)
    if isinstance(source, (bytes, bytearray)):
        name, opened = name or "the uploaded image", io.BytesIO(source)
    elif isinstance(source, (str, Path)):
        name, opened = name or str(source), Path(source)
        if not opened.is_file():
            raise InputError(f"image file not found: {source}; pass the path of a JPEG or PNG file")
    else:
        raise InputError(f"an image must be a path, bytes or a PIL image, got {type(source).__name__}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(opened) as image:
                if reduce_above and min(image.size) > reduce_above:
                    image.draft("RGB", _at_least(image.size, reduce_above // 2))  # JPEG only; else a no-op
                # convert() decodes every pixel: truncated files fail here
                return _reduced(image.convert("RGB"), reduce_above)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        # PIL's own message names its hard limit (twice this one); quote the one that refused the image
        raise InputError(
            f"{name} is too large to decode safely (over {Image.MAX_IMAGE_PIXELS:,} pixels); scale it down "
            "below that"
        ) from None
    except Image.UnidentifiedImageError:
        raise InputError(f"{name} is not an image file PIL can read; upload a JPEG, PNG or WebP image") from None
    except (OSError, ValueError, SyntaxError) as error:  # truncated or corrupt data inside a known format
        raise InputError(f"{name} is truncated or corrupt ({error}); upload the complete image file") from None


def _at_least(size: tuple[int, int], short_side: int) -> tuple[int, int]:
    """`size` scaled so that its short side is `short_side` (the aspect ratio kept)."""
    scale = short_side / min(size)
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


def _reduced(image: Image.Image, reduce_above: int | None) -> Image.Image:
    if not reduce_above or min(image.size) <= reduce_above:
        return image
    factor = min(image.size) // (reduce_above // 2)  # the short side stays >= reduce_above / 2
    return image.reduce(factor) if factor > 1 else image
