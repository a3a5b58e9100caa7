"""Built-in ensemble method ``average``: average the class probabilities of 3-15 models.

Practice: ensembles of several independently trained networks, averaging their outputs, are a
standard way to win benchmarks (Ng, *Structuring ML Projects*, "Tips for doing well on
benchmarks"; Krizhevsky et al. 2012 averaged 5-7 CNNs). Averaging probabilities (not logits)
keeps each member's calibration comparable.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dlops import hookimpl


def average_probabilities(probs: Any, weights: Any = None) -> np.ndarray:
    """Average member probabilities.

    Args:
        probs: (M, N, C) array (M members, N examples, C classes); each row sums to 1.
        weights: optional (M,) non-negative member weights (normalised here).

    Returns:
        (N, C) averaged probabilities (rows sum to 1).

    Raises:
        ValueError: fewer than 1 member, a shape that is not (M, N, C), or bad weights.
    """
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 3 or p.shape[0] < 1:
        raise ValueError(f"probs must be (M, N, C) with M >= 1, got shape {p.shape}")
    if weights is None:
        return p.mean(axis=0)
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (p.shape[0],) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError(f"weights must be (M,) = ({p.shape[0]},), non-negative, not all zero; got {w}")
    return np.tensordot(w / w.sum(), p, axes=1)


class AverageMethod:
    """The ``average`` ensemble method: the unweighted mean of the members' probabilities."""

    name = "average"
    description = "mean of class probabilities"

    def combine(self, probs: Any) -> np.ndarray:
        """(M, N, K) member probabilities -> (N, K) their mean (see :func:`average_probabilities`)."""
        return average_probabilities(probs)


@hookimpl
def dlops_ensemble_methods() -> dict[str, object]:
    return {"average": AverageMethod()}
