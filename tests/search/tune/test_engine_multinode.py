"""The real pipeline on a two-node Ray cluster (loopback) logging to a real `mlflow server`.

Why ``ray.cluster_utils.Cluster`` (fixture ``gpu_cluster``) and not ``ray start`` processes: Ray
2.60's CLI has no way to add a second node that keeps to 127.0.0.1. With
``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` ``ray start --address`` refuses ("Multi-node Ray clusters are
not supported"); with ``=1`` it rewrites ``127.0.0.1``/``localhost`` in ``--address`` to the
machine's network address, and another loopback spelling (``--address=[::ffff:127.0.0.1]:PORT``,
``--node-ip-address=127.0.0.2``) joins, but its raylet then listens on every interface (``*:PORT``
in ``ss -ltnp``).

The pipeline runs twice here: in-process (``run_project`` joining the session's cluster), and as a
user runs it on a cluster, ``dlops submit`` to the Jobs API of a two-node cluster that runs in a
process of its own (``cluster_process``, as a cluster runs on machines of its own). Its second node
keeps its runtime environments (the job's uploaded ``working_dir``) in a folder of its own, as a
second machine does: both nodes share one session folder on this machine, and with one runtime-env
folder the job's driver died under the second node's agent (``FileNotFoundError`` from
``os.getcwd()`` in an earlier session, "Intel oneMKL FATAL ERROR: Cannot load libtorch_cpu.so" while
importing torch on 2026-12-02; with the folder of its own it runs). Started inside the pytest
process (the session fixture ``gpu_cluster`` with the same options), the job's driver died with the
same torch error, while the same cluster started from a plain Python process ran it; why was not
found, so this test keeps the cluster out of the pytest process."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from engine_helpers import runs_of, tiny_overrides

from dlops_testing import subprocess_env

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


@pytest.fixture
def cluster_process():
    """A two-node fake-GPU cluster (1 CPU + 1 GPU each, loopback, Jobs API on 127.0.0.1) in a child
    process, its second node with a runtime-env folder of its own; yields the Jobs API address
    ``http://127.0.0.1:PORT``."""
    from engine_helpers import free_port

    from dlops_testing import child_cluster

    env = {k: v for k, v in subprocess_env().items() if k != "RAY_AUTH_MODE"}  # cluster_utils' default: no token
    head = {"num_cpus": 1, "num_gpus": 1, "include_dashboard": True, "dashboard_host": "127.0.0.1",
            "dashboard_port": free_port(), "dashboard_agent_listen_port": free_port()}
    worker = {"num_cpus": 1, "num_gpus": 1, "runtime_env_dir_name": "runtime_resources_node2"}
    gen = child_cluster(head, [worker], env)
    info = next(gen)
    assert str(info["webui_url"]).startswith("127.0.0.1:"), info
    yield f"http://{info['webui_url']}"
    gen.close()


@pytest.mark.slow
def test_submit_spreads_the_demo_over_both_nodes_into_one_server(cluster_process, mlflow_server, project_file: Path,
                                                                 tmp_path: Path) -> None:
    """``dlops submit`` of the demo to a two-node cluster's Jobs API (127.0.0.1), logging to one
    ``mlflow server``: the job succeeds, its trials ran on both nodes, every run is in the server."""
    over = [o for o in tiny_overrides(tmp_path) if not o.startswith("tracking.uri")] + ["name=multinode-submit"]
    sets = [a for o in over for a in ("--set", o)]
    proj = tmp_path / "project"  # the uploaded folder: not the one the server writes into
    proj.mkdir()
    shutil.copy(project_file, proj / "project.yaml")
    r = subprocess.run([sys.executable, "-m", "dlops.cli", "submit", str(proj / "project.yaml"), "--address",
                        cluster_process, "--tracking-uri", mlflow_server, *sets], cwd=tmp_path, env=subprocess_env(),
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and "SUCCEEDED" in r.stderr, r.stdout[-3000:] + r.stderr[-3000:]
    assert "FileNotFoundError" not in r.stdout + r.stderr
    runs = runs_of(mlflow_server, "multinode-submit")
    kinds = [x.data.tags.get("dlops.kind") for x in runs]
    assert kinds.count("search") == 1 and kinds.count("stage") == 2 and kinds.count("trial") == 4, kinds
    assert {x.info.status for x in runs} == {"FINISHED"}
    nodes = {x.data.tags["dlops.node_id"] for x in runs if x.data.tags.get("dlops.kind") == "trial"}
    assert len(nodes) == 2, nodes  # trials ran on both nodes
    assert all(x.info.artifact_uri.startswith("mlflow-artifacts:") for x in runs)
    assert not any((d / "mlruns").exists() or (d / "mlflow.db").exists() for d in (tmp_path, proj))
