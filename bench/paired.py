"""Paired-ratio statistics for the benchmarks that measure two paths side by side (ABAB repeats).

``paired_ratio_ci(a, b)``: the geometric mean of the per-pair ratios a_i / b_i with a 95%
Student-t interval on their logs (pairs share the machine's state at that moment, so the
machine's drift cancels within a pair). With one pair the interval is that pair's ratio twice.
"""

from __future__ import annotations

import math
from typing import Sequence


def paired_ratio_ci(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """``(ratio, low, high)``: geometric mean of ``a[i] / b[i]`` and its ``level`` t-interval.

    Raises:
        ValueError: different lengths, no pairs, or a value <= 0.
    """
    if len(a) != len(b) or not a:
        raise ValueError(f"need the same number (>= 1) of paired values, got {len(a)} and {len(b)}")
    if min(a) <= 0 or min(b) <= 0:
        raise ValueError("paired values must be > 0")
    logs = [math.log(x / y) for x, y in zip(a, b)]
    n = len(logs)
    mean = sum(logs) / n
    if n == 1:
        return math.exp(mean), math.exp(mean), math.exp(mean)
    from scipy.stats import t

    sd = math.sqrt(sum((v - mean) ** 2 for v in logs) / (n - 1))
    half = float(t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    return math.exp(mean), math.exp(mean - half), math.exp(mean + half)


def paired_summary(a_key: str, a: Sequence[float], b_key: str, b: Sequence[float], digits: int = 3) -> dict:
    """The JSON summary of an A/B timing: ``reps``, the medians under ``a_key`` and ``b_key``
    (units as given), their ``ratio`` (A / B), and ``paired_geomean`` with its 95% interval
    ``ci95`` (:func:`paired_ratio_ci`), rounded to ``digits``.

    Raises:
        ValueError: as :func:`paired_ratio_ci`.
    """
    import statistics

    g, lo, hi = paired_ratio_ci(a, b)
    ma, mb = statistics.median(a), statistics.median(b)
    return {"reps": len(a), a_key: round(ma, digits), b_key: round(mb, digits), "ratio": round(ma / mb, digits),
            "paired_geomean": round(g, digits), "ci95": [round(lo, digits), round(hi, digits)]}
