"""CSV list source: ``path,label`` (single-label) or ``path,labels`` (multi-label), optional tags.

Format (a header row is required; extra columns are ignored)::

    path,labels,missing,tags
    img/001.png,cat|dog,,blurry
    img/002.png,cat,bird,night|blurry
    img/003.png,,,                       # multi-label: no positive label (all negative)

* ``path``: image file, relative to the CSV's folder (or to ``root``) unless absolute.
* ``label`` (single-label): one class name per row, never empty.
* ``labels`` (multi-label): the positive labels, separated by ``|``; every other label is a
  negative, except those listed in the optional ``missing`` column (``|``-separated), which are
  not annotated for that row: their target is NaN and :func:`dlops.train.multilabel.masked_bce_with_logits`
  leaves them out of the loss.
* ``tags`` (optional): ``|``-separated error-analysis tags (``blurry``, ``night``...), kept per
  example for the error-analysis reporter; they are not labels.

Unusable files (missing, empty, undecodable, not an image) are skipped, counted and named as by
the image-folder source (:class:`~dlops.data.imagefolder.SkippedFile`). The class map comes from the
training data (sorted label names) and is passed to dev/test lists as ``class_to_idx``; a label
that training does not have raises :class:`~dlops.data.imagefolder.UnknownClassError`.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from dlops.data.imagefolder import (
    IMAGE_EXTENSIONS,
    SkippedFile,
    UnknownClassError,
    _quick_check,
    check_image_file,
    load_image,
)

__all__ = ["ListSource", "parse_list"]

SEP = "|"


def _split(cell: str | None) -> list[str]:
    if cell is None:
        return []
    return [t.strip() for t in cell.split(SEP) if t.strip()]


def parse_list(csv_path: str | os.PathLike) -> tuple[str, list[dict[str, Any]]]:
    """Read a list CSV without touching the images. Pure apart from reading the file.

    Returns:
        ``(kind, rows)``: kind ``"single"`` or ``"multi"``; each row is ``{"line": int,
        "path": str, "labels": [str], "missing": [str], "tags": [str]}`` (line numbers count
        the header as line 1).

    Raises:
        FileNotFoundError: no such file.
        ValueError: no header, no ``path`` column, neither or both of ``label``/``labels``,
            an empty path, an empty ``label``, a ``missing`` column in a single-label list, or a
            label listed both as positive and missing (the message names file and line).
    """
    p = Path(csv_path)
    if not p.is_file():
        raise FileNotFoundError(f"list file {str(p)!r} does not exist")
    with p.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        fields = [f.strip() for f in (reader.fieldnames or [])]
        if not fields:
            raise ValueError(f"list file {str(p)!r} is empty; expected a header such as 'path,label'")
        reader.fieldnames = fields
        if "path" not in fields:
            raise ValueError(f"list file {str(p)!r}: no 'path' column in header {fields}")
        has_label, has_labels = "label" in fields, "labels" in fields
        if has_label == has_labels:
            raise ValueError(
                f"list file {str(p)!r}: the header needs exactly one of 'label' (single-label) or "
                f"'labels' (multi-label, '|'-separated); got {fields}"
            )
        kind = "multi" if has_labels else "single"
        if kind == "single" and "missing" in fields:
            raise ValueError(f"list file {str(p)!r}: a 'missing' column needs a multi-label 'labels' column")
        rows = []
        for line, rec in enumerate(reader, start=2):
            path = (rec.get("path") or "").strip()
            if not path:
                if not any((v or "").strip() for v in rec.values() if isinstance(v, str)):
                    continue  # blank line
                raise ValueError(f"list file {str(p)!r}, line {line}: empty path")
            if kind == "single":
                label = (rec.get("label") or "").strip()
                if not label:
                    raise ValueError(f"list file {str(p)!r}, line {line}: empty label for {path!r}")
                labels, missing = [label], []
            else:
                labels, missing = _split(rec.get("labels")), _split(rec.get("missing"))
                both = sorted(set(labels) & set(missing))
                if both:
                    raise ValueError(
                        f"list file {str(p)!r}, line {line}: label(s) {both} are both positive and missing"
                    )
            rows.append({"line": line, "path": path, "labels": labels, "missing": missing,
                         "tags": _split(rec.get("tags"))})
    return kind, rows


class ListSource:
    """Images listed in a CSV file (format in the module docstring); a map-style dataset.

    ``source[i]`` is ``(image, target)``: image (H, W, channels) uint8 (or ``transform(image)``);
    target an ``int`` class index (single-label) or a (L,) float32 numpy vector of 1/0/NaN
    (multi-label; NaN = missing).

    Args:
        csv_path: the list file.
        channels: the model's input channels (1 or 3).
        class_to_idx: the training class map (for dev/test lists); None for training data.
        root: folder that relative paths start from (default: the CSV's folder).
        transform: applied to every image.
        verify: decode every image during the pre-scan (False: check extension and size only).

    Attributes:
        kind: ``"single"`` or ``"multi"``.
        classes, class_to_idx: the class (label) index map.
        paths: file of each usable example; ``lines``: its CSV line.
        targets: (N,) int64 class indices, or (N, L) float32 with 1/0/NaN.
        tags: per example, its list of tags; ``tag_names``: every tag, sorted.
        skipped: unusable files with reasons.

    Raises:
        As :func:`parse_list`; UnknownClassError: a label not in ``class_to_idx``;
        ValueError: ``channels`` not 1 or 3, or no usable image at all.
    """

    def __init__(
        self,
        csv_path: str | os.PathLike,
        channels: int = 3,
        class_to_idx: Mapping[str, int] | None = None,
        root: str | os.PathLike | None = None,
        transform: Callable[[np.ndarray], Any] | None = None,
        verify: bool = True,
    ) -> None:
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels}")
        self.csv_path = str(csv_path)
        self.kind, rows = parse_list(csv_path)
        base = Path(root) if root is not None else Path(csv_path).parent
        if class_to_idx is None:
            names = sorted({lab for r in rows for lab in r["labels"] + r["missing"]})
            cmap = {n: i for i, n in enumerate(names)}
        else:
            cmap = dict(class_to_idx)
            for r in rows:
                unknown = [lab for lab in r["labels"] + r["missing"] if lab not in cmap]
                if unknown:
                    n_rows = sum(1 for q in rows if set(q["labels"] + q["missing"]) & set(unknown))
                    raise UnknownClassError(
                        f"list file {self.csv_path!r}, line {r['line']} (and {n_rows - 1} more rows): label(s) "
                        f"{unknown} not seen in the training data; training classes: "
                        f"{sorted(cmap, key=cmap.__getitem__)}; add examples of them to the training list "
                        "(data.source_csv) or drop those rows"
                    )
        self.class_to_idx: dict[str, int] = cmap
        self.classes: list[str] = sorted(cmap, key=cmap.__getitem__)
        self.channels = channels
        self.transform = transform
        self.skipped: list[SkippedFile] = []
        kept = []
        exts = set(IMAGE_EXTENSIONS)
        for r in rows:
            path = Path(r["path"])
            path = path if path.is_absolute() else base / path
            if not path.exists():
                reason = "file not found"
            else:
                reason = check_image_file(path, exts) if verify else _quick_check(path, exts)
            if reason is None:
                kept.append((str(path), r))
            else:
                self.skipped.append(SkippedFile(str(path), f"line {r['line']}: {reason}"))
        if not kept:
            raise ValueError(f"list file {self.csv_path!r} has no usable image ({len(self.skipped)} skipped)")
        self.paths: list[str] = [p for p, _ in kept]
        self.lines: list[int] = [r["line"] for _, r in kept]
        self.tags: list[list[str]] = [r["tags"] for _, r in kept]
        self.tag_names: list[str] = sorted({t for tags in self.tags for t in tags})
        if self.kind == "single":
            self.targets = np.asarray([cmap[r["labels"][0]] for _, r in kept], dtype=np.int64)
        else:
            t = np.zeros((len(kept), len(cmap)), dtype=np.float32)
            for i, (_, r) in enumerate(kept):
                for lab in r["labels"]:
                    t[i, cmap[lab]] = 1.0
                for lab in r["missing"]:
                    t[i, cmap[lab]] = np.nan
            self.targets = t

    @property
    def num_skipped(self) -> int:
        return len(self.skipped)

    @property
    def multi_label(self) -> bool:
        return self.kind == "multi"

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, i: int) -> np.ndarray:
        """Image ``i`` as (H, W, channels) uint8, without the transform."""
        return load_image(self.paths[i], self.channels)

    def __getitem__(self, i: int) -> tuple[Any, Any]:
        img = self.load(i)
        if self.transform is not None:
            img = self.transform(img)
        target = int(self.targets[i]) if self.kind == "single" else self.targets[i].copy()
        return img, target

    def tag_matrix(self) -> np.ndarray:
        """(N, T) bool: example i has tag ``tag_names[j]``."""
        idx = {t: j for j, t in enumerate(self.tag_names)}
        m = np.zeros((len(self), len(self.tag_names)), dtype=bool)
        for i, tags in enumerate(self.tags):
            for t in tags:
                m[i, idx[t]] = True
        return m

    def scan_summary(self) -> dict[str, Any]:
        """JSON-serialisable summary (for MLflow): file, kind, class map, counts, skipped files."""
        return {
            "csv": self.csv_path,
            "kind": self.kind,
            "channels": self.channels,
            "class_to_idx": dict(self.class_to_idx),
            "num_examples": len(self),
            "tag_names": list(self.tag_names),
            "num_skipped": self.num_skipped,
            "skipped": [{"path": s.path, "reason": s.reason} for s in self.skipped],
        }

    def __repr__(self) -> str:
        return (f"ListSource({self.csv_path!r}, {self.kind}-label, {len(self)} images, "
                f"{len(self.classes)} classes, {self.num_skipped} skipped)")
