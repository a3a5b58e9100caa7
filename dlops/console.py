"""Keeping the console to dlops' own progress lines (no torch, ray or mlflow imports)."""

from __future__ import annotations

import os
import warnings


def quiet_libraries() -> None:
    """Keep the console to dlops' own progress: no artifact progress bars, no Ray Tune tables."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    import logging

    for name in ("mlflow", "ray.tune", "ray.train", "alembic"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"mlflow\..*")
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"mlflow\..*")
    warnings.filterwarnings("ignore", message=r".*type hint.*")  # pyfunc ensembles take arrays, not typed lists
