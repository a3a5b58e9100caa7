"""Search spaces, sampling scales and the coarse-to-fine zoom: pure functions (numpy/scipy only).

Practice (Ng, *Improving Deep Neural Networks*, "Using an appropriate scale to pick
hyperparameters"; Bergstra & Bengio 2012, "Random search for hyper-parameter optimization"):
sample at random, not on a grid, and in the right scale: a learning rate as ``lr = 10**r`` with
``r ~ U[-4, 0]``, a momentum as ``beta = 1 - 10**r`` with ``r ~ U[-3, -1]`` (beta in 0.9...0.999).
Then zoom into the region of the best trials and sample again ("coarse to fine").

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


# --------------------------------------------------------------------------------------------
# The zoom
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ZoomRule:
    """How the next box is fitted around the best trials (all widths in the sampling scale).

    Attributes:
        kind: ``shrink``: centred on the best trial, each interval ``shrink`` times the old
            width, shifted (not cut) to stay inside the old box. ``box``: the bounding box of the
            top trials widened by ``margin`` (a fraction of its width) on each side, clipped to
            the old box. (``shared/notes/zoom-rules.md`` measured ``shrink`` with a Sobol first
            stage well ahead of ``box``.) ``adaptive``: centred on the best trial like
            ``shrink``, but per dimension: the factor runs from ``shrink`` (the top trials agree
            on the dimension) to 1 (they spread over the whole old interval, so the dimension
            matters little), i.e. ``clip(spread * (1 + 2 * margin), shrink, 1)``.
        top_k, top_fraction: how many trials are "the best" (``box``; ``shrink`` centres on the
            first one and keeps the choices of all of them).
        margin: widening of the ``box`` rule, fraction of the top trials' spread.
        shrink: width factor of the ``shrink`` rule, in (0, 1].
        min_width: the new interval is never narrower than this fraction of the *original*
            width (nor wider than the old interval).
        edge_tolerance: a best trial within this fraction of the original width from an
            original bound counts as "on the edge".
        use_history: the best trials are chosen among all ended trials of all stages so far
            that lie in the old box (the earlier stages' best act as anchors), not only the
            last stage's; so a stage that found nothing better does not move the box onto a
            worse point. Applied by :class:`dlops.search.plan.StagedPlan`, which decides which
            trials it passes to :func:`zoom`.
        tie_break: a secondary metric (same ``mode``) that orders trials whose optimizing
            metric is equal, e.g. ``dev/loss`` behind a quantised ``dev/error``; None: ties keep
            the order the trials ran in. Used by :func:`zoom` and (exact ties only)
            :meth:`StagedPlan.best`.
        tie_tolerance: in :func:`zoom` only, optimizing values within this absolute distance
            of the best count as tied (see :func:`select_top`); 0: exact ties only.
        keep_choices: categorical parameters keep all their choices in every zoom stage but
            the last one (then: the choices of the top trials). With few trials per choice,
            dropping a choice after one stage is often decided by noise.
        rank: how the "best" trials are ranked. ``value``: by the optimizing metric (and
            ``tie_break``). ``smooth``: by a locally smoothed value, the mean of the optimizing
            metric over the trial and its ``smooth_k`` nearest feasible neighbours (see
            :func:`smoothed_values`); a noisy metric's lucky single point in a worse region then
            ranks below a point whose neighbourhood is good. Ties keep the ``value`` order.
        smooth_k: neighbours averaged by ``rank="smooth"`` (besides the trial itself), >= 1.
        centre: where the ``shrink``/``adaptive`` box is centred, in the sampling scale.
            ``best``: on the first selected trial. ``mean`` / ``median``: on the per-dimension
            mean / median of the selected trials (``top_k``/``top_fraction``); robust to one
            lucky point, and the mean of points along a ridge (e.g. ``lr / (1 - momentum)``
            constant, a line in ``u``) stays on the ridge. Ignored by ``box``.
    """

    kind: Literal["shrink", "box", "adaptive"] = "shrink"
    top_k: int = 3
    top_fraction: float | None = None
    margin: float = 0.25
    shrink: float = 0.5
    min_width: float = 0.05
    edge_tolerance: float = 0.02
    use_history: bool = True
    tie_break: str | None = None
    tie_tolerance: float = 0.0
    keep_choices: bool = False
    rank: Literal["value", "smooth"] = "value"
    smooth_k: int = 4
    centre: Literal["best", "mean", "median"] = "best"

    def __post_init__(self) -> None:
        if self.kind not in ("shrink", "box", "adaptive"):
            raise ValueError(
                f"search.zoom.kind: unknown rule {self.kind!r}; use 'shrink', 'box' or 'adaptive'"
            )
        if not (0 < self.shrink <= 1):
            raise ValueError(f"search.zoom.shrink must be in (0, 1], got {self.shrink}")
        if self.margin < 0:
            raise ValueError(f"search.zoom.margin must be >= 0, got {self.margin}")
        if not (0 <= self.min_width <= 1):
            raise ValueError(f"search.zoom.min_width must be in [0, 1], got {self.min_width}")
        if not (self.tie_tolerance >= 0 and math.isfinite(self.tie_tolerance)):
            raise ValueError(f"search.zoom.tie_tolerance must be a finite number >= 0, got {self.tie_tolerance}")
        if self.top_k < 1:
            raise ValueError(f"search.zoom.top_k must be >= 1, got {self.top_k}")
        if self.rank not in ("value", "smooth"):
            raise ValueError(f"search.zoom.rank: unknown ranking {self.rank!r}; use 'value' or 'smooth'")
        if self.smooth_k < 1:
            raise ValueError(f"search.zoom.smooth_k must be >= 1, got {self.smooth_k}")
        if self.centre not in ("best", "mean", "median"):
            raise ValueError(f"search.zoom.centre: unknown centre {self.centre!r}; use 'best', 'mean' or 'median'")


@dataclass(frozen=True)
class ZoomResult:
    """The next box and why it is what it is."""

    box: Box
    selected: tuple[str, ...]  # trial ids, best first (by the rule's ranking)
    edges: tuple[str, ...]  # messages: best trials on the edge of the original range
    reason: str  # "zoomed", or why the box was kept as it was


def smoothed_values(
    params: Sequence[Param], box: Box, trials: Sequence[TrialOutcome], metric: str, k: int
) -> list[float]:
    """Locally smoothed values: each trial's ``metric`` averaged with its ``k`` nearest neighbours.

    Distances are Euclidean in the sampling scale, each numeric dimension divided by its width in
    ``box`` (dimensions of zero width are left out); a categorical parameter adds 1 (a whole
    interval) when two trials' choices differ. With fewer than ``k + 1`` trials, each value is
    the mean over all of them. Equal distances are broken by the order of ``trials``. The trials
    must have a finite ``metric`` (e.g. the output of :func:`select_top`); a trial without a
    parameter's value counts as differing from every other trial in it.

    Returns:
        one value per trial, in the order of ``trials`` (``[]`` for no trial).
    """
    n = len(trials)
    if n == 0:
        return []
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    vals = np.array([float(t.metrics[metric]) for t in trials])
    d2 = np.zeros((n, n))
    for p in params:
        if p.is_numeric and p.name in box.intervals:
            w = box.width(p.name)
            if not w > 0:
                continue
            u = np.array([p.to_u(float(t.config[p.name])) / w if p.name in t.config else np.nan for t in trials])
            diff = (u[:, None] - u[None, :]) ** 2
            d2 += np.where(np.isnan(diff), 1.0, diff)
        elif p.scale == "choice":
            c = [repr(t.config[p.name]) if p.name in t.config else None for t in trials]
            d2 += np.array([[0.0 if (a is not None and a == b) else 1.0 for b in c] for a in c])
    np.fill_diagonal(d2, -1.0)  # the trial itself comes first
    m = min(k + 1, n)
    nearest = np.argsort(d2, axis=1, kind="stable")[:, :m]
    return [float(np.mean(vals[row])) for row in nearest]


def _centre(us: Sequence[float], how: str) -> float:
    if how == "mean":
        return float(np.mean(us))
    if how == "median":
        return float(np.median(us))
    return float(us[0])


def _fit_interval(
    us: Sequence[float],
    best_u: float,
    old: tuple[float, float],
    orig: tuple[float, float],
    rule: ZoomRule,
) -> tuple[float, float]:
    olo, ohi = old
    old_w = ohi - olo
    min_w = min(old_w, rule.min_width * (orig[1] - orig[0]))
    if rule.kind == "shrink":
        w = max(min_w, rule.shrink * old_w)
        lo, hi = best_u - w / 2, best_u + w / 2
    elif rule.kind == "adaptive":
        # centred on the best; the factor grows from `shrink` (top trials agree on this
        # dimension) to 1 (they are spread over the whole old interval: it matters little)
        spread = (max(us) - min(us)) / old_w if old_w > 0 else 0.0
        f = min(1.0, max(rule.shrink, spread * (1 + 2 * rule.margin)))
        w = max(min_w, f * old_w)
        lo, hi = best_u - w / 2, best_u + w / 2
    else:
        lo, hi = min(us), max(us)
        pad = rule.margin * (hi - lo)
        lo, hi = lo - pad, hi + pad
        if hi - lo < min_w:
            c = (lo + hi) / 2
            lo, hi = c - min_w / 2, c + min_w / 2
    w = hi - lo
    if w >= old_w:
        return olo, ohi
    # shift, do not cut, at the old bounds (keeps the width; the selected points stay inside)
    if lo < olo:
        lo, hi = olo, olo + w
    if hi > ohi:
        lo, hi = ohi - w, ohi
    return float(lo), float(hi)


def zoom(
    params: Sequence[Param],
    old: Box,
    original: Box,
    trials: Sequence[TrialOutcome],
    metric: str,
    mode: Mode,
    constraints: Sequence[Constraint] = (),
    rule: ZoomRule = ZoomRule(),
) -> ZoomResult:
    """Fit the next stage's box around the best trials of this stage.

    Guarantees (property-tested): the new box lies inside ``old``; it contains every selected
    trial (``box`` rule) or the centre (``shrink``/``adaptive``: the first selected trial with
    ``centre="best"``, else the mean/median of the selected trials, which lies between their
    smallest and largest value in every dimension; the centre is ``anchor``); no interval grows;
    a categorical parameter keeps the choices that appear among the selected trials, never none.
    With ``rank="smooth"`` the selected trials are the best by :func:`smoothed_values`.

    Degenerate cases: no feasible trial (all failed, NaN/inf, constraints broken) keeps ``old``
    unchanged (``reason`` says why); fewer feasible trials than ``top_k`` uses those there are;
    a single distinct value gives an interval of the minimum width around it.
    """
    top = select_top(
        trials, metric, mode, constraints, k=rule.top_k, fraction=rule.top_fraction, tie_break=rule.tie_break,
        tie_tolerance=rule.tie_tolerance,
    )
    if rule.rank == "smooth" and top:
        ok = select_top(trials, metric, mode, constraints, tie_break=rule.tie_break, tie_tolerance=rule.tie_tolerance)
        sm = smoothed_values(params, old, ok, metric, rule.smooth_k)
        sign = 1.0 if mode == "min" else -1.0
        ranked = [ok[i] for i in sorted(range(len(ok)), key=lambda i: (sign * sm[i], i))]
        n_top = max(1, math.ceil(rule.top_fraction * len(ok))) if rule.top_fraction is not None else rule.top_k
        top = ranked[:n_top]
    if not top:
        return ZoomResult(old, (), (), f"no feasible trial (finite {metric!r}, constraints met): box kept")
    intervals: dict[str, tuple[float, float]] = {}
    choices: dict[str, tuple[Any, ...]] = {}
    anchor: dict[str, float] = {}
    edges: list[str] = []
    best = top[0]
    for p in params:
        if p.is_numeric and p.name in old.intervals:
            us = [p.to_u(float(t.config[p.name])) for t in top if p.name in t.config]
            if not us:
                intervals[p.name] = old.intervals[p.name]
                continue
            best_u = us[0]
            centre_u = _centre(us, rule.centre)
            fit_us = us if rule.kind in ("box", "adaptive") else [centre_u]
            intervals[p.name] = _fit_interval(fit_us, centre_u, old.intervals[p.name], original.intervals[p.name], rule)
            lo, hi = intervals[p.name]
            anchor[p.name] = min(hi, max(lo, centre_u if rule.kind != "box" else best_u))
            olo, ohi = original.intervals[p.name]
            tol = rule.edge_tolerance * (ohi - olo)
            if ohi > olo and (best_u - olo <= tol or ohi - best_u <= tol):
                at_low_u = best_u - olo <= tol
                # one_minus_log maps values in reverse (u = log10(1 - x)): name the side in x
                at_low = (not at_low_u) if p.scale == "one_minus_log" else at_low_u
                side = "lower" if at_low else "upper"
                edges.append(
                    f"best trial's {p.name}={best.config[p.name]!r} is at the {side} edge of the "
                    f"original range [{p.low}, {p.high}]: the range is probably too narrow"
                )
        elif p.scale == "choice" and p.name in old.choices:
            seen = {repr(t.config.get(p.name)) for t in top}
            kept = tuple(c for c in old.choices[p.name] if repr(c) in seen)
            choices[p.name] = kept or old.choices[p.name]
    return ZoomResult(
        Box(intervals, choices, anchor), tuple(t.trial_id for t in top), tuple(edges), "zoomed"
    )
