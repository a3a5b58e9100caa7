"""Stages through the real Tuner: ASHA early stopping inside a stage (barrier, zoom, MLflow
statuses) and a 3-stage search whose boxes nest in the sampling scale. Real Ray (the two-node
loopback cluster of conftest.py), real MLflow (SQLite in tmp_path), cheap trainables."""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

import pytest

from engine_helpers import pickled_by_value, mlflow_search_run, runs_of

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"

EPOCHS = 9


@pytest.fixture(autouse=True)
def _by_value():
    # the workers of the test cluster cannot import this test folder: ship the trainables by value
    yield from pickled_by_value(sys.modules[__name__])


def epochs_trainable(config: dict, payload: dict) -> None:
    """``dev/error = x + 1/epoch`` for ``config['epochs']`` epochs, ``payload['sleep']`` s each;
    reports its start time with the first epoch and each report's time."""
    import time

    from ray import tune

    t0 = time.time()
    for e in range(1, int(config["epochs"]) + 1):
        time.sleep(float(payload["sleep"]))
        tune.report({"dev/error": float(config["x"]) + 1.0 / e, "epoch": e, "t0": t0, "t_report": time.time()})


def scale_trainable(config: dict, payload: dict) -> None:
    """One epoch; ``dev/error`` is smallest at lr = 1e-2, momentum = 0.99 (in u: -2, -2)."""
    import math

    from ray import tune

    u_lr = math.log10(float(config["lr"]))
    u_m = math.log10(1.0 - float(config["momentum"]))
    tune.report({"dev/error": (u_lr + 2.0) ** 2 + (u_m + 2.0) ** 2, "epoch": 1})


def _parse_box(s: str) -> tuple[float, float]:
    lo, hi = s.strip("[]").split(",")
    return float(lo), float(hi)


@pytest.mark.slow
def test_asha_stops_trials_inside_a_stage_barrier_and_zoom_still_hold(ray_on_cluster, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    from dlops.config import ParamConfig, RayConfig, SearchConfig, StageConfig
    from dlops.search.plan import Stage, StagedPlan
    from dlops.search.tune import SearchRequest, run_search
    from dlops.search.space import Param
    from dlops.search.zoom import ZoomRule, zoom

    n0, n1 = 8, 2
    space = {"x": ParamConfig(scale="linear", low=0, high=1)}
    search = SearchConfig(space=space, scheduler="asha",
                          stages=[StageConfig(trials=n0, epochs=EPOCHS), StageConfig(trials=n1, epochs=EPOCHS)])
    rule = ZoomRule(kind="shrink", shrink=0.5, use_history=False)
    params = [Param(name="x", scale="linear", low=0.0, high=1.0)]
    plan = StagedPlan(params, [Stage(n0, EPOCHS, method="sobol"), Stage(n1, EPOCHS)], "dev/error", "min",
                      rule=rule, seed=3)
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    c, exp_id, parent, sid = mlflow_search_run(uri, "asha")
    out = run_search(epochs_trainable, {"sleep": 0.05},
                     SearchRequest(plan, search, RayConfig(storage_path=str(tmp_path / "ray")), "asha", c, exp_id,
                                   parent, sid), out=lambda s: None)
    assert out.n_trials == n0 + n1 and out.n_failed == 0

    by_tid = {r.metrics["trial_id"]: r.metrics for r in out.results}
    stage0 = [t for t, k in plan.trial_stage.items() if k == 0]
    stage1 = [t for t, k in plan.trial_stage.items() if k == 1]
    assert len(stage0) == n0 and len(stage1) == n1
    last_epoch = {t: int(by_tid[t]["epoch"]) for t in stage0}
    stopped = [t for t in stage0 if last_epoch[t] < EPOCHS]
    assert stopped, f"ASHA stopped no stage-0 trial early: {last_epoch}"
    assert any(last_epoch[t] == EPOCHS for t in stage0)

    # barrier: every stage-1 trial started after every stage-0 trial (early-stopped ones included)
    # had reported its last result
    end0 = max(by_tid[t]["t_report"] for t in stage0)
    start1 = min(by_tid[t]["t0"] for t in stage1)
    assert start1 >= end0, (start1, end0)

    # the zoom saw the early-stopped trials' last results ...
    for t in stopped:
        assert int(plan.results[t]["epoch"]) == last_epoch[t]
        assert plan.results[t]["dev/error"] == pytest.approx(float(plan.suggested[t]["x"]) + 1.0 / last_epoch[t])
    # ... and the stage-1 box is what zoom() makes of all stage-0 trials with those results
    expect = zoom(params, plan.boxes[0], plan.original, plan.outcomes(0), "dev/error", "min", rule=rule)
    assert plan.boxes[1].intervals == expect.box.intervals
    assert len(plan.outcomes(0)) == n0

    # MLflow: nothing RUNNING; an early-stopped trial is FINISHED and tagged as such, with the
    # epochs it ran
    client = MlflowClient(uri)
    runs = runs_of(uri, "asha")
    assert {r.info.status for r in runs if r.info.run_id != parent} == {"FINISHED"}
    trials = {r.data.tags["dlops.trial_id"]: r for r in runs if r.data.tags.get("dlops.kind") == "trial"}
    assert set(trials) == set(stage0) | set(stage1)
    for t in stage0:
        r = trials[t]
        steps = [m.step for m in client.get_metric_history(r.info.run_id, "dev/error")]
        assert sorted(steps) == list(range(1, last_epoch[t] + 1))
        if t in stopped:
            assert r.data.tags.get("dlops.early_stopped") == "true", r.data.tags
            assert r.data.tags.get("dlops.last_epoch") == str(last_epoch[t])
        else:
            assert "dlops.early_stopped" not in r.data.tags


@pytest.mark.slow
def test_three_stages_nest_in_the_sampling_scale(ray_on_cluster, tmp_path: Path) -> None:
    from dlops.config import ParamConfig, RayConfig, SearchConfig, StageConfig
    from dlops.search.plan import Stage, StagedPlan
    from dlops.search.tune import SearchRequest, run_search
    from dlops.search.space import Param
    from dlops.search.zoom import ZoomRule

    sizes = (8, 6, 6)
    space = {"lr": ParamConfig(scale="log", low=1e-4, high=1.0),
             "momentum": ParamConfig(scale="one_minus_log", low=0.9, high=0.999)}
    search = SearchConfig(space=space, stages=[StageConfig(trials=n, epochs=1) for n in sizes])
    params = [Param(name="lr", scale="log", low=1e-4, high=1.0),
              Param(name="momentum", scale="one_minus_log", low=0.9, high=0.999)]
    plan = StagedPlan(params, [Stage(n, 1, method="sobol") for n in sizes], "dev/error", "min",
                      rule=ZoomRule(kind="shrink", shrink=0.5), seed=5)
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    c, exp_id, parent, sid = mlflow_search_run(uri, "nest")
    out = run_search(scale_trainable, {},
                     SearchRequest(plan, search, RayConfig(storage_path=str(tmp_path / "ray")), "nest", c, exp_id,
                                   parent, sid), out=lambda s: None)
    assert out.n_trials == sum(sizes)

    runs = runs_of(uri, "nest")
    assert {r.info.status for r in runs if r.info.run_id != parent} == {"FINISHED"}
    stages = {int(r.data.tags["dlops.stage"]): r for r in runs if r.data.tags.get("dlops.kind") == "stage"}
    assert sorted(stages) == [0, 1, 2]
    boxes = {k: {p: _parse_box(r.data.params[f"box.{p}"]) for p in ("lr", "momentum")} for k, r in stages.items()}
    # stage 0 is the whole range in u: lr in 10^[-4, 0], momentum in 1 - 10^[-3, -1]
    assert boxes[0]["lr"] == pytest.approx((-4.0, 0.0)) and boxes[0]["momentum"] == pytest.approx((-3.0, -1.0))
    tol = 1e-5  # box params are printed with 6 significant digits
    for k in (1, 2):
        for p in ("lr", "momentum"):
            (lo, hi), (plo, phi) = boxes[k][p], boxes[k - 1][p]
            assert plo - tol <= lo < hi <= phi + tol, (k, p, boxes[k][p], boxes[k - 1][p])
            assert hi - lo < (phi - plo) * 0.75, (k, p)  # it did zoom (shrink 0.5)
    trials = [r for r in runs if r.data.tags.get("dlops.kind") == "trial"]
    assert len(trials) == sum(sizes)
    per_stage = {k: 0 for k in stages}
    for r in trials:
        k = int(r.data.tags["dlops.stage"])
        per_stage[k] += 1
        assert r.data.tags["mlflow.parentRunId"] == stages[k].info.run_id
        u = {"lr": math.log10(float(r.data.params["lr"])), "momentum": math.log10(1 - float(r.data.params["momentum"]))}
        for p, v in u.items():
            lo, hi = boxes[k][p]
            assert lo - tol <= v <= hi + tol, (k, p, v, (lo, hi))
    assert per_stage == {0: sizes[0], 1: sizes[1], 2: sizes[2]}
    # run times are Tune's: each stage's run ends when its last trial ends, before the next
    # stage's trials start (stage runs compare by duration in the MLflow UI); a trial's run
    # spans its trial, inside its stage's run
    for k in (0, 1):
        later = [r.info.start_time for r in trials if int(r.data.tags["dlops.stage"]) > k]
        assert stages[k].info.end_time <= min(later), k
    for r in trials:
        st = stages[int(r.data.tags["dlops.stage"])].info
        assert st.start_time <= r.info.start_time <= r.info.end_time <= st.end_time
