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

# An image, question or generation setting the demo cannot use; the message says what to change.
DemoInputError = InputError


def load_image(source: ImageSource, name: str | None = None) -> Image.Image:
    """An RGB PIL image from a path, the bytes of an image file or a PIL image; DemoInputError otherwise.

    Images over PIL's decompression-bomb limit (`Image.MAX_IMAGE_PIXELS`) are refused, not just warned
    about: one such upload would take the server's memory.
    """
    if isinstance(source, Image.Image):
        return source.convert("RGB")
    if isinstance(source, (bytes, bytearray)):
        name, opened = name or "the uploaded image", io.BytesIO(source)
    elif isinstance(source, (str, Path)):
        name, opened = name or str(source), Path(source)
        if not opened.is_file():
            raise DemoInputError(f"image file not found: {source}; pass the path of a JPEG or PNG file")
    else:
        raise DemoInputError(f"an image must be a path, bytes or a PIL image, got {type(source).__name__}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(opened) as image:
                return image.convert("RGB")  # convert() decodes every pixel: truncated files fail here
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise DemoInputError(
            f"{name} is too large to decode safely ({error}); scale it down below "
            f"{Image.MAX_IMAGE_PIXELS:,} pixels"
        ) from None
    except Image.UnidentifiedImageError:
        raise DemoInputError(f"{name} is not an image file PIL can read; upload a JPEG, PNG or WebP image") from None
    except (OSError, ValueError, SyntaxError) as error:  # truncated or corrupt data inside a known format
        raise DemoInputError(f"{name} is truncated or corrupt ({error}); upload the complete image file") from None
