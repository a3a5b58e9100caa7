"""Decoded, resized images, read once: the image cache of a project (``data.cache``).

Image folders and list files are decoded and resized to ``data.image_size`` once per run, in the
driver (threads: Pillow decodes without the GIL), and the trials get the arrays through Ray's
object store: one copy per node, shared by every trial of the search there, never decoded per
trial or per epoch. The cache decides whether that decoded copy also persists on disk:

* ``memory``: nothing is written; the next run (a resume, ``dlops report``, another search of the
  project) decodes the files again.
* ``disk``: every decoded, resized image is also an ``.npy`` file under ``data.cache_dir``
  (default: ``dlops_cache/`` beside ``ray.storage_path`` when that is a local path, else
  ``~/.cache/dlops``), read back instead of decoding on the next run, by any process on the node.
* ``auto`` (default): ``disk`` when the decoded set is larger than ``data.cache_memory_mb``
  (estimate: N x size x size x channels bytes, MB = 10**6 bytes), else ``memory``.

An entry is keyed by the file's absolute path, its size in bytes, its modification time (ns), the
channels and the target size (:func:`cache_key`): a changed file, or another ``image_size`` or
``channels``, is a miss and is decoded again. Entries are written to a temporary name and renamed
(atomic), so concurrent runs on one node never read half an entry. Nothing evicts old entries:
delete the folder to reclaim the space.

The pixels are those of :func:`read_resized`: :func:`dlops.data.decode.decode_image` (EXIF
orientation, mode conversion, the decompression-bomb guard) then a bilinear resize with Pillow.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from dlops.errors import DataError

__all__ = ["CACHE_VERSION", "CacheStats", "DiskCache", "cache_key", "choose_cache", "default_cache_dir",
           "estimate_mb", "load_resized", "read_resized"]

#: bump when the pixels of :func:`read_resized` change (a new version never reads old entries)
CACHE_VERSION = 1


def estimate_mb(n: int, size: int, channels: int) -> float:
    """Decoded size of ``n`` images of ``size`` x ``size`` x ``channels`` uint8, in MB (10**6 bytes)."""
    return float(n) * size * size * channels / 1e6


def choose_cache(mode: str, n: int, size: int, channels: int, memory_mb: float) -> str:
    """``"memory"`` or ``"disk"`` for ``data.cache`` ``mode`` (rule in the module docstring).

    Raises:
        ValueError: ``mode`` not ``auto``, ``memory`` or ``disk``.
    """
    if mode in ("memory", "disk"):
        return mode
    if mode != "auto":
        raise ValueError(f"data.cache must be auto, memory or disk, got {mode!r}")
    return "disk" if estimate_mb(n, size, channels) > float(memory_mb) else "memory"


def default_cache_dir(storage_path: Optional[str]) -> str:
    """``<storage_path>/dlops_cache`` for a local ``ray.storage_path``; ``~/.cache/dlops`` for a
    URI (``s3://...``: the cache is per node, on local disk)."""
    if storage_path and "://" not in storage_path:
        return str(Path(storage_path) / "dlops_cache")
    return str(Path.home() / ".cache" / "dlops")


def cache_key(path: str, channels: int, size: Optional[int]) -> str:
    """The entry name of ``path`` decoded to ``channels`` at ``size``: a SHA-1 of the absolute path,
    the file's size (bytes) and mtime (ns), channels, size and :data:`CACHE_VERSION`.

    Raises:
        DataError: the file cannot be stat'ed (names it).
    """
    p = os.path.abspath(path)
    try:
        st = os.stat(p)
    except OSError as exc:
        raise DataError(f"image {path!r} cannot be read: {exc}") from None
    raw = f"{p}|{st.st_size}|{st.st_mtime_ns}|{int(channels)}|{size}|v{CACHE_VERSION}"
    return hashlib.sha1(raw.encode()).hexdigest()


def read_resized(path: str, channels: int, size: Optional[int]) -> np.ndarray:
    """Decode ``path`` (:func:`dlops.data.decode.decode_image`) and resize it to ``size`` x ``size``
    (bilinear, Pillow); ``size`` None keeps its size. Returns (H, W, channels) uint8.

    Raises:
        DataError: the file cannot be read or decoded (:class:`dlops.data.decode.ImageDecodeError`),
            or it is larger than the decoder's pixel limit; the message names the file.
    """
    from dlops.data import decode
    from dlops.data.transforms import resize_image

    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise DataError(f"image {path!r} cannot be read: {exc}") from None
    arr = decode.decode_image(data, int(channels), what=f"image {path!r}", max_pixels=decode.MAX_PIXELS)
    # the one resize of raw images: serving resizes request images with it too (dlops.serving.inputs)
    return np.ascontiguousarray(resize_image(arr, size))


class DiskCache:
    """Decoded images as ``.npy`` files under ``root`` (see the module docstring)."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    def _file(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.npy"

    def get(self, key: str, shape: Optional[tuple[int, ...]] = None) -> Optional[np.ndarray]:
        """The entry, or None (absent, unreadable, or not of ``shape``)."""
        f = self._file(key)
        try:
            arr = np.load(f, allow_pickle=False)
        except (OSError, ValueError):
            return None
        if arr.dtype != np.uint8 or (shape is not None and arr.shape != shape):
            return None
        return arr

    def put(self, key: str, arr: np.ndarray) -> None:
        """Write the entry atomically (temporary file, then rename)."""
        f = self._file(key)
        f.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=f.parent, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                np.save(fh, np.ascontiguousarray(arr, dtype=np.uint8), allow_pickle=False)
            os.replace(tmp, f)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


@dataclass
class CacheStats:
    """What :func:`load_resized` did: ``mode`` (memory / disk), ``hits`` read from the disk cache,
    ``decoded`` files decoded, ``cache_dir`` (None in memory mode)."""

    mode: str
    hits: int = 0
    decoded: int = 0
    cache_dir: Optional[str] = None


def load_resized(paths: Sequence[str], channels: int, size: int, mode: str = "auto",
                 cache_dir: Optional[str] = None, memory_mb: float = 256.0,
                 threads: Optional[int] = None) -> tuple[np.ndarray, CacheStats]:
    """Every image of ``paths`` decoded and resized: (N, size, size, channels) uint8, in order.

    Args:
        paths: image files.
        channels, size: the model's channels (1 or 3) and side in pixels.
        mode: ``auto`` | ``memory`` | ``disk`` (:func:`choose_cache`).
        cache_dir: the disk cache's folder (default :func:`default_cache_dir` of None).
        memory_mb: ``auto``'s threshold, MB (10**6 bytes).
        threads: decoding threads (default: the machine's CPUs, at most 8).

    Returns:
        ``(images, stats)``.

    Raises:
        DataError: a file that cannot be read or decoded (names it); nothing is cached for it.
    """
    size = int(size)
    use = choose_cache(mode, len(paths), size, channels, memory_mb)
    cache = DiskCache(cache_dir or default_cache_dir(None)) if use == "disk" else None
    stats = CacheStats(mode=use, cache_dir=str(cache.root) if cache is not None else None)
    out = np.empty((len(paths), size, size, channels), dtype=np.uint8)
    shape = (size, size, channels)

    def one(i: int) -> bool:
        p = paths[i]
        if cache is None:
            out[i] = read_resized(p, channels, size)
            return False
        key = cache_key(p, channels, size)
        hit = cache.get(key, shape)
        if hit is not None:
            out[i] = hit
            return True
        arr = read_resized(p, channels, size)
        out[i] = arr
        cache.put(key, arr)
        return False

    n_threads = max(1, min(8, threads or os.cpu_count() or 1))
    if n_threads == 1 or len(paths) < 16:
        hits = [one(i) for i in range(len(paths))]
    else:
        with ThreadPoolExecutor(n_threads) as ex:
            hits = list(ex.map(one, range(len(paths))))
    stats.hits = int(sum(hits))
    stats.decoded = len(paths) - stats.hits
    return out, stats
