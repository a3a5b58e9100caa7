"""The trust-region zoom, the exploration share, stage sizes tied to concurrency and dimension, and
the batched driver: pure functions, property-tested (hypothesis) and checked on small plans."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dlops.search.plan import FINISHED, STAGE_KEY, Stage, StagedPlan, run_plan, run_plan_batched, stage_sizes
from dlops.search.space import Box, Param, initial_box
from dlops.search.zoom import ZoomRule, on_inner_edge, stage_improved, trust_box, trust_step

PARAMS = [Param("lr", "log", 1e-4, 1.0), Param("beta", "one_minus_log", 0.9, 0.999),
          Param("opt", "choice", choices=("sgd", "adam"))]


def bowl(cfg) -> dict:
    r, s = math.log10(cfg["lr"]), math.log10(1 - cfg["beta"])
    return {"loss": (r + 2.5) ** 2 + (s + 2.0) ** 2 + (0.0 if cfg["opt"] == "adam" else 0.5)}


RULE = ZoomRule(kind="trust", shrink=0.5, grow=2.0, min_width=0.05)


@settings(max_examples=100, deadline=None)
@given(w=st.floats(1e-3, 1.0), improved=st.booleans(), edge=st.booleans(),
       shrink=st.floats(0.1, 1.0), grow=st.floats(1.0, 4.0), min_w=st.floats(0.0, 0.5))
def test_trust_step_properties(w, improved, edge, shrink, grow, min_w) -> None:
    rule = ZoomRule(kind="trust", shrink=shrink, grow=grow, min_width=min_w)
    nw, restarted = trust_step(w, improved, edge, rule)
    assert 0 < nw <= 1
    if restarted:
        assert nw == 1.0
    elif improved:
        assert nw >= min(w, 1.0) - 1e-12
    else:
        assert nw <= w + 1e-12
        if edge:
            assert nw == pytest.approx(w)  # moved, not shrunk


def test_trust_step_cases() -> None:
    assert trust_step(0.5, True, False, RULE) == (1.0, False)
    assert trust_step(0.5, False, False, RULE) == (0.25, False)
    assert trust_step(0.5, False, True, RULE) == (0.5, False)
    assert trust_step(0.08, False, False, RULE) == (1.0, True)  # 0.04 < min_width: restart
    with pytest.raises(ValueError, match="width"):
        trust_step(0.0, True, False, RULE)


@settings(max_examples=100, deadline=None)
@given(c=st.lists(st.floats(-8.0, 4.0), min_size=2, max_size=2), w=st.floats(1e-3, 1.0))
def test_trust_box_lies_inside_the_original_has_the_width_and_holds_the_centre(c, w) -> None:
    orig = initial_box(PARAMS)
    box = trust_box(orig, {"lr": c[0], "beta": c[1]}, w)
    for name, cu in zip(("lr", "beta"), c):
        olo, ohi = orig.intervals[name]
        lo, hi = box.intervals[name]
        assert olo - 1e-9 <= lo <= hi <= ohi + 1e-9
        assert hi - lo == pytest.approx(w * (ohi - olo))
        cc = min(ohi, max(olo, cu))
        assert lo - 1e-9 <= cc <= hi + 1e-9
        assert box.anchor[name] == pytest.approx(cc)
    assert box.choices == orig.choices


def test_trust_box_keeps_a_parameter_without_centre() -> None:
    orig = initial_box(PARAMS)
    box = trust_box(orig, {"lr": -2.0}, 0.5, {"opt": ("adam",)})
    assert box.intervals["beta"] == orig.intervals["beta"] and box.intervals["lr"] == (-3.0, -1.0)
    assert box.choices == {"opt": ("adam",)}


def test_on_inner_edge_is_only_a_cut_edge_not_the_original_bound() -> None:
    orig = initial_box(PARAMS)
    old = Box({"lr": (-3.0, -1.0), "beta": orig.intervals["beta"]}, orig.choices)
    assert on_inner_edge(PARAMS, old, orig, {"lr": 10**-1.01, "beta": 0.99, "opt": "sgd"}, 0.1)
    assert not on_inner_edge(PARAMS, old, orig, {"lr": 10**-2.0, "beta": 0.99, "opt": "sgd"}, 0.1)
    # beta at the bound of the original range: the range is too narrow, moving cannot help
    assert not on_inner_edge(PARAMS, old, orig, {"lr": 10**-2.0, "beta": 0.999, "opt": "sgd"}, 0.1)


def test_stage_improved() -> None:
    assert stage_improved(None, 1.0, "min") and not stage_improved(1.0, None, "min")
    assert stage_improved(1.0, 0.5, "min") and not stage_improved(1.0, 1.0, "min")
    assert stage_improved(1.0, 2.0, "max") and not stage_improved(1.0, math.nan, "max")


@settings(max_examples=150, deadline=None)
@given(n=st.integers(1, 300), q=st.integers(1, 32), d=st.integers(1, 20), first=st.floats(0.05, 1.0),
       per_dim=st.floats(0.0, 3.0), min_stage=st.integers(1, 16))
def test_stage_sizes_properties(n, q, d, first, per_dim, min_stage) -> None:
    s = stage_sizes(n, q, d, first=first, per_dim=per_dim, min_stage=min_stage)
    assert sum(s) == n and all(x >= 1 for x in s)
    if n >= q * len(s):
        assert all(x % q == 0 for x in s[:-1])
    assert s[0] >= min(n, d + 1)


def test_stage_sizes_examples_and_errors() -> None:
    assert stage_sizes(64, 8, 5) == [16, 8, 8, 8, 8, 8, 8]
    assert stage_sizes(64, 16, 10) == [16, 16, 16, 16]
    assert stage_sizes(64, 1, 2)[:2] == [16, 4]
    with pytest.raises(ValueError, match="concurrency"):
        stage_sizes(64, 0, 2)
    with pytest.raises(ValueError, match="first"):
        stage_sizes(64, 1, 2, first=0.0)


def test_new_rule_fields_are_validated() -> None:
    with pytest.raises(ValueError, match="grow"):
        ZoomRule(kind="trust", grow=0.5)
    with pytest.raises(ValueError, match="explore"):
        ZoomRule(explore=1.0)


def _plan(rule: ZoomRule, sizes=(8, 4, 4, 4, 4, 4), seed=0) -> StagedPlan:
    stages = [Stage(n, method="sobol" if i == 0 else "random") for i, n in enumerate(sizes)]
    return StagedPlan(PARAMS, stages, "loss", "min", rule=rule, seed=seed)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_trust_plan_boxes_stay_in_the_original_and_log_their_width(seed) -> None:
    plan = run_plan(_plan(RULE, seed=seed), bowl)
    orig = plan.original
    assert len(plan.boxes) == 6 and len(plan.zoom_log) == 5
    assert plan.zoom_log[0]["width"] == 0.5  # first zoom after the global stage: `shrink`
    for box, z in zip(plan.boxes[1:], plan.zoom_log):
        for name in ("lr", "beta"):
            olo, ohi = orig.intervals[name]
            lo, hi = box.intervals[name]
            assert olo - 1e-9 <= lo <= hi <= ohi + 1e-9
            if z["reason"].startswith("trust"):
                assert hi - lo == pytest.approx(z["width"] * (ohi - olo))
    for t in plan.outcomes():  # every trial lies in its stage's box
        box = plan.boxes[t.config[STAGE_KEY]]
        assert box.contains("lr", PARAMS[0].to_u(t.config["lr"]), tol=1e-6)
    best = plan.best()
    assert best.metrics["loss"] == min(t.metrics["loss"] for t in plan.outcomes())


def test_a_stage_that_does_not_improve_shrinks_and_a_tiny_box_restarts() -> None:
    plan = _plan(ZoomRule(kind="trust", shrink=0.5, min_width=0.2), sizes=(4, 2, 2, 2, 2))
    calls = {"n": 0}

    def worse_after_first(cfg) -> dict:  # nothing after the first stage improves
        calls["n"] += 1
        return {"loss": 0.0 if calls["n"] <= 4 else 1.0 + calls["n"]}

    run_plan(plan, worse_after_first)
    widths = [z["width"] for z in plan.zoom_log]
    assert widths[:3] == [0.5, 0.25, 1.0]  # 0.125 < 0.2: restart in the original box
    assert plan.zoom_log[2]["reason"].startswith("restart")
    assert plan.boxes[3].intervals == plan.original.intervals and plan.restart_stage == 3


def test_trust_state_round_trips_and_resumes_identically() -> None:
    a = run_plan(_plan(RULE, seed=4), bowl)
    b = _plan(RULE, seed=4)
    for i in range(13):  # stop in stage 2, save, restore into a fresh plan, go on
        key = f"t{i:05d}"
        b.record(key, bowl(b.suggest(key)))
    c = _plan(RULE, seed=4)
    c.load_state_dict(b.state_dict())
    assert c.trust_width == b.trust_width
    run_plan_c = c
    i = 13
    while (cfg := run_plan_c.suggest(f"t{i:05d}")) != FINISHED:
        run_plan_c.record(f"t{i:05d}", bowl(cfg))
        i += 1
    assert [bx.to_dict() for bx in c.boxes] == [bx.to_dict() for bx in a.boxes]


def test_explore_share_draws_in_the_original_box() -> None:
    rule = ZoomRule(kind="shrink", shrink=0.2, explore=0.25)
    plan = run_plan(_plan(rule, sizes=(8, 8, 8)), bowl)
    for k in (1, 2):
        box = plan.boxes[k]
        outside = [t for t in plan.outcomes(k) if not box.contains("lr", PARAMS[0].to_u(t.config["lr"]), tol=1e-9)
                   or not box.contains("beta", PARAMS[1].to_u(t.config["beta"]), tol=1e-9)]
        assert len(plan.outcomes(k)) == 8 and 0 < len(outside) <= 2  # 25% of 8 drawn anywhere


@pytest.mark.parametrize("q", [1, 3, 8])
def test_batched_driver_gives_the_sequential_search_and_counts_rounds(q) -> None:
    seq = run_plan(_plan(RULE, seed=5), bowl)
    par = _plan(RULE, seed=5)
    rounds = run_plan_batched(par, bowl, q)
    assert [t.config for t in par.outcomes()] == [t.config for t in seq.outcomes()]
    assert rounds == sum(-(-s.n_trials // q) for s in par.stages)
