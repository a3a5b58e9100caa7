"""Built-in augmentation policies on albumentations 2 (the practice's list: mirroring, random
crop, rotation, shearing, local warping, colour shift, PCA colour augmentation).

Policies (``magnitude`` m in [0, 1]; every step is the identity at m = 0):

========== ================================================================================
none       identity
flip       horizontal mirroring, p = 0.5 * min(1, 2m)
crop       random resized crop to ``image_size``: area scale in [1 - 0.75m, 1], aspect ratio in
           [1 / (1 + 0.33m), 1 + 0.33m] (Szegedy et al. 2015, "Going deeper with convolutions")
standard   flip (p 0.5) -> random resized crop (scale [1 - 0.5m, 1]) -> affine, p 0.7: rotation
           +-15m degrees and shear +-10m degrees -> colour shift, p 0.8: brightness, contrast and
           saturation +-0.4m, hue +-0.05m (one channel: brightness and contrast only)
heavy      standard, then one local warp with p = 0.5 (elastic, Simard et al. 2003, sigma 0.14
           of the side and alpha 1.2m of the side; grid distortion, limit 0.3m; perspective,
           scale up to 0.1m), then PCA colour augmentation (FancyPCA, Krizhevsky et al. 2012,
           "ImageNet classification with deep convolutional neural networks", alpha std 0.2m), p 0.5
========== ================================================================================

Each factory has the signature ``factory(magnitude, image_size, train) -> AlbumentationsPolicy``;
the policy maps an (H, W, C) uint8 image to (S, S, C) uint8 with S = ``image_size`` (or the
input size when None; flip keeps the input size). ``policy.describe(shape)`` /
``policy.serialized`` give ``albumentations.to_dict`` of the exact pipeline; see
:mod:`dlops.data.policy` for seeding and :func:`~dlops.data.policy.policy_param`.
"""

from __future__ import annotations

import random
from functools import partial
from typing import Any, Callable

import numpy as np

from dlops import hookimpl
from dlops.data.policy import IdentityPolicy, Policy, check_magnitude

POLICIES = ("none", "flip", "crop", "standard", "heavy")

Shape = tuple[int, int, int]


def _flip(A: Any, m: float, size: tuple[int, int], c: int, in_size: tuple[int, int]) -> list:
    return [A.HorizontalFlip(p=0.5 * min(1.0, 2.0 * m))]


def _crop(A: Any, m: float, size: tuple[int, int], c: int, in_size: tuple[int, int]) -> list:
    r = 1.0 + 0.33 * m
    return [A.RandomResizedCrop(size=size, scale=(1.0 - 0.75 * m, 1.0), ratio=(1.0 / r, r), p=1.0)]


def _colour(A: Any, m: float, c: int) -> Any:
    if c == 3:
        return A.ColorJitter(brightness=0.4 * m, contrast=0.4 * m, saturation=0.4 * m, hue=0.05 * m, p=0.8)
    return A.RandomBrightnessContrast(brightness_limit=0.4 * m, contrast_limit=0.4 * m, p=0.8)


def _standard(A: Any, m: float, size: tuple[int, int], c: int, in_size: tuple[int, int]) -> list:
    r = 1.0 + 0.2 * m
    return [
        A.HorizontalFlip(p=0.5),
        A.RandomResizedCrop(size=size, scale=(1.0 - 0.5 * m, 1.0), ratio=(1.0 / r, r), p=1.0),
        A.Affine(rotate=(-15.0 * m, 15.0 * m), shear={"x": (-10.0 * m, 10.0 * m), "y": (0.0, 0.0)},
                 border_mode=0, fill=0, p=0.7),
        _colour(A, m, c),
    ]


def _heavy(A: Any, m: float, size: tuple[int, int], c: int, in_size: tuple[int, int]) -> list:
    side = float(min(size))
    warp = A.OneOf([
        A.ElasticTransform(alpha=1.2 * m * side, sigma=max(0.14 * side, 1.0), border_mode=0, p=1.0),
        A.GridDistortion(num_steps=max(2, min(5, int(side) // 4)), distort_limit=(-0.3 * m, 0.3 * m),
                         border_mode=0, p=1.0),
        A.Perspective(scale=(0.0, max(0.1 * m, 1e-6)), keep_size=True, border_mode=0, p=1.0),
    ], p=0.5)
    return _standard(A, m, size, c, in_size) + [warp, A.FancyPCA(alpha=0.2 * m, p=0.5)]


_BUILDERS: dict[str, Callable[..., list]] = {"flip": _flip, "crop": _crop, "standard": _standard, "heavy": _heavy}


class AlbumentationsPolicy(Policy):
    """A policy backed by one ``albumentations.Compose`` per input shape (built lazily).

    Every pipeline of the policy shares one numpy and one Python generator (one random stream,
    so the steps' decisions are not correlated), reseeded per DataLoader worker and epoch.
    """

    backend = "albumentations"

    def __init__(self, name: str, builder: Callable[..., list], magnitude: float,
                 image_size: int | None, train: bool, seed: int | None = None) -> None:
        super().__init__(name, magnitude, image_size, train, seed)
        self._builder = builder
        self._pipelines: dict[Shape, Any] = {}
        self._rng: tuple[np.random.Generator, random.Random] | None = None

    def _set_rng(self, rng: np.random.Generator, py: random.Random) -> None:
        self._rng = (rng, py)
        for comp in self._pipelines.values():
            comp.set_random_state(rng, py)

    def pipeline(self, shape: Shape) -> Any:
        """The ``albumentations.Compose`` used for (H, W, C) inputs of ``shape``."""
        comp = self._pipelines.get(shape)
        if comp is None:
            import albumentations as A

            h, w, c = shape
            size = (self.image_size, self.image_size) if self.image_size is not None else (h, w)
            steps = self._builder(A, self.magnitude, size, c, (h, w)) if self.train else []
            comp = A.Compose(steps, p=1.0, is_check_shapes=False)
            if self._rng is not None:
                comp.set_random_state(*self._rng)
            self._pipelines[shape] = comp
        return comp

    def _apply(self, image: np.ndarray) -> np.ndarray:
        shape = (image.shape[0], image.shape[1], image.shape[2])
        return self.pipeline(shape)(image=image)["image"]

    def _pipeline_description(self, shape: Shape) -> Any:
        import albumentations as A

        return A.to_dict(self.pipeline(shape))

    def _backend_version(self) -> str:
        import albumentations as A

        return A.__version__


def _factory(name: str, magnitude: float = 0.5, image_size: int | None = None, train: bool = True,
             seed: int | None = None) -> Policy:
    check_magnitude(magnitude)
    if name == "none":
        return IdentityPolicy("none", magnitude, image_size, train, seed)
    return AlbumentationsPolicy(name, _BUILDERS[name], magnitude, image_size, train, seed)


def make_policy(name: str, magnitude: float = 0.5, image_size: int | None = None, train: bool = True,
                seed: int | None = None) -> Policy:
    """Build built-in policy ``name`` (see the module docstring).

    Raises:
        ValueError: unknown name or magnitude outside [0, 1].
    """
    if name not in POLICIES:
        raise ValueError(f"unknown albumentations policy {name!r}; available: {list(POLICIES)}")
    return _factory(name, magnitude, image_size, train, seed)


@hookimpl
def dlops_augment_policies() -> dict[str, object]:
    return {n: partial(_factory, n) for n in POLICIES}
