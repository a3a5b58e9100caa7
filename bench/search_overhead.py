"""Overhead of the dlops search engine over plain Ray Tune, measured side by side in one run.

dlops: ``run_search`` (StagedSearcher, two stages, MlflowTreeCallback writing the run tree to a
SQLite store, failure-budget stopper) vs plain Ray Tune (BasicVariantGenerator random search, no
callback), same trainable, same number of trials, same resources, same ``reuse_actors``. Two
workloads: no-op trials and 1 s trials. Runs alternate (plain, dlops, plain, dlops) and the
median wall time of each is compared; target ratio <= 1.10. Also the MLflow logging cost per
reported result (ms), timed on the callback itself against the SQLite store.

The LAST line printed is one JSON object with the headline figures. About 2 minutes on 2 cores.
Usage: RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 .venv/bin/python bench/search_overhead.py
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

N_NOOP, N_SLEEP, REPS = 16, 8, 2


def trainable(config: dict, payload: dict) -> None:
    from ray import tune

    time.sleep(float(payload["sleep"]))
    tune.report({"dev/error": float(config["x"]), "train/error": float(config["x"]), "epoch": 1})


def plain(tmp: Path, n: int, sleep: float) -> float:
    from ray import tune

    fn = tune.with_resources(tune.with_parameters(trainable, payload={"sleep": sleep}), {"cpu": 1})
    t0 = time.perf_counter()
    tune.Tuner(fn, param_space={"x": tune.uniform(0, 1)},
               tune_config=tune.TuneConfig(metric="dev/error", mode="min", num_samples=n, reuse_actors=True,
                                           trial_dirname_creator=lambda t: f"t-{t.trial_id}"),
               run_config=tune.RunConfig(name=f"plain-{time.time_ns()}", storage_path=str(tmp / "ray"), verbose=0,
                                         checkpoint_config=tune.CheckpointConfig(num_to_keep=1))).fit()
    return time.perf_counter() - t0


def dlops(tmp: Path, n: int, sleep: float) -> float:
    import uuid

    from mlflow import MlflowClient

    from dlops.config import ParamConfig, RayConfig, SearchConfig, StageConfig
    from dlops.search.plan import Stage, StagedPlan
    from dlops.search.run import run_search
    from dlops.search.space import Param

    client = MlflowClient(f"sqlite:///{tmp / 'bench.db'}")
    exp = client.get_experiment_by_name("bench")
    exp_id = exp.experiment_id if exp else client.create_experiment("bench")
    sid = uuid.uuid4().hex[:12]
    parent = client.create_run(exp_id, tags={"dlops.kind": "search", "dlops.search_id": sid}).info.run_id
    half = n // 2
    search = SearchConfig(space={"x": ParamConfig(scale="linear", low=0, high=1)},
                          stages=[StageConfig(trials=half, epochs=1), StageConfig(trials=n - half, epochs=1)])
    plan = StagedPlan([Param(name="x", scale="linear", low=0.0, high=1.0)],
                      [Stage(half, 1), Stage(n - half, 1)], "dev/error", "min")
    t0 = time.perf_counter()
    run_search(trainable, {"sleep": sleep}, plan, search, RayConfig(storage_path=str(tmp / "ray")), "dl", client,
               exp_id, parent, sid, out=lambda s: None)
    wall = time.perf_counter() - t0
    client.set_terminated(parent, "FINISHED")
    return wall


def logging_cost(tmp: Path, n_results: int = 300) -> float:
    """ms per reported result: MlflowTreeCallback.on_trial_result on a SQLite store."""
    import uuid
    from types import SimpleNamespace

    from mlflow import MlflowClient

    from dlops.tracking.callback import MlflowTreeCallback

    client = MlflowClient(f"sqlite:///{tmp / 'cost.db'}")
    exp_id = client.create_experiment("cost")
    sid = uuid.uuid4().hex[:12]
    parent = client.create_run(exp_id).info.run_id
    cb = MlflowTreeCallback(client, exp_id, parent, sid)
    trials = [SimpleNamespace(trial_id=f"tr{i}", config={"x": 0.1 * i, "stage": 0, "epochs": 100}) for i in range(4)]
    for t in trials:
        cb.on_trial_start(0, [], t)
    keys = ["train/loss", "train/error", "train_dev/error", "train_dev/loss", "dev/error", "dev/loss", "dev/f1",
            "latency_ms", "size_mb"]
    t0 = time.perf_counter()
    for i in range(n_results):
        t = trials[i % 4]
        cb.on_trial_result(0, [], t, {**{k: 0.5 for k in keys}, "epoch": i // 4 + 1, "training_iteration": i // 4 + 1})
    return (time.perf_counter() - t0) * 1000 / n_results


def main() -> None:
    import ray

    from dlops.pipeline import quiet_libraries

    quiet_libraries()
    ray.init(address="local", num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
             log_to_driver=False, logging_level="ERROR")
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        for label, n, sleep in (("noop", N_NOOP, 0.0), ("sleep1s", N_SLEEP, 1.0)):
            plain(tmp, 2, sleep)  # warm-up (worker start)
            p, d = [], []
            for rep in range(REPS):
                p.append(plain(tmp, n, sleep))
                d.append(dlops(tmp, n, sleep))
                print(f"{label} rep {rep}: plain {p[-1]:.2f} s  dlops {d[-1]:.2f} s", flush=True)
            out[f"{label}_plain_s"] = round(statistics.median(p), 3)
            out[f"{label}_dlops_s"] = round(statistics.median(d), 3)
            out[f"{label}_ratio"] = round(statistics.median(d) / statistics.median(p), 3)
            print(f"{label}: {n} trials, ratio dlops/plain = {out[f'{label}_ratio']:.3f} (target <= 1.10)")
        out["mlflow_ms_per_result"] = round(logging_cost(tmp), 2)
        print(f"MLflow logging per reported result (9 metrics, SQLite): {out['mlflow_ms_per_result']:.2f} ms")
    ray.shutdown()
    out["target_ratio"] = 1.10
    print(json.dumps(out))


if __name__ == "__main__":
    main()
