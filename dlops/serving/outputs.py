"""Probabilities from model outputs and the predictions a client reads (pure numpy)."""

from __future__ import annotations

from typing import Any


def probabilities(outputs: Any, task: str) -> Any:
    """Logits (N, K) -> probabilities: softmax over K for ``classification``, a sigmoid per
    label for ``multilabel``. Returns a float64 numpy array (N, K)."""
    import numpy as np

    z = np.asarray(outputs, dtype=np.float64)
    if task == "multilabel":
        return 1.0 / (1.0 + np.exp(-z))
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def decode(prob: Any, task: str, classes: list[str], threshold: float = 0.5) -> list[Any]:
    """Predictions from probabilities (N, K): the argmax class name per row (``classification``),
    or the label names with probability >= ``threshold`` (``multilabel``)."""
    import numpy as np

    p = np.asarray(prob)
    if task == "multilabel":
        return [[classes[j] for j in np.flatnonzero(row >= threshold)] for row in p]
    return [classes[int(j)] for j in p.argmax(axis=1)]
