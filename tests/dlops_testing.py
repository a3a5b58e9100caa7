"""Constants shared by the top-level tests (import as `from dlops_testing import ...`)."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "digits-transfer.yaml"

#: overrides that shrink the default example to a few seconds of training
TINY = [
    "search.stages=[{trials: 3, epochs: 2, method: sobol}, {trials: 2, epochs: 3, method: gp}]",
    "pretrain.epochs=2",
    "ensemble.top_k=3",
    "search.confirm=null",  # the example's confirmation stage (top 3 x 2 seeds) is tested on its own (tests/job/test_run.py)
]


def subprocess_env() -> dict[str, str]:
    """The environment for a `dlops` subprocess: Ray on 127.0.0.1, no inherited store or cluster,
    this venv's scripts (``ray``) first on PATH."""
    import os
    import sys

    env = dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("RAY_ADDRESS", None)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def run_dlops(args: list[str], cwd: Path, timeout: int = 300):
    """``python -m dlops.cli ARGS`` in ``cwd``; returns the ``CompletedProcess`` (text)."""
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "dlops.cli", *args], cwd=cwd, env=subprocess_env(),
                          capture_output=True, text=True, timeout=timeout)


def invoke_cli(args: list[str], cwd: Path, env: dict | None = None):
    """``dlops ARGS`` through click's runner in this process, from ``cwd`` (a module's ``local_ray``
    saves the Ray start; no subprocess imports); returns click's ``Result`` (``exit_code``,
    ``stdout``, ``stderr``, ``exception``). ``env``: variables to set (None unsets) meanwhile."""
    import os

    from click.testing import CliRunner

    from dlops.cli import main

    old = os.getcwd()
    os.chdir(cwd)
    try:
        return CliRunner(env=env).invoke(main, args)
    finally:
        os.chdir(old)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_digits_images_module():
    """``examples/make_digits_images.py`` imported as a module (it writes real digits as PNG folders,
    a multi-label CSV and a source network)."""
    import importlib.util

    path = REPO / "examples" / "make_digits_images.py"
    spec = importlib.util.spec_from_file_location("make_digits_images", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def post_json(url: str, body: object, timeout: float = 60) -> tuple[int, object]:
    """POST ``body`` as JSON to ``url``; (HTTP status, decoded JSON answer), error statuses included."""
    import json
    import urllib.error
    import urllib.request

    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        r = urllib.request.urlopen(req, timeout=timeout)
        return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


_MLFLOW_URI_VARS = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


def mlflow_uris() -> dict:
    """The MLflow URI environment variables now (to give back to :func:`restore_mlflow_uris`)."""
    import os

    return {k: os.environ.get(k) for k in _MLFLOW_URI_VARS}


def restore_mlflow_uris(saved: dict) -> None:
    """Put the MLflow tracking and registry URIs back as ``saved``. ``mlflow.set_tracking_uri`` and
    ``mlflow.set_registry_uri`` also set ``MLFLOW_TRACKING_URI`` / ``MLFLOW_REGISTRY_URI`` in
    ``os.environ``, so a test that calls them would otherwise send later tests' subprocesses, and
    ``MlflowClient(tracking_uri)`` (whose registry defaults to the global one), to its store."""
    import os
    import sys

    if "mlflow" in sys.modules:
        import mlflow

        mlflow.set_tracking_uri(saved["MLFLOW_TRACKING_URI"])
        mlflow.set_registry_uri(saved["MLFLOW_REGISTRY_URI"])
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


_CHILD_CLUSTER = """
import json, os, sys
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
from ray.cluster_utils import Cluster
head, workers = json.loads(sys.argv[1]), json.loads(sys.argv[2])
c = Cluster(initialize_head=True, head_node_args=dict(node_ip_address="127.0.0.1", **head))
for w in workers:
    c.add_node(node_ip_address="127.0.0.1", **w)
c.wait_for_nodes()
print(json.dumps({"address": c.address, "webui_url": c.webui_url}), flush=True)
sys.stdin.read()  # until the test closes it
c.shutdown()
"""


def child_cluster(head: dict, workers: list[dict], env: dict[str, str]):
    """Generator for a fixture: a ``ray.cluster_utils.Cluster`` on 127.0.0.1 in a child process
    (``head``: the head's node args, ``workers``: one dict of node args per worker node, ``env``:
    the child's environment, e.g. its ``RAY_AUTH_MODE``). Yields ``{"address": GCS host:port,
    "webui_url": host:port or None}``; shuts the cluster down when the fixture ends."""
    import json
    import subprocess
    import sys

    p = subprocess.Popen([sys.executable, "-c", _CHILD_CLUSTER, json.dumps(head), json.dumps(workers)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    try:
        line = p.stdout.readline().strip()
        assert line.startswith("{"), f"the child cluster did not start (exit {p.poll()})"
        info = json.loads(line)
        assert info["address"].startswith("127.0.0.1:"), info
        yield info
    finally:
        p.stdin.close()
        try:
            p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
