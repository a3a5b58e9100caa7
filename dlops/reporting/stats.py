"""Uncertainty of error rates and of the gaps between them (pure functions: no torch, ray or mlflow).

An error measured on ``n`` examples is a binomial proportion ``k / n``; its 95% interval is the
Wilson score interval. A gap between two splits (train, train-dev, dev and test are different
example sets) is a difference of two independent proportions; its interval is Newcombe's hybrid
score interval built from the two Wilson intervals. When one model is scored on the same examples
twice (two models on one dev set), the difference is paired and its interval uses the correlation
of the two outcomes.

Sources:

* E. B. Wilson (1927), "Probable inference, the law of succession, and statistical inference",
  JASA 22:209-212 (the score interval).
* R. G. Newcombe (1998a), "Interval estimation for the difference between independent
  proportions: comparison of eleven methods", Statistics in Medicine 17:873-890 (method 10).
* R. G. Newcombe (1998b), "Improved confidence intervals for the difference between binomial
  proportions based on paired data", Statistics in Medicine 17:2635-2650 (method 10).

Every rate is a fraction in [0, 1]; every count an int >= 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

#: z of a two-sided 95% interval (the 0.975 quantile of the standard normal)
Z95 = 1.959963984540054


@dataclass(frozen=True)
class Interval:
    """A point estimate with its interval: ``low <= value <= high`` (fractions or fraction points)."""

    value: float
    low: float
    high: float

    @property
    def half_width(self) -> float:
        """The larger distance from the value to an end of the interval."""
        return max(self.value - self.low, self.high - self.value)

    def contains(self, x: float) -> bool:
        return self.low <= x <= self.high

    def fmt(self, scale: float = 100.0, digits: int = 2) -> str:
        """``"1.44 [0.62, 3.33]"`` (``scale`` 100: percent or percent points)."""
        if math.isnan(self.value):
            return "n/a"
        return f"{scale * self.value:.{digits}f} [{scale * self.low:.{digits}f}, {scale * self.high:.{digits}f}]"


NAN_INTERVAL = Interval(float("nan"), float("nan"), float("nan"))


def _check_counts(k: int, n: int) -> None:
    if isinstance(k, bool) or isinstance(n, bool) or not float(k).is_integer() or not float(n).is_integer():
        raise ValueError(f"counts must be whole numbers, got k={k!r}, n={n!r}")
    if n < 0 or k < 0 or k > n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")


def wilson(k: int, n: int, z: float = Z95) -> Interval:
    """The Wilson score interval of a proportion ``k / n`` (Wilson 1927).

    ``center = (p + z²/2n) / (1 + z²/n)``, ``half = z / (1 + z²/n) · sqrt(p(1-p)/n + z²/4n²)``.

    Args:
        k: events (errors), 0 <= k <= n.
        n: trials (examples); 0 gives a NaN interval.
        z: the normal quantile (default: 95% two-sided).

    Returns:
        :class:`Interval` with ``value = k / n`` and the interval, inside [0, 1].

    Raises:
        ValueError: k or n negative, not whole, or k > n.

    Example: ``wilson(81, 263)`` is 0.3080 [0.2553, 0.3662] (Newcombe 1998a, Table I).
    """
    _check_counts(k, n)
    if n == 0:
        return NAN_INTERVAL
    p = k / n
    z2 = z * z
    denom = 1.0 + z2 / n
    center = (p + z2 / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    # clamped to [0, 1] and to contain p (at k = n, center + half is 1 up to rounding)
    return Interval(p, min(p, max(0.0, center - half)), max(p, min(1.0, center + half)))


def error_interval(error: float, n: int, z: float = Z95) -> Interval:
    """:func:`wilson` of an error rate measured on ``n`` examples (``k = round(error · n)``).

    Raises:
        ValueError: ``error`` outside [0, 1] (percent instead of a fraction?), or ``n < 0``.
    """
    if n is None or math.isnan(error):
        return NAN_INTERVAL
    if not 0.0 <= error <= 1.0:
        raise ValueError(f"an error must be a fraction in [0, 1], got {error} (percent instead of a fraction?)")
    n = int(n)
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    return wilson(int(round(error * n)), n, z)


def _parts(a: Interval) -> tuple[float, float, float]:
    return a.value, a.value - a.low, a.high - a.value


def difference_independent(a: Interval, b: Interval) -> Interval:
    """Interval of ``a - b`` for two proportions measured on independent samples (different
    example sets: the gaps between train, train-dev, dev and test), from their Wilson intervals
    (Newcombe 1998a, method 10, the hybrid score interval)::

        low  = (p1 - p2) - sqrt((p1 - l1)² + (u2 - p2)²)
        high = (p1 - p2) + sqrt((u1 - p1)² + (p2 - l2)²)

    A constant (human-level error, not measured) is an interval of width 0.

    Returns:
        :class:`Interval` in fraction points; NaN when either input is NaN.

    Example: 56/70 - 48/80 = 0.2000 [0.0524, 0.3339] (Newcombe 1998a).
    """
    if math.isnan(a.value) or math.isnan(b.value):
        return NAN_INTERVAL
    p1, dl1, du1 = _parts(a)
    p2, dl2, du2 = _parts(b)
    d = p1 - p2
    return Interval(d, d - math.sqrt(dl1 ** 2 + du2 ** 2), d + math.sqrt(du1 ** 2 + dl2 ** 2))


def constant(x: float) -> Interval:
    """A known value (human-level error) as an interval of width 0."""
    return Interval(float(x), float(x), float(x))


def difference_paired(both: int, only_a: int, only_b: int, neither: int, z: float = Z95) -> Interval:
    """Interval of ``p_a - p_b`` where A and B are scored on the same ``n`` examples (two models
    on one dev set), from the 2x2 table of outcomes (Newcombe 1998b, method 10)::

        p_a = (both + only_a) / n,  p_b = (both + only_b) / n
        phi = (both·neither - only_a·only_b) / sqrt((both+only_a)(neither+only_b)(both+only_b)(neither+only_a))
        low  = (p_a - p_b) - sqrt(dl_a² - 2·phi·dl_a·du_b + du_b²)
        high = (p_a - p_b) + sqrt(du_a² - 2·phi·du_a·dl_b + dl_b²)

    with ``dl``, ``du`` the distances from each proportion to the ends of its Wilson interval
    (phi = 0 where a margin is 0).

    Args:
        both: examples that both get wrong; only_a / only_b: wrong for one of them only;
            neither: right for both. Counts >= 0.

    Returns:
        :class:`Interval` of ``p_a - p_b`` in fraction points (NaN for n = 0).

    Raises:
        ValueError: a negative or fractional count.
    """
    for v in (both, only_a, only_b, neither):
        _check_counts(v, v)
    n = both + only_a + only_b + neither
    if n == 0:
        return NAN_INTERVAL
    a, b = wilson(both + only_a, n, z), wilson(both + only_b, n, z)
    pa, dla, dua = _parts(a)
    pb, dlb, dub = _parts(b)
    margins = (both + only_a) * (neither + only_b) * (both + only_b) * (neither + only_a)
    phi = (both * neither - only_a * only_b) / math.sqrt(margins) if margins > 0 else 0.0
    d = pa - pb
    low = d - math.sqrt(max(0.0, dla ** 2 - 2 * phi * dla * dub + dub ** 2))
    high = d + math.sqrt(max(0.0, dua ** 2 - 2 * phi * dua * dlb + dlb ** 2))
    return Interval(d, max(-1.0, low), min(1.0, high))


def stands_out(best: Interval, others: list[Interval]) -> bool:
    """Whether ``best`` stands out from ``others`` beyond the noise: its interval lies above 0
    and above the interval of every other (finite) one. Non-overlap of two 95% intervals is a
    conservative test of their difference (Schenker & Gentleman 2001, The American Statistician
    55:182-186)."""
    if math.isnan(best.value) or best.low <= 0:
        return False
    return all(best.low > o.high for o in others if not math.isnan(o.value))


def n_for_half_width(p: float, half_width: float, z: float = Z95) -> int:
    """Examples needed for the normal-approximation interval of a proportion ``p`` to have
    ``half_width`` (both fractions): ``n = ceil(z² · p(1-p) / half_width²)``, at least
    ``ceil(z² / half_width)`` (a rate near 0 still needs the events to show; Wilson's upper
    bound at k = 0 is about z²/n).

    Raises:
        ValueError: ``half_width`` not in (0, 1].
    """
    if not 0.0 < half_width <= 1.0:
        raise ValueError(f"half_width must be a fraction in (0, 1], got {half_width}")
    p = min(max(p, 0.0), 1.0)
    return int(max(math.ceil(z * z * p * (1 - p) / half_width ** 2), math.ceil(z * z / half_width)))


def error_metrics(errors: Mapping[str, float], counts: Mapping[str, int], z: float = Z95) -> dict[str, float]:
    """MLflow metrics of each split's error interval: ``<split>/n``, ``<split>/error_ci_low``,
    ``<split>/error_ci_high`` (fractions; Wilson 95%) for the splits with an error and a count."""
    out: dict[str, float] = {}
    for s, e in errors.items():
        n = counts.get(s)
        if s == "human" or n is None or e is None or math.isnan(float(e)):
            continue
        ci = error_interval(float(e), int(n), z)
        out[f"{s}/n"] = float(n)
        if not math.isnan(ci.value):
            out[f"{s}/error_ci_low"], out[f"{s}/error_ci_high"] = ci.low, ci.high
    return out


@dataclass(frozen=True)
class PowerLaw:
    """``error(n) = a · n^(-b)`` fitted to a learning curve (``n`` examples, error a fraction)."""

    a: float
    b: float

    def __call__(self, n: float) -> float:
        return self.a * float(n) ** (-self.b)


def fit_power_law(n: list[float], error: list[float], floor: float = 1e-4) -> PowerLaw:
    """Least squares of ``log error = log a - b · log n`` (the power law of learning curves:
    Hestness et al. 2017, "Deep learning scaling is predictable, empirically", arXiv:1712.00409).

    Args:
        n: training-set sizes (> 0), at least two distinct.
        error: the error at each size (fractions); values below ``floor`` are raised to it (a
            zero error has no logarithm).

    Returns:
        :class:`PowerLaw`; ``b > 0`` means the error falls with more data.

    Raises:
        ValueError: fewer than two distinct sizes, or lengths that differ.
    """
    if len(n) != len(error):
        raise ValueError(f"n has {len(n)} sizes but error has {len(error)} values")
    pts = [(math.log(float(x)), math.log(max(float(e), floor))) for x, e in zip(n, error)
           if x and x > 0 and not math.isnan(float(e))]
    if len({p[0] for p in pts}) < 2:
        raise ValueError("a power law needs errors at two or more distinct training-set sizes")
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    slope = sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx
    return PowerLaw(a=math.exp(my - slope * mx), b=-slope)


def paired_counts(wrong_a: Any, wrong_b: Any) -> tuple[int, int, int, int]:
    """The 2x2 table of two models on the same examples: ``(both, only_a, only_b, neither)``
    wrong, from two boolean sequences of equal length (for :func:`difference_paired`).

    Raises:
        ValueError: lengths differ.
    """
    a, b = [bool(v) for v in wrong_a], [bool(v) for v in wrong_b]
    if len(a) != len(b):
        raise ValueError(f"paired outcomes need the same examples: {len(a)} vs {len(b)}")
    both = sum(x and y for x, y in zip(a, b))
    only_a = sum(x and not y for x, y in zip(a, b))
    only_b = sum(y and not x for x, y in zip(a, b))
    return both, only_a, only_b, len(a) - both - only_a - only_b
