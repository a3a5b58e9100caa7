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
    (a run that had ended ends again with the same status)."""
    import mlflow
    from mlflow import MlflowClient

    client = MlflowClient()
    before = client.get_run(run_id).info.status
    with mlflow.start_run(run_id=run_id) as r:
        yield r
    if before != "RUNNING":
        client.set_terminated(run_id, before)
