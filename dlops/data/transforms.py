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
        mean, std: per-channel normalisation, in [0, 1] units; length C, or 1 (same for every
            channel). A one-channel image with 3-value mean/std is replicated to 3 channels.
        train: training transform (policy applied) or evaluation transform (no policy).
        registry: a :class:`dlops.plugins.PluginRegistry` (default: the process one).

    Returns:
        ``f(image (H, W, C) uint8 or float [0,1]) -> torch.Tensor (C, image_size, image_size) float32``.
        ``f.policy`` is the augmentation policy object (None for evaluation or ``"none"``); for
        built-in policies ``f.policy.describe()`` gives the exact pipeline, to log to MLflow.
        ``f.batch`` (None when a policy augments) maps (B, H, W, C) to (B, C, S, S), equal to
        stacking ``f`` of each image.

    Raises:
        dlops.plugins.PluginError: unknown policy name.
        ValueError: std <= 0 or mean/std of different lengths (at build time); at call time, a
            float image outside [0, 1] or a channel count that matches neither mean nor 1.
    """
    aug = None
    if train and policy != "none":
        if registry is None:
            from dlops.plugins import get_registry

            registry = get_registry()
        factory = registry.get("augment_policies", policy)
        aug = factory(magnitude=magnitude, image_size=image_size, train=True)
    mean_a = np.asarray(mean, dtype=np.float32).ravel()
    std_a = np.asarray(std, dtype=np.float32).ravel()
    if mean_a.size == 0 or std_a.size == 0 or np.any(std_a <= 0):
        raise ValueError(f"mean and std need at least one value each and std > 0; got mean={mean}, std={std}")
    n_norm = max(mean_a.size, std_a.size)
    if mean_a.size not in (1, n_norm) or std_a.size not in (1, n_norm):
        raise ValueError(f"mean and std must have the same length (or length 1); got {mean_a.size} and {std_a.size}")
    mean_t = std_t = None  # torch tensors, built on first call (torch imported lazily)

    def norm_tensors():
        nonlocal mean_t, std_t
        import torch

        if mean_t is None:
            mean_t = torch.from_numpy(np.broadcast_to(mean_a, (n_norm,)).copy()).view(-1, 1, 1)
            std_t = torch.from_numpy(np.broadcast_to(std_a, (n_norm,)).copy()).view(-1, 1, 1)
        return mean_t, std_t

    def transform(image: np.ndarray):
        import torch

        mean_t, std_t = norm_tensors()
        img = np.asarray(image)
        if img.ndim == 2:
            img = img[:, :, None]
        if img.ndim != 3:
            raise ValueError(f"images must be (H, W, C) or (H, W), got shape {img.shape}")
        if aug is not None:
            img = aug(to_uint8(img))
            if img.ndim == 2:
                img = img[:, :, None]
        if img.dtype == np.uint8:
            x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).contiguous().to(torch.float32)
            x.div_(255.0)
        else:
            # to_unit_float copies (astype), so the in-place ops below never touch the caller's array
            x = torch.from_numpy(np.ascontiguousarray(to_unit_float(img))).permute(2, 0, 1).contiguous()
        c = x.shape[0]
        if n_norm > 1 and c != n_norm:
            if c != 1:
                raise ValueError(f"image has {c} channels but mean/std have {n_norm} values")
            x = x.repeat(n_norm, 1, 1)  # grayscale -> n_norm identical channels (e.g. RGB backbones)
        if image_size is not None and (x.shape[1] != image_size or x.shape[2] != image_size):
            x = torch.nn.functional.interpolate(x[None], size=(image_size, image_size), mode="bilinear",
                                                align_corners=False)[0]
        return x.sub_(mean_t).div_(std_t)

    def batch(images: np.ndarray):
        """(B, H, W, C) images -> (B, C, S, S): the same tensor as stacking ``transform`` of each
        image (same ops, batched). Only for transforms without an augmentation policy."""
        import torch

        mean_t, std_t = norm_tensors()
        img = np.asarray(images)
        if img.ndim == 3:
            img = img[..., None]
        if img.ndim != 4:
            raise ValueError(f"a batch of images must be (B, H, W, C) or (B, H, W), got shape {img.shape}")
        src = torch.from_numpy(np.ascontiguousarray(img if img.dtype == np.uint8 else to_unit_float(img)))
        b, h, w, c = src.shape
        # a fresh tensor with the standard (B, C, H, W) strides, as torch.stack gives (with C = 1,
        # permute().contiguous() would keep other strides, and conv kernels may then differ)
        x = torch.empty((b, c, h, w), dtype=torch.float32).copy_(src.permute(0, 3, 1, 2))
        if img.dtype == np.uint8:
            x.div_(255.0)
        if n_norm > 1 and c != n_norm:
            if c != 1:
                raise ValueError(f"image has {c} channels but mean/std have {n_norm} values")
            x = x.repeat(1, n_norm, 1, 1)
        if image_size is not None and (x.shape[2] != image_size or x.shape[3] != image_size):
            x = torch.nn.functional.interpolate(x, size=(image_size, image_size), mode="bilinear",
                                                align_corners=False)
        return x.sub_(mean_t).div_(std_t)

    transform.policy = aug  # type: ignore[attr-defined]
    transform.train = train  # type: ignore[attr-defined]
    # batched form for loaders (dlops.train.loop.make_loader); None when a policy augments per image
    transform.batch = batch if aug is None else None  # type: ignore[attr-defined]
    return transform
