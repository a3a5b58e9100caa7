"""The ensemble of the top-k trials: members' probabilities (with test-time views) combined by the
project's ensemble method, evaluated on dev and test, logged as the run ``ensemble`` and
registered as one pyfunc model (:class:`dlops.ensemble.EnsemblePyfunc`)."""

from __future__ import annotations

import json
import time
from typing import Any, Optional

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


def measure(models: list[Any], example: Any, task: str, tta: str, crop_fraction: float, method: Any) -> dict[str, float]:
    """The ensemble's ``latency_ms`` and ``size_mb``, measured with the functions that measure a
    single model in its trial (:func:`dlops.train.loop.latency_ms`, :func:`dlops.train.loop.size_mb`),
    so that the registry gate reads the same units for both.

    ``latency_ms`` is the median wall time (ms) of one prediction for a batch of one image: every
    member's forward pass over each of its test-time views (``tta``), the views averaged and the
    members combined by ``method`` (what the registered pyfunc does per request), on the CPU of
    the process that builds the ensemble. ``size_mb`` is all members' parameters and buffers, MB
    (10**6 bytes).

    Args:
        models: the M member modules (CPU).
        example: one preprocessed input (1, C, H, W) (a tensor).
        task, tta, crop_fraction: as :func:`dlops.predict.member_probabilities`.
        method: the ensemble method (an object with ``combine``).

    Returns:
        ``{"latency_ms": float, "size_mb": float}``.
    """
    import torch

    from dlops.predict import member_probabilities
    from dlops.train.loop import latency_ms, size_mb

    class Ensemble(torch.nn.Module):  # the whole prediction as one module, for latency_ms / size_mb
        def __init__(self) -> None:
            super().__init__()
            self.members = torch.nn.ModuleList(models)

        def forward(self, x: Any) -> Any:
            return method.combine(member_probabilities(list(self.members), x, task, tta, crop_fraction))

    net = Ensemble()
    return {"latency_ms": latency_ms(net, example[:1]), "size_mb": size_mb(net)}


def gate_constraints(all_constraints: list[Any], metrics: dict[str, float]) -> tuple[list[Any], list[str]]:
    """(the constraints an ensemble is gated with, the ones it cannot be: their metric is not
    measured for an ensemble, e.g. ``train/error``), the latter as text. Pure."""
    kept = [c for c in all_constraints if c.metric in metrics]
    return kept, [str(c) for c in all_constraints if c.metric not in metrics]


def log_ensemble_run(ctx: JobContext, member_ids: list[str], evals: dict[str, Any], method: Any,
                     cost: Optional[dict[str, float]] = None) -> str:
    """Create the run ``ensemble`` under the search run with its params, dev/test errors and
    ``cost`` (``latency_ms``, ``size_mb``: :func:`measure`); returns its id."""
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
                 Metric("single_best/test/error", single, ts, 0)]
        + [Metric(k, float(v), ts, 0) for k, v in (cost or {}).items()])
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


def member_uris(member_ids: list[str], best_trial_id: Optional[str], best_uri: Optional[str]) -> tuple[list[Optional[str]], str]:
    """Tag ``dlops.member_uris`` of an ensemble ``dlops run`` made: per member (trial id), in
    order, ``models:/NAME/VERSION`` when that trial is the registered best model, else None (a
    trial checkpoint only: it travels inside the ensemble's artifacts and is registered nowhere);
    and a note that says which members are checkpoints only. Pure."""
    uris = [best_uri if (best_uri and t == best_trial_id) else None for t in member_ids]
    only = [t for t, u in zip(member_ids, uris) if u is None]
    note = ("every member is a registered model" if not only else
            f"{len(only)} of {len(uris)} members are trial checkpoints only (not registered; inside this "
            f"version's artifacts): trials {', '.join(only)}")
    return uris, note


def register_ensemble(ctx: JobContext, model_uri: str, member_ids: list[str], evals: dict[str, Any],
                      cost: Optional[dict[str, float]] = None) -> Any:
    """Register the ensemble as a version of the project's ensemble model. The gate reads its
    dev/test errors, ``dev/f1``, and ``latency_ms`` and ``size_mb`` (``cost``, from
    :func:`measure`) with the project's satisficing constraints on those metrics,
    and compares it with the best single model's optimizing metric (baseline). Returns the
    :class:`~dlops.tracking.registry.Promotion`."""
    from dlops.job.plan import constraints
    from dlops.job.register import fingerprint_of
    from dlops.tracking.registry import register_and_promote

    cfg = ctx.config
    metric = cfg.search.metric
    single = ctx.best_model.metrics if ctx.best_model else {}
    metrics = {"dev/error": evals["dev"].error, "test/error": evals["test"].error, "dev/f1": evals["dev"].f1,
               **{k: float(v) for k, v in (cost or {}).items()}}
    kept, unchecked = gate_constraints(constraints(cfg), metrics)
    bm = ctx.best_model
    uris, note = member_uris(member_ids, ctx.best.trial_id if ctx.best else None,
                             f"models:/{bm.name}/{bm.version}" if bm and bm.version else None)
    runs = ctx.outcome.callback.trial_runs if ctx.outcome is not None and ctx.outcome.callback is not None else {}
    extra = {"dlops.unchecked_constraints": json.dumps(unchecked)} if unchecked else {}
    return register_and_promote(
        ctx.client, model_uri, cfg.ensemble_name, metrics, metric, cfg.search.mode, kept,
        tags={"dlops.search_run_id": ctx.search_run_id, "dlops.members": json.dumps(member_ids),
              "dlops.member_uris": json.dumps(uris), "dlops.member_note": note,
              "dlops.member_runs": json.dumps([runs.get(t) for t in member_ids]),
              "dlops.ensemble_method": cfg.ensemble.method, "dlops.project": cfg.name, **extra},
        baseline={metric: single[metric]} if metric in single else None,
        fingerprint=fingerprint_of(ctx, list(ctx.best_model.spec["class_names"])) if ctx.best_model else None,
        kind="ensemble", command="run")
