"""Decoding images: encoded bytes or a PIL image -> (H, W, C) uint8 with the model's channels.

The one conversion used by training's file loaders (:mod:`dlops.data.imagefolder`,
:mod:`dlops.data.listsource`, :mod:`dlops.data.sources`) and by serving
(:mod:`dlops.serving.inputs`), so training and serving see identical pixels:

* EXIF orientation applied first (``PIL.ImageOps.exif_transpose``);
* mode conversion: grey, palette (its transparency honoured), alpha composited over a uniform
  background grey level (default 0, black: transparent = no signal), 16/32-bit integer grey scaled
  from 0..65535 to 0..255, float grey taken as 0..255 (see :func:`to_model_channels`).

Only Pillow (no torch, ray or mlflow) is imported, and lazily.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from dlops.errors import DataError

__all__ = ["DECODE_FORMATS", "ImageDecodeError", "ImageTooLargeError", "MAX_PIXELS", "decode_image", "open_image",
           "to_model_channels"]

#: Pillow format names :func:`decode_image` accepts (those of the image-folder extensions)
DECODE_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF", "PPM")

#: largest image :func:`decode_image` decodes, in pixels (W x H): ~64 megapixels (a decompression bomb
#: guard below Pillow's own 2 x 89.5 Mpx error)
MAX_PIXELS = 64_000_000


class ImageDecodeError(DataError):
    """Bytes that are not a decodable image of an accepted format, or an image too large."""


class ImageTooLargeError(ImageDecodeError):
    """An image with more pixels than the decoder's limit (:data:`MAX_PIXELS`), refused before decoding."""


def to_model_channels(image: Any, channels: int, background: int = 0) -> np.ndarray:
    """Convert a PIL image to the model's channels; the one conversion used in training and serving.

    EXIF orientation is applied first. Modes: ``1``, ``L``, ``P`` (palette; its transparency is
    honoured), ``LA``/``PA``/``RGBA`` (alpha-composited over a uniform ``background`` grey
    level, default black, i.e. transparent = no signal), ``RGB``, ``CMYK``, ``YCbCr``, 16-bit and
    32-bit integer grey (``I;16*``, ``I``: scaled from 0..65535 to 0..255, i.e. divided by 257) and
    float grey (``F``: taken as 0..255, clipped). Grey -> RGB replicates the grey; RGB -> grey uses
    ITU-R 601-2 luma (PIL's ``L = 0.299 R + 0.587 G + 0.114 B``).

    Args:
        image: a ``PIL.Image.Image``.
        channels: 1 (grey) or 3 (RGB).
        background: grey level 0..255 under transparent pixels.

    Returns:
        ``np.ndarray`` of shape (H, W, channels), dtype uint8, values 0..255.

    Raises:
        ValueError: ``channels`` not 1 or 3, ``background`` outside 0..255, or an unsupported mode.
    """
    from PIL import Image, ImageOps

    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    if not 0 <= int(background) <= 255:
        raise ValueError(f"background must be in 0..255, got {background}")
    if not isinstance(image, Image.Image):
        raise ValueError(f"expected a PIL image, got {type(image).__name__}")
    img = ImageOps.exif_transpose(image)
    mode = img.mode
    if mode.startswith("I;16") or mode == "I":
        arr = np.asarray(img, dtype=np.float64)
        if arr.ndim == 3:  # some I;16 variants come as (H, W, 1)
            arr = arr[..., 0]
        grey = np.clip(np.rint(arr / 257.0), 0, 255).astype(np.uint8)
        img = Image.fromarray(grey, mode="L")
    elif mode == "F":
        grey = np.clip(np.rint(np.asarray(img, dtype=np.float64)), 0, 255).astype(np.uint8)
        img = Image.fromarray(grey, mode="L")
    elif mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif mode == "PA":
        img = img.convert("RGBA")
    elif mode in ("L", "1") and "transparency" in img.info:
        img = img.convert("LA")
    elif mode == "RGB" and "transparency" in img.info:
        img = img.convert("RGBA")
    mode = img.mode
    if mode in ("LA", "RGBA", "La", "RGBa"):
        img = _composite(img, int(background))
        mode = img.mode
    target = "L" if channels == 1 else "RGB"
    if mode != target:
        try:
            img = img.convert(target)
        except ValueError as exc:
            raise ValueError(f"cannot convert image mode {mode!r} to {target}: {exc}") from exc
    arr = np.array(img, dtype=np.uint8)  # a writable copy: torch.from_numpy warns on read-only arrays
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return np.ascontiguousarray(arr)


def _composite(img: Any, background: int) -> Any:
    """Alpha-composite an LA/RGBA image over a uniform grey ``background``; returns L or RGB."""
    from PIL import Image

    grey = img.mode in ("LA", "La")
    arr = np.asarray(img.convert("LA" if grey else "RGBA"), dtype=np.float64)
    colour, alpha = arr[..., :-1], arr[..., -1:] / 255.0
    out = np.clip(np.rint(colour * alpha + background * (1.0 - alpha)), 0, 255).astype(np.uint8)
    return Image.fromarray(out[..., 0] if grey else out, mode="L" if grey else "RGB")


def open_image(data: bytes, what: str = "image", max_pixels: int = MAX_PIXELS) -> Any:
    """Decode encoded bytes into a loaded ``PIL.Image.Image`` (any mode, EXIF not yet applied).

    Args:
        data: the encoded file (PNG, JPEG, WebP or another of :data:`DECODE_FORMATS`).
        what: how error messages name the input (``"images[2]"``, a file name).
        max_pixels: refuse images with more pixels (W x H) than this, before decoding them.

    Raises:
        ImageDecodeError: empty bytes, a format not in :data:`DECODE_FORMATS`, bytes Pillow cannot
            decode (truncated, corrupt); :class:`ImageTooLargeError` (a subclass) for more than
            ``max_pixels`` pixels. The message names ``what``.
    """
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise ImageDecodeError(f"{what}: empty (0 bytes), not an image")
    try:
        im = Image.open(io.BytesIO(data), formats=list(DECODE_FORMATS))
    except UnidentifiedImageError:
        raise ImageDecodeError(f"{what}: not an image ({len(data)} bytes that are not "
                               f"{'/'.join(f.lower() for f in DECODE_FORMATS)})") from None
    except Exception as exc:  # noqa: BLE001  (Pillow raises OSError, SyntaxError, ValueError...)
        raise ImageDecodeError(f"{what}: cannot decode image: {type(exc).__name__}: {exc}") from None
    w, h = im.size
    if w * h > max_pixels:
        raise ImageTooLargeError(f"{what}: {w}x{h} image is larger than {max_pixels:,} pixels")
    try:
        im.load()
    except Exception as exc:  # noqa: BLE001  (truncated file, DecompressionBombError, ...)
        raise ImageDecodeError(f"{what}: cannot decode {im.format} image: {type(exc).__name__}: {exc}") from None
    return im


def decode_image(data: bytes, channels: int, what: str = "image", background: int = 0,
                 max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Encoded image bytes -> (H, W, channels) uint8, as training's file loaders read a file.

    ``open_image`` then :func:`to_model_channels` (EXIF orientation, mode conversion).

    Args:
        data: the encoded file (PNG, JPEG, WebP, ...: :data:`DECODE_FORMATS`).
        channels: 1 or 3 (the model's ``in_channels``).
        what: how error messages name the input.
        background: grey level 0..255 under transparent pixels (training's loaders use 0).
        max_pixels: see :func:`open_image`.

    Returns:
        ``np.ndarray`` (H, W, channels) uint8.

    Raises:
        ImageDecodeError: see :func:`open_image`; also an image mode that cannot be converted.
        ValueError: ``channels`` not 1 or 3.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    im = open_image(data, what, max_pixels)
    try:
        return to_model_channels(im, channels, background)
    except ValueError as exc:
        raise ImageDecodeError(f"{what}: {exc}") from None
    finally:
        im.close()
