"""Image transforms shared by training, evaluation and serving.

``build_transform`` returns one callable that maps an (H, W, C) image to a (C, H, W) float32
tensor: augmentation policy (train only, from a plugin) -> resize -> scale to [0, 1] -> normalise.
Evaluation and serving call exactly the evaluation transform of training (``train=False``).
Inputs may be uint8 in [0, 255] or float in [0, 1]: both give the same tensor, so nothing is
normalised twice.

Raw images of any size (files, request bytes) are first brought to the model's input size by
:func:`resize_image` (Pillow's bilinear filter on uint8, antialiased when shrinking: what the
image-folder and list sources do when they load files). :func:`eval_transform` and
:func:`preprocess_images` are the one evaluation path of a registered model's ``model_spec``:
``dlops report``, the register phase and serving (:mod:`dlops.serving.inputs`) call them.
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


#: the resize filter of :func:`resize_image` (Pillow's name), as GET of ``dlops serve`` documents it
RESIZE_INTERPOLATION = "bilinear"


def resize_image(image: np.ndarray, size: int | None) -> np.ndarray:
    """(H, W, C) uint8 -> (size, size, C) uint8 with Pillow's bilinear filter (antialiased when
    shrinking); the one resize of raw images (training's file loaders and serving).

    A float image in [0, 1] is first quantised to uint8 (:func:`to_uint8`, at most 0.5/255 off), so
    an image and the same image as float in [0, 1] resize to the same pixels. ``size`` None or equal
    to the image's side returns the image unchanged (a uint8 copy for floats).

    Raises:
        ValueError: not (H, W) or (H, W, C); a float image outside [0, 1].
    """
    from PIL import Image

    img = np.asarray(image)
    if img.ndim == 2:
        img = img[:, :, None]
    if img.ndim != 3:
        raise ValueError(f"images must be (H, W, C) or (H, W), got shape {img.shape}")
    if size is None or (img.shape[0] == size and img.shape[1] == size):
        return img
    u8 = to_uint8(img)
    c = u8.shape[2]
    if c in (1, 3):
        out = np.asarray(Image.fromarray(u8[..., 0] if c == 1 else u8).resize((size, size), Image.BILINEAR))
    else:  # other channel counts: the same filter per channel
        out = np.stack([np.asarray(Image.fromarray(u8[..., k]).resize((size, size), Image.BILINEAR))
                        for k in range(c)], axis=-1)
    if out.ndim == 2:
        out = out[:, :, None]
    return np.ascontiguousarray(out)


def eval_transform(spec: dict) -> Callable[[np.ndarray], Any]:
    """The evaluation transform of a model spec (``image_size``, ``mean``, ``std``): the
    :func:`build_transform` of training with ``train=False``.

    Raises:
        KeyError: the spec lacks ``mean`` or ``std``.
        ValueError: bad mean/std (see :func:`build_transform`).
    """
    return build_transform("none", 0.0, spec.get("image_size"), spec["mean"], spec["std"], train=False)


def preprocess_images(images: Sequence[np.ndarray], spec: dict, transform: Any = None) -> np.ndarray:
    """Raw images -> the model's input: each (H_i, W_i, C) uint8 (or float in [0, 1]) image resized
    by :func:`resize_image` to the spec's ``image_size``, then the spec's :func:`eval_transform`.

    Args:
        images: a sequence of (H, W, C) or (H, W) arrays, sizes may differ; C is 1 or the spec's
            channel count.
        spec: a model spec (``image_size``, ``mean``, ``std``).
        transform: a prebuilt :func:`eval_transform` of ``spec`` (built here when None).

    Returns:
        float32 numpy array (N, C, S, S), S = ``spec["image_size"]``.

    Raises:
        ValueError: an image that is not 2-D/3-D, a float image outside [0, 1], or a channel count
            that matches neither the spec's mean/std nor 1.
    """
    t = transform or eval_transform(spec)
    size = spec.get("image_size")
    size = int(size) if size is not None else None
    resized = [resize_image(im, size) for im in images]
    if not resized:
        return np.zeros((0, len(spec.get("mean") or [1]), size or 0, size or 0), dtype=np.float32)
    batch = getattr(t, "batch", None)
    if batch is not None and len({r.shape for r in resized}) == 1:
        return batch(np.stack(resized)).numpy()
    import torch

    return torch.stack([t(r) for r in resized]).numpy()
