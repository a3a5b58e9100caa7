"""The split builder: train / train-dev / dev / test under the distribution rule.

The rule (from "structuring ML projects"): the training data may come from another distribution
(the *source*, e.g. 200k web images) than the data the system must work on (the *target*, e.g.
10k app images). Then

* **dev and test come only from the target distribution** (they aim the team at the real goal);
* a share of the target data may go to **train** (``target_train_share``), so the network sees
  some of the target distribution;
* **train-dev** is carved out of the training distribution (source plus the target part of
  train, in the same mix) and not trained on: ``train-dev - train`` error is variance,
  ``dev - train-dev`` error is data mismatch.

Every partition is stratified (each class spread over the parts in proportion, within one
example per class and part) and deterministic for a seed. With a single distribution, pass
``n_source=0`` and let ``target_train_share`` make the training set::

    s = build_splits(0, None, len(y), y, target_train_share=0.6, dev_share=0.2, seed=0)
    X_train, y_train = s.select("train", None, X), s.select("train", None, y)

Shares follow scikit-learn's ``train_test_split``: a float in [0, 1) is a fraction (rounded to the
nearest whole example), an int is a number of examples.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

__all__ = ["SPLIT_NAMES", "Splits", "build_splits"]

SPLIT_NAMES = ("train", "train_dev", "dev", "test")
MANIFEST_FORMAT = "dlops.splits/1"


@dataclass(frozen=True)
class Splits:
    """Index arrays of one split (all int64, sorted ascending, disjoint).

    Attributes:
        train_source: indices into the source data that go to train.
        train_target: indices into the target data that go to train.
        train_dev_source: indices into the source data that form train-dev.
        train_dev_target: indices into the target data that form train-dev.
        dev: indices into the target data (dev is target-only).
        test: indices into the target data (test is target-only).
        seed: the seed that made them.
        params: the arguments of :func:`build_splits` (shares as given).
        class_counts: ``{split: {label: count}}`` when labels were given, else ``{}``.
    """

    train_source: np.ndarray
    train_target: np.ndarray
    train_dev_source: np.ndarray
    train_dev_target: np.ndarray
    dev: np.ndarray
    test: np.ndarray
    seed: int
    params: dict[str, Any] = field(default_factory=dict)
    class_counts: dict[str, dict[str, int]] = field(default_factory=dict)

    def indices(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """``(source indices, target indices)`` of split ``name`` (``train``, ``train_dev``, ``dev``, ``test``).

        Raises:
            ValueError: unknown split name.
        """
        empty = np.zeros(0, dtype=np.int64)
        table = {
            "train": (self.train_source, self.train_target),
            "train_dev": (self.train_dev_source, self.train_dev_target),
            "dev": (empty, self.dev),
            "test": (empty, self.test),
        }
        if name not in table:
            raise ValueError(f"unknown split {name!r}; splits: {', '.join(SPLIT_NAMES)}")
        return table[name]

    @property
    def sizes(self) -> dict[str, int]:
        """Examples per split."""
        return {n: int(sum(len(a) for a in self.indices(n))) for n in SPLIT_NAMES}

    def select(self, name: str, source: Any, target: Any) -> Any:
        """The examples of split ``name``: source rows first, then target rows.

        Args:
            name: ``train``, ``train_dev``, ``dev`` or ``test``.
            source: indexable source data (numpy array, list, ...), or None when ``n_source == 0``.
            target: indexable target data, or None when the split takes none of it.

        Returns:
            A numpy array (rows concatenated) if the inputs are arrays, else a list.

        Raises:
            ValueError: unknown split, or data needed by the split is None.
        """
        si, ti = self.indices(name)
        parts = []
        for data, idx, what in ((source, si, "source"), (target, ti, "target")):
            if len(idx) == 0:
                continue
            if data is None:
                raise ValueError(f"split {name!r} takes {len(idx)} {what} examples but {what} is None")
            parts.append(data[idx] if isinstance(data, np.ndarray) else [data[int(i)] for i in idx])
        arrays = [d for d in (source, target) if d is not None]
        if arrays and all(isinstance(d, np.ndarray) for d in arrays):
            if not parts:
                return arrays[0][:0]
            return np.concatenate(parts, axis=0)
        return [x for p in parts for x in p]

    def manifest(
        self,
        source_ids: Sequence[Any] | None = None,
        target_ids: Sequence[Any] | None = None,
        class_map: Mapping[str, int] | None = None,
    ) -> dict[str, Any]:
        """A JSON-serialisable record of the split, to log to MLflow (``mlflow.log_dict``).

        Args:
            source_ids: an id per source example (file paths, say); default: the indices.
            target_ids: an id per target example; default: the indices.
            class_map: the class index map to record (``{name: index}``).

        Returns:
            ``{"format", "seed", "params", "sizes", "class_map", "class_counts",
            "splits": {split: {"source": [...], "target": [...]}}}``.

        Raises:
            ValueError: an id list shorter than the data it names.
        """
        def ids(idx: np.ndarray, names: Sequence[Any] | None, what: str) -> list[Any]:
            if names is None:
                return [int(i) for i in idx]
            if len(idx) and int(idx.max()) >= len(names):
                raise ValueError(f"{what}_ids has {len(names)} entries; index {int(idx.max())} is out of range")
            return [_jsonable(names[int(i)]) for i in idx]

        splits = {}
        for n in SPLIT_NAMES:
            si, ti = self.indices(n)
            splits[n] = {"source": ids(si, source_ids, "source"), "target": ids(ti, target_ids, "target")}
        return {
            "format": MANIFEST_FORMAT,
            "seed": int(self.seed),
            "params": dict(self.params),
            "sizes": self.sizes,
            "class_map": {str(k): int(v) for k, v in class_map.items()} if class_map is not None else None,
            "class_counts": {k: dict(v) for k, v in self.class_counts.items()},
            "splits": splits,
        }

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any]) -> Splits:
        """Rebuild the index arrays from a manifest written with the default (index) ids.

        Raises:
            ValueError: not a dlops split manifest, or its ids are not indices.
        """
        if manifest.get("format") != MANIFEST_FORMAT:
            raise ValueError(f"not a dlops split manifest (format {manifest.get('format')!r})")
        sp = manifest["splits"]
        try:
            arr = {(n, d): np.asarray([int(i) for i in sp[n][d]], dtype=np.int64)
                   for n in SPLIT_NAMES for d in ("source", "target")}
        except (TypeError, ValueError):
            raise ValueError("the manifest's ids are not indices (it was written with source_ids/target_ids)") from None
        return cls(
            train_source=arr["train", "source"], train_target=arr["train", "target"],
            train_dev_source=arr["train_dev", "source"], train_dev_target=arr["train_dev", "target"],
            dev=arr["dev", "target"], test=arr["test", "target"],
            seed=int(manifest["seed"]), params=dict(manifest.get("params") or {}),
            class_counts={k: dict(v) for k, v in (manifest.get("class_counts") or {}).items()},
        )

    def log_to_mlflow(self, artifact_file: str = "splits/manifest.json", **manifest_kwargs: Any) -> None:
        """Log :meth:`manifest` to the active MLflow run (``mlflow.log_dict``) and the sizes as params."""
        import mlflow

        mlflow.log_dict(self.manifest(**manifest_kwargs), artifact_file)
        mlflow.log_params({f"split/{k}": v for k, v in self.sizes.items()} | {"split/seed": self.seed})


def _jsonable(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    return str(x)


def _count(share: float | int, n: int, name: str) -> int:
    """Examples a share stands for: float in [0, 1) -> round(share * n); int -> itself."""
    if isinstance(share, bool) or not isinstance(share, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a float in [0, 1) or an int count, got {share!r}")
    if isinstance(share, (int, np.integer)):
        if not 0 <= share <= n:
            raise ValueError(f"{name}={share} examples is outside 0..{n}")
        return int(share)
    if not 0.0 <= share < 1.0:
        raise ValueError(f"{name}={share} must be a fraction in [0, 1) (or an int count of examples)")
    return int(np.floor(share * n + 0.5))


def _codes(y: Any, n: int, name: str) -> tuple[np.ndarray, np.ndarray | None]:
    """(n,) int codes of the strata and the label of each example as str (None without labels)."""
    if y is None:
        return np.zeros(n, dtype=np.int64), None
    a = np.asarray(y)
    if len(a) != n:
        raise ValueError(f"{name} has {len(a)} labels but n={n}")
    if a.ndim == 1:
        _, inv = np.unique(a, return_inverse=True)
        return inv.astype(np.int64).reshape(-1), a.astype(str)
    if a.ndim == 2:  # multi-label: stratify by the label pattern (NaN/missing as its own value)
        key = np.nan_to_num(a.astype(np.float64), nan=-1.0)
        _, inv = np.unique(key, axis=0, return_inverse=True)
        return inv.astype(np.int64).reshape(-1), None
    raise ValueError(f"{name} must be 1-D (class labels) or 2-D (multi-label targets), got shape {a.shape}")


def _partition(codes: np.ndarray, sizes: Sequence[int], rng: np.random.Generator) -> list[np.ndarray]:
    """Split positions 0..n-1 into parts of exactly ``sizes``, stratified by ``codes``.

    Positions are grouped by stratum (random order inside each) and dealt to the parts by the
    largest-deficit rule, so every run of consecutive positions, hence every stratum, is shared
    in proportion to ``sizes`` within one example per part.
    """
    n = len(codes)
    assert sum(sizes) == n
    perm = rng.permutation(n)
    order = perm[np.argsort(codes[perm], kind="stable")]
    k = len(sizes)
    rates = [s / n for s in sizes] if n else [0.0] * k
    counts = [0] * k
    assign = np.empty(n, dtype=np.int64)
    for i in range(n):
        best, best_def = 0, -np.inf
        for j in range(k):
            d = rates[j] * (i + 1) - counts[j]
            if d > best_def + 1e-12:
                best, best_def = j, d
        counts[best] += 1
        assign[i] = best
    return [np.sort(order[assign == j]).astype(np.int64) for j in range(k)]


def build_splits(
    n_source: int,
    y_source: Any = None,
    n_target: int = 0,
    y_target: Any = None,
    target_train_share: float | int = 0.0,
    train_dev_share: float | int = 0.1,
    dev_share: float | int = 0.5,
    seed: int = 0,
) -> Splits:
    """Build train / train-dev / dev / test index arrays under the distribution rule.

    The target data is cut into train (``target_train_share``), dev (``dev_share``) and test
    (the rest); the training pool (all source data plus the target part of train) is cut into
    train and train-dev (``train_dev_share``), stratified by distribution and class, so
    train-dev has the training mix. Both cuts are stratified by class and deterministic for
    ``seed`` (``numpy.random.default_rng``).

    Args:
        n_source: number of source (training-distribution) examples; 0 if there is one distribution.
        y_source: (n_source,) class labels (any dtype), (n_source, L) multi-label targets
            (stratified by label pattern), or None (no stratification).
        n_target: number of target-distribution examples (>= 2: dev and test need one each).
        y_target: labels of the target data, as ``y_source``.
        target_train_share: share of the target data that goes to train (fraction or count).
        train_dev_share: share of the training pool held out as train-dev (fraction or count).
        dev_share: share of the target data that goes to dev (fraction or count); test gets
            the rest of the target data.
        seed: random seed.

    Returns:
        :class:`Splits` (index arrays into source and target; see :meth:`Splits.manifest`).

    Raises:
        ValueError: negative sizes, label arrays of the wrong length, a share out of range, no
            target data, or an empty train, dev or test set (the message names the share to change).
    """
    for nm, v in (("n_source", n_source), ("n_target", n_target)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
            raise ValueError(f"{nm} must be an int >= 0, got {v!r}")
    n_source, n_target = int(n_source), int(n_target)
    if n_target < 2:
        raise ValueError(
            f"n_target={n_target}: dev and test come only from the target distribution and need "
            "at least one example each; with a single distribution pass it as the target (n_source=0)"
        )
    cs, ys = _codes(y_source, n_source, "y_source")
    ct, yt = _codes(y_target, n_target, "y_target")
    t_train = _count(target_train_share, n_target, "target_train_share")
    t_dev = _count(dev_share, n_target, "dev_share")
    t_test = n_target - t_train - t_dev
    if t_dev < 1:
        raise ValueError(f"dev would be empty: dev_share={dev_share} of n_target={n_target}; raise dev_share")
    if t_test < 1:
        raise ValueError(
            f"test would be empty: target_train_share={target_train_share} + dev_share={dev_share} "
            f"take all {n_target} target examples; lower one of them"
        )
    rng = np.random.default_rng(seed)
    tgt_train, dev, test = _partition(ct, [t_train, t_dev, t_test], rng)

    pool_n = n_source + t_train
    if pool_n < 1:
        raise ValueError("train would be empty: n_source=0 and target_train_share=0; give training data")
    n_tdev = _count(train_dev_share, pool_n, "train_dev_share")
    if pool_n - n_tdev < 1:
        raise ValueError(f"train would be empty: train_dev_share={train_dev_share} of {pool_n}; lower it")
    offset = int(cs.max()) + 1 if n_source else 0
    pool_codes = np.concatenate([cs, ct[tgt_train] + offset])
    pool_train, pool_tdev = _partition(pool_codes, [pool_n - n_tdev, n_tdev], rng)

    def back(pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        src = pos[pos < n_source]
        tgt = tgt_train[pos[pos >= n_source] - n_source]
        return np.sort(src).astype(np.int64), np.sort(tgt).astype(np.int64)

    tr_s, tr_t = back(pool_train)
    td_s, td_t = back(pool_tdev)

    class_counts: dict[str, dict[str, int]] = {}
    if ys is not None or yt is not None:
        for name, (si, ti) in {"train": (tr_s, tr_t), "train_dev": (td_s, td_t),
                               "dev": (np.zeros(0, np.int64), dev),
                               "test": (np.zeros(0, np.int64), test)}.items():
            labs = []
            if ys is not None:
                labs.extend(ys[si].tolist())
            if yt is not None:
                labs.extend(yt[ti].tolist())
            u, c = np.unique(np.asarray(labs, dtype=str), return_counts=True)
            class_counts[name] = {str(a): int(b) for a, b in zip(u, c)}

    params = {
        "n_source": n_source, "n_target": n_target,
        "target_train_share": _jsonable(target_train_share),
        "train_dev_share": _jsonable(train_dev_share),
        "dev_share": _jsonable(dev_share),
        "stratified_source": y_source is not None, "stratified_target": y_target is not None,
    }
    return Splits(train_source=tr_s, train_target=tr_t, train_dev_source=td_s, train_dev_target=td_t,
                  dev=dev, test=test, seed=int(seed), params=params, class_counts=class_counts)
