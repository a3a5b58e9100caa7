"""The coarse-to-fine zoom: fitting the next stage's box around the best trials. Pure functions
(numpy only; no Ray and no MLflow import).

Every box lives in the sampling scale ``u`` of :mod:`dlops.search.space` (``log10(lr)``, not
``lr``), so zooming in ``u`` is zooming in ``r``. :class:`ZoomRule` says how the box is fitted
(``shrink`` around the best trial, the ``box`` of the top trials, ``adaptive`` per
dimension, or ``trust``, a trust region that grows, shrinks, moves and restarts:
:func:`trust_step`, :func:`trust_box`), :func:`zoom` fits it and names best trials on the edge of
the original range. ``trust`` and ``ZoomRule.explore`` lost to ``shrink`` on the benchmark's
development set at 32-64 trials, so neither is the default.
The measurements behind the default rule are in ``bench/README.md`` (search_quality).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, Mapping, Sequence

import numpy as np

from dlops.search.space import Box, Constraint, Mode, Param, TrialOutcome, select_top

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
        grow: ``trust`` only: the width factor after a stage that improved on the best so far
            (>= 1; the box never gets wider than the original range).
        explore: share of every zoom stage's trials drawn in the *original* box instead of the
            zoomed one (in [0, 1); rounded down per stage), so a wrong zoom can still be noticed.
            Applied by :class:`dlops.search.plan.StagedPlan`.

    ``kind="trust"`` is a trust region (TuRBO, Eriksson et al. 2019, per stage instead of per
    trial): one width for all numeric dimensions, a fraction of the original width; after a stage
    that improved on the best so far it grows by ``grow``, after one that did not it shrinks by
    ``shrink``, unless the best sits on an edge of the old box (not of the original range): then
    the box moves onto it at the same width. Once the width falls below ``min_width`` the search
    restarts in the original box (:func:`trust_step`) and later centres use only the trials from
    the restart on. The box is centred like ``shrink`` (``centre``) on the best of *all* trials
    (since the last restart), not only those inside the old box, and fitted inside the original
    range (:func:`trust_box`).
    """

    kind: Literal["shrink", "box", "adaptive", "trust"] = "shrink"
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
    grow: float = 2.0
    explore: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in ("shrink", "box", "adaptive", "trust"):
            raise ValueError(
                f"search.zoom.kind: unknown rule {self.kind!r}; use 'shrink', 'box', 'adaptive' or 'trust'"
            )
        if not (self.grow >= 1 and math.isfinite(self.grow)):
            raise ValueError(f"search.zoom.grow must be a finite number >= 1, got {self.grow}")
        if not (0 <= self.explore < 1):
            raise ValueError(f"search.zoom.explore must be in [0, 1), got {self.explore}")
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


# ---- the trust-region rule (kind="trust") ----------------------------------------------------


def stage_improved(prev_best: float | None, stage_best: float | None, mode: Mode) -> bool:
    """Whether a stage improved on the best value before it (strictly; ``None``: no feasible trial).

    A stage with no feasible trial never improves; a first feasible value always does.
    """
    if stage_best is None or not math.isfinite(stage_best):
        return False
    if prev_best is None or not math.isfinite(prev_best):
        return True
    return stage_best < prev_best if mode == "min" else stage_best > prev_best


def trust_step(width: float, improved: bool, on_edge: bool, rule: ZoomRule) -> tuple[float, bool]:
    """The trust region's next width (a fraction of the original width) and whether it restarts.

    ``improved``: grow by ``rule.grow`` (at most 1). Not improved and ``on_edge`` (the best sits
    on an edge of the old box that is not an edge of the original range): keep the width (the box
    moves). Otherwise shrink by ``rule.shrink``. A width below ``rule.min_width`` restarts: the
    next width is 1 (the original box) and the second value is True.

    Guarantees (property-tested): the result lies in ``(0, 1]``; it is never smaller than
    ``width`` after an improving stage and never larger after one that did not improve.
    """
    if not (0 < width <= 1):
        raise ValueError(f"trust region width must be in (0, 1], got {width}")
    if improved:
        w = min(1.0, width * rule.grow)
    elif on_edge:
        w = width
    else:
        w = width * rule.shrink
    if w < rule.min_width:
        return 1.0, True
    return float(w), False


def on_inner_edge(
    params: Sequence[Param], old: Box, original: Box, config: Mapping[str, Any], tol: float
) -> bool:
    """Whether ``config`` lies within ``tol`` (a fraction of the old width) of a bound of ``old``
    that is not (within the same distance) a bound of ``original``: the best lies where the old
    box cut the range, so the optimum may be outside it."""
    for p in params:
        if not (p.is_numeric and p.name in old.intervals and p.name in config):
            continue
        lo, hi = old.intervals[p.name]
        olo, ohi = original.intervals[p.name]
        w = hi - lo
        if w <= 0:
            continue
        u = p.to_u(float(config[p.name]))
        d = tol * w
        if (u - lo <= d and lo - olo > d) or (hi - u <= d and ohi - hi > d):
            return True
    return False


def trust_box(original: Box, centre: Mapping[str, float], width: float, choices: Mapping[str, tuple[Any, ...]] | None = None) -> Box:
    """The box of width ``width`` (fraction of each original interval) centred on ``centre`` (the
    sampling scale), shifted, not cut, to lie inside ``original``.

    Guarantees (property-tested): every interval lies inside the original one and has ``width``
    times its width; it contains the centre (clipped into the original interval); a parameter
    without a centre keeps its original interval. ``choices`` (default: the original ones) are
    carried as they are; the anchor is the clipped centre.
    """
    if not (0 < width <= 1):
        raise ValueError(f"trust region width must be in (0, 1], got {width}")
    intervals: dict[str, tuple[float, float]] = {}
    anchor: dict[str, float] = {}
    for name, (olo, ohi) in original.intervals.items():
        if name not in centre:
            intervals[name] = (olo, ohi)
            continue
        c = min(ohi, max(olo, float(centre[name])))
        w = width * (ohi - olo)
        lo, hi = c - w / 2, c + w / 2
        if lo < olo:
            lo, hi = olo, olo + w
        if hi > ohi:
            lo, hi = ohi - w, ohi
        lo, hi = max(olo, lo), min(ohi, hi)
        intervals[name] = (float(lo), float(hi))
        anchor[name] = c
    return Box(intervals, dict(choices if choices is not None else original.choices), anchor)
