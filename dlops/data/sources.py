"""One entry point from the project file's ``data`` section to the task's splits in memory.

``load_task(data_cfg, seed, task)`` returns a :class:`TaskData`: train / train-dev / dev / test
as (N, H, W, C) uint8 arrays of one size (``data.image_size``) with their labels, the class index
map from the training data, per-example tags (error analysis), the files skipped by the pre-scan,
and a JSON manifest of the split (logged to MLflow so that a run can be reproduced).

Sources:

* ``digits``: scikit-learn's handwritten digits, shipped with scikit-learn (the embedded
  default): a source task (pretraining) and a few-shot target task.
* ``imagefolder``: ``target_dir`` (the distribution the system must work on: dev and test come
  only from it) and optionally ``source_dir`` (other training data, e.g. web images), one
  subfolder per class (:mod:`dlops.data.imagefolder`).
* ``list``: ``target_csv`` / ``source_csv`` list files (``path,label`` or ``path,labels`` with
  ``|``-separated labels, optional ``tags``; :mod:`dlops.data.listsource`), for multi-label data
  and error-analysis tags.

The split follows the distribution rule (:func:`dlops.data.splits.build_splits`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np

from dlops.data.digits import ArraySplit

from dlops.reporting.contract import SPLITS  # one definition of the split names


@dataclass
class TaskData:
    """The target task's splits, in memory.

    Attributes:
        train, train_dev, dev, test: images (N, H, W, C) uint8 and labels: (N,) int64 class
            indices, or (N, L) float32 1/0/NaN for ``multilabel`` (NaN = missing label).
        class_names: index -> class (label) name, from the training data.
        task: ``classification`` or ``multilabel``.
        image_size, channels: the size (pixels) and channels every image was converted to.
        tags: ``{split: [[tag, ...], ...]}`` where the source has tags.
        source, source_classes: the pretraining source task (digits only).
        skipped: ``[(file, reason)]`` the pre-scan could not use.
        manifest: what went where (JSON-serialisable).
        warnings: what the data checks found legal but unwise (:mod:`dlops.data.checks`).
    """

    train: ArraySplit
    train_dev: ArraySplit
    dev: ArraySplit
    test: ArraySplit
    class_names: list[str]
    task: str = "classification"
    image_size: int = 8
    channels: int = 1
    tags: dict[str, list[list[str]]] = field(default_factory=dict)
    source: Optional[ArraySplit] = None
    source_classes: list[Any] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    manifest: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def split(self, name: str) -> ArraySplit:
        return getattr(self, name)


def _resize_all(paths: Sequence[str], channels: int, size: int, cfg: Any = None) -> np.ndarray:
    """Load, convert to ``channels`` and resize every image to (size, size): (N, size, size, C) uint8,
    through the project's image cache (``data.cache``, :mod:`dlops.data.cache`).

    Raises:
        DataError: a file that cannot be read or decoded any more (names it).
    """
    from dlops.data.cache import load_resized

    x, _ = load_resized(paths, channels, size, mode=getattr(cfg, "cache", "memory") or "memory",
                        cache_dir=getattr(cfg, "cache_dir", None),
                        memory_mb=float(getattr(cfg, "cache_memory_mb", 256.0)))
    return x


def _digits(cfg: Any, seed: int) -> TaskData:
    from dlops.data.digits import build_transfer_data

    d = build_transfer_data(cfg.source_classes, cfg.target_classes, cfg.train_per_class, cfg.train_dev_per_class,
                            cfg.dev_fraction, seed)
    return TaskData(d.train, d.train_dev, d.dev, d.test, [str(c) for c in d.target_classes], "classification",
                    8, 1, source=d.source, source_classes=list(d.source_classes), manifest=d.manifest())


def _files(cfg: Any, kind: str, task: str, seed: int) -> TaskData:
    """imagefolder / list sources, split under the distribution rule."""
    from dlops.data.splits import build_splits

    channels, size = int(cfg.channels), int(cfg.image_size or 32)
    if kind == "imagefolder":
        from dlops.data.imagefolder import ImageFolderSource

        def open_src(path: str, cmap: Any) -> Any:
            return ImageFolderSource(path, channels=channels, class_to_idx=cmap)

        src_path, tgt_path = cfg.source_dir, cfg.target_dir
    else:
        from dlops.data.listsource import ListSource

        def open_src(path: str, cmap: Any) -> Any:
            return ListSource(path, channels=channels, class_to_idx=cmap)

        src_path, tgt_path = cfg.source_csv, cfg.target_csv
    # the class index map comes from the training data: the source when there is one
    source = open_src(src_path, None) if src_path else None
    target = open_src(tgt_path, source.class_to_idx if source is not None else None)
    cmap = (source or target).class_to_idx
    if source is not None and set(target.class_to_idx) - set(cmap):
        from dlops.data.imagefolder import UnknownClassError

        raise UnknownClassError(f"data: classes {sorted(set(target.class_to_idx) - set(cmap))} of {tgt_path} "
                                f"are not in the training data {src_path}")
    multi = getattr(target, "kind", "single") == "multi"
    if task == "multilabel" and not multi:
        raise ValueError(f"task: multilabel needs a list file with a 'labels' column; {tgt_path} is single-label")
    if task == "classification" and multi:
        raise ValueError(f"task: {tgt_path} is multi-label ('labels' column); set task: multilabel")
    ys = source.targets if source is not None else None
    yt = target.targets
    strat_s = None if multi else ys
    strat_t = None if multi else yt
    share = cfg.target_train_share
    if share is None:  # one distribution: most of it trains; with a source, the target is for dev/test
        share = 0.0 if source is not None else 0.6
    from dlops.data.checks import check_classes, check_shares

    where = f"{tgt_path}" if source is None else f"{src_path} + {tgt_path}"
    check_classes(sorted(cmap), where, "multilabel" if multi else "classification")
    dev_share = cfg.dev_share
    if dev_share is None:  # half of the target data that does not train: dev and test the same size
        dev_share = round((1.0 - share) / 2.0, 6)
    check_shares(len(source) if source is not None else 0, len(target), share, cfg.train_dev_share, dev_share, where)
    sp = build_splits(len(source) if source is not None else 0, strat_s, len(target), strat_t,
                      target_train_share=share, train_dev_share=cfg.train_dev_share, dev_share=dev_share,
                      seed=seed)
    x_s = _resize_all(source.paths, channels, size, cfg) if source is not None else None
    x_t = _resize_all(target.paths, channels, size, cfg)
    ids_s = list(source.paths) if source is not None else None
    tags_s = list(getattr(source, "tags", [[] for _ in source.paths])) if source is not None else None
    tags_t = list(getattr(target, "tags", [[] for _ in target.paths]))
    parts: dict[str, ArraySplit] = {}
    tags: dict[str, list[list[str]]] = {}
    for name in SPLITS:
        x = sp.select(name, x_s, x_t)
        y = sp.select(name, ys, yt)
        parts[name] = ArraySplit(np.asarray(x, dtype=np.uint8), np.asarray(y))
        tags[name] = list(sp.select(name, tags_s, tags_t))
    class_names = sorted(cmap, key=cmap.__getitem__)
    manifest = sp.manifest(ids_s, list(target.paths), cmap)
    skipped = [(s.path, s.reason) for s in (source.skipped if source is not None else [])] + \
              [(s.path, s.reason) for s in target.skipped]
    manifest["skipped"] = [{"path": p, "reason": r} for p, r in skipped]
    return TaskData(parts["train"], parts["train_dev"], parts["dev"], parts["test"], class_names,
                    "multilabel" if multi else "classification", size, channels,
                    tags={k: v for k, v in tags.items() if any(v)}, skipped=skipped, manifest=manifest)


def load_task(cfg: Any, seed: int, task: str = "classification") -> TaskData:
    """The splits of the project's ``data`` section (see the module docstring).

    Raises:
        ValueError: unusable data (the message names the file or folder): an empty class folder,
            a dev/test class unseen in training, a list file with no usable image, a task that does
            not match the labels.
    """
    if cfg.source == "digits":
        return _digits(cfg, seed)
    return _files(cfg, cfg.source, task, seed)
