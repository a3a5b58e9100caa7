"""Search spaces, sampling scales, boxes and selecting the best trials: pure functions (numpy/scipy only).

Practice (Ng, *Improving Deep Neural Networks*, "Using an appropriate scale to pick
hyperparameters"; Bergstra & Bengio 2012, "Random search for hyper-parameter optimization"):
sample at random, not on a grid, and in the right scale: a learning rate as ``lr = 10**r`` with
``r ~ U[-4, 0]``, a momentum as ``beta = 1 - 10**r`` with ``r ~ U[-3, -1]`` (beta in 0.9...0.999).
Then zoom into the region of the best trials and sample again ("coarse to fine"; the zoom itself
is :mod:`dlops.search.zoom`).

Every box here lives in the *sampling scale* ``u``:

============== ============================ ==========================
scale          u(x)                         x(u)
============== ============================ ==========================
linear         x                            u
log            log10(x)                     10**u
one_minus_log  log10(1 - x)                 1 - 10**u
int            x                            round(u)
log_int        log10(x)                     round(10**u)
choice         (a set of choices)           a choice
const          (fixed)                      the value
============== ============================ ==========================

so zooming in ``u`` is zooming in ``r``, not in ``lr``. No Ray and no MLflow import here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Literal, Mapping, Sequence

import numpy as np

Scale = Literal["linear", "log", "one_minus_log", "int", "log_int", "choice", "const"]
NUMERIC_SCALES = ("linear", "log", "one_minus_log", "int", "log_int")
SCALES = NUMERIC_SCALES + ("choice", "const")
Mode = Literal["min", "max"]


@dataclass(frozen=True)
class Param:
    """One hyperparameter of a search space.

    Attributes:
        name: the config key the trainable reads (e.g. ``"lr"``).
        scale: one of :data:`SCALES`.
        low, high: bounds in the *value* scale (``lr`` itself, not ``r``), both included.
        choices: the values of a ``choice`` parameter.
        value: the value of a ``const`` parameter.
        q: optional quantisation step in the value scale (sampled values are multiples of ``q``).
        tier: priority tier (1: learning rate; 2: momentum, batch size, hidden units;
            3: layers, learning-rate decay), used by the ``tiers`` strategy.
        default: the value used while the parameter's tier is not yet tuned.
    """

    name: str
    scale: Scale
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] | None = None
    value: Any = None
    q: float | None = None
    tier: int = 1
    default: Any = None

    def __post_init__(self) -> None:
        validate_param(self)

    @property
    def is_numeric(self) -> bool:
        return self.scale in NUMERIC_SCALES

    def to_u(self, x: float) -> float:
        """Value scale -> sampling scale."""
        return float(to_u(self.scale, x))

    def from_u(self, u: float) -> Any:
        """Sampling scale -> value scale, rounded (int scales) and quantised, inside the bounds."""
        return from_u(self, u)


def validate_param(p: Param) -> None:
    """Check one parameter's bounds, scale and quantisation.

    Raises:
        ValueError: naming the parameter and the offending value, with how to fix it.
    """
    where = f"search.space.{p.name}"
    if p.scale not in SCALES:
        raise ValueError(f"{where}.scale: unknown scale {p.scale!r}; use one of {list(SCALES)}")
    if p.scale == "const":
        return
    if p.scale == "choice":
        if not p.choices:
            raise ValueError(f"{where}.choices: a 'choice' parameter needs at least one choice")
        return
    if p.low is None or p.high is None:
        raise ValueError(f"{where}: scale {p.scale!r} needs both 'low' and 'high'")
    low, high = float(p.low), float(p.high)
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"{where}: bounds must be finite, got low={p.low}, high={p.high}")
    if low > high:
        raise ValueError(f"{where}: low={p.low} is greater than high={p.high}")
    if p.scale in ("log", "log_int") and low <= 0:
        raise ValueError(
            f"{where}.low: a {p.scale!r} scale samples 10**r and needs low > 0, got {p.low}"
        )
    if p.scale == "one_minus_log" and not (0 < low and high < 1):
        raise ValueError(
            f"{where}: a 'one_minus_log' scale samples 1 - 10**r and needs 0 < low <= high < 1, "
            f"got low={p.low}, high={p.high}"
        )
    if p.scale in ("int", "log_int") and (low != int(low) or high != int(high)):
        raise ValueError(f"{where}: an {p.scale!r} scale needs whole-number bounds, got {p.low}, {p.high}")
    if p.q is not None:
        if p.q <= 0:
            raise ValueError(f"{where}.q: quantisation must be > 0, got {p.q}")
        for bound, val in (("low", low), ("high", high)):
            ratio = val / p.q
            if abs(ratio - round(ratio)) > 1e-9 * max(1.0, abs(ratio)):
                raise ValueError(
                    f"{where}.q: quantisation {p.q} does not divide {bound}={val}; "
                    "choose bounds that are multiples of q"
                )


def to_u(scale: str, x: float | np.ndarray) -> float | np.ndarray:
    """Map a value to the sampling scale (see the module table)."""
    if scale in ("log", "log_int"):
        return np.log10(x)
    if scale == "one_minus_log":
        return np.log10(1.0 - np.asarray(x, dtype=float))
    return np.asarray(x, dtype=float) if isinstance(x, np.ndarray) else float(x)


def _raw_from_u(scale: str, u: float) -> float:
    if scale in ("log", "log_int"):
        return float(10.0**u)
    if scale == "one_minus_log":
        return float(1.0 - 10.0**u)
    return float(u)


def from_u(p: Param, u: float) -> Any:
    """Sampling scale -> value, rounded/quantised and clipped to ``[low, high]``."""
    x = _raw_from_u(p.scale, u)
    assert p.low is not None and p.high is not None
    lo, hi = float(p.low), float(p.high)
    if p.q is not None:
        x = round(x / p.q) * p.q
        # rounding can step outside the bounds: step back inside by whole multiples of q
        while x > hi + 1e-12:
            x -= p.q
        while x < lo - 1e-12:
            x += p.q
        x = round(x, 12)
    x = min(max(x, lo), hi)
    if p.scale in ("int", "log_int"):
        return int(round(x))
    return float(x)


# --------------------------------------------------------------------------------------------
# Boxes
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Box:
    """A search region: numeric intervals in the sampling scale, and allowed choices.

    Attributes:
        intervals: ``{name: (u_low, u_high)}`` with ``u_low <= u_high``.
        choices: ``{name: (choice, ...)}`` for ``choice`` parameters.
        anchor: ``{name: u}``, the point (in the sampling scale, inside the box) the zoom
            centred the box on, i.e. the best trial so far; empty for the original box. Used by
            ``sample_box(method="anchored")``.
    """

    intervals: Mapping[str, tuple[float, float]]
    choices: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    anchor: Mapping[str, float] = field(default_factory=dict)

    def width(self, name: str) -> float:
        lo, hi = self.intervals[name]
        return hi - lo

    def contains(self, name: str, u: float, tol: float = 1e-9) -> bool:
        lo, hi = self.intervals[name]
        return lo - tol <= u <= hi + tol

    def to_dict(self) -> dict[str, Any]:
        return {
            "intervals": {k: [float(a), float(b)] for k, (a, b) in self.intervals.items()},
            "choices": {k: list(v) for k, v in self.choices.items()},
            "anchor": {k: float(v) for k, v in self.anchor.items()},
        }

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> "Box":
        return Box(
            intervals={k: (float(a), float(b)) for k, (a, b) in d["intervals"].items()},
            choices={k: tuple(v) for k, v in d.get("choices", {}).items()},
            anchor={k: float(v) for k, v in d.get("anchor", {}).items()},
        )


def initial_box(params: Sequence[Param]) -> Box:
    """The user's original ranges as a box in the sampling scale."""
    intervals: dict[str, tuple[float, float]] = {}
    choices: dict[str, tuple[Any, ...]] = {}
    for p in params:
        if p.is_numeric:
            a, b = p.to_u(float(p.low)), p.to_u(float(p.high))  # type: ignore[arg-type]
            intervals[p.name] = (min(a, b), max(a, b))
        elif p.scale == "choice":
            choices[p.name] = tuple(p.choices or ())
    return Box(intervals=intervals, choices=choices)


def sample_box(
    params: Sequence[Param],
    box: Box,
    n: int,
    rng: np.random.Generator,
    method: Literal["random", "sobol", "anchored"] = "random",
    fixed: Mapping[str, Any] | None = None,
    perturb: float = 0.5,
) -> list[dict[str, Any]]:
    """Draw ``n`` configurations at random inside ``box``.

    Args:
        params: the space.
        box: the region, in the sampling scale.
        n: number of configurations.
        rng: numpy generator (the only source of randomness: same seed, same configs).
        method: ``random`` (i.i.d. uniform in ``u``), ``sobol`` (scrambled Sobol points in ``u``,
            still random search, better spread; Owen 1998) or ``anchored``: each numeric
            coordinate is drawn uniformly in the box with probability ``perturb`` and otherwise
            kept at ``box.anchor`` (the best trial so far), at least one coordinate drawn per
            configuration (the perturbation mask of DYCORS, Regis & Shoemaker 2013, and TuRBO,
            Eriksson et al. 2019). Without an anchor, ``anchored`` is ``random``.
        fixed: parameters held at a value instead of sampled (e.g. tiers not yet tuned).
        perturb: probability, per coordinate, of drawing it (``anchored`` only), in (0, 1].

    Raises:
        ValueError: unknown ``method`` or ``perturb`` outside (0, 1].

    Returns:
        ``n`` dicts ``{name: value}`` in the value scale.
    """
    fixed = dict(fixed or {})
    numeric = [p for p in params if p.is_numeric and p.name not in fixed]
    if method not in ("random", "sobol", "anchored"):
        raise ValueError(f"sampling method must be 'random', 'sobol' or 'anchored', got {method!r}")
    if not (0 < perturb <= 1):
        raise ValueError(f"perturb must be in (0, 1], got {perturb}")
    if n <= 0:
        return []
    if method == "sobol" and numeric:
        from scipy.stats import qmc

        m = int(math.ceil(math.log2(max(n, 2))))
        pts = qmc.Sobol(d=len(numeric), scramble=True, seed=rng).random_base2(m)[:n]
    else:
        pts = rng.random((n, len(numeric)))
    if method == "anchored" and numeric and all(p.name in box.anchor for p in numeric):
        mask = rng.random((n, len(numeric))) < perturb
        mask[np.arange(n), rng.integers(len(numeric), size=n)] = True  # at least one per row
        for j, p in enumerate(numeric):
            lo, hi = box.intervals[p.name]
            t = (box.anchor[p.name] - lo) / (hi - lo) if hi > lo else 0.5
            pts[~mask[:, j], j] = min(1.0, max(0.0, t))
    out: list[dict[str, Any]] = []
    for i in range(n):
        cfg: dict[str, Any] = {}
        for j, p in enumerate(numeric):
            lo, hi = box.intervals[p.name]
            cfg[p.name] = p.from_u(lo + float(pts[i, j]) * (hi - lo))
        for p in params:
            if p.name in fixed:
                cfg[p.name] = fixed[p.name]
            elif p.scale == "choice":
                opts = box.choices[p.name]
                cfg[p.name] = opts[int(rng.integers(len(opts)))]
            elif p.scale == "const":
                cfg[p.name] = p.value
        out.append(cfg)
    return out


def in_box(params: Sequence[Param], box: Box, config: Mapping[str, Any]) -> bool:
    """Whether ``config`` is a value that sampling inside ``box`` can produce (value-scale check,
    so rounding of int and quantised parameters does not push a trial "outside")."""
    for p in params:
        if p.name not in config:
            return False
        if p.is_numeric and p.name in box.intervals:
            lo, hi = box.intervals[p.name]
            a, b = p.from_u(lo), p.from_u(hi)
            x = float(config[p.name])
            if not (min(a, b) - 1e-12 <= x <= max(a, b) + 1e-12):
                return False
        elif p.scale == "choice" and p.name in box.choices:
            if repr(config[p.name]) not in {repr(c) for c in box.choices[p.name]}:
                return False
    return True


# --------------------------------------------------------------------------------------------
# Selecting the best trials: one optimizing metric, N-1 satisficing constraints
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Constraint:
    """A satisficing metric: ``metric op threshold`` must hold (e.g. ``latency_ms <= 10``)."""

    metric: str
    op: Literal["<=", "<", ">=", ">"]
    threshold: float

    def holds(self, metrics: Mapping[str, Any]) -> bool:
        v = metrics.get(self.metric)
        if not _is_finite_number(v):
            return False
        v = float(v)
        return {
            "<=": v <= self.threshold,
            "<": v < self.threshold,
            ">=": v >= self.threshold,
            ">": v > self.threshold,
        }[self.op]

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {self.threshold:g}"


def _is_finite_number(v: Any) -> bool:
    try:
        return v is not None and not isinstance(v, bool) and math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


@dataclass(frozen=True)
class TrialOutcome:
    """What the zoom needs to know of one trial: its config (value scale) and final metrics."""

    trial_id: str
    config: Mapping[str, Any]
    metrics: Mapping[str, Any]


def is_feasible(t: TrialOutcome, metric: str, constraints: Iterable[Constraint] = ()) -> bool:
    """A trial may be "best" only if its optimizing metric is finite and every constraint holds."""
    return _is_finite_number(t.metrics.get(metric)) and all(c.holds(t.metrics) for c in constraints)


def select_top(
    trials: Sequence[TrialOutcome],
    metric: str,
    mode: Mode,
    constraints: Sequence[Constraint] = (),
    k: int | None = None,
    fraction: float | None = None,
    tie_break: str | None = None,
    tie_tolerance: float = 0.0,
) -> list[TrialOutcome]:
    """The best feasible trials, best first.

    Trials with a NaN/inf/missing optimizing metric or a broken constraint are never selected.
    Ties keep the order of ``trials`` (stable sort). With ``tie_break`` (a secondary metric,
    optimised in the same ``mode``; e.g. the dev loss behind a quantised dev error), equal
    optimizing values are ordered by it first (a trial without a finite ``tie_break`` value
    ranks after those with one), then by the order of ``trials``. The optimizing metric alone
    still decides feasibility. With ``tie_tolerance > 0`` (and ``tie_break``), values within
    ``tie_tolerance`` of the best remaining one count as equal: the trials are picked one at a
    time, each the best by ``tie_break`` among the remaining trials whose optimizing value is
    within ``tie_tolerance`` of the remaining best (for a noisy, quantised metric such as a dev
    error, a difference of one or two dev examples is not evidence). With ``fraction``, the count is ``ceil(fraction * n_feasible)``;
    with neither, all feasible trials are returned.

    Raises:
        ValueError: ``mode`` is not ``min``/``max``, ``k < 1`` or ``fraction`` not in (0, 1].
    """
    if mode not in ("min", "max"):
        raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
    if k is not None and k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if fraction is not None and not (0 < fraction <= 1):
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    ok = [t for t in trials if is_feasible(t, metric, constraints)]
    sign = 1.0 if mode == "min" else -1.0
    if tie_break is None:
        ok.sort(key=lambda t: sign * float(t.metrics[metric]))
    else:

        def key(t: TrialOutcome) -> tuple[float, int, float]:
            tb = t.metrics.get(tie_break)
            has = _is_finite_number(tb)
            return sign * float(t.metrics[metric]), 0 if has else 1, sign * float(tb) if has else 0.0

        ok.sort(key=key)
        if tie_tolerance > 0 and ok:
            # pick greedily: the best tie-break value among those within the tolerance of the best left
            rest, picked = list(ok), []
            want = len(ok) if fraction is not None or k is None else min(k, len(ok))
            while rest and len(picked) < want:
                lim = sign * float(rest[0].metrics[metric]) + tie_tolerance
                near = [t for t in rest if sign * float(t.metrics[metric]) <= lim + 1e-12]
                t = min(near, key=lambda t: key(t)[1:])
                picked.append(t)
                rest.remove(t)
            ok = picked + rest
    if fraction is not None:
        return ok[: max(1, math.ceil(fraction * len(ok)))] if ok else []
    return ok[:k] if k is not None else ok
