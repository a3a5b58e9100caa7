"""The ensemble of the top-k trials: members' probabilities (with test-time views) combined by the
project's ensemble method, evaluated on dev and test, logged as the run ``ensemble`` and
registered as one pyfunc model (:class:`dlops.ensemble.EnsemblePyfunc`)."""

from __future__ import annotations

import json
import time
from typing import Any

from dlops.job.context import JobContext


def common_spec(specs: list[dict[str, Any]]) -> dict[str, Any]:
    """The keys of the members' model specs that every member shares, with their value: an
    ensemble's ``model_spec`` (input size, channels, mean, std, task, classes). What differs
    between members (e.g. the small CNN's ``hidden`` units, a searched hyperparameter) is only in
    the ensemble's ``member_specs``, one spec per member, in member order."""
    if not specs:
        return {}
    first = specs[0]
    return {k: v for k, v in first.items() if all(k in sp and sp[k] == v for sp in specs[1:])}


def model_config(ctx: JobContext) -> dict[str, Any]:
    """The ensemble pyfunc's model config: ``tta``, ``crop_fraction``, ``method``."""
    e = ctx.config.ensemble
    return {"tta": e.tta, "crop_fraction": e.crop_fraction, "method": e.method}


def combined_probabilities(ctx: JobContext, method: Any, members: list[tuple[Any, dict[str, Any], str]],
                           split: str) -> Any:
    """The ensemble's (N, K) probabilities on ``split``: each member's averaged over its
    test-time views, then combined over the members by ``method.combine``."""
    from dlops.predict import member_probabilities

    mc = model_config(ctx)
    probs = member_probabilities([m for m, _, _ in members], ctx.eval_inputs[split], ctx.config.task,
                                 mc["tta"], mc["crop_fraction"])
    return method.combine(probs)


def log_ensemble_run(ctx: JobContext, member_ids: list[str], evals: dict[str, Any], method: Any) -> str:
    """Create the run ``ensemble`` under the search run with its params and dev/test errors; returns its id."""
    from mlflow.entities import Metric, Param

    from dlops.tracking.store import TAG_KIND, TAG_PARENT, TAG_SEARCH

    mc = model_config(ctx)
    run = ctx.client.create_run(ctx.experiment_id, run_name="ensemble",
                                tags={TAG_PARENT: ctx.search_run_id, TAG_KIND: "ensemble", TAG_SEARCH: ctx.search_id})
    erid = run.info.run_id
    ctx.open_runs.append(erid)
    ts = int(time.time() * 1000)
    single = ctx.best_model.metrics["test/error"] if ctx.best_model else float("nan")
    ctx.client.log_batch(
        erid,
        params=[Param("members", json.dumps(member_ids)), Param("top_k", str(ctx.config.ensemble.top_k)),
                Param("method", mc["method"]),
                Param("combine", str(getattr(method, "description", mc["method"]))),
                Param("tta", mc["tta"]), Param("crop_fraction", str(mc["crop_fraction"]))],
        metrics=[Metric("dev/error", evals["dev"].error, ts, 0), Metric("test/error", evals["test"].error, ts, 0),
                 Metric("single_best/test/error", single, ts, 0)])
    return erid


def log_ensemble_model(ctx: JobContext, run_id: str, member_ids: list[str],
                       members: list[tuple[Any, dict[str, Any], str]], dev_probs: Any) -> str:
    """Log the ensemble pyfunc (members' checkpoints as artifacts) to ``run_id``; returns its URI."""
    import mlflow

    from dlops.ensemble import EnsemblePyfunc
    from dlops.serving.pyfunc import model_signature
    from dlops.tracking.models import active_run, pip_requirements

    mc = model_config(ctx)
    sig = model_signature(dev_probs.shape[1])  # outputs only: the pyfunc checks its inputs (float64 too)
    specs = [sp for _, sp, _ in members]
    class_index = ctx.best_model.class_index if ctx.best_model else {}
    with active_run(run_id):
        info = mlflow.pyfunc.log_model(
            name="ensemble", python_model=EnsemblePyfunc(),
            artifacts={f"member_{i}": p for i, (_, _, p) in enumerate(members)},
            signature=sig, pip_requirements=pip_requirements(), model_config=mc,
            metadata={"model_spec": common_spec(specs), "class_index": class_index, "members": member_ids,
                      "member_specs": specs, **mc},
        )
    return info.model_uri


def register_ensemble(ctx: JobContext, model_uri: str, member_ids: list[str], evals: dict[str, Any]) -> Any:
    """Register the ensemble as a version of the project's ensemble model; the gate compares it
    with the best single model's optimizing metric. Returns the :class:`~dlops.tracking.registry.Promotion`."""
    from dlops.job.plan import constraints
    from dlops.job.register import fingerprint_of
    from dlops.tracking.registry import register_and_promote

    cfg = ctx.config
    metric = cfg.search.metric
    single = ctx.best_model.metrics if ctx.best_model else {}
    return register_and_promote(
        ctx.client, model_uri, cfg.ensemble_name,
        {"dev/error": evals["dev"].error, "test/error": evals["test"].error, "dev/f1": evals["dev"].f1},
        metric, cfg.search.mode, [c for c in constraints(cfg) if c.metric in ("dev/error", "test/error", "dev/f1")],
        tags={"dlops.search_run_id": ctx.search_run_id, "dlops.members": json.dumps(member_ids),
              "dlops.ensemble_method": cfg.ensemble.method, "dlops.project": cfg.name},
        baseline={metric: single[metric]} if metric in single else None,
        fingerprint=fingerprint_of(ctx, list(ctx.best_model.spec["class_names"])) if ctx.best_model else None,
        kind="ensemble", command="run")
