"""Shared test setup: Ray binds 127.0.0.1; MLflow keeps quiet; tiny project files."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
os.environ.pop("MLFLOW_TRACKING_URI", None)
os.environ.pop("RAY_ADDRESS", None)

from dlops_testing import EXAMPLE, REPO, TINY  # noqa: E402,F401


@pytest.fixture
def example_copy(tmp_path: Path) -> Path:
    """The default example copied into a temp dir (the cwd of the test)."""
    dst = tmp_path / "project.yaml"
    shutil.copy(EXAMPLE, dst)
    return dst


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray on 127.0.0.1 for the in-process runs of a module (run_project leaves it running)."""
    import ray

    from dlops.cluster import init_ray

    started = init_ray(None, 2, None)
    yield
    if started:
        ray.shutdown()



@pytest.fixture(scope="module", autouse=True)
def _mlflow_uris_restored_per_module():
    """Each module leaves the MLflow URIs as it found them: a module-scoped fixture that runs a job
    in this process (``run_project`` sets ``MLFLOW_TRACKING_URI``) is set up before the per-test
    guard below saves them, so without this its store would reach later modules (and `dlops report`,
    `serve` and `models` read ``MLFLOW_TRACKING_URI`` as their ``--tracking-uri``)."""
    from dlops_testing import mlflow_uris, restore_mlflow_uris

    saved = mlflow_uris()
    yield
    restore_mlflow_uris(saved)


@pytest.fixture(autouse=True)
def _mlflow_uris_restored():
    """Every test leaves the MLflow tracking and registry URIs as it found them
    (:func:`dlops_testing.restore_mlflow_uris`)."""
    from dlops_testing import mlflow_uris, restore_mlflow_uris

    saved = mlflow_uris()
    yield
    restore_mlflow_uris(saved)
