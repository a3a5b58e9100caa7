"""Image transforms shared by training, evaluation and serving.

``build_transform`` returns one callable that maps an (H, W, C) image to a (C, H, W) float32
tensor: augmentation policy (train only, from a plugin) -> resize -> scale to [0, 1] -> normalise.
Evaluation and serving call exactly the evaluation transform of training (``train=False``).
Inputs may be uint8 in [0, 255] or float in [0, 1]: both give the same tensor, so nothing is
normalised twice.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np


def to_unit_float(image: np.ndarray) -> np.ndarray:
    """(H, W, C) uint8 [0, 255] or float [0, 1] -> float32 [0, 1].

    Raises:
        ValueError: a float image with values outside [0, 1] (probably already normalised).
    """
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255.0
    img = image.astype(np.float32)
    if img.size and (img.min() < -1e-6 or img.max() > 1 + 1e-6):
        raise ValueError(
            "float images must be in [0, 1]; got values in "
            f"[{img.min():.3g}, {img.max():.3g}] (already normalised? pass the raw image)"
        )
    return img


def to_uint8(image: np.ndarray) -> np.ndarray:
    """(H, W, C) uint8 or float [0, 1] -> uint8 (augmentation policies work on uint8)."""
    if image.dtype == np.uint8:
        return image
    return np.clip(np.rint(to_unit_float(image) * 255.0), 0, 255).astype(np.uint8)


def build_transform(
    policy: str = "none",
    magnitude: float = 0.5,
    image_size: int | None = None,
    mean: Sequence[float] = (0.5,),
    std: Sequence[float] = (0.5,),
    train: bool = True,
    registry: Any = None,
) -> Callable[[np.ndarray], Any]:
    """The transform of one split.

    Args:
        policy: augmentation policy name (a plugin's), applied only when ``train``.
        magnitude: policy strength in [0, 1].
        image_size: output side in pixels (None: keep the input size).
        mean, std: per-channel normalisation, in [0, 1] units.
        train: training transform (policy applied) or evaluation transform (no policy).
        registry: a :class:`dlops.plugins.PluginRegistry` (default: the process one).

    Returns:
        ``f(image (H, W, C) uint8 or float [0,1]) -> torch.Tensor (C, image_size, image_size) float32``.

    Raises:
        dlops.plugins.PluginError: unknown policy name.
    """
    aug = None
    if train and policy != "none":
        if registry is None:
            from dlops.plugins import get_registry

            registry = get_registry()
        factory = registry.get("augment_policies", policy)
        aug = factory(magnitude=magnitude, image_size=image_size, train=True)
    mean_a = np.asarray(mean, dtype=np.float32)
    std_a = np.asarray(std, dtype=np.float32)

    def transform(image: np.ndarray):
        import torch

        img = np.asarray(image)
        if img.ndim == 2:
            img = img[:, :, None]
        if aug is not None:
            img = aug(to_uint8(img))
            if img.ndim == 2:
                img = img[:, :, None]
        x = to_unit_float(img)
        if image_size is not None and (x.shape[0] != image_size or x.shape[1] != image_size):
            t = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None]
            x = torch.nn.functional.interpolate(t, size=(image_size, image_size), mode="bilinear",
                                                align_corners=False)[0].numpy().transpose(1, 2, 0)
        x = (x - mean_a) / std_a
        return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1), dtype=np.float32))

    return transform
