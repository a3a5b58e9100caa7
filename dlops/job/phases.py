"""The phases of the main job, in order; each a short function of the :class:`JobContext`.

1. ``setup``: log the project, the data manifest and the augmentation pipelines; build the spec and the plan.
2. ``pretrain``: the source network (trained on the source task, reused on ``--resume``, or loaded
   from ``model.weights``).
3. ``search``: the coarse-to-fine search on Ray Tune (one ``Tuner``); MLflow tree search -> stage -> trial.
4. ``register``: the best trial (optimizing metric, satisficing constraints met, NaN never best),
   registered with alias ``challenger``, and ``champion`` when the gate says so.
5. ``report``: every configured reporter, at the scopes it declares (trial, search, model).
6. ``ensemble``: the top-k trials combined by ``ensemble.method``, registered as one pyfunc model.

:func:`dlops.job.run.run_project` runs them and fires ``dlops_before_phase`` /
``dlops_after_phase`` / ``dlops_on_phase_error`` around each.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from dlops.errors import NothingToRegisterError
from dlops.job.context import JobContext
from dlops.job.summary import ensemble_comparison, shown_alias


def setup(ctx: JobContext) -> None:
    import torch

    from dlops.job.plan import build_plan
    from dlops.job.records import log_augmentation, log_project
    from dlops.job.source import make_spec

    cfg, data = ctx.config, ctx.data
    if ctx.resume:  # the run keeps the project it started from (params, project.json); this one beside it
        ctx.client.log_text(ctx.search_run_id, json.dumps(cfg.model_dump(mode="json"), indent=2),
                            "project_resumed.json")
    else:
        log_project(cfg, data, ctx.client, ctx.search_run_id)
    log_context(ctx)
    if data.skipped:
        ctx.out(f"  skipped {len(data.skipped)} unusable files (listed in data_manifest.json), e.g. "
                + "; ".join(f"{p}: {r}" for p, r in data.skipped[:3]))
    for w in data.warnings:  # the data checks (dlops.data.checks): legal but unwise
        ctx.out(f"  warning: {w}")
    ctx.summary.warnings = ctx.summary.warnings + list(data.warnings)
    kind = "labels" if cfg.task == "multilabel" else "classes"
    ctx.out(f"  {cfg.task}: {len(data.class_names)} {kind}; train {len(data.train)}, train-dev "
            f"{len(data.train_dev)}, dev {len(data.dev)}, test {len(data.test)} examples")
    ctx.spec = make_spec(cfg, data)
    ctx.plan = build_plan(cfg)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    log_augmentation(cfg, ctx.spec, ctx.client, ctx.search_run_id)


def log_context(ctx: JobContext) -> None:
    """The search run's source, user and git tags, and the splits as MLflow datasets (digest,
    context train / train_dev / dev / test): the UI's Source and Dataset columns."""
    from dlops.tracking.context import context_tags, split_datasets

    cfg, d = ctx.config, ctx.config.data
    ctx.run_tags = context_tags(getattr(cfg, "_source_file", None))
    for k, v in ctx.run_tags.items():
        ctx.client.set_tag(ctx.search_run_id, k, v)
    source = {"digits": "sklearn.datasets.load_digits", "imagefolder": d.target_dir, "list": d.target_csv}[d.source]
    ctx.datasets = split_datasets(ctx.splits, cfg.name, str(source))
    if not ctx.resume:  # logged once, with the run's first attempt
        ctx.client.log_inputs(ctx.search_run_id, datasets=ctx.datasets)


def pretrain(ctx: JobContext) -> None:
    from dlops.job.source import pretrain as train_and_log
    from dlops.models.weights import load_source_state

    w, s = ctx.config.model.weights, ctx.summary
    t0 = time.perf_counter()
    if w == "pretrain":
        from dlops.search.resume import reuse_pretrain

        reused = reuse_pretrain(ctx.client, ctx.search_run_id) if ctx.resume else None
        if reused is not None:
            ctx.source_state, s.pretrain_run_id = reused
            ctx.out(f"  source network from pretraining run {s.pretrain_run_id} (resume)")
        else:
            ctx.source_state, s.pretrain_run_id = train_and_log(ctx.config, ctx.data, ctx.spec, ctx.client,
                                                                ctx.experiment_id, ctx.out)
            ctx.client.set_tag(ctx.search_run_id, "dlops.pretrain_run_id", s.pretrain_run_id)
    elif w:
        if ctx.source_state is None:  # a file was read before Ray started (dlops.job.run.check_weights)
            ctx.source_state = load_source_state(w, ctx.spec)
        ctx.out(f"  source weights from {w}")
    s.train_s += time.perf_counter() - t0


def trial_payload(ctx: JobContext) -> Any:
    """What every trial receives through Ray's object store (``tune.with_parameters``)."""
    from dlops.train.trial import TrialPayload

    cfg, d = ctx.config, ctx.data
    res = cfg.search.resources
    return TrialPayload(
        train=(d.train.x, d.train.y), train_dev=(d.train_dev.x, d.train_dev.y), dev=(d.dev.x, d.dev.y),
        spec=ctx.spec, source_state=ctx.source_state, freeze=cfg.model.freeze,
        policy=cfg.augmentation.policy, magnitude=cfg.augmentation.magnitude, seed=cfg.seed,
        default_epochs=cfg.search.default_epochs, gpu=res.gpu, allow_cpu=res.allow_cpu,
        threads=max(1, int(res.cpu)), num_workers=cfg.data.num_workers,
    )


def run_trials(ctx: JobContext) -> Any:
    """Run every stage of the plan on Ray Tune; returns the search's outcome."""
    from dlops.search.tune import SearchRequest, run_search
    from dlops.train.trial import train_trial

    cfg = ctx.config
    req = SearchRequest(ctx.plan, cfg.search, cfg.ray, cfg.name, ctx.client, ctx.experiment_id,
                        ctx.search_run_id, ctx.search_id, resume=ctx.resume, seed=cfg.seed, run_tags=ctx.run_tags,
                        datasets=tuple(ctx.datasets))
    return run_search(train_trial, trial_payload(ctx), req, ctx.out, on_callback=lambda c: setattr(ctx, "callback", c))


def search(ctx: JobContext) -> None:
    from dlops.job.records import log_trial_augmentation
    from dlops.plugins import get_registry

    cfg, s, hook = ctx.config, ctx.summary, get_registry().hook
    hook.dlops_before_search(config=cfg, parent_run_id=ctx.search_run_id)
    t0 = time.perf_counter()
    try:
        ctx.outcome = run_trials(ctx)
    except BaseException as exc:
        _quietly(hook.dlops_on_search_error, config=cfg, parent_run_id=ctx.search_run_id, error=exc)
        raise
    s.train_s += time.perf_counter() - t0
    o, cb = ctx.outcome, ctx.outcome.callback
    s.n_trials, s.n_failed, s.warnings = o.n_trials, o.n_failed, s.warnings + o.warnings
    for tid, ck in o.checkpoints.items():  # `dlops report RUN_ID` finds a trial's weights through this tag
        if tid in cb.trial_runs:
            ctx.client.set_tag(cb.trial_runs[tid], "dlops.checkpoint", ck.path)
    log_trial_augmentation(cfg, ctx.spec, ctx.client, ctx.plan, cb.trial_runs)
    ctx.best = confirmed_best(ctx) if o.confirm is not None else ctx.plan.best()
    hook.dlops_after_search(config=cfg, parent_run_id=ctx.search_run_id, best=ctx.best)
    if ctx.best is None:
        raise NothingToRegisterError(f"search: no trial finished with a finite {cfg.search.metric} while "
                                     "meeting the constraints; nothing to register")
    s.best_trial_id, s.best_run_id = ctx.best.trial_id, cb.trial_runs.get(ctx.best.trial_id)
    s.best_config = dict(ctx.best.config)
    ctx.client.set_tag(ctx.search_run_id, "dlops.best_trial_id", ctx.best.trial_id)
    if s.best_run_id:
        ctx.client.set_tag(ctx.search_run_id, "dlops.best_run_id", s.best_run_id)


def confirmed_best(ctx: JobContext) -> Any:
    """The search trial of the configuration that won the confirmation (``search.confirm``: the
    best mean over fresh seeds), or None when no configuration has a feasible mean."""
    winner = ctx.outcome.confirm.winner
    found = [t for t in ctx.plan.outcomes() if t.trial_id == winner]
    if found:
        ctx.client.set_tag(ctx.search_run_id, "dlops.confirm_winner", winner)
    return found[0] if found else None


def register(ctx: JobContext) -> None:
    from dlops.job.register import eval_inputs, evaluate_best, log_best_model, register_best

    ctx.eval_inputs = eval_inputs(ctx)
    best = ctx.best_model = evaluate_best(ctx)
    ctx.summary.best_metrics = best.metrics
    promo = register_best(ctx, best, log_best_model(ctx, best))
    best.name, best.version = promo.name, promo.version
    ctx.summary.model_uri = _uri(promo)
    ctx.summary.model_aliases, ctx.summary.promotion_reason = promo.aliases, promo.reason
    ctx.client.set_tag(ctx.search_run_id, "dlops.model_version", f"{promo.name}/{promo.version}")
    ctx.out(f"  registered {promo.name} version {promo.version} with aliases {list(promo.aliases)} ({promo.reason})")


def report(ctx: JobContext) -> None:
    from dlops.plugins import get_registry
    from dlops.reporting import ReportContext, SplitPredictions, report_model, report_search, run_history
    from dlops.reporting.contract import Report
    from dlops.reporting.runner import log_report
    from dlops.reporting.stats import error_metrics

    cfg, reg, best = ctx.config, get_registry(), ctx.best_model
    runs = ctx.outcome.callback.trial_runs
    trials = [{"trial_id": t.trial_id, "run_id": runs[t.trial_id], "params": dict(t.config), "metrics": dict(t.metrics)}
              for t in ctx.plan.outcomes() if t.trial_id in runs]
    splits = ctx.splits
    counts = {k: len(v.y) for k, v in splits.items()}
    report_search(ctx.client, reg, ctx.search_run_id, trials, cfg.human_level_error, cfg.report.reporters, counts)
    errors = {"human": cfg.human_level_error, **{k: best.evals[k].error for k in splits}}
    ctx.summary.split_counts = counts
    intervals = Report(metrics=error_metrics(errors, counts))  # <split>/n, <split>/error_ci_low, _high
    for rid in (ctx.search_run_id, best.run_id):
        log_report(ctx.client, rid, intervals)
    preds = {k: SplitPredictions(v.y, best.probs[k], images=v.x, tags=ctx.data.tags.get(k)) for k, v in splits.items()}
    with tempfile.TemporaryDirectory() as td:
        rctx = ReportContext(errors=errors, out_dir=Path(td), predictions=preds, class_names=best.spec["class_names"],
                             history=run_history(ctx.client, best.run_id), title=f"{best.name} v{best.version}",
                             trials=trials, counts=counts, train_context=train_context(ctx))
        reports = report_model(ctx.client, reg, [ctx.search_run_id, best.run_id], cfg.report.reporters, rctx)
    for name, rep in reports.items():
        ctx.summary.report_summaries[name] = rep.summary
        ctx.out(f"  {name}: {rep.summary}")


def train_context(ctx: JobContext) -> Any:
    """What a reporter that trains (``data_curve``) needs: the best trial's configuration, the
    data, the spec and the source network (:class:`dlops.reporting.contract.TrainContext`)."""
    from dlops.reporting.contract import TrainContext

    cfg = ctx.config
    return TrainContext(config=dict(ctx.best.config), data=ctx.data, spec=ctx.spec, source_state=ctx.source_state,
                        freeze=cfg.model.freeze, seed=cfg.seed, default_epochs=cfg.search.default_epochs,
                        task=cfg.task, weights=cfg.model.weights, policy=cfg.augmentation.policy,
                        magnitude=cfg.augmentation.magnitude)


def ensemble(ctx: JobContext) -> None:
    from dlops.job import ensemble as ens
    from dlops.job.plan import constraints
    from dlops.plugins import get_registry
    from dlops.search.space import select_top
    from dlops.train.loop import evaluate_task

    cfg, s = ctx.config, ctx.summary
    top = select_top(ctx.plan.outcomes(), cfg.search.metric, cfg.search.mode, constraints(cfg), k=cfg.ensemble.top_k)
    if not cfg.ensemble.enabled or len(top) < 2:
        ctx.out(f"  ensemble skipped ({'disabled' if not cfg.ensemble.enabled else 'fewer than 2 feasible trials'})")
        return
    method = get_registry().get("ensemble_methods", cfg.ensemble.method)
    ids = [t.trial_id for t in top]
    members = [ctx.load_member(t) for t in ids]
    probs = {k: ens.combined_probabilities(ctx, method, members, k) for k in ("dev", "test")}
    evals = {k: evaluate_task(probs[k], ctx.splits[k].y, cfg.task) for k in probs}
    mc = ens.model_config(ctx)
    cost = ens.measure([m for m, _, _ in members], ctx.eval_inputs["dev"][:1], cfg.task, mc["tta"],
                       mc["crop_fraction"], method)  # latency_ms, size_mb: gated like a single model's
    erid = ens.log_ensemble_run(ctx, ids, evals, method, cost)
    promo = ens.register_ensemble(ctx, ens.log_ensemble_model(ctx, erid, ids, members, probs["dev"]), ids, evals,
                                  cost)
    ctx.client.set_terminated(erid, "FINISHED")
    s.ensemble_uri = _uri(promo)
    s.ensemble_members = ids
    s.ensemble_metrics = {"dev/error": evals["dev"].error, "test/error": evals["test"].error, "dev/f1": evals["dev"].f1}
    s.gate_metric = cfg.search.metric
    tta = "" if cfg.ensemble.tta == "none" else f" with {cfg.ensemble.tta} TTA"
    ctx.out(f"  ensemble of {len(top)}{tta}: {ensemble_comparison(s.gate_metric, s.ensemble_metrics, s.best_metrics)}; "
            f"registered {promo.name} version {promo.version} with aliases {list(promo.aliases)} ({promo.reason})")


def _uri(promo: Any) -> str:
    """``models:/NAME@champion`` or ``@challenger`` when the version holds one, else ``models:/NAME/VERSION``
    (a version that is not eligible gets no alias)."""
    return f"models:/{promo.name}@{shown_alias(promo.aliases)}" if promo.aliases else promo.uri


def _quietly(hook: Callable[..., Any], **kwargs: Any) -> None:
    """Call an error hook; its own exception must not hide the error being reported."""
    try:
        hook(**kwargs)
    except Exception:  # noqa: BLE001
        pass


#: the phases in the order ``run_project`` runs them
PHASES: tuple[tuple[str, Callable[[JobContext], None]], ...] = (
    ("setup", setup), ("pretrain", pretrain), ("search", search), ("register", register), ("report", report),
    ("ensemble", ensemble),
)
