"""Trial actors survive a stage barrier: the next stage runs on the worker processes of the last
one (``reuse_actors``) instead of starting new ones. Real Ray (the two-node loopback cluster of
conftest.py, 1 CPU each: two trial slots), real MLflow (SQLite in tmp_path)."""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

import pytest

from engine_helpers import pickled_by_value, mlflow_search_run

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"


@pytest.fixture(autouse=True)
def _by_value():
    # the workers of the test cluster cannot import this test folder: ship the trainables by value
    yield from pickled_by_value(sys.modules[__name__])


def rendezvous_trainable(config: dict, payload: dict) -> None:
    """Stage 0: wait (up to 120 s) until both stage-0 trials run at once, so that the stage ran
    on two actors whatever the start-up times; later stages: report at once."""
    import time
    from pathlib import Path

    from ray import tune

    if int(config["stage"]) == 0:
        d = Path(payload["dir"])
        (d / f"{time.time_ns()}-{os.getpid()}").write_text("")
        deadline = time.time() + 120
        while len(list(d.iterdir())) < 2 and time.time() < deadline:
            time.sleep(0.05)
    tune.report({"dev/error": float(config["x"]), "epoch": 1})


@pytest.mark.slow
def test_next_stage_runs_on_the_actors_of_the_last(ray_on_cluster, tmp_path: Path) -> None:
    from dlops.config import ParamConfig, RayConfig, SearchConfig, StageConfig
    from dlops.search.plan import Stage, StagedPlan
    from dlops.search.tune import SearchRequest, run_search
    from dlops.search.space import Param

    rv = tmp_path / "rendezvous"
    rv.mkdir()
    search = SearchConfig(space={"x": ParamConfig(scale="linear", low=0, high=1)},
                          stages=[StageConfig(trials=2, epochs=1), StageConfig(trials=2, epochs=1)])
    plan = StagedPlan([Param(name="x", scale="linear", low=0.0, high=1.0)], [Stage(2, 1), Stage(2, 1)],
                      "dev/error", "min", seed=3)
    c, exp_id, parent, sid = mlflow_search_run(f"sqlite:///{tmp_path / 'm.db'}", "reuse")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = run_search(rendezvous_trainable, {"dir": str(rv)},
                         SearchRequest(plan, search, RayConfig(storage_path=str(tmp_path / "ray")), "reuse", c,
                                       exp_id, parent, sid),
                         out=lambda s: None)
    # the keeper reaches the parts of Tune it needs in this Ray version (it warns and turns itself off otherwise)
    assert not [w for w in caught if "cannot manage Tune's trial actors" in str(w.message)]
    assert out.released_actors is not None  # the keeper saw the last trial end (0 or more actors killed then)
    # run_search paced Tune's snapshots through the keeper (dlops's 1 s period, the variable unset)
    assert out.paced_snapshots is True
    # Tune reported each snapshot's duration to the pacing (the end of a search forces one at least)
    pace = out.snapshot_pace
    assert pace.count >= 1 and 0.0 < pace.last_s <= pace.longest_s < 30.0
    assert pace.longest_period_s >= 1.0  # never below dlops's 1 s floor
    assert not [w for w in caught if "cannot pace" in str(w.message)]
    assert out.n_trials == 4 and out.n_failed == 0
    pids: dict[int, set] = {0: set(), 1: set()}
    for r in out.results:
        pids[int(r.config["stage"])].add(r.metrics["pid"])
    assert len(pids[0]) == 2, pids  # the rendezvous: stage 0 ran on two actors at once
    # stage 1 ran on both actors of stage 0 (Tune alone keeps one and starts a new one, or runs
    # the stage on one actor while the new one starts)
    assert pids[1] == pids[0], pids
    runs = c.search_runs([exp_id], f"tags.`dlops.search_id` = '{sid}' and tags.`dlops.kind` != 'search'")
    assert len(runs) == 6 and {r.info.status for r in runs} == {"FINISHED"}
