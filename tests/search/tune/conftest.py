"""Fixtures of the search-engine tests: a fake-GPU Ray cluster of two nodes on loopback, the tiny
project file, a real ``mlflow server``. Real Ray, real MLflow (SQLite in tmp_path or a server)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")

from engine_helpers import EXAMPLE, VENV_BIN, free_port  # noqa: E402


@pytest.fixture
def project_file(tmp_path: Path) -> Path:
    p = tmp_path / "project.yaml"
    shutil.copy(EXAMPLE, p)
    return p


@pytest.fixture(scope="session")
def gpu_cluster():
    """Two Ray nodes on this machine, each with 1 CPU and 1 fake GPU (``num_gpus=1``: Ray's
    logical resource; there is no CUDA here)."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "num_gpus": 1,
                                                            "include_dashboard": False,
                                                            "node_ip_address": "127.0.0.1"})
    cluster.add_node(num_cpus=1, num_gpus=1, node_ip_address="127.0.0.1")
    cluster.wait_for_nodes()
    yield cluster
    import ray

    if ray.is_initialized():
        ray.shutdown()
    cluster.shutdown()


@pytest.fixture
def ray_on_cluster(gpu_cluster):
    import ray

    if ray.is_initialized():
        ray.shutdown()
    ray.init(address=gpu_cluster.address, log_to_driver=False)
    yield gpu_cluster
    ray.shutdown()


@pytest.fixture
def mlflow_server(tmp_path: Path):
    """A real ``mlflow server`` on 127.0.0.1 (free port), SQLite backend, artifact proxy."""
    port = free_port()
    srv = tmp_path / "server"
    srv.mkdir()
    log = open(srv / "server.log", "w")
    proc = subprocess.Popen(
        [str(VENV_BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{srv / 'm.db'}", "--artifacts-destination", str(srv / "art"),
         "--workers", "1"],
        cwd=srv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    import urllib.request

    deadline = time.time() + 90
    while True:
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2) as r:
                if r.status == 200:
                    break
        except Exception:
            pass
        if proc.poll() is not None or time.time() > deadline:
            log.close()
            raise RuntimeError("mlflow server did not start:\n" + (srv / "server.log").read_text()[-3000:])
        time.sleep(0.5)
    yield uri
    os.killpg(proc.pid, 15)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
    log.close()
