"""Registering the best trial: evaluate it on every split, log it with the pytorch flavor (signature,
class index map, model spec), register it and let the gate move the aliases."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

from dlops.job.context import BestModel, JobContext
from dlops.job.plan import constraints


def eval_inputs(ctx: JobContext) -> dict[str, Any]:
    """split -> (N, C, H, W) float32 tensors, with the evaluation transform of the project's spec."""
    from dlops.data.transforms import eval_transform
    from dlops.train.loop import stack_eval

    spec = ctx.spec
    t_eval = eval_transform(spec)  # the one eval transform: training's, report's and serving's
    return {k: stack_eval(v.x, t_eval) for k, v in ctx.splits.items()}


def evaluate_best(ctx: JobContext) -> BestModel:
    """The best trial's network evaluated on train, train-dev, dev and test (errors as fractions),
    with the latency (ms) and size (MB) its trial measured."""
    from dlops.train.loop import evaluate_task, predict_proba

    task = ctx.config.task
    model, mspec, _ = ctx.load_member(ctx.best.trial_id)
    splits = ctx.splits
    probs = {k: predict_proba(model, ctx.eval_inputs[k], task=task) for k in splits}
    evals = {k: evaluate_task(probs[k], splits[k].y, task) for k in splits}
    metrics = {f"{k}/error": evals[k].error for k in splits}
    metrics["dev/f1"] = evals["dev"].f1
    for key in ("latency_ms", "size_mb"):
        if key in ctx.best.metrics:
            metrics[key] = float(ctx.best.metrics[key])
    class_index = {str(i): c for i, c in enumerate(mspec["class_names"])}
    return BestModel(model=model, spec=mspec, run_id=ctx.summary.best_run_id or "", probs=probs, evals=evals,
                     metrics=metrics, class_index=class_index)


def log_best_model(ctx: JobContext, best: BestModel) -> str:
    """Log ``best`` to its trial run (``test/error`` too) with ``class_index.json``: the pytorch
    flavor and dlops's pyfunc (:mod:`dlops.serving.pyfunc`: float64/int64 arrays and base64 images
    in, probabilities out; an outputs-only signature); returns the logged model's URI."""
    from mlflow.entities import Metric

    from dlops.serving.pyfunc import log_model, model_signature
    from dlops.tracking.models import active_run, pip_requirements

    sig = model_signature(best.probs["dev"].shape[1])
    ctx.client.log_batch(best.run_id, metrics=[Metric("test/error", best.metrics["test/error"],
                                                      int(time.time() * 1000), 0)])
    with tempfile.TemporaryDirectory() as td:
        ci = Path(td) / "class_index.json"
        ci.write_text(json.dumps(best.class_index, indent=2))
        with active_run(best.run_id):
            info = log_model(
                best.model, name="model", signature=sig, extra_files=[str(ci)], pip_requirements=pip_requirements(),
                serialization_format="pickle", metadata={"model_spec": best.spec, "class_index": best.class_index},
            )
    return info.model_uri


def fingerprint_of(ctx: JobContext, classes: list[str]) -> dict[str, Any]:
    """What the job's optimizing metric means (:func:`dlops.tracking.promotion.fingerprint`):
    task, classes, the dev and test split's manifest digests, metric and direction."""
    from dlops.tracking.promotion import fingerprint, split_digests

    cfg = ctx.config
    dev, test = split_digests(ctx.data.manifest or {}, cfg.seed, cfg.data.model_dump(mode="json"))
    return fingerprint(cfg.task, classes, dev, test, cfg.search.metric, cfg.search.mode)


def register_best(ctx: JobContext, best: BestModel, model_uri: str) -> Any:
    """Register ``model_uri`` as a version of the project's model; the gate (optimizing metric +
    satisficing constraints) decides whether it becomes champion. Returns the
    :class:`~dlops.tracking.registry.Promotion`."""
    from dlops.tracking.registry import register_and_promote

    cfg = ctx.config
    return register_and_promote(
        ctx.client, model_uri, cfg.model_name, best.metrics, cfg.search.metric, cfg.search.mode, constraints(cfg),
        tags={"dlops.trial_id": ctx.best.trial_id, "dlops.search_run_id": ctx.search_run_id,
              "dlops.run_id": best.run_id, "dlops.class_index": json.dumps(best.class_index),
              "dlops.project": cfg.name},
        fingerprint=fingerprint_of(ctx, list(best.spec["class_names"])), kind="model", command="run",
    )
