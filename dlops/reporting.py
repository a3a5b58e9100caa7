"""Running reporter plugins and logging what they return to MLflow (driver side).

Reporters only compute and write files (:mod:`dlops.reports`); this module turns a
:class:`~dlops.reports.Report` into MLflow metrics and artifacts under ``reports/``, for

- each trial of a search (bias/variance from its final errors, learning curves from its history),
- the search's parent run (the bias/variance table over all trials, a CSV of every trial),
- a registered model (every configured reporter, with predictions on each split).
"""

from __future__ import annotations

from dlops.errors import ReportTargetError  # noqa: F401  (the kind lives in dlops.errors)
import math
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from dlops.reports import SPLITS, Report, ReportContext

ARTIFACT_DIR = "reports"
PER_TRIAL_REPORTERS = ("bias_variance", "learning_curves")


def log_report(client: Any, run_id: str, report: Report, artifact_path: str = ARTIFACT_DIR) -> None:
    """Log a report's finite metrics (step 0) and its artifacts to ``run_id``."""
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
    """Per-epoch rows ``{"epoch": e, key: value, ...}`` from a run's metric histories (step = epoch)."""
    rows: dict[int, dict[str, float]] = {}
    for key in keys:
        for m in client.get_metric_history(run_id, key):
            rows.setdefault(int(m.step), {"epoch": int(m.step)})[key] = m.value
    return [rows[e] for e in sorted(rows)]


def trial_errors(metrics: Mapping[str, Any], human: float) -> dict[str, float]:
    """``{"human", "train", "train_dev", "dev", "test"}`` errors from a trial's final metrics."""
    out = {"human": float(human)}
    for s in SPLITS:
        v = metrics.get(f"{s}/error")
        if isinstance(v, (int, float)) and math.isfinite(float(v)):
            out[s] = float(v)
    return out


def report_search(client: Any, registry: Any, parent_run_id: str, trials: Sequence[Mapping[str, Any]],
                  human: float, names: Sequence[str]) -> None:
    """Per-trial reports and the search-level table.

    Args:
        trials: one dict per ended trial: ``{"trial_id", "run_id", "params", "metrics"}`` with
            the final metrics (errors as fractions).
        names: the configured reporters; those of :data:`PER_TRIAL_REPORTERS` that are among them
            (and installed) also run per trial.
    """
    per_trial = [n for n in PER_TRIAL_REPORTERS if n in names and n in registry.reporters]
    with tempfile.TemporaryDirectory() as td:
        for t in trials:
            if not t.get("metrics"):
                continue  # failed trial: nothing to report
            ctx = ReportContext(errors=trial_errors(t["metrics"], human), out_dir=Path(td) / t["trial_id"],
                                history=run_history(client, t["run_id"]), title=f"trial {t['trial_id']}")
            for n in per_trial:
                rep = registry.get("reporters", n).report(ReportContext(**{**ctx.__dict__, "out_dir": ctx.out_dir / n}))
                log_report(client, t["run_id"], rep)
        rows = [{"trial": t["trial_id"], **trial_errors(t["metrics"], human)} for t in trials if t.get("metrics")]
        if "bias_variance" in registry.reporters and rows:
            from dlops_plugins.reporters.bias_variance import render_search_table

            client.log_text(parent_run_id, render_search_table(rows, human=human, title="all trials"),
                            f"{ARTIFACT_DIR}/bias_variance_trials.md")
        if "learning_curves" in registry.reporters:
            from dlops_plugins.reporters.learning_curves import write_trials_csv

            path = write_trials_csv([{"trial_id": t["trial_id"], "params": t.get("params", {}),
                                      "metrics": t.get("metrics", {})} for t in trials], Path(td) / "trials.csv")
            client.log_artifact(parent_run_id, str(path), artifact_path=ARTIFACT_DIR)


def report_model(client: Any, registry: Any, run_ids: Sequence[str], names: Sequence[str], context: ReportContext) -> dict[str, Report]:
    """Run every reporter in ``names`` on one model's context; log each report to every run in
    ``run_ids``. Returns the reports by name.

    Raises:
        dlops.plugins.PluginError: an unknown reporter name.
    """
    out: dict[str, Report] = {}
    for n in names:
        reporter = registry.get("reporters", n)
        rep = reporter.report(ReportContext(**{**context.__dict__, "out_dir": Path(context.out_dir) / n}))
        for rid in run_ids:
            log_report(client, rid, rep)
        out[n] = rep
    return out


# ------------------------------------------------------------------------------------------------
# `dlops report TARGET`: compute the reports again for an existing run or registered model
# ------------------------------------------------------------------------------------------------




def _resolve_target(client: Any, target: str) -> tuple[str, str, str]:
    """(how to load the model, the run to log to, the search run holding project.json)."""
    if target.startswith("models:/"):
        from dlops.tracking.registry import get_model_version

        try:
            mv = get_model_version(client, target)
        except LookupError as exc:
            raise ReportTargetError(f"{target}: {exc}") from None
        tags = mv.tags or {}
        run_id = mv.run_id or tags.get("dlops.run_id")
        search = tags.get("dlops.search_run_id")
        if not run_id or not search:
            raise ReportTargetError(f"{target}: not registered by dlops (no dlops.search_run_id tag)")
        return f"model:{target}", run_id, search
    try:
        run = client.get_run(target)
    except Exception:
        raise ReportTargetError(f"{target}: no such MLflow run (give a run id or models:/NAME@ALIAS)") from None
    tags = run.data.tags
    kind = tags.get("dlops.kind")
    if kind == "search":
        best = tags.get("dlops.best_run_id")
        if not best:
            raise ReportTargetError(f"{target}: this search has no best trial (did it finish?)")
        return _resolve_target(client, best)
    if kind != "trial":
        raise ReportTargetError(f"{target}: a {kind or 'non-dlops'} run; give a trial or search run id, "
                                "or models:/NAME@ALIAS")
    ck = tags.get("dlops.checkpoint")
    if not ck or not Path(ck).exists():
        raise ReportTargetError(f"{target}: the trial's checkpoint {ck!r} is not on this machine")
    stage = client.get_run(tags["mlflow.parentRunId"])
    return f"checkpoint:{ck}", target, stage.data.tags["mlflow.parentRunId"]


def recompute_reports(target: str, tracking_uri: str, split: str = "dev",
                      reporters: Sequence[str] | None = None, out: Any = print) -> dict[str, Report]:
    """Compute the reports of ``target`` (a run id or ``models:/NAME@ALIAS``) again and log them.

    The data are rebuilt from the ``project.json`` of the search that produced the model (same
    seed, same splits); predictions are made on every split; ``split`` is the one that
    split-specific reporters (error analysis) look at.

    Raises:
        ReportTargetError: the target is unknown, not from dlops, or its weights are not reachable.
        dlops.plugins.PluginError: an unknown reporter name.
    """
    import json as _json

    import mlflow
    import numpy as np
    from mlflow import MlflowClient

    from dlops.config import ProjectConfig
    from dlops.data.digits import build_transfer_data
    from dlops.data.transforms import build_transform
    from dlops.plugins import get_registry
    from dlops.reports import SplitPredictions
    from dlops.train.loop import evaluate_proba, predict_proba, stack_eval

    from dlops.console import quiet_libraries

    quiet_libraries()
    if split not in SPLITS:
        raise ReportTargetError(f"--split: unknown split {split!r}; use one of {list(SPLITS)}")
    mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient(tracking_uri)
    how, run_id, search_id = _resolve_target(client, target)
    with tempfile.TemporaryDirectory() as td:
        try:
            local = client.download_artifacts(search_id, "project.json", td)
        except Exception as exc:
            raise ReportTargetError(f"{target}: its search run {search_id} has no project.json ({exc})") from None
        cfg = ProjectConfig.model_validate(_json.loads(Path(local).read_text()))
    d = cfg.data
    data = build_transfer_data(d.source_classes, d.target_classes, d.train_per_class, d.train_dev_per_class,
                               d.dev_fraction, cfg.seed)
    splits = {"train": data.train, "train_dev": data.train_dev, "dev": data.dev, "test": data.test}
    kind, ref = how.split(":", 1)
    if kind == "checkpoint":
        from dlops.train.checkpoint import load_checkpoint_model

        model, spec = load_checkpoint_model(ref)
        predict = lambda x: predict_proba(model, x)  # noqa: E731
    else:
        info = mlflow.models.get_model_info(ref)
        spec = (info.metadata or {}).get("model_spec") or {}
        if "pytorch" in info.flavors:
            model = mlflow.pytorch.load_model(ref, map_location="cpu")
            predict = lambda x: predict_proba(model, x)  # noqa: E731
        else:
            pyf = mlflow.pyfunc.load_model(ref)
            predict = lambda x: np.asarray(pyf.predict(x.numpy()))  # noqa: E731
    if not spec:
        raise ReportTargetError(f"{target}: the model carries no model_spec metadata (not logged by dlops)")
    t_eval = build_transform("none", 0.0, spec.get("image_size"), spec["mean"], spec["std"], train=False)
    probs = {k: predict(stack_eval(v.x, t_eval)) for k, v in splits.items()}
    errors = {"human": cfg.human_level_error, **{k: evaluate_proba(probs[k], v.y).error for k, v in splits.items()}}
    preds = {k: SplitPredictions(v.y, probs[k], images=v.x) for k, v in splits.items()}
    names = list(reporters) if reporters else list(cfg.report.reporters)
    with tempfile.TemporaryDirectory() as td:
        ctx = ReportContext(errors=errors, out_dir=Path(td), predictions=preds, class_names=spec["class_names"],
                            history=run_history(client, run_id), title=target, split=split)
        reps = report_model(client, get_registry(), [run_id], names, ctx)
    for n, rep in reps.items():
        out(f"{n}: {rep.summary}")
    out(f"logged to run {run_id}")
    return reps
