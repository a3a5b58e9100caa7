"""Multi-label (multi-task) heads: one sigmoid output per label, missing labels left out.

A multi-label network is any :func:`dlops.models.create_model` network with
``num_outputs = L`` labels; its (N, L) logits go through a sigmoid, not a softmax. Targets are
(N, L) floats: 1 positive, 0 negative, and NaN or -1 for a label not annotated on that example
(the multi-task case where not every image has every label). Missing entries are left out of
the loss and of every metric, as in the multi-task loss of "structuring ML projects"
(sum over the labelled entries only).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["best_thresholds", "masked_bce_with_logits", "multilabel_metrics", "observed_mask"]


def observed_mask(targets: Any) -> Any:
    """Where a target is observed: finite and >= 0 (NaN, -1 or any negative value means missing).

    Works on torch tensors and numpy arrays alike; returns the same kind, dtype bool.
    """
    try:
        import torch

        if isinstance(targets, torch.Tensor):
            return torch.isfinite(targets) & (targets >= 0)
    except ImportError:  # pragma: no cover
        pass
    t = np.asarray(targets, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return np.isfinite(t) & (t >= 0)


def masked_bce_with_logits(
    logits: torch.Tensor,
    targets: torch.Tensor,
    pos_weight: torch.Tensor | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """Binary cross-entropy over the observed labels only.

    ``loss = sum_{i,l observed} BCE(sigmoid(logits[i,l]), targets[i,l]) / #observed`` (``mean``)
    or the plain sum (``sum``). With nothing observed the loss is 0 (still differentiable).

    Args:
        logits: (N, L) raw scores.
        targets: (N, L) float; 1/0 (or soft labels in [0, 1]); NaN or -1 (any negative
            value) where missing.
        pos_weight: optional (L,) weight of the positive term per label (as in
            ``torch.nn.BCEWithLogitsLoss``).
        reduction: ``"mean"`` (over observed entries) or ``"sum"``.

    Returns:
        A scalar tensor (nats per observed label for ``mean``).

    Raises:
        ValueError: shapes differ or are not 2-D, an observed target outside [0, 1], or an
            unknown ``reduction``.
    """
    import torch
    import torch.nn.functional as F

    if logits.ndim != 2 or logits.shape != targets.shape:
        raise ValueError(f"logits and targets must both be (N, L); got {tuple(logits.shape)} and {tuple(targets.shape)}")
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    targets = targets.to(dtype=logits.dtype)
    mask = observed_mask(targets)
    if bool((targets[mask] > 1).any()):
        raise ValueError("observed targets must be in [0, 1] (use NaN or -1 for a missing label)")
    safe = torch.where(mask, targets, torch.zeros_like(targets))
    loss = F.binary_cross_entropy_with_logits(logits, safe, pos_weight=pos_weight, reduction="none")
    loss = loss * mask
    total = loss.sum()
    if reduction == "sum":
        return total
    return total / mask.sum().clamp_min(1)


def _np(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _thresholds(thresholds: float | Sequence[float] | np.ndarray, n_labels: int) -> np.ndarray:
    th = np.asarray(_np(thresholds), dtype=np.float64)
    if th.ndim == 0:
        th = np.full(n_labels, float(th))
    if th.shape != (n_labels,):
        raise ValueError(f"thresholds must be a float or have one value per label ({n_labels}); got shape {th.shape}")
    if np.any(~np.isfinite(th)) or np.any(th < 0) or np.any(th > 1):
        raise ValueError("thresholds must be probabilities in [0, 1]")
    return th


def multilabel_metrics(
    probs: Any,
    targets: Any,
    thresholds: float | Sequence[float] | np.ndarray = 0.5,
    label_names: Sequence[str] | None = None,
    zero_division: float = 0.0,
) -> dict[str, float]:
    """Per-label and mean error and F1 of thresholded sigmoid outputs, missing labels ignored.

    A label is predicted positive when ``probs >= threshold``. For label l over its observed
    examples: error = wrong / observed (a fraction, not percent); precision = tp / (tp + fp);
    recall = tp / (tp + fn); F1 = 2 / (1/p + 1/r) = 2 tp / (2 tp + fp + fn). F1 with
    ``tp + fp + fn == 0`` is ``zero_division`` (as scikit-learn's ``f1_score``). A label with no
    observed example gets NaN and is left out of the means.

    Args:
        probs: (N, L) probabilities in [0, 1] (numpy or torch).
        targets: (N, L) 1/0 with NaN or -1 for missing (soft targets are rounded at 0.5).
        thresholds: one threshold for every label, or (L,) per label.
        label_names: names for the per-label keys (default ``"0"``, ``"1"``...).
        zero_division: F1 (and precision/recall) when undefined.

    Returns:
        Flat dict (slash-separated names, for MLflow): ``error`` and ``f1`` (means over labels
        with observed examples), ``micro_f1`` (tp/fp/fn pooled over labels), ``observed``
        (fraction of entries observed), and per label ``error/<name>``, ``f1/<name>``,
        ``precision/<name>``, ``recall/<name>``, ``support/<name>`` (observed examples).

    Raises:
        ValueError: shapes differ or are not 2-D, bad thresholds, or a wrong number of names.
    """
    p, t = _np(probs), _np(targets)
    if p.ndim != 2 or p.shape != t.shape:
        raise ValueError(f"probs and targets must both be (N, L); got {p.shape} and {t.shape}")
    n_labels = p.shape[1]
    names = [str(i) for i in range(n_labels)] if label_names is None else [str(n) for n in label_names]
    if len(names) != n_labels:
        raise ValueError(f"{len(names)} label names for {n_labels} labels")
    th = _thresholds(thresholds, n_labels)
    mask = observed_mask(t)
    pred = p >= th[None, :]
    truth = np.where(mask, t, 0.0) >= 0.5
    tp = ((pred & truth) & mask).sum(axis=0).astype(np.float64)
    fp = ((pred & ~truth) & mask).sum(axis=0).astype(np.float64)
    fn = ((~pred & truth) & mask).sum(axis=0).astype(np.float64)
    support = mask.sum(axis=0).astype(np.float64)

    def ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
        out = np.full_like(num, float(zero_division))
        np.divide(num, den, out=out, where=den > 0)
        return out

    precision = ratio(tp, tp + fp)
    recall = ratio(tp, tp + fn)
    f1 = ratio(2 * tp, 2 * tp + fp + fn)
    error = np.full(n_labels, np.nan)
    np.divide(fp + fn, support, out=error, where=support > 0)
    has = support > 0
    for a in (precision, recall, f1):
        a[~has] = np.nan
    out: dict[str, float] = {
        "error": float(np.mean(error[has])) if has.any() else float("nan"),
        "f1": float(np.mean(f1[has])) if has.any() else float("nan"),
        "micro_f1": float(ratio(np.array([2 * tp.sum()]), np.array([2 * tp.sum() + fp.sum() + fn.sum()]))[0]),
        "observed": float(mask.mean()) if mask.size else float("nan"),
    }
    for i, n in enumerate(names):
        out[f"error/{n}"] = float(error[i])
        out[f"f1/{n}"] = float(f1[i])
        out[f"precision/{n}"] = float(precision[i])
        out[f"recall/{n}"] = float(recall[i])
        out[f"support/{n}"] = float(support[i])
    return out


def best_thresholds(probs: Any, targets: Any, grid: Sequence[float] | None = None) -> np.ndarray:
    """Per-label thresholds that maximise each label's F1 on (dev) data, missing labels ignored.

    Tune on dev, then report test with these thresholds (tuning on test overfits to it).

    Args:
        probs: (N, L) probabilities.
        targets: (N, L) 1/0 with NaN or -1 for missing.
        grid: candidate thresholds (default 0.05, 0.10, ..., 0.95); ties go to the one closest
            to 0.5.

    Returns:
        (L,) float64 thresholds (0.5 for a label with no observed positive).

    Raises:
        ValueError: as :func:`multilabel_metrics`.
    """
    p, t = _np(probs), _np(targets)
    if p.ndim != 2 or p.shape != t.shape:
        raise ValueError(f"probs and targets must both be (N, L); got {p.shape} and {t.shape}")
    cands = np.asarray(grid if grid is not None else np.round(np.arange(1, 20) * 0.05, 2), dtype=np.float64)
    cands = cands[np.argsort(np.abs(cands - 0.5), kind="stable")]  # ties -> closest to 0.5
    mask = observed_mask(t)
    truth = np.where(mask, t, 0.0) >= 0.5
    out = np.full(p.shape[1], 0.5)
    for j in range(p.shape[1]):
        m = mask[:, j]
        if not (truth[m, j]).any():
            continue
        pj, tj = p[m, j], truth[m, j]
        scores = []
        for c in cands:
            pr = pj >= c
            tp = float((pr & tj).sum())
            den = 2 * tp + float((pr & ~tj).sum()) + float((~pr & tj).sum())
            scores.append(2 * tp / den if den else 0.0)
        out[j] = cands[int(np.argmax(scores))]
    return out
