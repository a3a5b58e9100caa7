"""The tensor input: ``{"inputs": (N, C, H, W)}`` as nested JSON lists of numbers, preprocessed as
in training."""

from __future__ import annotations

from typing import Any

from dlops.errors import ServeError


def check_inputs(body: Any, shape: tuple[int, int, int]) -> Any:
    """The request's ``inputs`` as float32 (N, C, H, W).

    Raises:
        ServeError: no ``inputs`` key, anything but nested lists of numbers (strings, booleans and
            nulls are refused), a shape other than (N, *shape) with N >= 1, NaN or inf.
    """
    import numpy as np

    if not isinstance(body, dict) or "inputs" not in body:
        raise ServeError('request body: expected a JSON object {"inputs": [...]} of shape (N, %d, %d, %d)' % shape)
    def numbers_only(v: Any) -> bool:
        if isinstance(v, list):
            return all(numbers_only(e) for e in v)
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    if not numbers_only(body["inputs"]):
        raise ServeError("inputs: expected nested lists of numbers (no strings, booleans or nulls)")
    try:
        x = np.asarray(body["inputs"], dtype=np.float32)
    except (TypeError, ValueError):
        raise ServeError("inputs: not a rectangular numeric array (ragged lists)") from None
    if x.ndim != 4 or tuple(x.shape[1:]) != tuple(shape) or x.shape[0] < 1:
        raise ServeError(f"inputs: expected shape (N, {shape[0]}, {shape[1]}, {shape[2]}), got {tuple(x.shape)}")
    if not np.isfinite(x).all():
        raise ServeError("inputs: NaN or inf values")
    return x
