"""Failed trials (NaN loss: the trainable raises NonFiniteLossError) are FAILED in MLflow with
their error, the other trials FINISHED, and the search completes (no failure limit by default)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from engine_helpers import runs_of, tiny_overrides

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"

HUGE_LR = 1.0e30


@pytest.mark.slow
def test_nan_trials_fail_and_the_search_completes(gpu_cluster, project_file: Path, tmp_path: Path,
                                                  monkeypatch) -> None:
    import ray

    from dlops.config import load_config
    from dlops.job import run_project
    from dlops.job.plan import build_plan

    if ray.is_initialized():
        ray.shutdown()
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    over = tiny_overrides(tmp_path, stages="[{trials: 4, epochs: 1, method: sobol}]")
    cfg = load_config(project_file, over + [f"search.space.lr={{scale: choice, choices: [0.05, 1.0e+30]}}",
                                            "name=nanproj"])
    assert cfg.search.max_failures is None  # the default: no limit
    probe = build_plan(cfg)
    lrs = [probe.suggest(f"p{i}")["lr"] for i in range(4)]
    n_huge = sum(lr == HUGE_LR for lr in lrs)
    assert 0 < n_huge < 4, lrs  # the draw holds both kinds (precondition of this test)

    summary = run_project(cfg, ray_address=gpu_cluster.address, out=lambda s: None)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert summary.n_trials == 4 and summary.n_failed == n_huge
    trials = [r for r in runs_of(f"sqlite:///{tmp_path / 'm.db'}", "nanproj") if r.data.tags.get("dlops.kind") == "trial"]
    assert len(trials) == 4
    for r in trials:
        if float(r.data.params["lr"]) == HUGE_LR:
            assert r.info.status == "FAILED"
            assert "NonFiniteLossError" in r.data.tags["dlops.error"] or "non-finite" in r.data.tags["dlops.error"]
        else:
            assert r.info.status == "FINISHED"
    assert float(summary.best_config["lr"]) == 0.05
