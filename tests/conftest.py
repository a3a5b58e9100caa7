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

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "digits-transfer.yaml"

#: overrides that shrink the default example to a few seconds of training
TINY = [
    "search.stages=[{trials: 3, epochs: 2, method: sobol}, {trials: 2, epochs: 3}]",
    "pretrain.epochs=2",
    "ensemble.top_k=3",
]


@pytest.fixture
def example_copy(tmp_path: Path) -> Path:
    """The default example copied into a temp dir (the cwd of the test)."""
    dst = tmp_path / "project.yaml"
    shutil.copy(EXAMPLE, dst)
    return dst
