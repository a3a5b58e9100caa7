"""Image-folder source: one subfolder per class, a pre-scan that names every unusable file.

Layout::

    root/
      cat/  a.png  b.jpg  more/c.png      # files in nested folders belong to the class too
      dog/  ...
      .cache/ ...                         # hidden folders are never classes (ignored)

Choices (documented because they change what the model learns):

* **Hidden entries** (names starting with ``.``) are ignored everywhere: they are never classes,
  and hidden files such as ``.DS_Store`` inside a class are not reported.
* **Unusable files** are skipped, counted and named with the reason (:attr:`SkippedFile.reason`):
  a file without an image extension, an empty file, an undecodable or truncated image
  (the pre-scan decodes every image fully, so truncation is caught here and not in epoch 7).
  Files directly under ``root`` (in no class folder) are skipped the same way.
* **An empty class folder raises** :class:`EmptyClassError` (naming the folder and the files it
  skipped there) instead of silently dropping the class: dropping it would shift the class
  index map between training and serving, and a class without examples is a data error.
* **One class index map**: training data defines it (sorted folder names -> 0..K-1); dev/test
  sources get it as ``class_to_idx``; a dev/test class folder unknown to training raises
  :class:`UnknownClassError`. Training classes absent from dev/test are allowed.
* **Channels**: every image goes through :func:`to_model_channels`, the same function serving
  uses, so training and serving see identical pixels.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from dlops.errors import DataError

__all__ = [
    "EmptyClassError",
    "IMAGE_EXTENSIONS",
    "ImageFolderSource",
    "SkippedFile",
    "UnknownClassError",
    "check_image_file",
    "load_image",
    "scan_image_folder",
    "to_model_channels",
]

#: extensions (lower case) taken as images
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
)


class EmptyClassError(DataError):
    """A class folder holds no usable image."""


class UnknownClassError(DataError):
    """A dev/test class (folder or label) that the training data does not have."""


@dataclass(frozen=True)
class SkippedFile:
    """A file the pre-scan could not use: its path and why."""

    path: str
    reason: str


# --------------------------------------------------------------------------- pixels


# the one pixel conversion lives in dlops.data.decode (serving decodes request bytes with it too);
# re-exported here for existing callers
from dlops.data.decode import _composite, to_model_channels  # noqa: E402,F401


def check_image_file(path: str | os.PathLike, extensions: Iterable[str] = IMAGE_EXTENSIONS) -> str | None:
    """Why ``path`` cannot be used as an image, or None if it can (decodes it fully).

    Returns:
        None, or a reason such as ``"not an image file (.txt)"``, ``"empty file (0 bytes)"``,
        ``"cannot decode image: image file is truncated ..."``, ``"file not found"``.
    """
    from PIL import Image

    p = Path(path)
    ext = p.suffix.lower()
    if ext not in set(extensions):
        return f"not an image file ({ext or 'no extension'})"
    try:
        size = p.stat().st_size
    except FileNotFoundError:
        return "file not found"
    except OSError as exc:
        return f"cannot read file: {exc}"
    if not p.is_file():
        return "not a regular file"
    if size == 0:
        return "empty file (0 bytes)"
    from dlops.data.decode import MAX_PIXELS

    try:
        with Image.open(p) as im:
            im.verify()
        with Image.open(p) as im:  # verify() leaves the image unusable; decode it for real
            w, h = im.size
            if w * h > MAX_PIXELS:  # the decoder's decompression-bomb guard (dlops.data.decode)
                return f"image too large: {w}x{h} pixels, more than {MAX_PIXELS:,}"
            im.load()
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError...
        return f"cannot decode image: {type(exc).__name__}: {exc}"
    return None


def load_image(path: str | os.PathLike, channels: int) -> np.ndarray:
    """Read an image file as (H, W, channels) uint8 via :func:`to_model_channels`.

    Raises:
        ValueError: the file cannot be decoded (the message names it).
        FileNotFoundError: it does not exist.
    """
    from PIL import Image

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"image {str(p)!r} does not exist")
    try:
        with Image.open(p) as im:
            im.load()
            return to_model_channels(im, channels)
    except (OSError, SyntaxError) as exc:
        raise ValueError(f"cannot decode image {str(p)!r}: {exc}") from exc


# --------------------------------------------------------------------------- scan


def _hidden(name: str) -> bool:
    return name.startswith(".")


def _walk_files(folder: Path) -> list[Path]:
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not _hidden(d))
        out.extend(Path(dirpath) / f for f in sorted(filenames) if not _hidden(f))
    return out


@dataclass
class FolderScan:
    """Result of :func:`scan_image_folder`.

    Attributes:
        root: the folder scanned.
        classes: class names in index order.
        class_to_idx: ``{class name: index}`` (the training map when one was given).
        samples: ``(path, class index)`` of every usable image, sorted by class then path.
        skipped: every unusable file with its reason.
    """

    root: str
    classes: list[str]
    class_to_idx: dict[str, int]
    samples: list[tuple[str, int]] = field(default_factory=list)
    skipped: list[SkippedFile] = field(default_factory=list)


def scan_image_folder(
    root: str | os.PathLike,
    class_to_idx: Mapping[str, int] | None = None,
    verify: bool = True,
    extensions: Iterable[str] = IMAGE_EXTENSIONS,
) -> FolderScan:
    """Pre-scan an image folder (see the module docstring for the rules).

    Args:
        root: folder with one subfolder per class.
        class_to_idx: the training class map, for dev/test data; None to build one from
            sorted folder names.
        verify: decode every image (catches truncated files); False only checks extension and size.
        extensions: accepted image extensions (lower case, with the dot).

    Returns:
        A :class:`FolderScan`.

    Raises:
        FileNotFoundError: ``root`` is not a folder.
        ValueError: ``root`` has no class folder.
        UnknownClassError: a class folder not in ``class_to_idx`` (names it and the known classes).
        EmptyClassError: a class folder with no usable image (names it and what was skipped).
    """
    rootp = Path(root)
    if not rootp.is_dir():
        raise FileNotFoundError(f"image folder {str(rootp)!r} does not exist or is not a folder")
    exts = {e.lower() for e in extensions}
    entries = sorted(rootp.iterdir(), key=lambda p: p.name)
    class_dirs = [p for p in entries if p.is_dir() and not _hidden(p.name)]
    skipped = [SkippedFile(str(p), "not in a class folder") for p in entries
               if not p.is_dir() and not _hidden(p.name)]
    if not class_dirs:
        raise ValueError(f"image folder {str(rootp)!r} has no class folder (one subfolder per class)")
    names = [p.name for p in class_dirs]
    if class_to_idx is None:
        cmap = {n: i for i, n in enumerate(names)}
    else:
        cmap = dict(class_to_idx)
        unknown = [n for n in names if n not in cmap]
        if unknown:
            raise UnknownClassError(
                f"image folder {str(rootp)!r}: class folder(s) {unknown} not seen in the training data; "
                f"training classes: {sorted(cmap, key=cmap.__getitem__)}; add those classes to the training "
                "data (data.source_dir) or remove their folders"
            )
    samples: list[tuple[str, int]] = []
    for d in class_dirs:
        here: list[tuple[str, int]] = []
        here_skipped: list[SkippedFile] = []
        for f in _walk_files(d):
            reason = check_image_file(f, exts) if verify else _quick_check(f, exts)
            if reason is None:
                here.append((str(f), cmap[d.name]))
            else:
                here_skipped.append(SkippedFile(str(f), reason))
        skipped.extend(here_skipped)
        if not here:
            detail = (f"; skipped there: {[f'{Path(s.path).name}: {s.reason}' for s in here_skipped[:5]]}"
                      if here_skipped else " (the folder is empty)")
            raise EmptyClassError(f"class folder {str(d)!r} has no usable image{detail}; add images to it or "
                                  "remove the folder")
        samples.extend(here)
    classes = sorted(cmap, key=cmap.__getitem__)
    return FolderScan(root=str(rootp), classes=classes, class_to_idx=cmap, samples=samples, skipped=skipped)


def _quick_check(path: Path, exts: set[str]) -> str | None:
    if path.suffix.lower() not in exts:
        return f"not an image file ({path.suffix.lower() or 'no extension'})"
    if path.stat().st_size == 0:
        return "empty file (0 bytes)"
    return None


# --------------------------------------------------------------------------- source


class ImageFolderSource:
    """An image-folder data source (a map-style dataset: ``len()`` and ``[i]``).

    ``source[i]`` is ``(image, label)``: image (H, W, channels) uint8 (or ``transform(image)``,
    e.g. :func:`dlops.data.transforms.build_transform`, giving a (C, H, W) float tensor), label an
    ``int`` class index. Works with ``torch.utils.data.DataLoader`` as it is.

    Args:
        root: folder with one subfolder per class.
        channels: the model's input channels (1 or 3).
        class_to_idx: the training class map (for dev/test); None for training data.
        transform: applied to every image.
        verify: decode every image during the pre-scan.

    Attributes:
        classes, class_to_idx: the class index map.
        paths: file of each example (str); ``targets``: (N,) int64 class indices.
        skipped: unusable files with reasons; ``num_skipped`` their count.

    Raises:
        As :func:`scan_image_folder`; ValueError for ``channels`` not 1 or 3.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        channels: int = 3,
        class_to_idx: Mapping[str, int] | None = None,
        transform: Callable[[np.ndarray], Any] | None = None,
        verify: bool = True,
    ) -> None:
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels}")
        scan = scan_image_folder(root, class_to_idx=class_to_idx, verify=verify)
        self.root = scan.root
        self.channels = channels
        self.transform = transform
        self.classes: list[str] = scan.classes
        self.class_to_idx: dict[str, int] = scan.class_to_idx
        self.paths: list[str] = [p for p, _ in scan.samples]
        self.targets = np.asarray([c for _, c in scan.samples], dtype=np.int64)
        self.skipped: list[SkippedFile] = scan.skipped

    @property
    def num_skipped(self) -> int:
        return len(self.skipped)

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, i: int) -> np.ndarray:
        """Image ``i`` as (H, W, channels) uint8, without the transform."""
        return load_image(self.paths[i], self.channels)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        img = self.load(i)
        if self.transform is not None:
            img = self.transform(img)
        return img, int(self.targets[i])

    def class_counts(self) -> dict[str, int]:
        """Examples per class name."""
        counts = np.bincount(self.targets, minlength=len(self.classes))
        return {c: int(counts[i]) for i, c in enumerate(self.classes)}

    def scan_summary(self) -> dict[str, Any]:
        """JSON-serialisable summary (for MLflow): root, class map, counts, skipped files."""
        return {
            "root": self.root,
            "channels": self.channels,
            "class_to_idx": dict(self.class_to_idx),
            "num_examples": len(self),
            "class_counts": self.class_counts(),
            "num_skipped": self.num_skipped,
            "skipped": [{"path": s.path, "reason": s.reason} for s in self.skipped],
        }

    def __repr__(self) -> str:
        return (f"ImageFolderSource({self.root!r}, {len(self)} images, {len(self.classes)} classes, "
                f"{self.num_skipped} skipped)")

