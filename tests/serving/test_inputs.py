"""Images in: dlops.data.decode, the shared eval path in dlops.data.transforms, and
dlops.serving.inputs (request bodies -> the model's input, 4xx naming the problem). Pure
functions on real Pillow images; no Ray, no MLflow."""

from __future__ import annotations

import base64
import io
import json
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from dlops.data.decode import ImageDecodeError, decode_image
from dlops.data.transforms import build_transform, preprocess_images, resize_image
from dlops.serving.inputs import (MAX_ABS_INPUT, RequestError, describe_inputs, model_input_array,
                                  parse_request)

GREY = {"image_size": 8, "mean": [0.5], "std": [0.5], "in_channels": 1}
RGB = {"image_size": 8, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "in_channels": 3}


def encode(arr: np.ndarray, fmt: str = "PNG", mode: str | None = None, **kw) -> bytes:
    b = io.BytesIO()
    Image.fromarray(arr, mode).save(b, fmt, **kw)
    return b.getvalue()


def rng_image(h: int, w: int, c: int | None = None, seed: int = 0) -> np.ndarray:
    shape = (h, w) if c is None else (h, w, c)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def expected(arr_hwc_u8: np.ndarray, spec: dict) -> np.ndarray:
    """Training's eval transform of an already-resized uint8 image (the report/register path)."""
    t = build_transform("none", 0.0, spec["image_size"], spec["mean"], spec["std"], train=False)
    return t(arr_hwc_u8).numpy()


# --------------------------------------------------------------------------- decoding


def test_decode_modes_exif_16bit_alpha():
    # EXIF orientation 6 (rotate 90 clockwise to display): a 4x10 stored image decodes as 10x4
    im = Image.fromarray(rng_image(4, 10))
    exif = im.getexif()
    exif[0x0112] = 6
    b = io.BytesIO()
    im.save(b, "JPEG", exif=exif.tobytes())
    assert decode_image(b.getvalue(), 1).shape == (10, 4, 1)
    # 16-bit grey: 0..65535 scaled to 0..255 (257 * k -> k), not clipped or truncated to the low byte
    deep = np.array([[0, 257 * 100, 65535]], dtype=np.uint16)
    b = io.BytesIO()
    Image.fromarray(deep).save(b, "PNG")
    assert decode_image(b.getvalue(), 1)[..., 0].tolist() == [[0, 100, 255]]
    # RGBA over black (what the training loaders do), grey -> 3 channels replicated
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., :3], rgba[..., 3] = 200, 128
    assert decode_image(encode(rgba, mode="RGBA"), 3)[0, 0].tolist() == [100, 100, 100]
    g = rng_image(3, 3)
    assert (decode_image(encode(g), 3) == g[..., None]).all()
    # palette
    pal = Image.fromarray(rng_image(5, 5, 3)).convert("P")
    b = io.BytesIO()
    pal.save(b, "PNG")
    assert (decode_image(b.getvalue(), 3) == np.asarray(pal.convert("RGB"))).all()
    with pytest.raises(ImageDecodeError, match="upload.bin: not an image"):
        decode_image(b"GIF8 no", 1, what="upload.bin")


def test_uint8_and_float_images_give_the_same_tensor():
    img = rng_image(8, 8, 1)
    t = build_transform("none", 0.0, 8, [0.5], [0.5], train=False)
    a, f = t(img), t(img.astype(np.float32) / 255.0)
    assert np.array_equal(a.numpy(), f.numpy())
    # through the resize of raw images too (13x20 -> 8x8), one image or a batch
    raw = rng_image(13, 20, 3, seed=1)
    p8 = preprocess_images([raw], RGB)
    pf = preprocess_images([raw.astype(np.float64) / 255.0], RGB)
    assert p8.shape == (1, 3, 8, 8) and p8.dtype == np.float32 and np.array_equal(p8, pf)
    # no double scaling: a [0, 1] float image is not divided by 255 again
    assert abs(float(p8.max())) < 3.0


def test_served_image_equals_training_loader_pixels(tmp_path):
    """A PNG decoded and preprocessed for serving is exactly what training's file loader
    (dlops.data.sources) plus the eval transform gives for the same file."""
    from dlops.data.sources import _resize_all  # the image-folder / list sources' loader

    files, blobs = [], []
    for i, (h, w) in enumerate([(13, 20), (8, 8), (30, 9)]):
        blob = encode(rng_image(h, w, 3, seed=i))
        p = tmp_path / f"{i}.png"
        p.write_bytes(blob)
        files.append(str(p))
        blobs.append(blob)
    loaded = _resize_all(files, 3, 8)
    for i, blob in enumerate(blobs):
        served = parse_request(blob, "image/png", RGB)
        assert np.array_equal(served[0], expected(loaded[i], RGB)), i
    assert np.array_equal(resize_image(loaded[0], 8), loaded[0])


# --------------------------------------------------------------------------- requests


def test_parse_request_every_input_kind():
    img = rng_image(8, 8)
    png, want = encode(img), expected(img[..., None], GREY)
    for ct in ("image/png", "image/png; charset=binary", None, "application/x-www-form-urlencoded"):
        x = parse_request(png, ct, GREY)
        assert x.shape == (1, 1, 8, 8) and x.dtype == np.float32 and np.array_equal(x[0], want), ct
    assert parse_request(encode(img, "WEBP", lossless=True), "image/webp", GREY).shape == (1, 1, 8, 8)
    assert np.array_equal(parse_request(encode(img, "PPM"), "image/x-portable-graymap", GREY)[0], want)
    jpg = encode(img, "JPEG", quality=95)
    assert np.abs(parse_request(jpg, "image/jpeg", GREY) - want).max() < 0.5  # lossy, close
    b64 = base64.b64encode(png).decode()
    body = json.dumps({"images": [b64, "data:image/png;base64," + b64]}).encode()
    x = parse_request(body, "application/json", GREY)
    assert x.shape == (2, 1, 8, 8) and np.array_equal(x[1], want)
    # multipart: file parts in order, a plain field ignored (stdlib email parser)
    bd = "dlopsBOUNDARY"
    mp = b"".join([
        f'--{bd}\r\nContent-Disposition: form-data; name="a"; filename="a.png"\r\nContent-Type: image/png\r\n\r\n'.encode(),
        png, f'\r\n--{bd}\r\nContent-Disposition: form-data; name="note"\r\n\r\nhello\r\n'.encode(),
        f'--{bd}\r\nContent-Disposition: form-data; name="b"; filename="b.jpg"\r\n\r\n'.encode(), jpg,
        f"\r\n--{bd}--\r\n".encode()])
    x = parse_request(mp, f"multipart/form-data; boundary={bd}", GREY)
    assert x.shape == (2, 1, 8, 8) and np.array_equal(x[0], want)
    # the preprocessed tensor as before; ints are numbers too
    t = np.zeros((2, 1, 8, 8), dtype=np.int64)
    assert np.array_equal(parse_request(json.dumps({"inputs": t.tolist()}).encode(), "application/json", GREY), t)


@pytest.mark.parametrize("body, ctype, status, needles", [
    (b"\x89PNG\r\n\x1a\nnot really", "image/png", 422, ["image (image/png)", "cannot decode"]),
    (b"hello", "image/jpeg", 422, ["not an image"]),
    (json.dumps({"images": ["aGVsbG8="]}).encode(), "application/json", 422, ["images[0]", "not an image"]),
    (json.dumps({"images": []}).encode(), "application/json", 422, ["empty list"]),
    (json.dumps({"images": ["***"]}).encode(), "application/json", 400, ["images[0]", "base64"]),
    (json.dumps({"inputs": []}).encode(), "application/json", 422, ["inputs", "empty"]),
    (json.dumps({"inputs": np.zeros((1, 3, 8, 8)).tolist()}).encode(), "application/json", 422,
     ["3 channels", "takes 1", "(N, 1, 8, 8)"]),
    (json.dumps({"inputs": np.full((1, 1, 8, 8), 1e30).tolist()}).encode(), "application/json", 422,
     ["1e+30", "preprocessed"]),
    (b'{"inputs": [[[[NaN, 1, 2, 3, 4, 5, 6, 7]]]]}', "application/json", 422, ["inputs"]),
    (b"{not json", "application/json", 400, ["not JSON"]),
    (json.dumps({"pixels": [1]}).encode(), "application/json", 400, ['"images"', '"inputs"']),
    (b"a,b\n1,2", "text/csv", 415, ["text/csv", "image/png"]),
    # a misspelt or foreign key is refused, not ignored (MLflow's "params" too: no params here)
    (json.dumps({"images": ["aGVsbG8="], "foo": 1}).encode(), "application/json", 400, ["unknown key(s) 'foo'"]),
    (json.dumps({"image": ["aGVsbG8="]}).encode(), "application/json", 400, ['"images"', "got the key(s) 'image'"]),
    (b"junk bytes", "application/octet-stream", 422, ["not an image", "gif", "bmp", "tiff"]),
    (json.dumps({"inputs": [], "params": {"tta": "flip"}}).encode(), "application/json", 400,
     ["'params'", "--tta"]),
])
def test_bad_requests_get_a_4xx_naming_the_problem(body, ctype, status, needles):
    with pytest.raises(RequestError) as e:
        parse_request(body, ctype, GREY)
    assert e.value.status == status and all(n in e.value.message for n in needles), e.value.message


def test_tiny_and_huge_images_are_refused():
    with pytest.raises(RequestError) as e:
        parse_request(encode(rng_image(1, 1)), "image/png", GREY)
    assert e.value.status == 422 and "1x1" in e.value.message and "minimum is 8x8" in e.value.message

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    # a PNG header announcing 9000 x 9000 pixels (over MAX_PIXELS): refused before anything is decoded
    bomb = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 9000, 9000, 8, 0, 0, 0, 0)) + \
        chunk(b"IDAT", zlib.compress(b"\x00" * 100)) + chunk(b"IEND", b"")
    with pytest.raises(RequestError) as e:
        parse_request(bomb, "image/png", GREY)
    assert e.value.status == 413 and "9000x9000" in e.value.message


def test_describe_inputs_documents_both_kinds():
    d = describe_inputs(RGB)
    assert "image/png" in d["images"]["content_types"] and "image/jpeg" in d["images"]["content_types"]
    assert d["images"]["resize"]["size"] == [8, 8] and d["images"]["resize"]["interpolation"] == "bilinear"
    assert d["images"]["normalisation"]["mean"] == RGB["mean"] and d["images"]["min_side"] == 8
    assert d["tensor"]["shape"] == ["N", 3, 8, 8] and d["tensor"]["max_abs"] == MAX_ABS_INPUT
    json.dumps(d)  # GET returns it as JSON


def test_model_input_array_takes_what_json_decodes_to():
    import pandas as pd

    x = np.random.default_rng(0).normal(size=(3, 1, 8, 8))
    for v in (x, x.astype(np.float32), x.tolist(), np.rint(x).astype(np.int64), {"inputs": x.tolist()},
              pd.DataFrame(x.reshape(3, 64))):
        out = model_input_array(v, GREY)
        assert out.shape == (3, 1, 8, 8) and out.dtype == np.float32
    img = rng_image(8, 8)
    b64 = base64.b64encode(encode(img)).decode()
    want = expected(img[..., None], GREY)
    for v in ([b64], np.array([b64]), pd.DataFrame({"image": [b64]}), {"images": [b64]}):
        assert np.array_equal(model_input_array(v, GREY)[0], want)
    with pytest.raises(RequestError, match="magnitude"):
        model_input_array(np.full((1, 1, 8, 8), 1e30), GREY)
