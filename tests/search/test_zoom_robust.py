"""The noise-robust zoom: ``ZoomRule.centre`` (best / mean / median of the selected trials) and
``ZoomRule.rank="smooth"`` (rank by the mean value of each trial and its nearest neighbours)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dlops.search.space import Box, Param, TrialOutcome, initial_box
from dlops.search.zoom import ZoomRule, smoothed_values, zoom

LR = Param("lr", "log", 1e-4, 1.0)
MOM = Param("momentum", "one_minus_log", 0.9, 0.999)
BATCH = Param("batch", "choice", choices=(8, 16, 32))


def outcomes(configs, values, metric="loss"):
    return [TrialOutcome(f"t{i}", c, {metric: v}) for i, (c, v) in enumerate(zip(configs, values))]


def _zoom(configs, values, rule, params=(LR,), mode="min", old=None):
    orig = initial_box(list(params))
    return zoom(list(params), old or orig, orig, outcomes(configs, values), "loss", mode, rule=rule)


# ---- validation ----------------------------------------------------------------------------


@pytest.mark.parametrize("kw", [dict(rank="knn"), dict(smooth_k=0), dict(centre="centroid")])
def test_new_fields_are_validated(kw) -> None:
    with pytest.raises(ValueError, match="search.zoom"):
        ZoomRule(**kw)


def test_defaults_are_the_previous_rule() -> None:
    r = ZoomRule()
    assert (r.rank, r.centre) == ("value", "best")


# ---- centre: hand-computed -----------------------------------------------------------------


def test_mean_centre_is_the_mean_in_the_sampling_scale() -> None:
    cfgs = [{"lr": 1e-2}, {"lr": 1e-3}, {"lr": 1e-1}, {"lr": 1.0}]  # u = -2, -3, -1, 0
    res = _zoom(cfgs, [0.1, 0.2, 0.3, 0.9], ZoomRule(centre="mean", top_k=3, shrink=0.5))
    assert res.box.anchor["lr"] == pytest.approx(-2.0)  # mean of -2, -3, -1: not of lr itself
    assert res.box.intervals["lr"] == pytest.approx((-3.0, -1.0))
    assert res.selected == ("t0", "t1", "t2")


def test_median_centre_ignores_one_outlier() -> None:
    cfgs = [{"lr": 1e-4}, {"lr": 1e-2}, {"lr": 10**-1.9}]  # the best trial is a lone outlier at u=-4
    res = _zoom(cfgs, [0.0, 0.1, 0.1], ZoomRule(centre="median", top_k=3, shrink=0.5))
    assert res.box.anchor["lr"] == pytest.approx(-2.0)
    assert res.box.intervals["lr"] == pytest.approx((-3.0, -1.0))


def test_mean_of_points_on_a_ridge_stays_on_the_ridge() -> None:
    # lr / (1 - momentum) = 1: u_lr - u_mom = 0 for every point, so also for the mean
    cfgs = [{"lr": 10**-2.5, "momentum": 1 - 10**-2.5}, {"lr": 10**-1.2, "momentum": 1 - 10**-1.2},
            {"lr": 10**-2.0, "momentum": 1 - 10**-2.0}]
    res = _zoom(cfgs, [0.1, 0.1, 0.1], ZoomRule(centre="mean", top_k=3), params=(LR, MOM))
    assert res.box.anchor["lr"] == pytest.approx(res.box.anchor["momentum"])


def test_centre_near_the_bound_shifts_the_box_inside() -> None:
    res = _zoom([{"lr": 1.0}, {"lr": 10**-0.2}], [0.1, 0.2], ZoomRule(centre="mean", top_k=2, shrink=0.5))
    assert res.box.intervals["lr"] == pytest.approx((-2.0, 0.0))
    assert res.box.anchor["lr"] == pytest.approx(-0.1)


def test_single_feasible_trial_is_the_centre_whatever_the_rule() -> None:
    for rule in (ZoomRule(centre="mean", top_k=5), ZoomRule(centre="median", top_k=5),
                 ZoomRule(rank="smooth", smooth_k=3, centre="mean")):
        res = _zoom([{"lr": 1e-2}, {"lr": 1e-3}], [0.1, float("nan")], rule)
        assert res.selected == ("t0",)
        assert res.box.anchor["lr"] == pytest.approx(-2.0)


@pytest.mark.parametrize("rule", [ZoomRule(centre="mean"), ZoomRule(centre="median"),
                                  ZoomRule(rank="smooth"), ZoomRule(rank="smooth", centre="mean", top_k=4)])
def test_all_failed_keeps_the_box(rule) -> None:
    res = _zoom([{"lr": 1e-2}] * 3, [float("nan"), float("inf"), None], rule)
    orig = initial_box([LR])
    assert res.box == orig and res.selected == () and "no feasible" in res.reason
    assert _zoom([], [], rule).box == orig


def test_box_rule_ignores_centre() -> None:
    cfgs = [{"lr": 1e-3}, {"lr": 1e-2}, {"lr": 1.0}]
    a = _zoom(cfgs, [0.1, 0.2, 0.9], ZoomRule(kind="box", top_k=2))
    b = _zoom(cfgs, [0.1, 0.2, 0.9], ZoomRule(kind="box", top_k=2, centre="mean"))
    assert a.box.intervals == b.box.intervals


def test_choices_are_those_of_the_selected_trials() -> None:
    cfgs = [{"lr": 1e-2, "batch": 8}, {"lr": 1e-2, "batch": 16}, {"lr": 1e-1, "batch": 32}]
    res = _zoom(cfgs, [0.1, 0.2, 0.9], ZoomRule(centre="mean", top_k=2), params=(LR, BATCH))
    assert res.box.choices["batch"] == (8, 16)


# ---- smooth ranking: hand-computed ---------------------------------------------------------


def test_smoothed_values_hand_computed() -> None:
    # u = -3, -2.9, -2.8 (a good cluster) and -0.5 (a lucky lone point), -0.4 (its bad neighbour)
    cfgs = [{"lr": 10**u} for u in (-3.0, -2.9, -2.8, -0.5, -0.4)]
    tr = outcomes(cfgs, [0.2, 0.2, 0.2, 0.0, 1.0])
    sm = smoothed_values([LR], initial_box([LR]), tr, "loss", 2)
    assert sm[:3] == pytest.approx([0.2, 0.2, 0.2])
    assert sm[3] == pytest.approx((0.0 + 1.0 + 0.2) / 3)  # itself, -0.4, then -2.8
    assert sm[4] == pytest.approx((1.0 + 0.0 + 0.2) / 3)


def test_smooth_rank_prefers_a_good_neighbourhood_to_a_lucky_point() -> None:
    cfgs = [{"lr": 10**u} for u in (-3.0, -2.9, -2.8, -0.5, -0.4)]
    vals = [0.2, 0.2, 0.2, 0.0, 1.0]
    assert _zoom(cfgs, vals, ZoomRule()).selected[0] == "t3"  # the lucky point
    res = _zoom(cfgs, vals, ZoomRule(rank="smooth", smooth_k=2, top_k=1))
    assert res.selected == ("t0",)  # ties in the smoothed value keep the value order (t0 first)
    lo, hi = res.box.intervals["lr"]
    assert lo <= -3.0 <= hi and hi < -0.5


def test_smoothed_values_degenerate_cases() -> None:
    assert smoothed_values([LR], initial_box([LR]), [], "loss", 3) == []
    one = outcomes([{"lr": 1e-2}], [0.3])
    assert smoothed_values([LR], initial_box([LR]), one, "loss", 3) == [0.3]
    few = outcomes([{"lr": 1e-2}, {"lr": 1e-1}], [0.3, 0.5])  # k >= n - 1: the mean of all
    assert smoothed_values([LR], initial_box([LR]), few, "loss", 5) == pytest.approx([0.4, 0.4])
    same = outcomes([{"lr": 1e-2}] * 3, [0.1, 0.2, 0.3])  # identical configs: distance 0
    assert smoothed_values([LR], initial_box([LR]), same, "loss", 1) == pytest.approx([0.15, 0.15, 0.2])  # t2 + t0 (order breaks ties)
    zero = Box({"lr": (-2.0, -2.0)})  # a zero-width dimension is left out of the distance
    assert smoothed_values([LR], zero, few, "loss", 1) == pytest.approx([0.4, 0.4])
    with pytest.raises(ValueError):
        smoothed_values([LR], initial_box([LR]), one, "loss", 0)


def test_choice_mismatch_counts_as_distance() -> None:
    cfgs = [{"lr": 1e-2, "batch": 8}, {"lr": 1e-2, "batch": 32}, {"lr": 10**-1.5, "batch": 8}]
    sm = smoothed_values([LR, BATCH], initial_box([LR, BATCH]), outcomes(cfgs, [0.0, 1.0, 0.5]), "loss", 1)
    assert sm[0] == pytest.approx(0.25)  # nearest: same batch 0.5 in u away (0.125 of the width), not batch 32


def test_smooth_rank_in_max_mode() -> None:
    cfgs = [{"lr": 10**u} for u in (-3.0, -2.9, -2.8, -0.5, -0.4)]
    res = _zoom(cfgs, [-0.2, -0.2, -0.2, 0.0, -1.0], ZoomRule(rank="smooth", smooth_k=2, top_k=1), mode="max")
    assert res.selected == ("t0",)


# ---- properties ----------------------------------------------------------------------------

PROP_PARAMS = [
    Param("a", "linear", -1.0, 1.0),
    Param("lr", "log", 1e-5, 1e-1),
    Param("beta", "one_minus_log", 0.9, 0.9999),
    Param("c", "choice", choices=("x", "y", "z")),
]
NUM = [p for p in PROP_PARAMS if p.is_numeric]


@st.composite
def robust_case(draw):
    orig = initial_box(PROP_PARAMS)
    intervals = {}
    for p in NUM:
        lo, hi = orig.intervals[p.name]
        a, b = sorted((draw(st.floats(0.0, 1.0)), draw(st.floats(0.0, 1.0))))
        intervals[p.name] = (lo + a * (hi - lo), lo + b * (hi - lo))
    old = Box(intervals, {"c": orig.choices["c"]})
    n = draw(st.integers(0, 14))
    configs, values = [], []
    for _ in range(n):
        cfg = {}
        for p in NUM:
            lo, hi = old.intervals[p.name]
            cfg[p.name] = p.from_u(lo + draw(st.floats(0.0, 1.0)) * (hi - lo))
        cfg["c"] = draw(st.sampled_from(["x", "y", "z"]))
        configs.append(cfg)
        # few distinct values: ties are frequent, as with a quantised dev error
        values.append(draw(st.one_of(st.sampled_from([0.0, 0.1, 0.2]), st.floats(-10, 10),
                                     st.just(float("nan")), st.just(float("inf")), st.just(float("-inf")))))
    top_fraction = draw(st.one_of(st.none(), st.floats(0.05, 1.0)))
    rule = ZoomRule(
        kind=draw(st.sampled_from(["shrink", "adaptive", "box"])),
        top_k=draw(st.integers(1, 6)),
        top_fraction=top_fraction,
        shrink=draw(st.floats(0.05, 1.0)),
        min_width=draw(st.floats(0.0, 0.5)),
        rank=draw(st.sampled_from(["value", "smooth"])),
        smooth_k=draw(st.integers(1, 6)),
        centre=draw(st.sampled_from(["best", "mean", "median"])),
    )
    return orig, old, outcomes(configs, values), rule


@settings(max_examples=400, deadline=None)
@given(case=robust_case(), mode=st.sampled_from(["min", "max"]))
def test_robust_zoom_properties(case, mode) -> None:
    orig, old, trials, rule = case
    res = zoom(PROP_PARAMS, old, orig, trials, "loss", mode, rule=rule)
    by_id = {t.trial_id: t for t in trials}
    feasible = [t for t in trials if math.isfinite(t.metrics["loss"])]
    assert bool(res.selected) == bool(feasible)  # all failed / NaN / inf: nothing selected, box kept
    if not feasible:
        assert res.box == old
        return
    assert len(set(res.selected)) == len(res.selected)
    assert all(math.isfinite(by_id[t].metrics["loss"]) for t in res.selected)
    n_want = math.ceil(rule.top_fraction * len(feasible)) if rule.top_fraction is not None else rule.top_k
    assert len(res.selected) == min(max(1, n_want), len(feasible))
    tol = 1e-7
    for p in NUM:
        olo, ohi = old.intervals[p.name]
        lo, hi = res.box.intervals[p.name]
        assert olo - 1e-9 <= lo <= hi <= ohi + 1e-9  # inside the old box
        assert hi - lo <= (ohi - olo) + 1e-9  # width never grows
        us = [p.to_u(float(by_id[t].config[p.name])) for t in res.selected]
        a = res.box.anchor[p.name]
        assert lo - tol <= a <= hi + tol  # the centre is in the new box
        if rule.kind == "box":
            assert all(lo - tol <= u <= hi + tol for u in us)  # every selected trial
        else:
            assert min(us) - tol <= a <= max(us) + tol  # centre between the selected trials
            if rule.centre == "best":
                assert a == pytest.approx(us[0], abs=tol)
    kept = res.box.choices["c"]
    assert kept and set(kept) <= {"x", "y", "z"}
    assert {by_id[t].config["c"] for t in res.selected} == set(kept)
    sign = 1.0 if mode == "min" else -1.0
    if rule.rank == "value":
        best = min(sign * t.metrics["loss"] for t in feasible)
        assert sign * by_id[res.selected[0]].metrics["loss"] == best
    else:
        ok = [t for t in trials if math.isfinite(t.metrics["loss"])]
        sm = dict(zip([t.trial_id for t in ok], smoothed_values(PROP_PARAMS, old, ok, "loss", rule.smooth_k)))
        best = min(sign * v for v in sm.values())
        assert sign * sm[res.selected[0]] == pytest.approx(best)


@settings(max_examples=200, deadline=None)
@given(
    vals=st.lists(st.floats(-5, 5), min_size=1, max_size=12),
    us=st.lists(st.floats(-4.0, 0.0), min_size=12, max_size=12),
    k=st.integers(1, 15),
)
def test_smoothed_values_are_means_of_real_values(vals, us, k) -> None:
    tr = outcomes([{"lr": 10**u} for u in us[: len(vals)]], vals)
    sm = smoothed_values([LR], initial_box([LR]), tr, "loss", k)
    assert len(sm) == len(vals)
    assert all(min(vals) - 1e-9 <= v <= max(vals) + 1e-9 for v in sm)
    if k >= len(vals) - 1:
        assert sm == pytest.approx([float(np.mean(vals))] * len(vals))


# ---- through StagedPlan ----------------------------------------------------------------------


@pytest.mark.parametrize("rule", [ZoomRule(centre="mean", top_k=3), ZoomRule(centre="median", top_k=4),
                                  ZoomRule(rank="smooth", smooth_k=3), ZoomRule(rank="smooth", centre="mean")])
def test_staged_plan_with_a_robust_rule_nests_its_boxes_and_resumes(rule) -> None:
    import json

    from dlops.search.plan import Stage, StagedPlan, run_plan

    params = [LR, MOM, BATCH]

    def loss(cfg):
        r, s = math.log10(cfg["lr"]), math.log10(1 - cfg["momentum"])
        return {"loss": (r - s + 1.0) ** 2 + 0.1 * (s + 2.0) ** 2 + (0.0 if cfg["batch"] == 16 else 0.3)}

    stages = [Stage(8, method="sobol"), Stage(6), Stage(6), Stage(6)]
    plan = run_plan(StagedPlan(params, stages, "loss", "min", rule=rule, seed=1), loss)
    assert len(plan.boxes) == 4
    for k in range(1, 4):
        for name, (lo, hi) in plan.boxes[k].intervals.items():
            olo, ohi = plan.boxes[k - 1].intervals[name]
            assert olo - 1e-9 <= lo <= hi <= ohi + 1e-9
            assert lo - 1e-9 <= plan.boxes[k].anchor[name] <= hi + 1e-9
        assert plan.boxes[k].width("lr") < plan.boxes[k - 1].width("lr")
    # the state round-trips through JSON and the same seed gives the same search
    again = StagedPlan(params, stages, "loss", "min", rule=rule, seed=1)
    again.load_state_dict(json.loads(json.dumps(plan.state_dict())))
    assert [b.to_dict() for b in again.boxes] == [b.to_dict() for b in plan.boxes]
    twin = run_plan(StagedPlan(params, stages, "loss", "min", rule=rule, seed=1), loss)
    assert [t.config for t in twin.outcomes()] == [t.config for t in plan.outcomes()]
