"""Second augmentation backend: torchvision.transforms.v2 (a built-in plugin, ``augment_tv2``).

Learned and random policies (``magnitude`` m in [0, 1]):

=================== ==========================================================================
tv2_autoaugment     AutoAugment, ImageNet policy (Cubuk et al. 2019, "AutoAugment: learning
                    augmentation strategies from data"); the policy has no strength knob, so m is
                    the probability that it is applied to an image
tv2_randaugment     RandAugment, 2 ops, magnitude round(30m) of 31 bins (Cubuk et al. 2020,
                    "RandAugment: practical automated data augmentation with a reduced search
                    space"); the identity at m = 0
tv2_trivialaugment  TrivialAugmentWide (Mueller and Hutter 2021), applied with probability m
=================== ==========================================================================

and ``tv2_flip``, ``tv2_crop``, ``tv2_standard``, ``tv2_heavy``: the same steps as the
albumentations policies of the same names (see :mod:`dlops_plugins.augment.policies`), for side
by side comparisons (``bench/augment_throughput.py``). Local warps: elastic or perspective
(torchvision has no grid distortion); PCA colour augmentation is :class:`PCALighting`.

Same factory contract as every policy: ``factory(magnitude, image_size, train)`` returns a
callable (H, W, C) uint8 numpy -> (H', W', C) uint8 numpy. torchvision draws from torch's global
generator, which torch seeds per DataLoader worker and epoch: reproducible under ``torch.manual_seed``.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable

import numpy as np

from dlops import hookimpl
from dlops.data.policy import Policy, check_magnitude

POLICIES = ("tv2_autoaugment", "tv2_randaugment", "tv2_trivialaugment",
            "tv2_flip", "tv2_crop", "tv2_standard", "tv2_heavy")


def pca_lighting(img: Any, alpha_std: float) -> Any:
    """PCA colour augmentation of one image (Krizhevsky et al. 2012, section 4.1).

    Adds ``sum_i a_i * lambda_i * p_i`` to every pixel, with (lambda_i, p_i) the eigenvalues and
    eigenvectors of the image's RGB covariance and a_i ~ N(0, alpha_std); per image, as
    albumentations' FancyPCA does.

    Args:
        img: (C, H, W) uint8 tensor.
        alpha_std: standard deviation of a_i (the paper uses 0.1).

    Returns:
        (C, H, W) uint8 tensor.
    """
    import torch

    if alpha_std <= 0:
        return img
    c = img.shape[0]
    x = img.reshape(c, -1).to(torch.float32) / 255.0
    x = x - x.mean(dim=1, keepdim=True)
    cov = (x @ x.T) / max(x.shape[1] - 1, 1)
    evals, evecs = torch.linalg.eigh(cov)
    a = torch.randn(c) * alpha_std
    delta = evecs @ (a * evals)
    out = img.to(torch.float32) + (delta * 255.0).view(c, 1, 1)
    return out.clamp_(0, 255).round_().to(torch.uint8)


class PCALighting:
    """A tv2-compatible callable on (C, H, W) uint8 tensors; see :func:`pca_lighting`."""

    def __init__(self, alpha_std: float = 0.1) -> None:
        self.alpha_std = float(alpha_std)

    def __call__(self, img: Any) -> Any:
        return pca_lighting(img, self.alpha_std)

    def __repr__(self) -> str:
        return f"PCALighting(alpha_std={self.alpha_std:g})"


def _size(image_size: int | None, shape: tuple[int, int]) -> list[int]:
    return [image_size, image_size] if image_size is not None else [shape[0], shape[1]]


def _build(name: str, m: float, image_size: int | None, shape: tuple[int, int, int]) -> Any:
    from torchvision.transforms import v2

    h, w, c = shape
    size = _size(image_size, (h, w))
    side = float(min(size))
    if name == "tv2_autoaugment":
        return v2.RandomApply([v2.AutoAugment(v2.AutoAugmentPolicy.IMAGENET)], p=m)
    if name == "tv2_randaugment":
        if m == 0:  # RandAugment's magnitude-free ops (equalize, autocontrast) would still apply
            return v2.Identity()
        return v2.RandAugment(num_ops=2, magnitude=int(round(30 * m)), num_magnitude_bins=31)
    if name == "tv2_trivialaugment":
        return v2.RandomApply([v2.TrivialAugmentWide()], p=m)
    if name == "tv2_flip":
        return v2.RandomHorizontalFlip(p=0.5 * min(1.0, 2.0 * m))
    if name == "tv2_crop":
        r = 1.0 + 0.33 * m
        return v2.RandomResizedCrop(size, scale=(1.0 - 0.75 * m, 1.0), ratio=(1.0 / r, r), antialias=False)
    r = 1.0 + 0.2 * m
    colour = (v2.ColorJitter(brightness=0.4 * m, contrast=0.4 * m, saturation=0.4 * m, hue=0.05 * m)
              if c == 3 else v2.ColorJitter(brightness=0.4 * m, contrast=0.4 * m))
    steps: list[Any] = [
        v2.RandomHorizontalFlip(p=0.5),
        v2.RandomResizedCrop(size, scale=(1.0 - 0.5 * m, 1.0), ratio=(1.0 / r, r), antialias=False),
        v2.RandomApply([v2.RandomAffine(degrees=15.0 * m, shear=(-10.0 * m, 10.0 * m, 0.0, 0.0))], p=0.7),
        v2.RandomApply([colour], p=0.8),
    ]
    if name == "tv2_heavy":
        steps += [
            v2.RandomApply([v2.RandomChoice([
                v2.ElasticTransform(alpha=1.2 * m * side, sigma=max(0.14 * side, 1.0)),
                v2.RandomPerspective(distortion_scale=max(0.2 * m, 1e-6), p=1.0),
            ])], p=0.5),
            v2.RandomApply([PCALighting(0.2 * m)], p=0.5),
        ]
    return v2.Compose(steps)


class TorchvisionPolicy(Policy):
    """A policy backed by a torchvision.transforms.v2 pipeline, one per input shape."""

    backend = "torchvision.transforms.v2"

    def __init__(self, name: str, magnitude: float, image_size: int | None, train: bool,
                 seed: int | None = None) -> None:
        super().__init__(name, magnitude, image_size, train, seed)
        self._pipelines: dict[tuple[int, int, int], Any] = {}

    def pipeline(self, shape: tuple[int, int, int]) -> Any:
        """The tv2 transform used for (H, W, C) inputs of ``shape`` (on (C, H, W) uint8 tensors)."""
        t = self._pipelines.get(shape)
        if t is None:
            t = self._pipelines[shape] = _build(self.name, self.magnitude, self.image_size, shape)
        return t

    def _ensure_seeded(self) -> None:  # torch's global generator: seeded by torch itself
        pass

    def _apply(self, image: np.ndarray) -> np.ndarray:
        import torch

        x = torch.from_numpy(image).permute(2, 0, 1)
        y = self.pipeline((image.shape[0], image.shape[1], image.shape[2]))(x)
        return np.ascontiguousarray(y.permute(1, 2, 0).numpy())

    def _pipeline_description(self, shape: tuple[int, int, int]) -> Any:
        t = self.pipeline(shape)
        steps = getattr(t, "transforms", [t])
        return {"class": type(t).__name__,
                "transforms": [{"class": type(s).__name__, "repr": repr(s)} for s in steps]}

    def _backend_version(self) -> str:
        import torchvision

        return torchvision.__version__


def _factory(name: str, magnitude: float = 0.5, image_size: int | None = None, train: bool = True,
             seed: int | None = None) -> Policy:
    check_magnitude(magnitude)
    return TorchvisionPolicy(name, magnitude, image_size, train, seed)


def make_policy(name: str, magnitude: float = 0.5, image_size: int | None = None,
                train: bool = True) -> Policy:
    """Build tv2 policy ``name``.

    Raises:
        ValueError: unknown name or magnitude outside [0, 1].
    """
    if name not in POLICIES:
        raise ValueError(f"unknown torchvision policy {name!r}; available: {list(POLICIES)}")
    return _factory(name, magnitude, image_size, train)


@hookimpl
def dlops_augment_policies() -> dict[str, Callable[..., Policy]]:
    return {n: partial(_factory, n) for n in POLICIES}
