"""Running a staged search on Ray Tune: one ``Tuner``, the staged searcher, the MLflow callback.

Resources per trial are checked against the cluster before the first trial
(:func:`dlops.search.resources.check_resources` semantics in :mod:`dlops.pipeline`).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from dlops.config import RayConfig, SearchConfig


@dataclass
class SearchOutcome:
    """What a finished search left: the plan (every trial's config and final metrics), Tune's
    ResultGrid, the MLflow callback (trial id -> run id) and each trial's last checkpoint."""

    plan: Any
    results: Any
    callback: Any
    checkpoints: dict[str, Any]
    n_trials: int
    n_failed: int
    warnings: list[str] = field(default_factory=list)


def short_trial_dirname(trial: Any) -> str:
    """Trial directory names: short and unique whatever the hyperparameters (``t-<trial_id>``)."""
    return f"t-{trial.trial_id}"


def stage_info_fn(plan: Any, search: SearchConfig) -> Callable[[int], dict[str, Any]]:
    """Params of stage k's MLflow run: its trials, epochs, method and box (value scale shown in u)."""

    def info(k: int) -> dict[str, Any]:
        box = plan.boxes[k] if k < len(plan.boxes) else None
        st = search.stages[k]
        params: dict[str, Any] = {"stage": k, "trials": st.trials, "epochs": st.epochs, "method": st.method}
        if box is not None:
            for name, (lo, hi) in box.intervals.items():
                params[f"box.{name}"] = f"[{lo:.6g}, {hi:.6g}]"
            for name, ch in box.choices.items():
                params[f"box.{name}"] = json.dumps(list(ch))
        return {"params": params}

    return info


def run_search(
    trainable: Callable[..., None],
    payload: dict[str, Any],
    plan: Any,
    search: SearchConfig,
    ray_cfg: RayConfig,
    experiment_name: str,
    client: Any,
    experiment_id: str,
    parent_run_id: str,
    search_id: str,
    out: Callable[[str], None] = print,
    on_callback: Optional[Callable[[Any], None]] = None,
) -> SearchOutcome:
    """Run every stage of ``plan`` in one ``Tuner`` and log the run tree.

    Args:
        trainable: ``f(config, payload)``; it reports per-epoch metrics and checkpoints.
        payload: passed to every trial through the object store (``tune.with_parameters``).
        on_callback: called with the MLflow callback as soon as it exists (so the caller can
            end its runs if the search is interrupted).

    Raises:
        KeyboardInterrupt: the search was interrupted (Tune saved its state first).
    """
    from ray import tune

    from dlops.search.searcher import StagedSearcher
    from dlops.tracking.callback import MlflowTreeCallback

    searcher = StagedSearcher(plan)
    cb = MlflowTreeCallback(client, experiment_id, parent_run_id, search_id,
                            stage_info=stage_info_fn(plan, search), progress=out)
    if on_callback:
        on_callback(cb)
    scheduler = None
    if search.scheduler == "asha":
        from ray.tune.schedulers import ASHAScheduler

        max_t = max(st.epochs or search.default_epochs for st in search.stages)
        scheduler = ASHAScheduler(time_attr="epoch", max_t=max_t, grace_period=1)
    res = search.resources
    storage = str(Path(ray_cfg.storage_path).resolve())
    fn = tune.with_resources(tune.with_parameters(trainable, payload=payload), {"cpu": res.cpu, "gpu": res.gpu})
    tuner = tune.Tuner(
        fn,
        tune_config=tune.TuneConfig(metric=search.metric, mode=search.mode, search_alg=searcher,
                                    scheduler=scheduler, num_samples=plan.total_trials,
                                    max_concurrent_trials=search.max_concurrent,
                                    trial_dirname_creator=short_trial_dirname, reuse_actors=True),
        run_config=tune.RunConfig(name=f"{experiment_name}-{search_id}", storage_path=storage, callbacks=[cb],
                                  verbose=0, checkpoint_config=tune.CheckpointConfig(num_to_keep=1)),
    )
    out(f"  {plan.total_trials} trials in {len(plan.stages)} stages; MLflow parent run {parent_run_id}")
    results = tuner.fit()
    if len(plan.results) < plan.total_trials:
        # Tune returns normally after Ctrl-C (it saves the experiment state first)
        raise KeyboardInterrupt(f"search interrupted after {len(plan.results)} of {plan.total_trials} trials")
    cb.end_stages("FINISHED")
    outcome = SearchOutcome(
        plan=plan, results=results, callback=cb,
        checkpoints={r.metrics.get("trial_id"): r.checkpoint for r in results if r.checkpoint is not None},
        n_trials=len(results), n_failed=sum(1 for r in results if r.error is not None),
    )
    for entry in plan.zoom_log:
        k = entry["stage"]
        rid = cb.stage_runs.get(k)
        if rid:
            client.set_tag(rid, "dlops.zoom",
                           json.dumps({"selected": entry["selected"], "reason": entry["reason"]})[:5000])
        for msg in entry["edges"]:
            warnings.warn(f"stage {k}: {msg}", stacklevel=2)
            outcome.warnings.append(f"stage {k}: {msg}")
            if rid:
                client.set_tag(rid, "dlops.edge_warning", msg[:5000])
            client.set_tag(parent_run_id, "dlops.edge_warning", msg[:5000])
    return outcome
