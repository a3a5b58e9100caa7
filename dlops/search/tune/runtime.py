"""Running a staged search on Ray Tune: one ``Tuner``, the staged searcher, the MLflow callback.

* Resources per trial (``search.resources``: CPUs, GPUs, fractional GPUs allowed) are checked
  against the cluster before any run is created (:func:`dlops.search.resources.check_resources`,
  called by the job before the search).
* Resume: with ``SearchRequest.resume`` the Tune experiment ``<storage_path>/<name>-<search_id>``
  is restored with ``Tuner.restore`` (finished trials are not run again, unfinished trials continue
  from their last checkpoint, errored trials stay FAILED); a fresh :class:`StagedSearcher` around
  the caller's plan gets the plan state Tune saved, and a fresh callback finds the MLflow runs
  the search already has. Tune snapshots its experiment state every ``TUNE_GLOBAL_CHECKPOINT_S``
  seconds; dlops sets 1 s while the search runs unless the variable is set, and lengthens the
  period to 19 times the last snapshot's duration when that is longer (Tune's own ``auto`` rule,
  at most ~5% of the driver's time, with a 1 s floor instead of Tune's 10 s: a snapshot
  serialises every trial), so a ``kill -9`` loses about 1 s of state in a search of hundreds of
  trials; at 10,000 no-op trials a snapshot took 1.3-1.8 s and the period reached 35 s
  (``bench/README.md``, search_overhead; :attr:`SearchOutcome.snapshot_pace` has a search's own).
  Any other value of the variable is a fixed period, as Tune reads it.
* Failure budget: see :mod:`dlops.search.tune.budget`; :class:`TooManyFailuresError` is raised
  when it is exceeded.
* Trial directories are ``t-<trial_id>``: short and unique whatever the hyperparameters.
* MLflow writes run on the callback's writer thread, off Tune's driver loop; they are all flushed
  before this returns or raises (see :mod:`dlops.tracking.callback`).
* Pending trials: a stage's trials may be pending at once, up to max(16, 2 per slot)
  (``TUNE_MAX_PENDING_TRIALS_PG``, while the search runs, unless set), as in Tune's own random
  search: a stage's configurations are drawn up front.
* Trial actors survive a stage barrier and the end of the search does not wait for actors that
  never started: :class:`dlops.search.tune._private.ActorKeeper` (Tune's private parts, all in
  that module).

The environment variables Ray reads are set only while :func:`run_search` runs
(:func:`tune_environment`): the process environment is as it was afterwards.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Optional

from dlops.config import RayConfig, SearchConfig
from dlops.errors import TooManyFailuresError
from dlops.search.plan import StagedPlan

#: how often Tune snapshots its experiment state (s), unless the variable is set
CHECKPOINT_PERIOD_S = "1"
#: with dlops's period: at least CHECKPOINT_PERIOD_S, and 19x the last snapshot's duration when
#: that is longer (Tune's own 5% rule; :func:`dlops.search.tune._private.pace_snapshots`)
PACE_SNAPSHOTS = True


@dataclass(frozen=True)
class SearchRequest:
    """What one search needs besides the trainable and its payload.

    Attributes:
        plan: the staged plan (every trial's config and final metrics end up in it).
        search: the project's ``search`` section (metric, mode, stages, resources, scheduler,
            ``max_concurrent``, ``max_failures``).
        ray: the project's ``ray`` section (``storage_path``: where Tune's experiment folder goes;
            ``autoscaler``).
        experiment_name: the project name (Tune's experiment is ``<experiment_name>-<search_id>``).
        client: the ``mlflow.MlflowClient`` the run tree is written with.
        experiment_id: the MLflow experiment.
        parent_run_id: the search's MLflow run (the stage runs nest under it).
        search_id: the search's short id (tag ``dlops.search_id``).
        resume: restore the Tune experiment when Tune saved one there (else the search starts
            over under the same ids; runs of the earlier attempt that nothing continues end KILLED).
        seed: the project's seed (the confirmation stage's fresh seeds are drawn from it).
        run_tags: tags set on every stage and trial run (e.g. ``mlflow.source.name``, ``mlflow.user``).
        datasets: ``mlflow.entities.DatasetInput`` logged on every trial run (the splits).
    """

    plan: StagedPlan
    search: SearchConfig
    ray: RayConfig
    experiment_name: str
    client: Any
    experiment_id: str
    parent_run_id: str
    search_id: str
    resume: bool = False
    seed: int = 0
    run_tags: Mapping[str, str] = field(default_factory=dict)
    datasets: tuple[Any, ...] = ()

    @property
    def storage(self) -> str:
        return str(Path(self.ray.storage_path).resolve())

    @property
    def tune_name(self) -> str:
        return f"{self.experiment_name}-{self.search_id}"

    @property
    def experiment_dir(self) -> str:
        """``<storage_path>/<experiment_name>-<search_id>``, absolute."""
        return str(Path(self.storage) / self.tune_name)


@dataclass
class SearchOutcome:
    """What a finished search left: the plan (every trial's config and final metrics), Tune's
    ResultGrid, the MLflow callback (trial id -> run id: ``trial_runs``, ``open_run_ids``) and each
    trial's last checkpoint (trial id -> ``ray.tune.Checkpoint``)."""

    plan: Any
    results: Any
    callback: Any
    checkpoints: dict[str, Any]
    n_trials: int
    n_failed: int
    warnings: list[str] = field(default_factory=list)
    released_actors: Optional[int] = None  # never-started actors killed at the last trial (None: not reached)
    confirm: Any = None  # dlops.search.confirm.ConfirmResult with search.confirm, else None
    paced_snapshots: Optional[bool] = None  # Tune's snapshots were paced by their cost (None: not asked to)
    snapshot_pace: Any = None  # dlops.search.tune._private.SnapshotPace when paced: count, durations, periods (s)


@dataclass
class _Parts:
    """The objects one search runs with (built by :func:`_build_parts`)."""

    searcher: Any
    callback: Any
    waiting: Any
    budget: Any
    stopper: Any
    keeper: Any
    scheduler: Any
    slots: int


@contextlib.contextmanager
def tune_environment(values: Mapping[str, str]) -> Iterator[None]:
    """Set each of ``values`` in ``os.environ`` that is not set yet (the user's value wins), and
    put the environment back as it was on exit (Ray Tune reads these variables; it offers no API
    for them)."""
    added = [k for k in values if k not in os.environ]
    for k in added:
        os.environ[k] = values[k]
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)


def _tune_env(plan: StagedPlan, slots: int) -> dict[str, str]:
    """The Tune variables of a search: a 1 s experiment snapshot, and a stage's trials pending at once.

    Tune allows a custom searcher 1 pending trial at a time (its own random search: 200+). A
    stage's configurations are drawn before its first trial (nothing adaptive inside a stage), so
    its trials may be pending at once, as in Tune's random search: Tune then stages the next trial
    while one runs, and a freed actor takes it at once; stage them all (up to 2 per slot, at least
    16 as Tune's old default: each staged trial asks the cluster for its resources at once, an
    autoscaler sees that demand).
    """
    pending = max(slots, min(max(st.n_trials for st in plan.stages), max(16, 2 * slots)))
    return {"TUNE_GLOBAL_CHECKPOINT_S": CHECKPOINT_PERIOD_S, "TUNE_MAX_PENDING_TRIALS_PG": str(pending)}


def short_trial_dirname(trial: Any) -> str:
    """Trial directory names: short and unique whatever the hyperparameters (``t-<trial_id>``)."""
    return f"t-{trial.trial_id}"


def stage_info_fn(plan: Any, search: SearchConfig, n_confirm: int = 0) -> Callable[[int], dict[str, Any]]:
    """Params of stage k's MLflow run: its trials, epochs, method and box (value scale shown in u);
    for ``k == len(stages)`` the confirmation stage (run ``confirm``: top_k, seeds, at most
    ``n_confirm`` trials)."""

    def info(k: int) -> dict[str, Any]:
        if k >= len(search.stages):
            c = search.confirm
            return {"name": "confirm", "params": {"stage": k, "trials": n_confirm, "top_k": c.top_k if c else 0,
                                                  "seeds": c.seeds if c else 0, "method": "confirm"},
                    "tags": {"dlops.confirm": "true"}}
        box = plan.boxes[k] if k < len(plan.boxes) else None
        st = search.stages[k]
        params: dict[str, Any] = {"stage": k, "trials": plan.stages[k].n_trials, "epochs": st.epochs,
                                  "method": st.method}
        if box is not None:
            for name, (lo, hi) in box.intervals.items():
                params[f"box.{name}"] = f"[{lo:.6g}, {hi:.6g}]"
            for name, ch in box.choices.items():
                params[f"box.{name}"] = json.dumps(list(ch))
        return {"params": params}

    return info


def _concurrent_slots(cpu: float, gpu: float, max_concurrent: Optional[int]) -> int:
    """How many trials of ``cpu`` CPUs and ``gpu`` GPUs the connected Ray cluster runs at once
    (at least 1; at most ``max_concurrent`` when set)."""
    import ray

    total = ray.cluster_resources() if ray.is_initialized() else {}
    fits = [int(total.get("CPU", 1) // cpu)] if cpu > 0 else []
    if gpu > 0:
        fits.append(int(total.get("GPU", 0) // gpu))
    n = max(1, min(fits) if fits else 1)
    return min(n, max_concurrent) if max_concurrent else n


def _build_parts(req: SearchRequest, out: Callable[[str], None],
                 on_callback: Optional[Callable[[Any], None]]) -> _Parts:
    """The searcher (with its plan snapshot), the MLflow callback (handed to ``on_callback`` at
    once), the waiting notice, the failure budget and its stopper, the actor keeper and the scheduler."""
    from dlops.search.tune._private import PLAN_SNAPSHOT, ActorKeeper, KeepActorsASHA, KeepActorsFIFO
    from dlops.search.tune.budget import FailureBudget, budget_stopper
    from dlops.search.tune.progress import WaitNotice
    from dlops.search.tune.searcher import StagedSearcher
    from dlops.tracking.callback import MlflowTreeCallback

    search, plan = req.search, req.plan
    c = search.confirm
    searcher = StagedSearcher(plan, snapshot_path=str(Path(req.experiment_dir) / PLAN_SNAPSHOT),
                              confirm=(c.top_k, c.seeds) if c else None, base_seed=req.seed)
    cb = MlflowTreeCallback(req.client, req.experiment_id, req.parent_run_id, req.search_id,
                            stage_info=stage_info_fn(plan, search, searcher.n_confirm), progress=out,
                            metric=search.metric, run_tags=dict(req.run_tags), datasets=req.datasets,
                            sampling=sampling_params_fn(plan.params))
    if on_callback:
        on_callback(cb)
    res = search.resources
    waiting = WaitNotice(out, f"cpu={res.cpu:g}, gpu={res.gpu:g}", req.ray.autoscaler)
    slots = _concurrent_slots(res.cpu, res.gpu, search.max_concurrent)
    keeper = ActorKeeper(searcher, slots)
    scheduler: Any
    if search.scheduler == "asha":
        max_t = max(st.epochs or search.default_epochs for st in search.stages)
        scheduler = KeepActorsASHA(time_attr="epoch", max_t=max_t, grace_period=1)
    else:
        scheduler = KeepActorsFIFO()  # Tune's default scheduler
    scheduler.keeper = keeper
    return _Parts(searcher, cb, waiting, FailureBudget(cb, search.max_failures), budget_stopper(req.search_id),
                  keeper, scheduler, slots)


def _new_tuner(fn: Any, req: SearchRequest, p: _Parts) -> Any:
    from ray import tune

    search = req.search
    return tune.Tuner(
        fn,
        tune_config=tune.TuneConfig(metric=search.metric, mode=search.mode, search_alg=p.searcher,
                                    scheduler=p.scheduler, num_samples=req.plan.total_trials + p.searcher.n_confirm,
                                    max_concurrent_trials=search.max_concurrent,
                                    trial_dirname_creator=short_trial_dirname, reuse_actors=True),
        run_config=tune.RunConfig(name=req.tune_name, storage_path=req.storage, callbacks=[p.callback, p.waiting],
                                  stop=p.stopper, verbose=0, checkpoint_config=tune.CheckpointConfig(num_to_keep=1)),
    )


def _restored_tuner(fn: Any, req: SearchRequest, p: _Parts, out: Callable[[str], None]) -> tuple[Any, list[str]]:
    """Repair what a kill left in the experiment folder, restore the Tuner with this session's
    objects; returns it and the placeholder checkpoints made for the restore."""
    from ray import tune

    from dlops.search.tune._private import fill_missing_checkpoints, repair_state_files, use_fresh_objects

    exp_dir = req.experiment_dir
    for line in repair_state_files(exp_dir, req.plan):
        out(f"  resume: {line}")
    placeholders = fill_missing_checkpoints(exp_dir)
    tuner = tune.Tuner.restore(exp_dir, trainable=fn, resume_unfinished=True, resume_errored=False,
                               restart_errored=False)
    use_fresh_objects(tuner, p.searcher, p.callback, p.stopper, p.keeper, extra_callbacks=[p.waiting])
    cb = p.callback
    out(f"  resuming {exp_dir}: {len(cb.trial_runs)} trial runs already in MLflow "
        f"({cb.n_failed} failed); MLflow parent run {req.parent_run_id}")
    return tuner, placeholders


def _make_tuner(trainable: Callable[..., None], payload: Any, req: SearchRequest, p: _Parts,
                out: Callable[[str], None]) -> tuple[Any, list[str]]:
    """A new Tuner, or the restored one (``req.resume`` and Tune saved a state); and placeholders."""
    from ray import tune

    from dlops.search.resources import trial_resources
    from dlops.search.resume import can_restore

    res = req.search.resources
    fn = tune.with_resources(tune.with_parameters(trainable, payload=payload), trial_resources(res.cpu, res.gpu))
    if req.resume and can_restore(req.experiment_dir):
        return _restored_tuner(fn, req, p, out)
    confirm = f" (+ up to {p.searcher.n_confirm} confirmation trials)" if p.searcher.n_confirm else ""
    out(f"  {req.plan.total_trials} trials in {len(req.plan.stages)} stages{confirm}; MLflow parent run "
        f"{req.parent_run_id}")
    return _new_tuner(fn, req, p), []


def _fit(tuner: Any, p: _Parts, search_id: str) -> Any:
    """``tuner.fit()`` with the failure budget registered; every MLflow write lands before it returns or raises."""
    from dlops.search.tune.budget import _LIVE_BUDGETS

    _LIVE_BUDGETS[search_id] = p.budget
    try:
        results = tuner.fit()
    except BaseException:
        try:
            p.callback.flush()  # every queued MLflow write lands before the caller ends the runs
        except Exception:
            pass
        raise
    finally:
        _LIVE_BUDGETS.pop(search_id, None)
    p.callback.flush()  # the callback writes from a background thread: wait for all of it
    return results


def _drop_placeholders(placeholders: list[str], results: Any) -> None:
    """Remove the placeholder checkpoints of a restore, except those that are a trial's final one."""
    if not placeholders:
        return
    keep = {str(Path(r.checkpoint.path).resolve()) for r in results if r.checkpoint is not None}
    for d in placeholders:
        if Path(d).is_dir() and str(Path(d).resolve()) not in keep:
            shutil.rmtree(d, ignore_errors=True)


def _log_zoom(req: SearchRequest, cb: Any, out: Callable[[str], None]) -> list[str]:
    """Tag each stage run with its zoom (``dlops.zoom``) and edge warnings; returns the warnings."""
    found: list[str] = []
    client = req.client
    for entry in req.plan.zoom_log:
        k = entry["stage"]
        rid = cb.stage_runs.get(k)
        if rid:
            client.set_tag(rid, "dlops.zoom",
                           json.dumps({"selected": entry["selected"], "reason": entry["reason"]})[:5000])
        for msg in entry["edges"]:
            out(f"  warning: stage {k}: {msg}")
            found.append(f"stage {k}: {msg}")
            if rid:
                client.set_tag(rid, "dlops.edge_warning", msg[:5000])
            client.set_tag(req.parent_run_id, "dlops.edge_warning", msg[:5000])
    return found


def _finish(req: SearchRequest, p: _Parts, results: Any, out: Callable[[str], None]) -> SearchOutcome:
    """End the stage runs and build the outcome, or raise when the budget was exceeded or Tune was interrupted."""
    cb, plan = p.callback, req.plan
    if p.budget.exceeded:
        cb.reconcile(results)
        cb.end_stages("FAILED")
        raise TooManyFailuresError(
            f"search stopped: {cb.n_failed} trials failed, more than search.max_failures={req.search.max_failures} "
            "(each failed trial's error is in its MLflow run, tag dlops.error)")
    if len(plan.results) < plan.total_trials or not p.searcher.confirm_done():
        # Tune returns normally after Ctrl-C (it saves the experiment state first)
        raise KeyboardInterrupt(f"search interrupted after {len(plan.results)} of {plan.total_trials} trials"
                                + ("" if p.searcher.confirm_done() else " (confirmation not done)"))
    cb.reconcile(results)
    cb.end_stages("FINISHED")
    outcome = SearchOutcome(
        plan=plan, results=results, callback=cb,
        checkpoints={r.metrics.get("trial_id"): r.checkpoint for r in results if r.checkpoint is not None},
        n_trials=len(results), n_failed=sum(1 for r in results if r.error is not None),
        released_actors=p.keeper.released, confirm=p.searcher.confirmation(), paced_snapshots=p.keeper.paced,
        snapshot_pace=p.keeper.pace_stats if p.keeper.paced else None,
    )
    outcome.warnings += _log_zoom(req, cb, out)
    if outcome.confirm is not None:
        _log_confirm(req, cb, outcome.confirm, out)
    _log_figure(req, outcome, out)
    return outcome


def _log_figure(req: SearchRequest, outcome: SearchOutcome, out: Callable[[str], None]) -> None:
    """``search/stages.png`` on the search run (:mod:`dlops.search.tune.figure`); a figure that
    cannot be drawn is a warning, never a failed search."""
    import tempfile

    from dlops.search.tune.figure import stages_figure

    best = outcome.confirm.winner if outcome.confirm is not None else None
    try:
        with tempfile.TemporaryDirectory() as td:
            path = stages_figure(req.plan, str(Path(td) / "stages.png"), best_id=best)
            if path:
                req.client.log_artifact(req.parent_run_id, path, "search")
    except Exception as exc:  # noqa: BLE001 - a picture must not fail a finished search
        out(f"  warning: search/stages.png not drawn: {type(exc).__name__}: {exc}")


def sampling_params_fn(params: Any) -> Callable[[Mapping[str, Any]], dict[str, float]]:
    """``config -> {"<name>.r": sampling-scale coordinate}`` for the numeric parameters whose
    sampling scale differs from their value (``log``, ``log_int``, ``one_minus_log``: lr = 10^r,
    beta = 1 - 10^r), logged as params of each trial so the MLflow UI's parallel-coordinates and
    contour plots show the search in the scale it ran in."""
    from dlops.search.space import to_u

    scaled = [p for p in params if p.scale in ("log", "log_int", "one_minus_log")]

    def fn(config: Mapping[str, Any]) -> dict[str, float]:
        out = {}
        for p in scaled:
            v = config.get(p.name)
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                try:
                    out[f"{p.name}.r"] = round(float(to_u(p.scale, float(v))), 4)
                except (ValueError, ZeroDivisionError):
                    continue
        return out

    return fn


def _log_confirm(req: SearchRequest, cb: Any, res: Any, out: Callable[[str], None]) -> None:
    """The confirmation's spread: on the search run tag ``dlops.confirm`` (every confirmed
    configuration: trial id, fresh-seed values, mean, std, first value) and metrics
    ``confirm/<metric>_mean`` / ``_std`` of the winner; on each confirmed trial's run its own."""
    import math
    import time

    from mlflow.entities import Metric

    m, ts = req.search.metric, int(time.time() * 1000)
    client = req.client
    rows = [r.as_dict() for r in res.table]
    client.set_tag(req.parent_run_id, "dlops.confirm", json.dumps({"winner": res.winner, "configs": rows})[:5000])
    for r in res.table:
        ms = [Metric(f"confirm/{m}_{k}", float(v), ts, 0) for k, v in (("mean", r.mean), ("std", r.std))
              if math.isfinite(v)]
        rid = cb.trial_runs.get(r.trial_id)
        if rid and ms:
            client.log_batch(rid, metrics=ms)
        if r.trial_id == res.winner and ms:
            client.log_batch(req.parent_run_id, metrics=ms)
        shown = ", ".join(f"{v:.4g}" for v in r.values)
        out(f"  confirm: trial {r.trial_id}: {m} first {r.first:.4g}, fresh seeds [{shown}] mean {r.mean:.4g} "
            f"(std {r.std:.3g}){' <- winner' if r.trial_id == res.winner else ''}")


def run_search(
    trainable: Callable[..., None],
    payload: Any,
    request: SearchRequest,
    out: Callable[[str], None] = print,
    on_callback: Optional[Callable[[Any], None]] = None,
) -> SearchOutcome:
    """Run every stage of ``request.plan`` in one ``Tuner`` and log the run tree.

    Args:
        trainable: ``f(config, payload)``; it reports per-epoch metrics and checkpoints (e.g.
            :func:`dlops.train.trial.train_trial`).
        payload: passed to every trial through the object store (``tune.with_parameters``; e.g. a
            :class:`dlops.train.trial.TrialPayload`).
        request: the plan, config sections, MLflow ids and whether to resume.
        out: ``print``-like function for the console lines.
        on_callback: called with the MLflow callback as soon as it exists (so the caller can
            end its runs if the search is interrupted).

    Returns:
        The :class:`SearchOutcome`.

    Raises:
        KeyboardInterrupt: the search was interrupted (Tune saved its state first).
        TooManyFailuresError: more than ``search.max_failures`` trials failed.
        dlops.errors.NothingToResumeError: resuming, a state file is damaged with nothing to fall back on.
    """
    parts = _build_parts(request, out, on_callback)
    if PACE_SNAPSHOTS and os.environ.get("TUNE_GLOBAL_CHECKPOINT_S", CHECKPOINT_PERIOD_S) == CHECKPOINT_PERIOD_S:
        parts.keeper.snapshot_floor_s = float(CHECKPOINT_PERIOD_S)
    with tune_environment(_tune_env(request.plan, parts.slots)):
        tuner, placeholders = _make_tuner(trainable, payload, request, parts, out)
        results = _fit(tuner, parts, request.search_id)
    _drop_placeholders(placeholders, results)
    return _finish(request, parts, results, out)
