"""Data checks run before any trial: by ``dlops validate`` and at the start of ``dlops run``.

Two kinds of findings:

* **errors** (:class:`~dlops.errors.DataError`, exit 2): fewer than two classes, split shares
  that leave a split empty (:func:`check_shares`, with shares that work for this data), a class
  with too few examples to reach train and dev, the same file content in train and in
  dev/test (by SHA-256 of the file's bytes); a label unknown to the training data is refused by
  the sources themselves (:class:`~dlops.data.imagefolder.UnknownClassError`), an empty class
  folder by the scan (:class:`~dlops.data.imagefolder.EmptyClassError`).
* **warnings** (returned as lines, legal but unwise): a tiny train-dev, dev or test set, a
  class missing from dev or test, a dev/test set too small to resolve the human-level error.

Each message names the key, the counts and a fix.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any, Mapping, Sequence

from dlops.errors import DataError

#: a dev/test/train-dev set smaller than this gets a warning (one error moves its error by > 3 points)
TINY_SPLIT = 30
#: z of a two-sided 95% interval
_Z = 1.959963984540054


def _count(share: float, n: int) -> int:
    return int(share) if isinstance(share, int) and not isinstance(share, bool) else int(math.floor(share * n + 0.5))


def split_sizes(n_source: int, n_target: int, target_train_share: float, train_dev_share: float,
                dev_share: float) -> dict[str, int]:
    """The split sizes the shares give (as :func:`dlops.data.splits.build_splits` counts them).

    Returns:
        ``{"train", "train_dev", "dev", "test"}`` example counts (a negative test means the
        shares take more than all the target data).
    """
    t_train = _count(target_train_share, n_target)
    t_dev = _count(dev_share, n_target)
    pool = n_source + t_train
    n_tdev = _count(train_dev_share, pool)
    return {"train": pool - n_tdev, "train_dev": n_tdev, "dev": t_dev, "test": n_target - t_train - t_dev}


def suggest_shares(n_source: int, n_target: int, target_train_share: float, train_dev_share: float) -> dict[str, float]:
    """Shares that leave no split empty for this data: ``target_train_share`` kept (0.6 without a
    source when it is outside [0.2, 0.8]), ``dev_share`` half of the target data not trained on, and
    ``train_dev_share`` kept (raised to one example).

    Returns:
        ``{"target_train_share", "dev_share", "train_dev_share"}``.
    """
    tts = float(target_train_share)
    if n_source == 0 and not 0.2 <= tts <= 0.8:  # the split is per class: a sliver leaves classes without train
        tts = 0.6
    dev = round((1.0 - tts) / 2.0, 3)
    tds = float(train_dev_share)
    pool = n_source + _count(tts, n_target)
    if pool and _count(tds, pool) < 1:
        tds = round(min(0.5, 1.0 / pool + 1e-9 + 0.5 / pool), 3)
    return {"target_train_share": tts, "dev_share": dev, "train_dev_share": tds}


def check_shares(n_source: int, n_target: int, target_train_share: float, train_dev_share: float,
                 dev_share: float, where: str = "data") -> dict[str, int]:
    """Refuse split shares that leave train, train-dev, dev or test empty, before splitting.

    Args:
        n_source, n_target: examples of the source (0 without one) and of the target data.
        target_train_share, train_dev_share, dev_share: the ``data`` keys (fractions or counts).
        where: the folder or file, for the message.

    Returns:
        The split sizes (:func:`split_sizes`).

    Raises:
        DataError: a split would be empty; the message names the share keys, the counts and
            shares that work for this data (or the examples it lacks).
    """
    sizes = split_sizes(n_source, n_target, target_train_share, train_dev_share, dev_share)
    empty = [k for k in ("train", "train_dev", "dev", "test") if sizes[k] < 1]
    if not empty:
        return sizes
    given = (f"data.target_train_share={target_train_share}, data.dev_share={dev_share}, "
             f"data.train_dev_share={train_dev_share}")
    got = ", ".join(f"{k} {max(v, 0)}" for k, v in sizes.items())
    s = suggest_shares(n_source, n_target, target_train_share, train_dev_share)
    ok = split_sizes(n_source, n_target, s["target_train_share"], s["train_dev_share"], s["dev_share"])
    if min(ok.values()) >= 1:
        fix = ("use " + ", ".join(f"data.{k}={v}" for k, v in s.items()) + " (gives "
               + ", ".join(f"{k} {v}" for k, v in ok.items()) + ")")
    else:
        fix = (f"{where} has too few examples ({n_target} target, {n_source} source): every split needs at "
               "least one; add examples")
    raise DataError(f"{where}: {' and '.join(empty)} would be empty with {given} of {n_target} target and "
                    f"{n_source} source examples ({got}); {fix}")


def check_classes(class_names: Sequence[str], where: str, task: str = "classification") -> None:
    """Refuse a classification task with fewer than two classes.

    Raises:
        DataError: naming the folder or file and the class it found.
    """
    if task == "classification" and len(class_names) < 2:
        raise DataError(f"{where}: {len(class_names)} class ({', '.join(map(str, class_names)) or 'none'}); a "
                        "classifier needs at least 2 classes: add a folder (or label) per class")


def file_digest(path: str, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def find_duplicates(train_files: Sequence[str], held_out: Mapping[str, Sequence[str]]) -> list[tuple[str, str, str]]:
    """Files whose content (SHA-256) is in train and in a held-out split.

    Args:
        train_files: the training files (train and train-dev: both are the training distribution).
        held_out: ``{split: files}`` for dev and test.

    Returns:
        ``[(train file, split, held-out file)]``, in held-out order.
    """
    seen: dict[str, str] = {}
    for p in train_files:
        seen.setdefault(file_digest(p), p)
    out = []
    for split, files in held_out.items():
        for p in files:
            d = file_digest(p)
            if d in seen:
                out.append((seen[d], split, p))
    return out


def human_resolvable_n(human: float) -> int:
    """Examples a dev/test set needs so that a model at human-level error ``h`` (fraction) can be
    told from one twice as bad: the 95% interval's half-width at ``h`` at most ``h`` (normal
    approximation, ``n = z² (1 - h) / h``; Wilson 1927 gives about the same)."""
    return int(math.ceil(_Z * _Z * (1.0 - human) / human))


#: the key that sizes each split, per data source (for the fixes in the messages)
SHARE_KEYS: dict[str, dict[str, str]] = {
    "digits": {"train_dev": "data.train_dev_per_class", "dev": "data.dev_fraction", "test": "data.dev_fraction (lower)"},
    "files": {"train_dev": "data.train_dev_share", "dev": "data.dev_share",
              "test": "data.target_train_share or data.dev_share (lower)"},
}


def check_task(data: Any, human_level_error: float = 0.0, where: str = "data", source: str = "files") -> list[str]:
    """The checks on the loaded splits (:class:`dlops.data.sources.TaskData`).

    Args:
        data: the task's splits (``train``, ``train_dev``, ``dev``, ``test``, ``class_names``,
            ``task``, ``manifest``).
        human_level_error: fraction in [0, 1]; 0 skips the resolvability check.
        where: the data folder or file, for the messages.
        source: ``digits`` or ``files`` (image folder, list): which keys the fixes name.

    Returns:
        Warning lines (legal but unwise).

    Raises:
        DataError: fewer than two classes; a class with no example in train or in dev; a split
            that is empty; the same file in train and dev/test.
    """
    check_classes(list(data.class_names), where, data.task)
    sizes = {k: len(data.split(k)) for k in ("train", "train_dev", "dev", "test")}
    for k, n in sizes.items():
        if n < 1:
            raise DataError(f"{where}: the {k.replace('_', '-')} split is empty (sizes {sizes}); give more data or "
                            "change the data shares")
    warnings: list[str] = []
    counts = (data.manifest or {}).get("class_counts") or {}
    if data.task == "classification" and counts:
        for i, c in enumerate(data.class_names):  # the split builder counts class indices
            per = {s: counts.get(s, {}).get(str(i), 0) for s in ("train", "train_dev", "dev", "test")}
            got = ", ".join(f"{s.replace('_', '-')} {v}" for s, v in per.items())
            if per["train"] < 1 or per["dev"] < 1:
                raise DataError(f"{where}: class {c!r} has {sum(per.values())} examples ({got}); the splits need at "
                                f"least one in train and one in dev (4 per class for train, train-dev, dev and "
                                f"test): add examples of {c!r} or drop the class")
            missing = [s for s in ("train_dev", "test") if per[s] < 1]
            if missing:
                warnings.append(f"{where}: class {c!r} has no example in {' or '.join(missing)} ({got}): its errors "
                                "there go unmeasured; add examples of it")
    keys = SHARE_KEYS["digits" if source == "digits" else "files"]
    for k in ("train_dev", "dev", "test"):
        if sizes[k] < TINY_SPLIT:
            warnings.append(f"{where}: the {k.replace('_', '-')} set has {sizes[k]} examples (one error is "
                            f"{100 / sizes[k]:.1f} points); aim for at least {TINY_SPLIT}: raise {keys[k]} "
                            "or add data")
    h = float(human_level_error or 0.0)
    if 0.0 < h < 1.0:
        need = human_resolvable_n(h)
        for k in ("dev", "test"):
            if sizes[k] < need:
                warnings.append(f"{where}: the {k} set has {sizes[k]} examples; telling an error at "
                                f"human_level_error={h} from twice that (95% interval) needs about {need}")
    splits = (data.manifest or {}).get("splits") or {}
    if splits:
        files = {s: [p for part in ("source", "target") for p in splits.get(s, {}).get(part, [])
                     if isinstance(p, str)] for s in ("train", "train_dev", "dev", "test")}
        if files["train"] and (files["dev"] or files["test"]):
            dups = find_duplicates(files["train"] + files["train_dev"], {"dev": files["dev"], "test": files["test"]})
            if dups:
                shown = "; ".join(f"{a} (train) = {b} ({s})" for a, s, b in dups[:3])
                raise DataError(f"{where}: {len(dups)} file(s) in dev/test have the same content as a training file "
                                f"(SHA-256): {shown}; remove the copies so that dev and test measure unseen data")
    return warnings

