"""Reports: the reporter contract, running reporters, and ``dlops report``.

* :mod:`dlops.reporting.contract`: what a reporter receives and returns (:class:`ReportContext`,
  :class:`Report`, :class:`SplitPredictions`), the split names and the scopes a reporter declares.
* :mod:`dlops.reporting.runner`: runs the configured reporters per trial, per search and per
  model, and logs their reports to MLflow (driver side).
* :mod:`dlops.reporting.recompute`: ``dlops report TARGET``, the reports of an existing run or
  registered model computed again on the project's own data.

Importing this package imports no torch, ray or mlflow: the runner and ``dlops report``
functions load on first use.
"""

from __future__ import annotations

from typing import Any

from dlops.reporting.contract import (
    DEFAULT_SCOPES,
    SCOPE_MODEL,
    SCOPE_SEARCH,
    SCOPE_TRIAL,
    SCOPES,
    SPLITS,
    Report,
    ReportContext,
    SplitPredictions,
    TrainContext,
    reporter_scopes,
)

#: name -> submodule, imported on first access
_LAZY = {
    "ARTIFACT_DIR": "runner",
    "log_report": "runner",
    "report_model": "runner",
    "report_search": "runner",
    "report_trials": "runner",
    "run_history": "runner",
    "trial_errors": "runner",
    "recompute_reports": "recompute",
}

__all__ = [
    "DEFAULT_SCOPES",
    "SCOPES",
    "SCOPE_MODEL",
    "SCOPE_SEARCH",
    "SCOPE_TRIAL",
    "SPLITS",
    "Report",
    "ReportContext",
    "SplitPredictions",
    "TrainContext",
    "reporter_scopes",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'dlops.reporting' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"dlops.reporting.{mod}"), name)
    globals()[name] = value
    return value
