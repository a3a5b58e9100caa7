"""Helpers of the search-engine tests (imported by the test modules; not a conftest)."""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"

REPO = Path(__file__).resolve().parents[3]
EXAMPLE = REPO / "examples" / "digits-transfer.yaml"
VENV_BIN = Path(sys.executable).parent


def pickled_by_value(module: Any):
    """Generator for an autouse fixture: Ray's workers of a test cluster cannot import the test
    folder, so trainables defined in ``module`` travel by value while the test runs."""
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(module)
    try:
        yield
    finally:
        cloudpickle.unregister_pickle_by_value(module)


def tiny_overrides(tmp: Path, stages: str = "[{trials: 2, epochs: 1}, {trials: 2, epochs: 1}]",
                   db: str = "m.db") -> list[str]:
    """Overrides that make the example a few-second project writing only under ``tmp``."""
    return [f"search.stages={stages}", "pretrain.epochs=1", f"tracking.uri=sqlite:///{tmp / db}",
            f"ray.storage_path={tmp / 'ray_results'}", "ensemble.enabled=false", "search.confirm=null"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def runs_of(uri: str, experiment: str) -> list:
    from mlflow import MlflowClient

    c = MlflowClient(uri)
    exp = c.get_experiment_by_name(experiment)
    return [] if exp is None else c.search_runs([exp.experiment_id], max_results=1000)


def tiny_trainable(config: dict, payload: dict) -> None:
    """A cheap trial: sleeps ``payload['sleep']`` s, raises when ``x > payload['fail_above']``,
    reports ``dev/error = x``, where it ran and when."""
    import ray
    from ray import tune

    t0 = time.time()
    if float(config["x"]) > float(payload.get("fail_above", 2.0)):
        raise ValueError(f"x={config['x']} is too large (test failure)")
    time.sleep(float(payload.get("sleep", 0.0)))
    tune.report({"dev/error": float(config["x"]), "epoch": 1,
                 "node_id": ray.get_runtime_context().get_node_id(),
                 "gpu_ids": json.dumps([str(g) for g in ray.get_gpu_ids()]), "t0": t0, "t1": time.time()})


def tiny_search(tmp: Path, n_trials: int, cpu: float = 1, gpu: float = 0, max_failures: Any = None,
                max_concurrent: Any = None, params: Any = None):
    """A one-stage plan over ``x ~ U[0, 1]`` (plus ``params``), its SearchConfig and RayConfig."""
    from dlops.config import ParamConfig, RayConfig, ResourcesConfig, SearchConfig, StageConfig
    from dlops.search.plan import Stage, StagedPlan
    from dlops.search.space import Param

    space = {"x": ParamConfig(scale="linear", low=0, high=1)}
    plist = [Param(name="x", scale="linear", low=0.0, high=1.0)]
    for name, (lo, hi) in (params or {}).items():
        space[name] = ParamConfig(scale="linear", low=lo, high=hi)
        plist.append(Param(name=name, scale="linear", low=lo, high=hi))
    search = SearchConfig(space=space, stages=[StageConfig(trials=n_trials, epochs=1)],
                          resources=ResourcesConfig(cpu=cpu, gpu=gpu), max_failures=max_failures,
                          max_concurrent=max_concurrent)
    plan = StagedPlan(plist, [Stage(n_trials, 1)], "dev/error", "min", seed=1)
    return plan, search, RayConfig(storage_path=str(tmp / "ray_results"))


def mlflow_search_run(uri: str, name: str = "engine"):
    """A client, an experiment and a parent search run in the store at ``uri``."""
    import uuid

    from mlflow import MlflowClient

    c = MlflowClient(uri)
    exp = c.get_experiment_by_name(name)
    # artifacts beside the SQLite file, not in ./mlruns of whatever folder the tests run from
    where = Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts" if uri.startswith("sqlite:///") else None
    exp_id = exp.experiment_id if exp else c.create_experiment(
        name, artifact_location=where.as_uri() if where else None)
    sid = uuid.uuid4().hex[:12]
    parent = c.create_run(exp_id, run_name="search", tags={"dlops.kind": "search", "dlops.search_id": sid})
    return c, exp_id, parent.info.run_id, sid
