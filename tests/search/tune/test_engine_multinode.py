"""The real pipeline on a two-node Ray cluster (loopback) logging to a real `mlflow server`.

Why ``ray.cluster_utils.Cluster`` (fixture ``gpu_cluster``) and not ``ray start`` processes: Ray
2.60's CLI has no way to add a second node that keeps to 127.0.0.1. With
``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` ``ray start --address`` refuses ("Multi-node Ray clusters are
not supported"); with ``=1`` it rewrites ``127.0.0.1``/``localhost`` in ``--address`` to the
machine's network address, and another loopback spelling (``--address=[::ffff:127.0.0.1]:PORT``,
``--node-ip-address=127.0.0.2``) joins, but its raylet then listens on every interface (``*:PORT``
in ``ss -ltnp``). Why the pipeline runs in-process here and not through ``dlops submit``: with two
nodes on one machine, the job's ``working_dir`` (the uploaded project folder) lies under the one
session directory both nodes share, and the job's own working directory vanished under it
mid-run (``FileNotFoundError`` from ``os.getcwd()`` in the job); ``dlops submit`` to a real one-node
head is tested in ``tests/test_submit.py``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from engine_helpers import runs_of, tiny_overrides

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"


def _mlruns_under(*roots: Path) -> list[str]:
    found = []
    for root in roots:
        for dirpath, dirnames, _ in os.walk(root):
            found += [os.path.join(dirpath, d) for d in dirnames if d == "mlruns"]
    return found


@pytest.mark.slow
def test_pipeline_spreads_trials_over_nodes_into_one_server(gpu_cluster, mlflow_server, project_file: Path,
                                                            tmp_path: Path, monkeypatch) -> None:
    import ray

    from dlops.config import load_config
    from dlops.job import run_project

    if ray.is_initialized():
        ray.shutdown()
    driver = tmp_path / "driver"
    driver.mkdir()
    monkeypatch.chdir(driver)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)  # restored after the test
    over = [o for o in tiny_overrides(tmp_path) if not o.startswith("tracking.uri")]
    cfg = load_config(project_file, over + [f"tracking.uri={mlflow_server}", "name=multinode"])
    summary = run_project(cfg, ray_address=gpu_cluster.address, out=lambda s: None)
    assert not ray.is_initialized()  # the pipeline disconnected from the cluster it joined

    runs = runs_of(mlflow_server, "multinode")
    by_kind: dict[str, list] = {}
    for r in runs:
        by_kind.setdefault(r.data.tags.get("dlops.kind"), []).append(r)
    assert len(by_kind["search"]) == 1 and len(by_kind["stage"]) == 2 and len(by_kind["trial"]) == 4
    assert {r.info.status for r in runs} == {"FINISHED"}
    search = by_kind["search"][0]
    assert search.info.run_id == summary.search_run_id
    stage_ids = {r.data.tags["dlops.stage"]: r.info.run_id for r in by_kind["stage"]}
    assert all(r.data.tags["mlflow.parentRunId"] == search.info.run_id for r in by_kind["stage"])
    for r in by_kind["trial"]:
        assert r.data.tags["mlflow.parentRunId"] == stage_ids[r.data.tags["dlops.stage"]]
        assert "dev/error" in r.data.metrics
    nodes = {r.data.tags["dlops.node_id"] for r in by_kind["trial"]}
    assert len(nodes) == 2, nodes  # trials ran on both nodes
    # every artifact went through the server's artifact proxy, nothing to a local mlruns
    assert all(r.info.artifact_uri.startswith("mlflow-artifacts:") for r in runs), {r.info.artifact_uri for r in runs}
    session = Path(gpu_cluster.head_node.get_session_dir_path())
    assert _mlruns_under(driver, tmp_path / "ray_results", session) == []
    assert not (driver / "mlflow.db").exists() and not (driver / "mlartifacts").exists()
    assert summary.model_uri and summary.n_trials == 4
