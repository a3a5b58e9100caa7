"""Request bodies -> the model's input: images (raw bytes, multipart, base64 JSON) or a tensor.

One function per request, :func:`parse_request`, called by the server once per request before
batching, so that one bad request fails alone with its own 4xx. Every image goes through the
evaluation path of training (:mod:`dlops.data.decode` then
:func:`dlops.data.transforms.preprocess_images`): decoded with EXIF orientation, converted to the
model's channels as the file loaders do, resized with Pillow's bilinear filter to the model's
``image_size``, scaled to [0, 1] and normalised with the model spec's ``mean``/``std``. A client
never reimplements the transform.

Accepted bodies (``Content-Type``):

* ``image/png``, ``image/jpeg``, ``image/webp`` (also ``image/bmp``, ``image/gif``, ``image/tiff``):
  the body is one encoded image;
* ``multipart/form-data``: every file part is an image (in order); other fields are ignored;
* ``application/json``: ``{"images": ["<base64>", ...]}`` (a ``data:image/...;base64,`` prefix is
  allowed) or ``{"inputs": (N, C, H, W)}``, nested lists of numbers already preprocessed (float32,
  normalised as above; checked for shape, finiteness and ``|x| <= MAX_ABS_INPUT``).

A body without a content type (or ``application/x-www-form-urlencoded``, curl's default for
``-d``) is read as an image when it starts with an image signature, else as JSON.

The same conversion serves MLflow's pyfunc input (:func:`model_input_array`): numeric arrays of any
dtype (what JSON decodes to: float64/int64), base64 strings, and ``dataframe_split`` frames.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any, Optional, Sequence

import numpy as np

from dlops.errors import ServeError

__all__ = ["IMAGE_CONTENT_TYPES", "MAX_ABS_INPUT", "MIN_IMAGE_SIDE", "RequestError", "describe_inputs",
           "images_to_array", "model_input_array", "parse_request", "tensor_to_array"]

#: content types read as one encoded image (-> the Pillow format the decoder expects)
IMAGE_CONTENT_TYPES: dict[str, str] = {
    "image/png": "PNG", "image/jpeg": "JPEG", "image/jpg": "JPEG", "image/pjpeg": "JPEG", "image/webp": "WEBP",
    "image/bmp": "BMP", "image/gif": "GIF", "image/tiff": "TIFF", "image/x-portable-pixmap": "PPM",
    "image/x-portable-graymap": "PPM", "image/x-portable-anymap": "PPM",
}

#: largest |value| accepted in a preprocessed tensor: normalised pixels lie within a few units
#: ((0 - mean) / std with ImageNet's statistics is about -2.1 .. 2.6); 1e6 is far beyond any of them
MAX_ABS_INPUT = 1e6

#: smallest image side accepted, in pixels (an image smaller than the model's input is refused below
#: min(MIN_IMAGE_SIDE, image_size)): a 1-pixel image resized to the input is one flat colour
MIN_IMAGE_SIDE = 8

_SIGNATURES = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*",
               b"P5\n", b"P6\n", b"P5 ", b"P6 ")  # ... PPM/PGM (binary)


class RequestError(ServeError):
    """A request the server refuses, with its HTTP status and a message naming the problem.

    Attributes:
        status: 400 (malformed body: not JSON, not base64, missing keys), 413 (an image with more
            pixels than the decoder takes), 415 (unsupported content type) or 422 (well-formed but
            unusable: not an image, too small, wrong shape or channel count, empty list,
            non-finite or absurd values).
        message: the one-line reason (also ``str(error)``).
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = int(status)
        self.message = message


# --------------------------------------------------------------------------- spec


def _spec_shape(spec: dict) -> tuple[int, int]:
    """(channels, image_size) of a model spec."""
    if "image_size" not in spec or spec["image_size"] is None:
        raise ValueError("the model spec has no image_size")
    c = int(spec.get("in_channels") or len(spec.get("mean") or [0, 0, 0]))
    return c, int(spec["image_size"])


def min_side(spec: dict) -> int:
    """The smallest image side accepted for ``spec``: min(:data:`MIN_IMAGE_SIDE`, image_size)."""
    return min(MIN_IMAGE_SIDE, _spec_shape(spec)[1])


# --------------------------------------------------------------------------- images


def images_to_array(blobs: Sequence[bytes], spec: dict, names: Optional[Sequence[str]] = None) -> np.ndarray:
    """Encoded images -> float32 (N, C, S, S), preprocessed as training's evaluation transform.

    Args:
        blobs: the encoded files (PNG, JPEG, WebP, ...).
        spec: the model spec (``in_channels``, ``image_size``, ``mean``, ``std``).
        names: how messages name each image (default ``images[i]``).

    Raises:
        RequestError: 422 for an empty list, bytes that are not a decodable image (naming which)
            or an image with a side under :func:`min_side`; 413 for an image over the decoder's
            pixel limit.
    """
    from dlops.data.decode import ImageDecodeError, ImageTooLargeError, decode_image
    from dlops.data.transforms import preprocess_images

    if not blobs:
        raise RequestError(422, "images: empty list; send at least one image")
    c, size = _spec_shape(spec)
    m = min_side(spec)
    arrays = []
    for i, blob in enumerate(blobs):
        what = names[i] if names is not None else f"images[{i}]"
        try:
            arr = decode_image(blob, c, what=what)
        except ImageTooLargeError as exc:
            raise RequestError(413, str(exc)) from None
        except ImageDecodeError as exc:
            raise RequestError(422, str(exc)) from None
        h, w = arr.shape[:2]
        if h < m or w < m:
            raise RequestError(422, f"{what}: a {w}x{h} image is too small; the minimum is {m}x{m} pixels "
                                    f"(the model's input is {size}x{size})")
        arrays.append(arr)
    return preprocess_images(arrays, spec)


def _b64(item: Any, what: str) -> bytes:
    """A base64 string (optionally a ``data:...;base64,`` URL) -> bytes; RequestError 400 otherwise."""
    if isinstance(item, bytes):
        item = item.decode("ascii", "replace")
    if not isinstance(item, str):
        raise RequestError(400, f"{what}: expected a base64 string of an encoded image, got {type(item).__name__} "
                                '(a preprocessed tensor goes in "inputs")')
    s = item.strip()
    if s.startswith("data:"):
        head, _, s = s.partition(",")
        if ";base64" not in head:
            raise RequestError(400, f"{what}: a data URL that is not base64 ({head[:40]!r})")
    s = "".join(s.split())
    try:
        if "-" in s or "_" in s:
            return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))
        return base64.b64decode(s + "=" * (-len(s) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(400, f"{what}: not valid base64") from None


def _multipart(body: bytes, content_type: str) -> tuple[list[bytes], list[str]]:
    """The file parts of a multipart/form-data body (stdlib ``email`` parser): (blobs, names)."""
    from email import policy
    from email.parser import BytesParser

    if "boundary=" not in content_type:
        raise RequestError(400, "multipart/form-data: the Content-Type has no boundary")
    msg = BytesParser(policy=policy.HTTP).parsebytes(b"Content-Type: " + content_type.encode("latin-1") +
                                                     b"\r\nMIME-Version: 1.0\r\n\r\n" + body)
    if not msg.is_multipart():
        raise RequestError(400, "multipart/form-data: the body is not a multipart message")
    blobs, names = [], []
    for k, part in enumerate(msg.iter_parts()):
        filename = part.get_filename()
        ptype = part.get_content_type()
        if filename is None and not ptype.startswith("image/"):
            continue  # a plain form field
        field = part.get_param("name", header="content-disposition") or f"part {k}"
        blobs.append(part.get_payload(decode=True) or b"")
        names.append(f"multipart {field!s}" + (f" ({filename})" if filename else ""))
    if not blobs:
        raise RequestError(422, "multipart/form-data: no file part; send the images as file fields")
    return blobs, names


# --------------------------------------------------------------------------- tensors


def tensor_to_array(value: Any, spec: dict, field: str = "inputs") -> np.ndarray:
    """A preprocessed tensor (nested lists or an array, any numeric dtype) -> float32 (N, C, S, S).

    Raises:
        RequestError: 400 for anything but numbers (strings, booleans, nulls) or ragged lists;
            422 for an empty tensor, a wrong rank or size, a channel count other than the model's,
            NaN/inf, or values with ``|x| > MAX_ABS_INPUT`` (not preprocessed pixels).
    """
    c, s = _spec_shape(spec)
    want = f"(N, {c}, {s}, {s})"
    if isinstance(value, list):
        def numbers_only(v: Any) -> bool:
            if isinstance(v, list):
                return all(numbers_only(e) for e in v)
            return isinstance(v, (int, float)) and not isinstance(v, bool)

        if not numbers_only(value):
            raise RequestError(400, f"{field}: expected nested lists of numbers (no strings, booleans or nulls) "
                                    f"of shape {want}")
    try:
        x = np.asarray(value)
        if x.dtype == object or x.dtype.kind not in "iuf":
            raise TypeError
        if x.dtype != np.float32:
            x = x.astype(np.float64)  # checked in float64: 1e300 does not overflow float32 to inf first
    except (TypeError, ValueError):
        raise RequestError(400, f"{field}: not a rectangular numeric array of shape {want} (ragged lists?)") from None
    if x.size == 0 or (x.ndim >= 1 and x.shape[0] == 0):
        raise RequestError(422, f"{field}: empty; expected shape {want} with N >= 1")
    if x.ndim != 4:
        raise RequestError(422, f"{field}: expected shape {want}, got {tuple(x.shape)}")
    if x.shape[1] != c:
        raise RequestError(422, f"{field}: {x.shape[1]} channels, the model takes {c}; expected shape {want}, "
                                f"got {tuple(x.shape)}")
    if tuple(x.shape[2:]) != (s, s):
        raise RequestError(422, f"{field}: expected shape {want}, got {tuple(x.shape)} (send images to have "
                                "them resized)")
    if not np.isfinite(x).all():
        raise RequestError(422, f"{field}: NaN or inf values")
    big = float(np.abs(x).max())
    if big > MAX_ABS_INPUT:
        raise RequestError(422, f"{field}: a value of magnitude {big:.3g} is not a preprocessed pixel (|x| <= "
                                f"{MAX_ABS_INPUT:g}; inputs are (pixel / 255 - mean) / std)")
    return np.ascontiguousarray(x, dtype=np.float32)


# --------------------------------------------------------------------------- requests


def _media_type(content_type: Optional[str]) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def _json_body(body: bytes, spec: dict) -> np.ndarray:
    try:
        obj = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise RequestError(400, 'request body: not JSON; send {"images": ["<base64>", ...]}, {"inputs": '
                                "(N, C, H, W)} or an image with an image/* Content-Type") from None
    if not isinstance(obj, dict) or ("images" not in obj and "inputs" not in obj):
        c, s = _spec_shape(spec)
        named = (f"; got the key(s) {', '.join(map(repr, sorted(obj)))}" if isinstance(obj, dict) and obj else "")
        raise RequestError(400, 'request body: expected a JSON object {"images": ["<base64>", ...]} or '
                                f'{{"inputs": [...]}} of shape (N, {c}, {s}, {s}){named}')
    if "images" in obj and "inputs" in obj:
        raise RequestError(400, 'request body: give either "images" or "inputs", not both')
    unknown = sorted(set(obj) - {"images", "inputs"})
    if unknown:  # a misspelt option must not be silently ignored (MLflow's "params" included: none here)
        raise RequestError(400, f"request body: unknown key(s) {', '.join(map(repr, unknown))}; the body is "
                                '{"images": [...]} or {"inputs": [...]} alone (test-time augmentation is '
                                "dlops serve --tta)")
    if "inputs" in obj:
        return tensor_to_array(obj["inputs"], spec, "inputs")
    items = obj["images"]
    if isinstance(items, str):
        items = [items]
    if not isinstance(items, list):
        raise RequestError(400, f"images: expected a list of base64 strings, got {type(items).__name__}")
    return images_to_array([_b64(it, f"images[{i}]") for i, it in enumerate(items)], spec)


def parse_request(body: bytes, content_type: Optional[str], spec: dict) -> np.ndarray:
    """One request body -> float32 (N, C, S, S), preprocessed exactly as training's eval transform.

    Args:
        body: the raw body (already capped in size by the server).
        content_type: the request's ``Content-Type`` header (None when absent).
        spec: the model spec of the registered model (``in_channels``, ``image_size``, ``mean``,
            ``std``).

    Returns:
        float32 numpy array (N, C, S, S), N >= 1, S = ``spec["image_size"]``.

    Raises:
        RequestError: 400/413/415/422 with a message naming the problem (see the module docstring
            and :class:`RequestError`).
    """
    media = _media_type(content_type)
    if media in ("", "application/octet-stream", "application/x-www-form-urlencoded"):
        if body[:12].startswith(_SIGNATURES) or (body[:4] == b"RIFF" and body[8:12] == b"WEBP"):
            return images_to_array([body], spec, ["image"])
        if media == "application/octet-stream":
            from dlops.data.decode import DECODE_FORMATS

            raise RequestError(422, "image: an application/octet-stream body that is not an image (accepted: "
                                    f"{', '.join(f.lower() for f in DECODE_FORMATS)})")
        return _json_body(body, spec)
    if media in IMAGE_CONTENT_TYPES:
        return images_to_array([body], spec, [f"image ({media})"])
    if media == "multipart/form-data":
        blobs, names = _multipart(body, content_type or "")
        return images_to_array(blobs, spec, names)
    if media == "application/json" or media.endswith("+json"):
        return _json_body(body, spec)
    raise RequestError(415, f"Content-Type {media!r} is not supported; send image/png, image/jpeg or image/webp "
                            "bytes, multipart/form-data with image files, or application/json "
                            '({"images": [base64...]} or {"inputs": (N, C, H, W)})')


def describe_inputs(spec: dict) -> dict[str, Any]:
    """What POST accepts for ``spec`` (for GET): both input kinds and the preprocessing applied.

    Returns:
        ``{"images": {...content types, JSON form, decoding, min side, resize, normalisation},
        "tensor": {...JSON form, shape [N, C, S, S], dtype, layout, formula, max_abs}}``.
    """
    from dlops.data.decode import DECODE_FORMATS, MAX_PIXELS
    from dlops.data.transforms import RESIZE_INTERPOLATION

    c, s = _spec_shape(spec)
    formula = "(pixel / 255 - mean) / std, per channel"
    return {
        "images": {
            "content_types": sorted(t for t in IMAGE_CONTENT_TYPES if t not in ("image/jpg", "image/pjpeg")),
            "multipart": "multipart/form-data: every file part is one image, in order; other fields are ignored",
            "json": '{"images": ["<base64 of an encoded image>", ...]} (one string: one image; no other keys)',
            "formats": [f.lower() for f in DECODE_FORMATS],
            "decoding": ("EXIF orientation applied; converted to " + ("grey (ITU-R 601-2 luma)" if c == 1 else "RGB")
                         + "; alpha composited over black; 16-bit grey scaled by 1/257"),
            "min_side": min_side(spec),
            "max_pixels": MAX_PIXELS,
            "resize": {"size": [s, s], "interpolation": RESIZE_INTERPOLATION,
                       "library": "Pillow Image.resize on uint8 (antialiased when shrinking), as training loads files"},
            "normalisation": {"mean": list(spec.get("mean") or []), "std": list(spec.get("std") or []),
                              "formula": formula},
        },
        "tensor": {
            "json": '{"inputs": [[[[...]]]]}',
            "shape": ["N", c, s, s], "dtype": "float32", "layout": "NCHW",
            "preprocessing": f"resized to {s}x{s} ({RESIZE_INTERPOLATION}), then {formula}",
            "max_abs": MAX_ABS_INPUT,
        },
    }


# --------------------------------------------------------------------------- MLflow pyfunc


def model_input_array(model_input: Any, spec: dict) -> np.ndarray:
    """MLflow's pyfunc input -> float32 (N, C, S, S): what ``mlflow models serve`` passes for
    ``inputs`` / ``instances`` / ``dataframe_split``, or what a caller gives ``predict``.

    Accepted: a numeric array or nested lists (N, C, S, S) of any dtype (float64 and int64 as
    JSON decodes them; checked as :func:`tensor_to_array`); a 1-D array or list of base64 strings
    or bytes (encoded images); a dict with ``images`` or ``inputs``; a pandas DataFrame with an
    ``image``/``images`` column of base64 strings, with one column of (C, S, S) nested lists,
    or with C*S*S numeric columns (a flattened image per row).

    Raises:
        RequestError: as :func:`tensor_to_array` and :func:`images_to_array`; 400 for another kind
            of input.
    """
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover  (MLflow depends on pandas)
        pd = None
    c, s = _spec_shape(spec)
    if isinstance(model_input, dict):
        if "images" in model_input:
            return model_input_array(np.asarray(model_input["images"], dtype=object).ravel(), spec)
        if "inputs" in model_input:
            return tensor_to_array(model_input["inputs"], spec)
        raise RequestError(400, f"input: a dict needs an 'images' or 'inputs' key, got {sorted(model_input)}")
    if pd is not None and isinstance(model_input, pd.DataFrame):
        df = model_input
        for col in ("image", "images"):
            if col in df.columns:
                return model_input_array(np.asarray(df[col].tolist(), dtype=object), spec)
        if df.shape[1] == 1:
            return tensor_to_array(df.iloc[:, 0].tolist(), spec)
        if df.shape[1] == c * s * s:
            try:
                flat = df.to_numpy(dtype=np.float64)
            except (TypeError, ValueError):
                raise RequestError(400, "dataframe: not all columns are numbers") from None
            return tensor_to_array(flat.reshape(len(df), c, s, s), spec)
        raise RequestError(422, f"dataframe: expected an 'image' column of base64 strings, one column of "
                                f"({c}, {s}, {s}) arrays, or {c * s * s} numeric columns; got {df.shape[1]} columns")
    if isinstance(model_input, (str, bytes)):
        model_input = [model_input]
    arr = model_input if isinstance(model_input, np.ndarray) else None
    if arr is None and isinstance(model_input, list) and model_input and all(
            isinstance(v, (str, bytes)) for v in model_input):
        arr = np.asarray(model_input, dtype=object)
    if arr is not None and (arr.dtype.kind in "USO") and arr.ndim == 1 and arr.size and all(
            isinstance(v, (str, bytes, np.str_, np.bytes_)) for v in arr):
        return images_to_array([_b64(v, f"images[{i}]") for i, v in enumerate(arr.tolist())], spec)
    if isinstance(model_input, (list, np.ndarray)):
        return tensor_to_array(model_input, spec)
    if hasattr(model_input, "numpy"):  # a torch tensor
        return tensor_to_array(model_input.numpy(), spec)
    raise RequestError(400, f"input: expected an array (N, {c}, {s}, {s}), base64 images or a DataFrame, "
                            f"got {type(model_input).__name__}")
