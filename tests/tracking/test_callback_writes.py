"""The MLflow callback's writer merges a run's queued writes: params, metrics and tags of one run
land in one ``log_batch`` within MLflow's per-call limits, each (metric, step) once, and a
resumed run whose params changed keeps its metrics. Real MLflow (SQLite in tmp_path); the Tune
hooks are called directly with real Ray Tune ``Trial`` objects (``stub=True``: no Ray cluster
needed), and the writer is held back with a queued wait so the writes pile up as they do
when Tune outruns the store."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import pytest
from mlflow import MlflowClient


class CountingClient(MlflowClient):
    """A real client that records the size of every ``log_batch`` call it makes."""

    def __init__(self, uri: str) -> None:
        super().__init__(uri)
        self.batches: list[tuple[str, int, int, int]] = []

    def log_batch(self, run_id: str, metrics: Any = (), params: Any = (), tags: Any = (), **kw: Any) -> Any:
        self.batches.append((run_id, len(metrics), len(params), len(tags)))
        return super().log_batch(run_id, metrics=metrics, params=params, tags=tags, **kw)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    """One SQLite store for the module (its schema takes seconds to create); each test has its
    own search id."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('writes') / 'm.db'}"
    MlflowClient(uri).search_experiments()
    return uri


def _callback(uri: str, sid: str | None = None):
    from dlops.tracking.callback import MlflowTreeCallback

    client = CountingClient(uri)
    exp = client.get_experiment_by_name("writes")
    exp_id = exp.experiment_id if exp else client.create_experiment("writes")
    sid = sid or uuid.uuid4().hex[:12]
    parent = client.create_run(exp_id, tags={"dlops.kind": "search", "dlops.search_id": sid}).info.run_id
    return MlflowTreeCallback(client, exp_id, parent, sid, metric="dev/error"), client, exp_id, sid


def _trial(tid: str, x: float, epochs: int = 3) -> Any:
    from ray.tune.experiment import Trial

    return Trial("noop", config={"x": x, "stage": 0, "epochs": epochs}, trial_id=tid, stub=True)


def _report(cb, trial, epoch: int, extra: dict | None = None) -> None:
    result = {"dev/error": trial.config["x"] / epoch, "train/loss": 1.0 / epoch, "epoch": epoch,
              "training_iteration": epoch, "pid": 4242, **(extra or {})}
    trial.update_last_result(result)  # as Tune does before the callbacks see a result
    cb.on_trial_result(0, [], trial, result)


def _held(cb) -> threading.Event:
    """Block the writer thread until the returned event is set: returns once the writer is inside
    the wait, so everything queued after this piles up and is drained together."""
    gate, inside = threading.Event(), threading.Event()

    def hold() -> None:
        inside.set()
        gate.wait(60)

    cb._submit(hold)
    assert inside.wait(30), "the writer thread did not reach the hold"
    return gate


def test_a_runs_queued_writes_land_in_one_log_batch(store: str) -> None:
    cb, client, exp_id, sid = _callback(store)
    cb.setup()  # stage 0's run, while Tune would start the actors
    cb.flush()
    gate = _held(cb)
    trials = [_trial(f"t{i}", 0.1 * (i + 1)) for i in range(4)]
    for t in trials:
        cb.on_trial_start(0, [], t)
    for epoch in (1, 2, 3):
        for t in trials:
            _report(cb, t, epoch)
    _report(cb, trials[0], 3)  # Tune replays a result: logged once
    for t in trials:
        cb.on_trial_complete(0, [], t)
    client.batches.clear()
    gate.set()
    cb.flush()

    by_run: dict[str, list] = {}
    for rid, m, p, tg in client.batches:
        by_run.setdefault(rid, []).append((m, p, tg))
    assert set(by_run) == set(cb.trial_runs.values())
    for rid, calls in by_run.items():
        # params (3), 3 epochs x 2 metrics, the placement tag: one call per trial
        assert calls == [(6, 3, 1)], calls
    stage_rid = cb.stage_runs[0]
    for t in trials:
        run = client.get_run(cb.trial_runs[t.trial_id])
        assert run.info.status == "FINISHED"
        assert run.data.params == {"x": repr(t.config["x"]), "stage": "0", "epochs": "3"}
        assert run.data.tags["mlflow.parentRunId"] == stage_rid and run.data.tags["dlops.pid"] == "4242"
        for key in ("dev/error", "train/loss"):
            steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
            assert sorted(steps) == [1, 2, 3], (key, steps)  # each (metric, step) exactly once
    assert client.get_run(stage_rid).data.tags["mlflow.parentRunId"] == cb.parent_run_id


def test_merged_batches_stay_within_mlflows_per_call_limits(store: str) -> None:
    from mlflow.utils.validation import MAX_METRICS_PER_BATCH

    cb, client, exp_id, sid = _callback(store)
    t = _trial("big", 0.5, epochs=3)
    cb.on_trial_start(0, [], t)
    cb.flush()
    gate = _held(cb)
    wide = {f"layer{j}/norm": float(j) for j in range(398)}  # 400 logged metrics per epoch
    for epoch in (1, 2, 3):
        _report(cb, t, epoch, wide)
    cb.on_trial_complete(0, [], t)
    client.batches.clear()
    gate.set()
    cb.flush()

    sizes = [m for rid, m, p, tg in client.batches if rid == cb.trial_runs["big"]]
    assert sizes == [800, 400], sizes  # epochs 1+2 merged, epoch 3 would pass the limit: its own call
    assert all(m <= MAX_METRICS_PER_BATCH for m in sizes)
    rid = cb.trial_runs["big"]
    assert [m.step for m in client.get_metric_history(rid, "layer7/norm")] == [1, 2, 3]
    assert client.get_run(rid).info.status == "FINISHED"


def test_resumed_run_with_a_changed_param_keeps_it_and_logs_the_metrics(store: str) -> None:
    cb, client, exp_id, sid = _callback(store)
    t = _trial("r1", 0.25)
    cb.on_trial_start(0, [], t)
    _report(cb, t, 1)
    cb.flush()  # the driver dies here: the run stays RUNNING with epoch 1
    rid = cb.trial_runs["r1"]

    from dlops.tracking.callback import MlflowTreeCallback

    cb2 = MlflowTreeCallback(client, exp_id, cb.parent_run_id, sid, metric="dev/error")
    assert cb2.trial_runs == {"r1": rid}
    t2 = _trial("r1", 0.75)  # a changed value
    cb2.on_trial_start(0, [], t2)  # reads the store (waits for the writer): params logged again
    gate = _held(cb2)
    _report(cb2, t2, 1)  # logged before: not again
    _report(cb2, t2, 2)
    cb2.on_trial_complete(0, [], t2)
    gate.set()
    cb2.flush()

    run = client.get_run(rid)
    assert run.info.status == "FINISHED"
    assert run.data.params["x"] == "0.25"  # the first value stays
    assert "Changing param values is not allowed" in run.data.tags["dlops.param_warning"]
    assert run.data.tags["dlops.resumed"] == "true" and run.data.tags["dlops.resumed_first_epoch"] == "1"
    assert sorted(m.step for m in client.get_metric_history(rid, "dev/error")) == [1, 2]
    assert client.get_metric_history(rid, "dev/error")[-1].value == 0.75 / 2


def test_a_failed_write_is_raised_by_flush_and_the_others_still_land(store: str) -> None:
    cb, client, exp_id, sid = _callback(store)
    good, bad = _trial("good", 0.5, epochs=1), _trial("bad", 0.5, epochs=1)
    cb.on_trial_start(0, [], good)
    cb.on_trial_start(0, [], bad)
    cb.flush()
    client.delete_run(cb.trial_runs["bad"])  # writes to a deleted run fail in the store
    gate = _held(cb)
    _report(cb, good, 1)
    _report(cb, bad, 1)
    cb.on_trial_complete(0, [], good)
    gate.set()
    with pytest.raises(Exception):
        cb.flush()
    run = client.get_run(cb.trial_runs["good"])
    assert run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "dev/error")] == [1]
