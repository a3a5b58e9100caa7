"""The embedded default data: scikit-learn's handwritten digits (1,797 real 8x8 images).

The data are those of ``sklearn.datasets.load_digits`` (UCI "Optical Recognition of Handwritten
Digits", test part; E. Alpaydin and C. Kaynak, 1998; CC BY 4.0), in scikit-learn's order, kept
beside this module as ``digits.npz`` (``images`` (1797, 8, 8) uint8 0..16, ``target`` (1797,)
uint8 0..9; 45 KB): reading it takes 2 ms, where importing scikit-learn to call ``load_digits``
took 2.3 s of every ``dlops run``'s start-up (bench/digits_load.py). Nothing is downloaded.
tests/data/test_digits_fingerprint.py checks it equals ``load_digits()`` element for element.
Pixels are 0..16 in the source and are rescaled to uint8 0..255 here.

Regenerate (only if scikit-learn ever changed the data; the test above would say so)::

    python -c "from sklearn.datasets import load_digits; import numpy as np; d = load_digits(); \
      np.savez_compressed('dlops/data/digits.npz', images=d.images.astype(np.uint8), target=d.target.astype(np.uint8))"
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class ArraySplit:
    """Images (N, H, W, C) uint8 and labels (N,) int64 (indices into the class list)."""

    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.y)


def load_raw_digits() -> tuple[np.ndarray, np.ndarray]:
    """The digits as ``load_digits`` gives them: images (1797, 8, 8) uint8 in 0..16 and labels
    (1797,) uint8 in 0..9, read from ``digits.npz`` beside this module.

    Raises:
        OSError: the file is missing from the installed package (a broken install).
    """
    from importlib.resources import files

    with files("dlops.data").joinpath("digits.npz").open("rb") as f, np.load(f) as z:
        return z["images"], z["target"]


def load_digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """All digits: images (1797, 8, 8, 1) uint8 in [0, 255] and labels (1797,) int64 in 0..9."""
    images, target = load_raw_digits()
    x = np.clip(np.rint(images * (255.0 / 16.0)), 0, 255).astype(np.uint8)[..., None]
    return x, target.astype(np.int64)


@dataclass
class TransferData:
    """The source task and the target task's splits (labels re-indexed per task).

    ``source`` holds every example of the source classes; ``train``/``train_dev`` come from the
    target training distribution, ``dev``/``test`` from the target distribution (here the same
    distribution, as in the digits default). ``*_classes`` give the original digit of each index.
    ``indices``: per target split (``train``, ``train_dev``, ``dev``, ``test``), the sorted indices
    of its examples in :func:`load_digits_arrays` (scikit-learn's order): which examples it holds.
    """

    source: ArraySplit
    source_classes: list[int]
    train: ArraySplit
    train_dev: ArraySplit
    dev: ArraySplit
    test: ArraySplit
    target_classes: list[int]
    indices: dict[str, list[int]] = field(default_factory=dict)

    def manifest(self) -> dict[str, object]:
        """What went where, JSON: the source and target classes, the sizes, the class index map
        (``{digit: index}``) and, like a file source's manifest, ``splits``: ``{split: {"target":
        [index, ...]}}``, the examples of each target split as indices into scikit-learn's digits.
        The dev and test digests of a version's fingerprint are computed from these
        (:func:`dlops.tracking.promotion.split_digests`)."""
        return {
            "source": "sklearn.datasets.load_digits",
            "source_classes": self.source_classes,
            "target_classes": self.target_classes,
            "sizes": {k: len(getattr(self, k)) for k in ("source", "train", "train_dev", "dev", "test")},
            "class_map": {str(c): i for i, c in enumerate(self.target_classes)},
            "splits": {k: {"target": list(v)} for k, v in self.indices.items()},
        }


def build_transfer_data(
    source_classes: list[int],
    target_classes: list[int],
    train_per_class: int,
    train_dev_per_class: int,
    dev_fraction: float,
    seed: int,
) -> TransferData:
    """Split the digits into a source task and a few-shot target task.

    Per target class (stratified, deterministic for ``seed``): ``train_per_class`` examples to
    train, ``train_dev_per_class`` to train-dev, the rest split ``dev_fraction`` : rest into dev
    and test.

    Raises:
        ValueError: a class has too few examples for the requested counts.
    """
    x, y = load_digits_arrays()
    rng = np.random.default_rng(seed)
    src_idx = np.flatnonzero(np.isin(y, source_classes))
    src_map = {c: i for i, c in enumerate(source_classes)}
    source = ArraySplit(x[src_idx], np.array([src_map[c] for c in y[src_idx]], dtype=np.int64))
    parts: dict[str, list[np.ndarray]] = {"train": [], "train_dev": [], "dev": [], "test": []}
    for c in target_classes:
        idx = rng.permutation(np.flatnonzero(y == c))
        need = train_per_class + train_dev_per_class + 2
        if len(idx) < need:
            raise ValueError(
                f"data: digit {c} has {len(idx)} examples, fewer than train_per_class + "
                f"train_dev_per_class + 2 = {need}"
            )
        a, b = train_per_class, train_per_class + train_dev_per_class
        rest = idx[b:]
        n_dev = int(round(dev_fraction * len(rest)))
        parts["train"].append(idx[:a])
        parts["train_dev"].append(idx[a:b])
        parts["dev"].append(rest[:n_dev])
        parts["test"].append(rest[n_dev:])
    tmap = {c: i for i, c in enumerate(target_classes)}
    order = {k: np.sort(np.concatenate(v)) for k, v in parts.items()}

    def mk(key: str) -> ArraySplit:
        ii = order[key]
        return ArraySplit(x[ii], np.array([tmap[c] for c in y[ii]], dtype=np.int64))

    return TransferData(source, list(source_classes), mk("train"), mk("train_dev"), mk("dev"), mk("test"),
                        list(target_classes), {k: [int(i) for i in v] for k, v in order.items()})
