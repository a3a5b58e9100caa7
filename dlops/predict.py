"""Predicting with test-time augmentation (TTA): several views of each image, probabilities
averaged over the views. Shared by the main job's ensemble phase, the registered ensemble
(:mod:`dlops.ensemble`), ``dlops serve`` and the reports, so that they cannot drift.

Practice: Krizhevsky et al. 2012 (AlexNet) averaged the softmax of 10 patches per test image:
the four corner crops and the centre crop, and their horizontal mirrors; Ng, *Structuring ML
Projects*, "Tips for doing well on benchmarks" (multi-crop at test time). Here the input is
already preprocessed at the model's size, so each crop (``crop_fraction`` of the side) is resized
back to that size (bilinear, antialiased), as multi-scale TTA implementations do.

Modes (``TTA_MODES``), views per image:

* ``none``: 1 (the image itself);
* ``flip``: 2 (the image and its horizontal mirror);
* ``five_crop``: 5 (4 corners + centre);
* ``ten_crop``: 10 (the five crops of the image and of its mirror).

Mirroring changes the meaning of some images (digits, text): use ``none`` or ``five_crop`` there.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

TTA_MODES = ("none", "flip", "five_crop", "ten_crop")
VIEWS = {"none": 1, "flip": 2, "five_crop": 5, "ten_crop": 10}


def check_tta(mode: str, crop_fraction: float) -> None:
    """Raises ValueError naming the bad value: ``mode`` not in :data:`TTA_MODES`, or
    ``crop_fraction`` outside (0, 1]."""
    if mode not in TTA_MODES:
        raise ValueError(f"ensemble.tta: unknown mode {mode!r}; supported: {', '.join(TTA_MODES)}")
    if not 0.0 < float(crop_fraction) <= 1.0:
        raise ValueError(f"ensemble.crop_fraction must be in (0, 1], got {crop_fraction}")


def tta_views(x: Any, mode: str = "none", crop_fraction: float = 0.875) -> Any:
    """The views of a batch.

    Args:
        x: torch tensor (N, C, H, W), preprocessed as in training.
        mode: one of :data:`TTA_MODES`.
        crop_fraction: crop side / image side for the crop modes (fraction, (0, 1]); the crop side
            is ``max(1, round(fraction * side))`` per axis.

    Returns:
        Tensor (V, N, C, H, W), V = ``VIEWS[mode]``; view 0 is ``x`` itself for ``none`` and
        ``flip``, the top-left crop for the crop modes (torchvision's ``five_crop`` order: top-left,
        top-right, bottom-left, bottom-right, centre; ``ten_crop`` then the same five crops of the
        mirrored image).

    Raises:
        ValueError: a bad ``mode`` or ``crop_fraction``, or ``x`` not 4-D.
    """
    import torch
    from torchvision.transforms.v2 import functional as F

    check_tta(mode, crop_fraction)
    if x.ndim != 4:
        raise ValueError(f"tta_views: x must be (N, C, H, W), got shape {tuple(x.shape)}")
    if mode == "none":
        return x.unsqueeze(0)
    if mode == "flip":
        return torch.stack([x, F.horizontal_flip(x)])
    h, w = int(x.shape[-2]), int(x.shape[-1])
    size = [max(1, round(crop_fraction * h)), max(1, round(crop_fraction * w))]
    crops = F.ten_crop(x, size) if mode == "ten_crop" else F.five_crop(x, size)
    return torch.stack([F.resize(c, [h, w], antialias=True) if (c.shape[-2], c.shape[-1]) != (h, w) else c
                        for c in crops])


def predict_tta(predict: Callable[[Any], np.ndarray], x: Any, mode: str = "none",
                crop_fraction: float = 0.875) -> np.ndarray:
    """Mean of ``predict`` over the views of ``x`` (an unweighted mean over the V views), with one
    call of ``predict`` over all N * V views (not one per view).

    Args:
        predict: maps a tensor (B, C, H, W) to probabilities (B, K) (softmax rows or per-label
            sigmoids).
        x: tensor (N, C, H, W).
        mode, crop_fraction: see :func:`tta_views`.

    Returns:
        (N, K) float64 mean probabilities over the views (the mean of softmax rows still sums to 1).

    Raises:
        ValueError: as :func:`tta_views`.
    """
    views = tta_views(x, mode, crop_fraction)  # (V, N, C, H, W)
    v, n = int(views.shape[0]), int(views.shape[1])
    p = np.asarray(predict(views.reshape(v * n, *views.shape[2:])), dtype=np.float64)
    return p.reshape(v, n, -1).mean(axis=0)


def member_probabilities(models: Any, x: Any, task: str = "classification", mode: str = "none",
                         crop_fraction: float = 0.875, batch_size: int = 512) -> np.ndarray:
    """Each model's probabilities on ``x``, averaged over its test-time views: one forward over
    all N * V views, the members of one architecture stacked (:class:`dlops.stacked.StackedMembers`).

    Args:
        models: M torch modules (eval mode, on CPU), or a :class:`dlops.stacked.StackedMembers`
            built once from them (what a long-lived server keeps).
        x: tensor (N, C, H, W), preprocessed as in training.
        task: ``classification`` (softmax rows) or ``multilabel`` (one sigmoid per label).
        mode, crop_fraction: see :func:`tta_views`.
        batch_size: the most images (views) in one forward; x is cut into chunks of
            ``max(1, batch_size // V)`` images.

    Returns:
        (M, N, K) float64: what an ensemble method's ``combine`` takes.

    Raises:
        ValueError: as :func:`tta_views`.
    """
    import torch

    from dlops.stacked import StackedMembers

    members = models if isinstance(models, StackedMembers) else StackedMembers(models)
    v = VIEWS[mode] if mode in VIEWS else 1
    step = max(1, int(batch_size) // v)
    out = []
    for i in range(0, int(x.shape[0]), step):
        views = tta_views(x[i:i + step], mode, crop_fraction)  # (V, n, C, H, W)
        n = int(views.shape[1])
        logits = members(views.reshape(v * n, *views.shape[2:])).float()  # (M, V*n, K)
        prob = torch.sigmoid(logits) if task == "multilabel" else torch.softmax(logits, dim=-1)
        out.append(prob.double().numpy().reshape(len(members), v, n, -1).mean(axis=1))
    if not out:
        tta_views(x, mode, crop_fraction)  # the same ValueError for a bad mode or shape
        return np.zeros((len(members), 0, 0))
    return np.concatenate(out, axis=1)
