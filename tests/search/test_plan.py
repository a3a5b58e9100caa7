"""Tests of dlops.search.plan.StagedPlan: stages, barrier, resume, tiers, history."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dlops.search.plan import EPOCHS_KEY, FINISHED, STAGE_KEY, Stage, StagedPlan, run_plan
from dlops.search.space import Constraint, Param
from dlops.search.zoom import ZoomRule

PARAMS = [
    Param("lr", "log", 1e-4, 1.0, tier=1),
    Param("beta", "one_minus_log", 0.9, 0.999, tier=2, default=0.9),
    Param("opt", "choice", choices=("adam", "sgd"), tier=1),
]


def loss(cfg) -> dict:
    """A bowl in the sampling scale: minimum at lr = 1e-2.5, beta = 1 - 1e-2, opt = adam."""
    r = np.log10(cfg["lr"])
    s = np.log10(1 - cfg["beta"])
    return {"loss": (r + 2.5) ** 2 + (s + 2.0) ** 2 + (0.0 if cfg["opt"] == "adam" else 0.5)}


def make(stages=None, **kw) -> StagedPlan:
    stages = stages or [Stage(8, epochs=3, method="sobol"), Stage(6, epochs=5), Stage(6, epochs=9)]
    return StagedPlan(PARAMS, stages, "loss", "min", seed=kw.pop("seed", 0), **kw)


def u_of(p: Param, cfg) -> float:
    return p.to_u(float(cfg[p.name]))


def test_stages_nest_in_the_sampling_scale_and_configs_lie_in_their_box() -> None:
    plan = run_plan(make(), loss)
    assert len(plan.boxes) == 3 and plan.stage == 3
    for k in range(1, len(plan.boxes)):
        for name, (lo, hi) in plan.boxes[k].intervals.items():
            olo, ohi = plan.boxes[k - 1].intervals[name]
            assert olo - 1e-9 <= lo <= hi <= ohi + 1e-9
        assert plan.boxes[k].width("lr") < plan.boxes[k - 1].width("lr")  # it does zoom
    for t in plan.outcomes():
        box = plan.boxes[t.config[STAGE_KEY]]
        for p in PARAMS[:2]:
            assert box.contains(p.name, u_of(p, t.config))
    assert [len(plan.outcomes(k)) for k in range(3)] == [8, 6, 6]
    assert {t.config[EPOCHS_KEY] for t in plan.outcomes(2)} == {9}
    assert plan.best() is not None and plan.best().metrics["loss"] == min(t.metrics["loss"] for t in plan.outcomes())
    assert [z["stage"] for z in plan.zoom_log] == [0, 1]


def test_barrier_until_every_trial_of_the_stage_is_recorded() -> None:
    plan = make([Stage(3), Stage(2)])
    keys = [f"k{i}" for i in range(3)]
    cfgs = [plan.suggest(k) for k in keys]
    assert all(isinstance(c, dict) and c[STAGE_KEY] == 0 for c in cfgs)
    assert plan.suggest("k3") is None  # barrier
    plan.record("k0", loss(cfgs[0]))
    plan.record("k1", {})  # a failed trial still ends
    assert plan.suggest("k3") is None
    assert plan.suggest("k0") == cfgs[0]  # asking again for a known key returns its config
    plan.record("k2", loss(cfgs[2]))
    c3 = plan.suggest("k3")
    assert isinstance(c3, dict) and c3[STAGE_KEY] == 1
    c4 = plan.suggest("k4")
    assert plan.suggest("k5") is None
    plan.record("k3", loss(c3))
    plan.record("k4", loss(c4))
    assert plan.suggest("k5") == FINISHED
    assert plan.suggest("k6") == FINISHED


def test_state_dict_json_round_trip_resumes_to_the_same_suggestions() -> None:
    a = make(seed=7)
    for i in range(10):  # into stage 1, with one trial of stage 1 still running
        cfg = a.suggest(f"t{i}")
        if i < 9:
            a.record(f"t{i}", loss(cfg))
    state = json.loads(json.dumps(a.state_dict()))
    b = make(seed=7)
    b.load_state_dict(state)
    assert b.suggest("t9") == a.suggest("t9")
    for plan in (a, b):
        plan.record("t9", loss(plan.suggest("t9")))
    seq_a, seq_b = [], []
    for i in range(10, 25):
        ca, cb = a.suggest(f"t{i}"), b.suggest(f"t{i}")
        seq_a.append(ca)
        seq_b.append(cb)
        if isinstance(ca, dict):
            a.record(f"t{i}", loss(ca))
            b.record(f"t{i}", loss(cb))
    assert seq_a == seq_b and seq_a[-1] == FINISHED
    assert [bx.to_dict() for bx in a.boxes] == [bx.to_dict() for bx in b.boxes]
    assert a.best().trial_id == b.best().trial_id


def test_different_seeds_give_different_configs() -> None:
    assert make(seed=1).suggest("x") != make(seed=2).suggest("x")


def test_tiers_hold_higher_tiers_at_their_default_and_do_not_zoom_them() -> None:
    plan = make([Stage(6, tiers=1), Stage(6)])
    run_plan(plan, loss)
    stage0 = plan.outcomes(0)
    assert all(t.config["beta"] == 0.9 for t in stage0)
    assert len({t.config["lr"] for t in stage0}) == 6
    # beta was not searched in stage 0: stage 1 gets its whole original interval back
    assert plan.boxes[1].intervals["beta"] == plan.original.intervals["beta"]
    assert plan.boxes[1].width("lr") < plan.original.width("lr")
    assert len({t.config["beta"] for t in plan.outcomes(1)}) > 1


def test_tier_without_default_is_held_at_the_middle_of_its_range() -> None:
    ps = [Param("lr", "log", 1e-4, 1.0), Param("units", "log_int", 16, 256, tier=2)]
    plan = StagedPlan(ps, [Stage(4, tiers=1)], "loss", "min")
    cfg = plan.suggest("a")
    assert cfg["units"] == 64  # 10 ** mean(log10 16, log10 256) = 64


def test_forget_gives_the_config_to_the_next_trial() -> None:
    plan = make([Stage(2), Stage(2)])
    c0 = plan.suggest("a")
    plan.forget("a")
    assert plan.suggest("b") == c0
    plan.suggest("c")
    assert plan.suggest("d") is None  # still 2 trials in stage 0, not 3


def test_history_keeps_the_box_on_the_best_so_far() -> None:
    # stage 1 only finds worse trials: with use_history the box of stage 2 stays on stage 0's best
    ps = [Param("x", "linear", 0.0, 1.0)]
    for hist in (True, False):
        plan = StagedPlan(ps, [Stage(4), Stage(4), Stage(2)], "loss", "min",
                          rule=ZoomRule(kind="shrink", shrink=0.5, use_history=hist), seed=3)
        n = 0

        def f(cfg):
            nonlocal n
            n += 1
            return {"loss": 0.0 if n == 1 else 10.0 + cfg["x"]}  # the very first trial is best

        run_plan(plan, f)
        first = plan.outcomes(0)[0].config["x"]
        centre = plan.boxes[2].anchor["x"]
        assert (centre == pytest.approx(first)) is hist


def test_constraints_and_failures_never_best() -> None:
    plan = make([Stage(5), Stage(2)], constraints=[Constraint("latency_ms", "<=", 10.0)])
    i = 0

    def f(cfg):
        nonlocal i
        i += 1
        if i == 1:
            raise RuntimeError("trial crashed")
        return {**loss(cfg), "latency_ms": 5.0 if i % 2 else 50.0}

    run_plan(plan, f)
    best = plan.best()
    assert best is not None and best.metrics["latency_ms"] <= 10.0
    assert plan.results[plan.outcomes(0)[0].trial_id] == {}


def test_all_failed_stage_keeps_the_box() -> None:
    plan = run_plan(make([Stage(3), Stage(3)]), lambda cfg: {"loss": float("nan")})
    assert plan.boxes[1] == plan.boxes[0]
    assert "no feasible" in plan.zoom_log[0]["reason"]
    assert plan.best() is None


def test_bad_plans_raise() -> None:
    with pytest.raises(ValueError, match="at least one stage"):
        StagedPlan(PARAMS, [], "loss", "min")
    with pytest.raises(ValueError, match=r"stages\[1\]\.trials"):
        StagedPlan(PARAMS, [Stage(2), Stage(0)], "loss", "min")
    with pytest.raises(ValueError, match="mode"):
        StagedPlan(PARAMS, [Stage(2)], "loss", "best")  # type: ignore[arg-type]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["suggest", "record", "fail", "forget", "reload"]), st.integers(0, 7)),
                max_size=80))
def test_the_stage_counts_match_a_scan_of_every_trial(ops) -> None:
    """The barrier and the stage sizes use per-stage counts kept beside ``trial_stage`` and
    ``results`` (O(1) per suggestion); after any mix of suggest / record / forget / state reload
    they agree with counting every trial, and the barrier is the one a full scan gives."""
    plan = make([Stage(4, method="sobol"), Stage(3), Stage(5)])
    for op, i in ops:
        key = f"t{i}"
        if op == "suggest":
            plan.suggest(key)
        elif op in ("record", "fail"):
            plan.record(key, loss(plan.suggested[key]) if op == "record" and key in plan.suggested else None)
        elif op == "forget":
            plan.forget(key)
        else:
            fresh = make([Stage(4, method="sobol"), Stage(3), Stage(5)])
            fresh.load_state_dict(json.loads(json.dumps(plan.state_dict())))
            plan = fresh
        for k in range(len(plan.stages)):
            keys = [t for t, s in plan.trial_stage.items() if s == k]
            assert plan._issued[k] == len(keys)
            assert plan._ended[k] == sum(t in plan.results for t in keys)
            assert plan._stage_done(k) == (len(keys) >= plan.stages[k].n_trials and all(t in plan.results for t in keys))
