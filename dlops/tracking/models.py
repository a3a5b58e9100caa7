"""Logging models to MLflow from the driver: the pip requirements and the active run they need."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator


def pip_requirements() -> list[str]:
    """Pins of the packages a logged dlops model needs (``torch``, ``numpy``, ``mlflow``), as installed."""
    import importlib.metadata as md

    reqs = []
    for pkg in ("torch", "numpy", "mlflow"):
        try:
            reqs.append(f"{pkg}=={md.version(pkg)}")
        except md.PackageNotFoundError:
            reqs.append(pkg)
    return reqs


@contextmanager
def active_run(run_id: str) -> Iterator[Any]:
    """Make ``run_id`` the active fluent run for a ``log_model`` call, keeping its final status
    and end time (a run that had ended ends again with the same status at the same time: its
    duration in the MLflow UI is the training's, not the training's plus this logging)."""
    import mlflow
    from mlflow import MlflowClient

    client = MlflowClient()
    info = client.get_run(run_id).info
    before = info.status
    with mlflow.start_run(run_id=run_id) as r:
        yield r
    if before != "RUNNING":
        client.set_terminated(run_id, before, end_time=info.end_time)
