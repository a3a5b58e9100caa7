"""The failure-budget stopper pickles as its search id: Tune pickles the stopper into every
experiment checkpoint and puts the unpickled copy in place on restore, so the copy must find the
live budget of this driver (not a stale MLflow callback), and pickling it must not touch the
callback (whose pickling waits for the MLflow writer)."""

from __future__ import annotations

from pathlib import Path

import ray.cloudpickle as cloudpickle
from mlflow import MlflowClient

from dlops.search.tune import budget as run_mod
from dlops.tracking.callback import MlflowTreeCallback


def test_the_restored_stopper_asks_the_live_budget(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    client = MlflowClient(f"sqlite:///{db}")
    exp = client.create_experiment("budget")
    parent = client.create_run(exp).info.run_id
    cb = MlflowTreeCallback(client, exp, parent, "sid123")
    budget = run_mod.FailureBudget(cb, max_failures=1)
    stopper = run_mod.budget_stopper("sid123")
    blob = cloudpickle.dumps(stopper)
    assert len(blob) < 2000 and str(db).encode() not in blob  # the callback (and its store) is not in it
    restored = cloudpickle.loads(blob)
    assert restored.stop_all() is False  # no live budget registered: never stops
    run_mod._LIVE_BUDGETS["sid123"] = budget
    try:
        assert restored.stop_all() is False and restored("t1", {}) is False
        cb.n_failed = 2  # what the live callback counts as trials fail
        assert restored.stop_all() is True
        assert "more than search.max_failures=1" in cb.stopping_reason
    finally:
        run_mod._LIVE_BUDGETS.pop("sid123", None)
    assert restored.stop_all() is False
    cb.flush()
