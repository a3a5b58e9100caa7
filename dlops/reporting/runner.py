"""Running reporter plugins and logging what they return to MLflow (driver side).

Reporters only compute and write files (:mod:`dlops.reporting.contract`); this module turns a
:class:`~dlops.reporting.contract.Report` into MLflow metrics (step 0) and artifacts under
``reports/``. For each configured reporter, by the scopes it declares
(:func:`~dlops.reporting.contract.reporter_scopes`):

- ``trial``: each finished trial of a search, logged to the trial's run (:func:`report_trials`);
- ``search``: the whole search, with every trial, logged to the search's parent run;
- ``model``: a registered model, with predictions on each split, logged to the given runs
  (:func:`report_model`).

The core knows no reporter by name: which reporter runs where is the reporter's declaration.
mlflow is imported inside the functions; ``client`` is an ``mlflow.MlflowClient``.
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

from dlops.reporting.contract import SCOPE_MODEL, SCOPE_SEARCH, SCOPE_TRIAL, SPLITS, Report, ReportContext, \
    reporter_scopes

ARTIFACT_DIR = "reports"


def log_report(client: Any, run_id: str, report: Report, artifact_path: str = ARTIFACT_DIR) -> None:
    """Log a report's finite metrics (step 0) and its artifacts (under ``artifact_path``) to ``run_id``."""
    from mlflow.entities import Metric

    ts = int(time.time() * 1000)
    ms = [Metric(k, float(v), ts, 0) for k, v in report.metrics.items()
          if isinstance(v, (int, float)) and math.isfinite(float(v))]
    if ms:
        client.log_batch(run_id, metrics=ms)
    for a in report.artifacts:
        client.log_artifact(run_id, str(a), artifact_path=artifact_path)


def run_history(client: Any, run_id: str, keys: Sequence[str] = ("train/error", "train_dev/error", "dev/error",
                                                                  "train/loss")) -> list[dict[str, float]]:
    """Per-epoch rows ``{"epoch": e, key: value, ...}`` from a run's metric histories (step = epoch),
    in epoch order; errors are fractions in [0, 1]."""
    rows: dict[int, dict[str, float]] = {}
    for key in keys:
        for m in client.get_metric_history(run_id, key):
            rows.setdefault(int(m.step), {"epoch": int(m.step)})[key] = m.value
    return [rows[e] for e in sorted(rows)]


def trial_errors(metrics: Mapping[str, Any], human: float) -> dict[str, float]:
    """``{"human", "train", "train_dev", "dev", "test"}`` errors (fractions) from a trial's final
    metrics (``"<split>/error"``); a split without a finite error is left out."""
    out = {"human": float(human)}
    for s in SPLITS:
        v = metrics.get(f"{s}/error")
        if isinstance(v, (int, float)) and math.isfinite(float(v)):
            out[s] = float(v)
    return out


def _scoped(registry: Any, names: Sequence[str], scope: str) -> list[tuple[str, Any]]:
    """The configured reporters that are installed and declare ``scope``, in ``names`` order.

    Raises:
        dlops.errors.PluginError: a reporter declares a bad scope.
    """
    out = []
    for n in names:
        if n in registry.reporters:
            reporter = registry.get("reporters", n)
            if scope in reporter_scopes(reporter, n):
                out.append((n, reporter))
    return out


def _run(reporter: Any, context: ReportContext, name: str, scope: str) -> Report:
    """One reporter on ``context``, writing under ``context.out_dir / name`` (created here), in ``scope``.

    A reporter that raises does not take the job down (a broken plugin is named and skipped): it
    gets a :class:`RuntimeWarning` naming it and the error, and an empty report whose ``summary``
    says it failed (nothing is logged for it).
    """
    out_dir = Path(context.out_dir) / name
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        return reporter.report(dataclasses.replace(context, out_dir=out_dir, scope=scope))
    except Exception as exc:  # noqa: BLE001  (a plugin's bug must not undo the job's work)
        why = f"reporter {name!r} failed in the {scope} scope: {type(exc).__name__}: {exc}"
        warnings.warn(f"dlops: {why}", RuntimeWarning, stacklevel=2)
        return Report(summary=f"FAILED ({type(exc).__name__}: {exc})"[:500])


def report_trials(client: Any, registry: Any, trials: Sequence[Mapping[str, Any]], human: float,
                  names: Sequence[str], counts: Mapping[str, int] | None = None) -> None:
    """The ``trial`` scope: each configured trial-scope reporter on each finished trial, logged to
    the trial's run. A trial without metrics (failed) is skipped.

    Args:
        client: an ``mlflow.MlflowClient``.
        registry: the plugin registry (``registry.reporters``, ``registry.get``).
        trials: one dict per ended trial: ``{"trial_id", "run_id", "params", "metrics"}`` with
            the final metrics (errors as fractions).
        human: human-level error, a fraction in [0, 1].
        names: the configured reporters (``report.reporters``); names no plugin provides are skipped.
        counts: examples per split (the same for every trial), for the intervals.
    """
    scoped = _scoped(registry, names, SCOPE_TRIAL)
    if not scoped:
        return
    with tempfile.TemporaryDirectory() as td:
        for t in trials:
            if not t.get("metrics"):
                continue
            ctx = ReportContext(errors=trial_errors(t["metrics"], human), out_dir=Path(td) / str(t["trial_id"]),
                                history=run_history(client, t["run_id"]), title=f"trial {t['trial_id']}",
                                counts=dict(counts or {}))
            for n, reporter in scoped:
                log_report(client, t["run_id"], _run(reporter, ctx, n, SCOPE_TRIAL))


def report_search(client: Any, registry: Any, parent_run_id: str, trials: Sequence[Mapping[str, Any]],
                  human: float, names: Sequence[str], counts: Mapping[str, int] | None = None) -> dict[str, Report]:
    """The ``trial`` scope (:func:`report_trials`), then the ``search`` scope: each configured
    search-scope reporter once, with every trial in ``context.trials``, logged to the parent run.

    Args:
        client: an ``mlflow.MlflowClient``.
        registry: the plugin registry.
        parent_run_id: the search's parent run.
        trials: one dict per ended trial: ``{"trial_id", "run_id", "params", "metrics"}`` with
            the final metrics (errors as fractions; empty for a failed trial).
        human: human-level error, a fraction in [0, 1].
        names: the configured reporters; names no plugin provides are skipped.
        counts: examples per split (the same for every trial), for the intervals.

    Returns:
        The search-scope reports by reporter name.

    Raises:
        dlops.errors.PluginError: a reporter declares a bad scope.
    """
    report_trials(client, registry, trials, human, names, counts)
    out: dict[str, Report] = {}
    scoped = _scoped(registry, names, SCOPE_SEARCH)
    if not scoped:
        return out
    with tempfile.TemporaryDirectory() as td:
        ctx = ReportContext(errors={"human": float(human)}, out_dir=Path(td), title="all trials",
                            trials=[dict(t) for t in trials], counts=dict(counts or {}))
        for n, reporter in scoped:
            rep = _run(reporter, ctx, n, SCOPE_SEARCH)
            log_report(client, parent_run_id, rep)
            out[n] = rep
    return out


def report_model(client: Any, registry: Any, run_ids: Sequence[str], names: Sequence[str],
                 context: ReportContext) -> dict[str, Report]:
    """The ``model`` scope: every reporter in ``names`` that declares it, on one model's context;
    each report is logged to every run in ``run_ids``. ``context.out_dir`` must exist for the
    call (each reporter writes under ``out_dir / name``).

    Returns:
        The reports by reporter name, in ``names`` order (reporters without the ``model`` scope
        are not run and not in it).

    Raises:
        dlops.errors.PluginError: an unknown reporter name, or a bad declared scope.
    """
    out: dict[str, Report] = {}
    for n in names:
        reporter = registry.get("reporters", n)
        if SCOPE_MODEL not in reporter_scopes(reporter, n):
            continue
        rep = _run(reporter, context, n, SCOPE_MODEL)
        for rid in run_ids:
            log_report(client, rid, rep)
        out[n] = rep
    return out
