"""Unit and property tests of dlops.search.space: scales, validation, selection, the zoom."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from dlops.search.space import Box, Constraint, Param, TrialOutcome, initial_box, sample_box, select_top
from dlops.search.zoom import ZoomRule, zoom

LR = Param("lr", "log", 1e-4, 1.0)
BETA = Param("beta", "one_minus_log", 0.9, 0.999)


def outcomes(configs, values, metric="loss"):
    return [TrialOutcome(f"t{i}", c, {metric: v}) for i, (c, v) in enumerate(zip(configs, values))]


# ---- scales --------------------------------------------------------------------------------

SCALE_PARAMS = [
    Param("lin", "linear", -2.0, 3.0),
    Param("lr", "log", 1e-4, 1.0),
    Param("beta", "one_minus_log", 0.9, 0.999),
    Param("units", "int", 16, 256),
    Param("batch", "log_int", 8, 512),
    Param("dropout", "linear", 0.0, 0.5, q=0.05),
    Param("wd", "log", 1e-6, 1e-2, q=1e-6),
]


@pytest.mark.parametrize("p", SCALE_PARAMS, ids=lambda p: p.name)
@pytest.mark.parametrize("method", ["random", "sobol"])
def test_sampled_values_inside_bounds_and_of_the_right_type(p: Param, method: str) -> None:
    cfgs = sample_box([p], initial_box([p]), 256, np.random.default_rng(0), method)
    xs = [c[p.name] for c in cfgs]
    assert all(p.low <= x <= p.high for x in xs)
    if p.scale in ("int", "log_int"):
        assert all(type(x) is int for x in xs)
    else:
        assert all(isinstance(x, float) for x in xs)
    if p.q is not None:
        assert all(abs(x / p.q - round(x / p.q)) < 1e-6 for x in xs)
    assert len(set(xs)) > 5  # it does sample, not return one value


@pytest.mark.parametrize("p", SCALE_PARAMS, ids=lambda p: p.name)
def test_both_bounds_are_reachable(p: Param) -> None:
    lo, hi = initial_box([p]).intervals[p.name]
    assert {p.from_u(lo), p.from_u(hi)} == {p.low, p.high}  # upper (and lower) bound included
    assert {p.from_u(lo - 1.0), p.from_u(hi + 1.0)} == {p.low, p.high}  # clipped, never outside


@given(u=st.floats(-4.0, 0.0))
def test_log_scale_round_trip(u: float) -> None:
    x = LR.from_u(u)
    assert 1e-4 <= x <= 1.0
    assert LR.to_u(x) == pytest.approx(u, abs=1e-9)


@given(u=st.floats(-3.0, -1.0))
def test_one_minus_log_scale_maps_r_to_beta(u: float) -> None:
    b = BETA.from_u(u)
    assert 0.9 - 1e-12 <= b <= 0.999 + 1e-12
    assert b == pytest.approx(1 - 10**u)


def test_sampling_is_uniform_in_the_exponent_not_in_the_value() -> None:
    xs = np.array([c["lr"] for c in sample_box([LR], initial_box([LR]), 4000, np.random.default_rng(1))])
    # each decade of [1e-4, 1] gets about a quarter of the draws (uniform in r = log10 lr)
    counts = np.histogram(np.log10(xs), bins=[-4, -3, -2, -1, 0])[0] / len(xs)
    assert np.all(np.abs(counts - 0.25) < 0.04)


def test_same_seed_same_configs_and_sobol_spreads() -> None:
    box = initial_box([LR, BETA])
    a = sample_box([LR, BETA], box, 16, np.random.default_rng(3), "sobol")
    b = sample_box([LR, BETA], box, 16, np.random.default_rng(3), "sobol")
    assert a == b
    # a Sobol set of 16 points puts exactly 4 in each quarter of each coordinate
    r = np.array([LR.to_u(c["lr"]) for c in a])
    assert np.all(np.histogram(r, bins=[-4, -3, -2, -1, 0])[0] == 4)


def test_choice_and_const_and_fixed() -> None:
    ps = [LR, Param("opt", "choice", choices=("adam", "sgd")), Param("seed", "const", value=7)]
    cfgs = sample_box(ps, initial_box(ps), 50, np.random.default_rng(0), fixed={"lr": 0.01})
    assert {c["opt"] for c in cfgs} == {"adam", "sgd"}
    assert all(c["seed"] == 7 and c["lr"] == 0.01 for c in cfgs)


def test_anchored_sampling_keeps_coordinates_at_the_anchor() -> None:
    ps = [Param(f"x{i}", "linear", 0.0, 1.0) for i in range(4)]
    box = Box({p.name: (0.0, 1.0) for p in ps}, anchor={p.name: 0.5 for p in ps})
    cfgs = sample_box(ps, box, 400, np.random.default_rng(0), "anchored", perturb=0.25)
    kept = np.array([[c[p.name] == 0.5 for p in ps] for c in cfgs])
    assert kept.sum(axis=1).max() <= 3  # at least one coordinate drawn per configuration
    # kept with probability (1 - 0.25) unless it is the forced coordinate (1 in 4): 0.75 * 0.75
    assert abs(kept.mean() - 0.5625) < 0.03
    with pytest.raises(ValueError, match="perturb"):
        sample_box(ps, box, 1, np.random.default_rng(0), "anchored", perturb=0.0)
    with pytest.raises(ValueError, match="method"):
        sample_box(ps, box, 1, np.random.default_rng(0), "grid")  # type: ignore[arg-type]


# ---- validation ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        (dict(name="lr", scale="log", low=0.0, high=1.0), r"search\.space\.lr\.low.*low > 0"),
        (dict(name="lr", scale="log", low=-1e-3, high=1.0), r"search\.space\.lr"),
        (dict(name="bs", scale="log_int", low=0, high=64), r"search\.space\.bs\.low"),
        (dict(name="beta", scale="one_minus_log", low=0.0, high=0.99), r"search\.space\.beta.*0 < low"),
        (dict(name="beta", scale="one_minus_log", low=0.9, high=1.0), r"search\.space\.beta"),
        (dict(name="drop", scale="linear", low=0.0, high=0.5, q=0.3), r"search\.space\.drop\.q.*high=0\.5"),
        (dict(name="drop", scale="linear", low=0.1, high=0.9, q=0.25), r"search\.space\.drop\.q.*low=0\.1"),
        (dict(name="drop", scale="linear", low=0.0, high=0.5, q=0.0), r"search\.space\.drop\.q"),
        (dict(name="x", scale="linear", low=2.0, high=1.0), r"search\.space\.x.*greater"),
        (dict(name="x", scale="linear", low=0.0, high=math.inf), r"search\.space\.x.*finite"),
        (dict(name="n", scale="int", low=1.5, high=8), r"search\.space\.n.*whole-number"),
        (dict(name="x", scale="cubic", low=1.0, high=2.0), r"search\.space\.x\.scale"),
        (dict(name="opt", scale="choice", choices=()), r"search\.space\.opt\.choices"),
        (dict(name="x", scale="linear", low=1.0), r"search\.space\.x.*'low' and 'high'"),
    ],
)
def test_bad_params_raise_naming_the_parameter(kwargs: dict, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        Param(**kwargs)


def test_valid_quantised_bounds_are_accepted() -> None:
    Param("drop", "linear", 0.1, 0.5, q=0.1)  # 0.1 / 0.1 and 0.5 / 0.1 are whole (up to rounding)
    Param("units", "int", 16, 256, q=16)


def test_zoom_rule_validation() -> None:
    for kw in (dict(kind="grid"), dict(shrink=0.0), dict(shrink=1.5), dict(margin=-1), dict(top_k=0), dict(min_width=2)):
        with pytest.raises(ValueError, match="search.zoom"):
            ZoomRule(**kw)


# ---- select_top ----------------------------------------------------------------------------


def test_select_top_never_picks_nan_inf_or_missing() -> None:
    ts = [
        TrialOutcome("nan", {}, {"loss": float("nan")}),
        TrialOutcome("inf", {}, {"loss": float("-inf")}),
        TrialOutcome("none", {}, {"loss": None}),
        TrialOutcome("missing", {}, {}),
        TrialOutcome("str", {}, {"loss": "oops"}),
        TrialOutcome("ok", {}, {"loss": 3.0}),
    ]
    assert [t.trial_id for t in select_top(ts, "loss", "min", k=3)] == ["ok"]
    assert [t.trial_id for t in select_top(ts, "loss", "max", k=3)] == ["ok"]
    assert select_top(ts[:5], "loss", "min") == []


def test_select_top_respects_constraints_and_mode() -> None:
    ts = [
        TrialOutcome("fast", {}, {"acc": 0.8, "latency_ms": 5.0}),
        TrialOutcome("slow", {}, {"acc": 0.95, "latency_ms": 50.0}),
        TrialOutcome("unknown_latency", {}, {"acc": 0.99}),
        TrialOutcome("ok", {}, {"acc": 0.9, "latency_ms": 10.0}),
    ]
    c = [Constraint("latency_ms", "<=", 10.0)]
    assert [t.trial_id for t in select_top(ts, "acc", "max", c)] == ["ok", "fast"]
    assert [t.trial_id for t in select_top(ts, "acc", "max", [Constraint("latency_ms", "<", 10.0)])] == ["fast"]
    assert [t.trial_id for t in select_top(ts, "acc", "min", c, k=1)] == ["fast"]


def test_select_top_ties_are_stable_and_fewer_than_k() -> None:
    ts = outcomes([{}] * 4, [2.0, 1.0, 2.0, 1.0])
    assert [t.trial_id for t in select_top(ts, "loss", "min", k=10)] == ["t1", "t3", "t0", "t2"]
    assert [t.trial_id for t in select_top(ts, "loss", "max", k=3)] == ["t0", "t2", "t1"]
    assert len(select_top(ts, "loss", "min", fraction=0.5)) == 2
    assert len(select_top(ts, "loss", "min", fraction=0.01)) == 1


def test_select_top_bad_arguments() -> None:
    with pytest.raises(ValueError, match="mode"):
        select_top([], "loss", "minimum")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="k must"):
        select_top([], "loss", "min", k=0)
    with pytest.raises(ValueError, match="fraction"):
        select_top([], "loss", "min", fraction=1.5)


# ---- zoom: hand-computed values ------------------------------------------------------------


def _zoom1(configs, values, rule, params=(LR,), old=None, mode="min"):
    orig = initial_box(list(params))
    return zoom(list(params), old or orig, orig, outcomes(configs, values), "loss", mode, rule=rule)


def test_shrink_around_r_minus_2_gives_minus_3_to_minus_1() -> None:
    res = _zoom1([{"lr": 1e-2}, {"lr": 0.5}], [0.1, 0.9], ZoomRule(kind="shrink", shrink=0.5))
    lo, hi = res.box.intervals["lr"]
    assert (lo, hi) == (pytest.approx(-3.0), pytest.approx(-1.0))
    assert res.selected[0] == "t0" and res.reason == "zoomed"
    assert res.box.anchor["lr"] == pytest.approx(-2.0)


def test_shrink_is_shifted_not_cut_at_the_old_bounds() -> None:
    res = _zoom1([{"lr": 10**-3.9}], [0.1], ZoomRule(kind="shrink", shrink=0.5))
    assert res.box.intervals["lr"] == (pytest.approx(-4.0), pytest.approx(-2.0))


def test_shrink_in_beta_zooms_in_r() -> None:
    # beta = 1 - 10**r, r in [-3, -1]; best beta 0.99 is r = -2; shrink 0.5 -> r in [-2.5, -1.5]
    res = _zoom1([{"beta": 0.99}], [0.0], ZoomRule(kind="shrink", shrink=0.5), params=(BETA,))
    assert res.box.intervals["beta"] == (pytest.approx(-2.5), pytest.approx(-1.5))


def test_box_rule_bounding_box_with_margin() -> None:
    cfgs = [{"lr": 1e-3}, {"lr": 1e-2}, {"lr": 0.9}]
    res = _zoom1(cfgs, [0.1, 0.2, 5.0], ZoomRule(kind="box", top_k=2, margin=0.25))
    assert res.box.intervals["lr"] == (pytest.approx(-3.25), pytest.approx(-1.75))
    assert res.selected == ("t0", "t1")


def test_adaptive_rule_keeps_unimportant_dimension_wide() -> None:
    ps = [Param("a", "linear", 0.0, 1.0), Param("b", "linear", 0.0, 1.0)]
    cfgs = [{"a": 0.5, "b": 0.05}, {"a": 0.52, "b": 0.95}, {"a": 0.48, "b": 0.5}]
    res = _zoom1(cfgs, [0.0, 0.1, 0.2], ZoomRule(kind="adaptive", shrink=0.5, top_k=3, margin=0.0), params=ps)
    assert res.box.width("a") == pytest.approx(0.5)  # agree on a: shrink
    assert res.box.width("b") == pytest.approx(0.9)  # spread over 0.9 of b: kept (nearly) as wide


def test_max_mode_centres_on_the_largest() -> None:
    res = _zoom1([{"lr": 1e-3}, {"lr": 1e-1}], [0.1, 0.9], ZoomRule(shrink=0.5), mode="max")
    assert res.box.intervals["lr"] == (pytest.approx(-2.0), pytest.approx(0.0))


# ---- zoom: degenerate cases ----------------------------------------------------------------


def test_all_failed_keeps_the_box_and_says_why() -> None:
    res = _zoom1([{"lr": 1e-2}] * 3, [float("nan"), float("inf"), None], ZoomRule())
    assert res.box == initial_box([LR]) and res.selected == ()
    assert "no feasible trial" in res.reason


def test_no_trials_at_all() -> None:
    res = _zoom1([], [], ZoomRule())
    assert res.box == initial_box([LR]) and "no feasible" in res.reason


def test_fewer_finished_than_k_uses_those_there_are() -> None:
    cfgs = [{"lr": 1e-3}, {"lr": 1e-2}, {"lr": 0.5}]
    res = _zoom1(cfgs, [0.1, float("nan"), 0.2], ZoomRule(kind="box", top_k=5, margin=0.0))
    assert set(res.selected) == {"t0", "t2"}
    lo, hi = res.box.intervals["lr"]
    assert lo == pytest.approx(-3.0) and hi == pytest.approx(math.log10(0.5))


def test_nan_inf_never_become_the_centre() -> None:
    cfgs = [{"lr": 1e-4}, {"lr": 1.0}, {"lr": 1e-2}]
    res = _zoom1(cfgs, [float("-inf"), float("nan"), 0.3], ZoomRule(kind="shrink", shrink=0.5))
    assert res.selected[0] == "t2"
    assert res.box.intervals["lr"] == (pytest.approx(-3.0), pytest.approx(-1.0))


def test_ties_centre_on_the_first_trial() -> None:
    res = _zoom1([{"lr": 1e-2}, {"lr": 1e-3}], [0.5, 0.5], ZoomRule(kind="shrink", shrink=0.5))
    assert res.selected[0] == "t0"
    assert res.box.intervals["lr"] == (pytest.approx(-3.0), pytest.approx(-1.0))


def test_single_distinct_value_gives_the_minimum_width() -> None:
    rule = ZoomRule(kind="box", top_k=3, margin=0.25, min_width=0.1)
    res = _zoom1([{"lr": 1e-2}] * 3, [0.1, 0.2, 0.3], rule)
    lo, hi = res.box.intervals["lr"]
    assert hi - lo == pytest.approx(0.1 * 4.0)  # min_width is a fraction of the original width 4
    assert lo < -2.0 < hi


def test_categorical_keeps_the_top_trials_choices_never_none() -> None:
    ps = [LR, Param("opt", "choice", choices=("adam", "sgd", "rmsprop"))]
    orig = initial_box(ps)
    cfgs = [{"lr": 1e-2, "opt": "sgd"}, {"lr": 1e-3, "opt": "adam"}, {"lr": 1e-1, "opt": "rmsprop"}]
    res = zoom(ps, orig, orig, outcomes(cfgs, [0.1, 0.2, 0.9]), "loss", "min", rule=ZoomRule(top_k=2))
    assert res.box.choices["opt"] == ("adam", "sgd")  # original order, only those among the top
    # a top trial whose choice is not among the old box's choices: the old choices are kept
    old = Box(orig.intervals, {"opt": ("rmsprop",)})
    res = zoom(ps, old, orig, outcomes([{"lr": 1e-2, "opt": "sgd"}], [0.1]), "loss", "min", rule=ZoomRule())
    assert res.box.choices["opt"] == ("rmsprop",)


def test_edge_warning_when_the_best_sits_on_the_original_bound() -> None:
    res = _zoom1([{"lr": 1.0}, {"lr": 1e-2}], [0.1, 0.5], ZoomRule())
    assert len(res.edges) == 1 and "lr" in res.edges[0] and "upper" in res.edges[0]
    res = _zoom1([{"lr": 1e-4}], [0.1], ZoomRule())
    assert "lower" in res.edges[0]
    assert _zoom1([{"lr": 1e-2}], [0.1], ZoomRule()).edges == ()


def test_box_round_trips_through_a_dict() -> None:
    b = Box({"lr": (-3.0, -1.0)}, {"opt": ("adam",)}, {"lr": -2.0})
    assert Box.from_dict(b.to_dict()) == b


# ---- zoom: properties ----------------------------------------------------------------------

PROP_PARAMS = [
    Param("a", "linear", -1.0, 1.0),
    Param("lr", "log", 1e-5, 1e-1),
    Param("beta", "one_minus_log", 0.9, 0.9999),
]


@st.composite
def zoom_case(draw):
    orig = initial_box(PROP_PARAMS)
    intervals = {}
    for p in PROP_PARAMS:
        lo, hi = orig.intervals[p.name]
        a = draw(st.floats(0.0, 1.0))
        b = draw(st.floats(0.0, 1.0))
        a, b = sorted((a, b))
        intervals[p.name] = (lo + a * (hi - lo), lo + b * (hi - lo))
    old = Box(intervals)
    n = draw(st.integers(1, 12))
    configs, values = [], []
    for _ in range(n):
        cfg = {}
        for p in PROP_PARAMS:
            lo, hi = old.intervals[p.name]
            cfg[p.name] = p.from_u(lo + draw(st.floats(0.0, 1.0)) * (hi - lo))
        configs.append(cfg)
        values.append(draw(st.one_of(st.floats(-10, 10), st.just(float("nan")), st.just(float("inf")))))
    rule = ZoomRule(
        kind=draw(st.sampled_from(["shrink", "box", "adaptive"])),
        top_k=draw(st.integers(1, 5)),
        margin=draw(st.floats(0.0, 1.0)),
        shrink=draw(st.floats(0.05, 1.0)),
        min_width=draw(st.floats(0.0, 0.5)),
    )
    return orig, old, outcomes(configs, values), rule


@settings(max_examples=300, deadline=None)
@given(case=zoom_case(), mode=st.sampled_from(["min", "max"]))
def test_zoom_properties(case, mode) -> None:
    orig, old, trials, rule = case
    res = zoom(PROP_PARAMS, old, orig, trials, "loss", mode, rule=rule)
    by_id = {t.trial_id: t for t in trials}
    tol = 1e-9
    for p in PROP_PARAMS:
        olo, ohi = old.intervals[p.name]
        lo, hi = res.box.intervals[p.name]
        assert olo - tol <= lo <= hi <= ohi + tol  # inside the old box
        assert hi - lo <= (ohi - olo) + tol  # no width grows
        must = res.selected if rule.kind == "box" else res.selected[:1]
        for tid in must:  # box: every selected trial; shrink/adaptive: the best
            u = p.to_u(float(by_id[tid].config[p.name]))
            assert lo - 1e-7 <= u <= hi + 1e-7
        if res.selected:
            assert lo - tol <= res.box.anchor[p.name] <= hi + tol
    feasible = [t for t in trials if math.isfinite(t.metrics["loss"])]
    assert bool(res.selected) == bool(feasible)
    if feasible:
        best = (min if mode == "min" else max)(t.metrics["loss"] for t in feasible)
        assert by_id[res.selected[0]].metrics["loss"] == best


@settings(max_examples=100, deadline=None)
@given(u=st.floats(-4.0, 0.0), shrink=st.floats(0.05, 1.0))
def test_shrink_width_is_shrink_times_old_width(u: float, shrink: float) -> None:
    res = _zoom1([{"lr": 10**u}], [0.0], ZoomRule(kind="shrink", shrink=shrink, min_width=0.0))
    assume(shrink < 1.0)
    assert res.box.width("lr") == pytest.approx(4.0 * shrink)
