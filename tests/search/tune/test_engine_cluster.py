"""Resources, failure budget and trial directories on a two-node fake-GPU Ray cluster (loopback),
with the real Tuner, staged searcher and MLflow callback (SQLite store in tmp_path)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import engine_helpers
from engine_helpers import pickled_by_value, VENV_BIN, mlflow_search_run, runs_of, tiny_search, tiny_trainable, tiny_overrides

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"


@pytest.fixture(autouse=True)
def _by_value():
    # the workers of the test cluster cannot import this test folder: ship the trainables by value
    yield from pickled_by_value(engine_helpers)


def _run(tmp: Path, plan, search, ray_cfg, payload, name="engine"):
    from dlops.search.tune import SearchRequest, run_search

    c, exp_id, parent, sid = mlflow_search_run(f"sqlite:///{tmp / 'm.db'}", name)
    lines: list[str] = []
    out = run_search(tiny_trainable, payload, SearchRequest(plan, search, ray_cfg, "tiny", c, exp_id, parent, sid),
                     out=lines.append)
    return out, c, exp_id, parent, sid


@pytest.mark.slow
def test_half_gpu_trials_share_each_fake_gpu(ray_on_cluster, tmp_path: Path) -> None:
    from dlops.search.resources import check_resources

    fits = check_resources(0.5, 0.5, autoscaler=False)
    assert len(fits) == 2
    plan, search, ray_cfg = tiny_search(tmp_path, 4, cpu=0.5, gpu=0.5)
    out, c, exp_id, *_ = _run(tmp_path, plan, search, ray_cfg, {"sleep": 8.0})
    assert out.n_trials == 4 and out.n_failed == 0
    rows = [r.metrics for r in out.results]
    by_node: dict[str, list[dict]] = {}
    for m in rows:
        assert json.loads(m["gpu_ids"]), m  # each trial got a (fake) GPU
        by_node.setdefault(m["node_id"], []).append(m)
    assert len(by_node) == 2, by_node.keys()  # both nodes, ...
    for node, ms in by_node.items():
        assert len(ms) == 2
        a, b = ms
        assert a["gpu_ids"] == b["gpu_ids"]  # ... two trials on the one GPU of each node
        assert a["t0"] < b["t1"] and b["t0"] < a["t1"], "the two half-GPU trials did not run at the same time"
    trials = [r for r in runs_of(f"sqlite:///{tmp_path / 'm.db'}", "engine") if r.data.tags.get("dlops.kind") == "trial"]
    assert {r.data.tags["dlops.node_id"] for r in trials} == set(by_node)


@pytest.mark.slow
def test_request_no_node_can_hold_fails_at_once_with_exit_2(gpu_cluster, project_file: Path, tmp_path: Path) -> None:
    cmd = [str(VENV_BIN / "dlops"), "run", str(project_file), "--ray-address", gpu_cluster.address]
    for o in tiny_overrides(tmp_path) + ["search.resources.gpu=2"]:
        cmd += ["--set", o]
    env = dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
    env.pop("MLFLOW_TRACKING_URI", None)
    t0 = time.time()
    p = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stderr[-3000:]
    assert time.time() - t0 < 60
    assert "gpu=2" in p.stderr and "GPU=1" in p.stderr, p.stderr[-2000:]
    assert runs_of(f"sqlite:///{tmp_path / 'm.db'}", "digits-transfer") == []  # no run created at all


@pytest.mark.slow
def test_autoscaler_skips_the_check(ray_on_cluster) -> None:
    from dlops.search.resources import ResourceError, check_resources

    with pytest.raises(ResourceError, match="largest: CPU=1, GPU=1"):
        check_resources(1, 2, autoscaler=False)
    assert check_resources(1, 2, autoscaler=True) == []


@pytest.mark.slow
def test_failure_budget_stops_the_search(ray_on_cluster, tmp_path: Path) -> None:
    from dlops.errors import TooManyFailuresError

    plan, search, ray_cfg = tiny_search(tmp_path, 8, max_failures=1, max_concurrent=1)
    xs = [plan.suggest(f"probe{i}")["x"] for i in range(8)]  # the configs the search will draw
    plan, search, ray_cfg = tiny_search(tmp_path, 8, max_failures=1, max_concurrent=1)
    cut = sorted(xs)[2]  # the 6 largest x fail
    with pytest.raises(TooManyFailuresError, match="max_failures=1"):
        _run(tmp_path, plan, search, ray_cfg, {"fail_above": cut})
    runs = runs_of(f"sqlite:///{tmp_path / 'm.db'}", "engine")
    trials = [r for r in runs if r.data.tags.get("dlops.kind") == "trial"]
    failed = [r for r in trials if r.info.status == "FAILED"]
    assert len(failed) == 2  # stopped right after the second failure (more than 1)
    assert all("too large" in r.data.tags["dlops.error"] for r in failed)
    assert len(trials) < 8  # the rest never ran
    assert not [r for r in runs if r.info.status == "RUNNING" and r.data.tags.get("dlops.kind") != "search"]
    # the stage the search stopped in did not run all its trials: FAILED, not ended as complete
    assert [r.info.status for r in runs if r.data.tags.get("dlops.kind") == "stage"] == ["FAILED"]


@pytest.mark.slow
def test_trial_dirs_short_and_unique_with_many_long_hyperparameters(ray_on_cluster, tmp_path: Path) -> None:
    long = {f"a_really_long_hyperparameter_name_number_{i:02d}_with_padding": (0.0, 1.0) for i in range(30)}
    plan, search, ray_cfg = tiny_search(tmp_path, 4, params=long)
    out, c, *_ = _run(tmp_path, plan, search, ray_cfg, {})
    assert out.n_trials == 4
    exp_dirs = list((tmp_path / "ray_results").iterdir())
    assert len(exp_dirs) == 1
    names = sorted(p.name for p in exp_dirs[0].iterdir() if p.is_dir())
    assert len(names) == 4 and len(set(names)) == 4
    assert all(n.startswith("t-") and len(n) < 40 for n in names), names
    assert all(len(str(exp_dirs[0] / n)) < 200 for n in names)
    trial = next(r for r in runs_of(f"sqlite:///{tmp_path / 'm.db'}", "engine") if r.data.tags.get("dlops.kind") == "trial")
    assert len(trial.data.params) == 31 + 2  # every hyperparameter is still logged (and stage, epochs)
