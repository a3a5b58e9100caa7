"""``dlops report TARGET``: compute the reports of an existing run or registered model again.

The target is a trial or search run id, or ``models:/NAME@ALIAS`` (or ``models:/NAME/VERSION``).
The data are rebuilt exactly as ``dlops run`` built them: from the ``project.json`` that the
search logged (its ``data`` section, ``seed`` and ``task``; relative data paths in a project
file were already made absolute by :func:`dlops.config.load_config`), through
:func:`dlops.data.sources.load_task`. The model predicts on every split for the project's task
and is scored with :func:`dlops.train.loop.evaluate_task` (single-label or multi-label), as the
main job's register phase does; each configured (or named) reporter then runs in its ``model``
scope and is logged to the model's run.

mlflow, torch and the data code are imported inside the functions.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

from dlops.errors import PluginError, ReportTargetError
from dlops.reporting.contract import SPLITS, Report, ReportContext, SplitPredictions
from dlops.reporting.runner import report_model, run_history


def _resolve_target(client: Any, target: str) -> tuple[str, str, str]:
    """(how to load the model, the run to log to, the search run holding project.json).

    ``how`` is ``"model:<models:/ URI>"`` or ``"checkpoint:<local folder>"``.

    Raises:
        ReportTargetError: the target is unknown, not from dlops, or its checkpoint is not here.
    """
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


def _download_json(client: Any, run_id: str, name: str) -> Any:
    """A JSON artifact of a run, or None when the run has none."""
    with tempfile.TemporaryDirectory() as td:
        try:
            local = client.download_artifacts(run_id, name, td)
        except Exception:
            return None
        return json.loads(Path(local).read_text())


def load_project(client: Any, target: str, search_run_id: str) -> Any:
    """The :class:`~dlops.config.ProjectConfig` the search ran with (its ``project.json``).

    Raises:
        ReportTargetError: the search run has no ``project.json``, or it no longer validates
            (e.g. its image folder or list file is gone: the message names it).
    """
    from pydantic import ValidationError

    from dlops.config import ProjectConfig

    raw = _download_json(client, search_run_id, "project.json")
    if raw is None:
        raise ReportTargetError(f"{target}: its search run {search_run_id} has no project.json")
    try:
        return ProjectConfig.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err.get("loc", ()))
        msg = str(err.get("msg", exc)).removeprefix("Value error, ")
        # the data section checks that its folders and list files exist
        what = ("cannot rebuild the project's data" if loc.split(".")[0] == "data"
                else f"the project.json of search run {search_run_id} is not valid")
        raise ReportTargetError(f"{target}: {what}: {loc}: {msg}") from None


def rebuild_data(cfg: Any, target: str) -> Any:
    """The project's splits, rebuilt as ``dlops run`` built them (same source, seed and task).

    Returns:
        A :class:`dlops.data.sources.TaskData`.

    Raises:
        ReportTargetError: the data cannot be rebuilt (a folder or list file gone, unusable
            images); the message names the file or folder.
    """
    from dlops.data.sources import load_task

    try:
        return load_task(cfg.data, cfg.seed, cfg.task)
    except (ValueError, OSError) as exc:
        raise ReportTargetError(f"{target}: cannot rebuild the project's data: {exc}") from None


def _predictor(how: str, target: str, task: str) -> tuple[Callable[[Any], Any], dict[str, Any]]:
    """(inputs (N, C, H, W) float tensor -> probabilities (N, C) or (N, L) array, the model_spec).

    Raises:
        ReportTargetError: the model carries no ``model_spec`` (not logged by dlops).
    """
    import mlflow
    import numpy as np

    from dlops.train.loop import predict_proba

    kind, ref = how.split(":", 1)
    if kind == "checkpoint":
        from dlops.train.checkpoint import load_checkpoint_model

        model, spec = load_checkpoint_model(ref)
        predict = lambda x: predict_proba(model, x, task=task)  # noqa: E731
    else:
        info = mlflow.models.get_model_info(ref)
        spec = (info.metadata or {}).get("model_spec") or {}
        if "pytorch" in info.flavors:
            model = mlflow.pytorch.load_model(ref, map_location="cpu")
            predict = lambda x: predict_proba(model, x, task=task)  # noqa: E731
        else:  # an ensemble: its pyfunc averages the members' probabilities
            pyf = mlflow.pyfunc.load_model(ref)
            predict = lambda x: np.asarray(pyf.predict(x.numpy()))  # noqa: E731
    if not spec:
        raise ReportTargetError(f"{target}: the model carries no model_spec metadata (not logged by dlops)")
    return predict, spec


def recompute_reports(target: str, tracking_uri: str, split: str = "dev",
                      reporters: Sequence[str] | None = None, out: Callable[[str], Any] = print) -> dict[str, Report]:
    """Compute the reports of ``target`` (a run id or ``models:/NAME@ALIAS``) again and log them.

    The data are rebuilt from the ``project.json`` of the search that produced the model (same
    source, seed, splits and task, see the module docstring); predictions are made on every
    split and scored for the project's task (errors are fractions in [0, 1]: top-1 error, or the
    mean per-label error over the observed labels for ``multilabel``); ``split`` is the one
    that split-specific reporters (error analysis) look at. The reports are logged to the
    target's run (the trial that produced the model).

    Args:
        target: a trial or search run id, or ``models:/NAME@ALIAS``.
        tracking_uri: the MLflow tracking URI.
        split: one of :data:`~dlops.reporting.contract.SPLITS`.
        reporters: the reporters to run (default: the project's ``report.reporters``); those
            without the ``model`` scope do not run.
        out: where progress lines go.

    Returns:
        The reports by reporter name.

    Raises:
        ReportTargetError: the target is unknown, not from dlops, its weights are not reachable,
            an unknown split, or the project's data cannot be rebuilt (the message names the
            folder or file).
        dlops.errors.PluginError: an unknown reporter name.
    """
    import mlflow
    from mlflow import MlflowClient

    from dlops.console import quiet_libraries
    from dlops.data.transforms import eval_transform
    from dlops.plugins import get_registry
    from dlops.train.loop import evaluate_task, stack_eval

    quiet_libraries()
    if split not in SPLITS:
        raise ReportTargetError(f"--split: unknown split {split!r}; use one of {list(SPLITS)}")
    mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient(tracking_uri)
    how, run_id, search_id = _resolve_target(client, target)
    cfg = load_project(client, target, search_id)
    names = list(reporters) if reporters else list(cfg.report.reporters)
    registry = get_registry()
    for n in names:  # an unknown name fails before the data are rebuilt
        if n not in registry.reporters and not reporters:
            raise PluginError(f"report.reporters of the project that made {target} names reporter {n!r}, which "
                              f"no installed plugin provides (available: {sorted(registry.reporters)}); "
                              "choose with --reporter NAME")
        registry.get("reporters", n)
    data = rebuild_data(cfg, target)
    logged = _download_json(client, search_id, "data_manifest.json")
    if logged is not None and json.loads(json.dumps(data.manifest)) != logged:
        out(f"warning: the data differ from those of search run {search_id} (data_manifest.json): "
            "the files changed since the run")
    task = cfg.task
    predict, spec = _predictor(how, target, task)
    splits = {k: data.split(k) for k in SPLITS}
    t_eval = eval_transform(spec)  # the one eval transform: training's and serving's (dlops.serving.inputs)
    probs = {k: predict(stack_eval(v.x, t_eval)) for k, v in splits.items()}
    errors = {"human": cfg.human_level_error,
              **{k: evaluate_task(probs[k], v.y, task).error for k, v in splits.items()}}
    preds = {k: SplitPredictions(v.y, probs[k], images=v.x, tags=data.tags.get(k)) for k, v in splits.items()}
    with tempfile.TemporaryDirectory() as td:
        ctx = ReportContext(errors=errors, out_dir=Path(td), predictions=preds, class_names=spec["class_names"],
                            history=run_history(client, run_id), title=target, split=split)
        reps = report_model(client, registry, [run_id], names, ctx)
    for n, rep in reps.items():
        out(f"{n}: {rep.summary}")
    out(f"logged to run {run_id}")
    return reps
