"""A third-party dlops plugin (entry point group ``dlops``), installed by dlops's tests.

Provides the augmentation policy ``test_invert`` (photographic negative, applied with
probability ``magnitude``) and the reporter ``test_split_count`` (metric
``test_split_count/n_splits``: how many splits have predictions).
"""

from __future__ import annotations

import numpy as np

from dlops import hookimpl
from dlops.reporting import Report


class InvertPolicy:
    """(H, W, C) uint8 -> (H, W, C) uint8: ``255 - image`` with probability ``magnitude``."""

    def __init__(self, magnitude: float, image_size: int | None, train: bool) -> None:
        if not 0.0 <= float(magnitude) <= 1.0:
            raise ValueError(f"magnitude must be in [0, 1], got {magnitude}")
        self.magnitude, self.image_size, self.train = float(magnitude), image_size, train
        self._rng = np.random.default_rng(0)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        if self.train and self._rng.random() < self.magnitude:
            return 255 - image
        return image


class SplitCountReporter:
    name = "test_split_count"

    def report(self, context) -> Report:
        return Report(metrics={"test_split_count/n_splits": float(len(context.predictions))},
                      summary=f"{len(context.predictions)} splits")


@hookimpl
def dlops_augment_policies():
    return {"test_invert": InvertPolicy}


@hookimpl
def dlops_reporters():
    return {"test_split_count": SplitCountReporter()}
