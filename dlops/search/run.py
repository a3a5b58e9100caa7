"""Running a staged search on Ray Tune: one ``Tuner``, the staged searcher, the MLflow callback.

* Resources per trial (``search.resources``: CPUs, GPUs, fractional GPUs allowed) are checked
  against the cluster before any run is created (:func:`dlops.search.resources.check_resources`,
  called by :func:`dlops.job.run_project`).
* Resume: with ``resume=True`` the Tune experiment ``<storage_path>/<name>-<search_id>`` is
  restored with ``Tuner.restore`` (finished trials are not run again, unfinished trials continue
  from their last checkpoint, errored trials stay FAILED); a fresh :class:`StagedSearcher` around
  the caller's plan gets the plan state Tune saved, and a fresh callback finds the MLflow runs
  the search already has. Tune snapshots its experiment state every ``TUNE_GLOBAL_CHECKPOINT_S``
  seconds; dlops sets 1 s unless the variable is set, so a ``kill -9`` loses at most ~1 s.
* Failure budget: a trial that raises (e.g. ``NonFiniteLossError``) or ends with a non-finite
  optimizing metric is FAILED in MLflow and the search goes on. ``search.max_failures``: None
  (default) = no limit; N = stop the search once more than N trials have failed
  (:class:`FailureBudget`, a Tune ``Stopper``); :class:`TooManyFailuresError` is raised then.
* Trial directories are ``t-<trial_id>``: short and unique whatever the hyperparameters.
* MLflow writes run on the callback's writer thread, off Tune's driver loop; they are all flushed
  before this returns or raises (see :mod:`dlops.tracking.callback`).
* Pending trials: a stage's trials may be pending at once, up to max(16, 2 per slot)
  (``TUNE_MAX_PENDING_TRIALS_PG``, unless set), as in Tune's own random search: a stage's
  configurations are drawn up front.
* At the end of the search, actors that Tune removed before they had started are killed rather
  than waited for (:meth:`ActorKeeper.release_unstarted`).
* Actors survive a stage barrier (``reuse_actors``): Tune keeps a finished trial's actor only
  for a trial it already has pending, and at a barrier none is (the searcher waits for the stage
  to end), so it would stop all but one and the next stage would start new worker processes.
  :class:`ActorKeeper` asks Tune's actor cache to hold one actor per slot while the searcher is
  at a barrier; it reaches the cache through the scheduler (the one object Tune hands its
  controller to: :class:`dlops.search.searcher.KeepActorsFIFO` / ``KeepActorsASHA``).
"""

from __future__ import annotations

from dlops.errors import TooManyFailuresError  # noqa: F401  (the kind lives in dlops.errors)
import json
import os
import shutil
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
    released_actors: Optional[int] = None  # never-started actors killed at the last trial (None: not reached)




class FailureBudget:
    """A Tune ``Stopper``: stop the whole search once more than ``max_failures`` trials failed.

    It reads the failure count of the MLflow callback (which counts FAILED trial runs, those of
    a run before a resume included). ``max_failures`` None: never stops.
    """

    def __init__(self, callback: Any, max_failures: Optional[int]) -> None:
        self.callback = callback
        self.max_failures = max_failures

    def __call__(self, trial_id: str, result: dict) -> bool:
        return False

    @property
    def exceeded(self) -> bool:
        return self.max_failures is not None and self.callback.n_failed > self.max_failures

    def stop_all(self) -> bool:
        if self.exceeded and self.callback.stopping_reason is None:
            self.callback.stopping_reason = (
                f"{self.callback.n_failed} trials failed, more than search.max_failures={self.max_failures}")
        return self.exceeded


_LIVE_BUDGETS: dict[str, FailureBudget] = {}  # search id -> this driver's budget (see budget_stopper)


def budget_stopper(key: str) -> Any:
    """A Tune ``Stopper`` that asks the :class:`FailureBudget` registered under ``key`` (the
    search id) in ``_LIVE_BUDGETS``; with none registered it never stops.

    Tune pickles the stopper into every experiment checkpoint (once a second) and, on
    ``Tuner.restore``, puts the unpickled copy in place of the one it was given. So the stopper
    pickles as its key alone: a checkpoint does not pickle the MLflow callback (whose pickling
    waits for the writer thread, stalling Tune's loop), and after a resume the restored stopper
    finds this session's budget and callback, not a stale copy whose failure count never moves.
    """
    from ray.tune.stopper import Stopper

    class _Budget(Stopper):
        def __call__(self, trial_id: str, result: dict) -> bool:
            budget = _LIVE_BUDGETS.get(key)
            return budget(trial_id, result) if budget is not None else False

        def stop_all(self) -> bool:
            budget = _LIVE_BUDGETS.get(key)
            return budget.stop_all() if budget is not None else False

        def __reduce__(self) -> tuple:
            return (budget_stopper, (key,))

    return _Budget()


class ActorKeeper:
    """Keeps up to ``slots`` trial actors cached while ``searcher`` is at a stage barrier, and
    does not let the end of the search wait for actors Tune has already given up on.

    Tune's actor cache (``TuneController._actor_cache``, a private ``_ObjectCache``) holds as
    many finished actors per resource request as it expects to need (``increase_max`` per staged
    trial), plus one. At a barrier no trial is staged, so every other actor is stopped and the
    next stage starts new ones (a new worker process and its imports each: seconds). While the
    searcher is at a barrier the keeper raises the expected count by ``slots`` for the trials'
    resource request, and lowers it again as soon as the searcher hands out the next stage's
    trials (before Tune stages them, so they take the kept actors).

    This is the one place dlops touches a private part of Tune; if a Ray version lays it out
    differently, the keeper warns once and does nothing (the search runs, barriers are slower).
    """

    def __init__(self, searcher: Any, slots: int) -> None:
        self.searcher = searcher
        self.slots = max(0, int(slots))
        self.extra = 0  # what the keeper added to the cache's expected count
        self.key: Any = None  # the trials' resource request (the cache's key)
        self.disabled = False
        self.released: Optional[int] = None  # set when the last trial ended (release_unstarted's count)

    def see_trial(self, trial: Any) -> None:
        if self.key is None:
            self.key = getattr(trial, "placement_group_factory", None)

    def sync(self, controller: Any) -> None:
        """Match the cache's extra expected count to the searcher's state (every Tune step)."""
        if self.disabled or self.key is None:
            return
        want = self.slots if getattr(self.searcher, "at_barrier", False) else 0
        if want == self.extra:
            return
        cache = getattr(controller, "_actor_cache", None)
        if not (callable(getattr(cache, "increase_max", None)) and callable(getattr(cache, "decrease_max", None))):
            self._give_up("the Tune controller has no _actor_cache with increase_max/decrease_max")
            return
        try:
            if want > self.extra:
                cache.increase_max(self.key, want - self.extra)
            else:
                cache.decrease_max(self.key, self.extra - want)
        except Exception as exc:  # noqa: BLE001 - a changed private API must not fail the search
            self._give_up(f"{type(exc).__name__}: {exc}")
            return
        self.extra = want

    def trial_ended(self, controller: Any, trial: Any) -> None:
        """Called as ``trial`` ends (scheduler hook, before the searcher records it). When it is the
        search's last trial, stop the actors Tune has already given up on (see
        :meth:`release_unstarted`): Tune's final clean-up would otherwise wait for each to finish
        starting (a worker process and its imports: up to a second or more) only to stop it."""
        if self.disabled:
            return
        plan = getattr(self.searcher, "plan", None)
        if plan is None:
            return
        tid = getattr(trial, "trial_id", None)
        # every trial suggested, and every one but this has its result (results are a subset)
        if len(plan.suggested) < plan.total_trials or (
                len(plan.results) - (tid in plan.results) < len(plan.suggested) - (tid in plan.suggested)):
            return
        self.released = self.release_unstarted(controller)

    def release_unstarted(self, controller: Any) -> int:
        """Kill the trial actors Tune removed before they had started, and return how many.

        Tune requests an actor for each trial it stages; when a cached actor frees up first, it
        reuses that one and removes the requested actor, which is then still starting. Tune
        tracks it as stopping (``_stopping_actors``) and, at the end of the experiment, waits for
        it to start and stop gracefully (up to 5 s). An actor that never started ran no trial
        and holds no state, so it is killed (``ray.kill``, through Tune's actor manager, which
        frees its resources). Actors that started (``_started_actors``) are left to stop
        gracefully. Private Tune state: if it is laid out differently, the keeper warns once and
        does nothing.
        """
        if self.disabled:
            return 0
        stopping = getattr(controller, "_stopping_actors", None)
        started = getattr(controller, "_started_actors", None)
        manager = getattr(controller, "_actor_manager", None)
        if not isinstance(stopping, dict) or not isinstance(started, set) or not all(
                callable(getattr(manager, m, None)) for m in ("remove_actor", "is_actor_started")):
            self._give_up("the Tune controller has no _stopping_actors/_started_actors/_actor_manager")
            return 0
        killed = 0
        for tracked in [a for a in stopping if a not in started]:
            try:
                if manager.is_actor_started(tracked):  # still alive in the manager: starting
                    manager.remove_actor(tracked, kill=True)
                    killed += 1
            except Exception as exc:  # noqa: BLE001 - a changed private API must not fail the search
                self._give_up(f"{type(exc).__name__}: {exc}")
                return killed
            stopping.pop(tracked, None)  # (an actor the manager no longer has is gone already)
        return killed

    def _give_up(self, why: str) -> None:
        self.disabled = True
        warnings.warn(f"dlops: cannot manage Tune's trial actors with this Ray version ({why}); each stage "
                      "after the first starts new trial actors and the search's end waits for actors still "
                      "starting (slower, same results)",
                      RuntimeWarning, stacklevel=2)


def short_trial_dirname(trial: Any) -> str:
    """Trial directory names: short and unique whatever the hyperparameters (``t-<trial_id>``)."""
    return f"t-{trial.trial_id}"


def stage_info_fn(plan: Any, search: SearchConfig) -> Callable[[int], dict[str, Any]]:
    """Params of stage k's MLflow run: its trials, epochs, method and box (value scale shown in u)."""

    def info(k: int) -> dict[str, Any]:
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
    resume: bool = False,
) -> SearchOutcome:
    """Run every stage of ``plan`` in one ``Tuner`` and log the run tree.

    Args:
        trainable: ``f(config, payload)``; it reports per-epoch metrics and checkpoints.
        payload: passed to every trial through the object store (``tune.with_parameters``).
        on_callback: called with the MLflow callback as soon as it exists (so the caller can
            end its runs if the search is interrupted).
        resume: restore the Tune experiment ``<storage_path>/<experiment_name>-<search_id>``
            when Tune saved one there (else the search starts over under the same ids; runs of
            the earlier attempt that nothing continues end KILLED).

    Raises:
        KeyboardInterrupt: the search was interrupted (Tune saved its state first).
        TooManyFailuresError: more than ``search.max_failures`` trials failed.
    """
    from ray import tune

    from dlops.search.resources import trial_resources
    from dlops.search.searcher import KeepActorsASHA, KeepActorsFIFO, StagedSearcher
    from dlops.tracking.callback import MlflowTreeCallback

    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1")
    snapshot = str(Path(ray_cfg.storage_path).resolve() / f"{experiment_name}-{search_id}" / "dlops-plan.json")
    searcher = StagedSearcher(plan, snapshot_path=snapshot)
    cb = MlflowTreeCallback(client, experiment_id, parent_run_id, search_id,
                            stage_info=stage_info_fn(plan, search), progress=out, metric=search.metric)
    if on_callback:
        on_callback(cb)
    from dlops.search.progress import WaitNotice

    waiting = WaitNotice(out, f"cpu={search.resources.cpu:g}, gpu={search.resources.gpu:g}", ray_cfg.autoscaler)
    budget = FailureBudget(cb, search.max_failures)
    stopper = budget_stopper(search_id)
    res = search.resources
    slots = _concurrent_slots(res.cpu, res.gpu, search.max_concurrent)
    keeper = ActorKeeper(searcher, slots)
    scheduler: Any
    if search.scheduler == "asha":
        max_t = max(st.epochs or search.default_epochs for st in search.stages)
        scheduler = KeepActorsASHA(time_attr="epoch", max_t=max_t, grace_period=1)
    else:
        scheduler = KeepActorsFIFO()  # Tune's default scheduler
    scheduler.keeper = keeper
    storage = str(Path(ray_cfg.storage_path).resolve())
    name = f"{experiment_name}-{search_id}"
    exp_dir = str(Path(storage) / name)
    fn = tune.with_resources(tune.with_parameters(trainable, payload=payload), trial_resources(res.cpu, res.gpu))
    restored = False
    if resume:
        from dlops.search.resume import can_restore

        restored = can_restore(exp_dir)
    placeholders: list[str] = []
    if restored:
        from dlops.search.resume import repair_state_files

        for line in repair_state_files(exp_dir):
            out(f"  resume: {line}")
        placeholders = fill_missing_checkpoints(exp_dir)
        tuner = tune.Tuner.restore(exp_dir, trainable=fn, resume_unfinished=True, resume_errored=False,
                                   restart_errored=False)
        _use_fresh_objects(tuner, searcher, cb, stopper, keeper, extra_callbacks=[waiting])
        out(f"  resuming {exp_dir}: {len(cb.trial_runs)} trial runs already in MLflow "
            f"({cb.n_failed} failed); MLflow parent run {parent_run_id}")
    else:
        tuner = tune.Tuner(
            fn,
            tune_config=tune.TuneConfig(metric=search.metric, mode=search.mode, search_alg=searcher,
                                        scheduler=scheduler, num_samples=plan.total_trials,
                                        max_concurrent_trials=search.max_concurrent,
                                        trial_dirname_creator=short_trial_dirname, reuse_actors=True),
            run_config=tune.RunConfig(name=name, storage_path=storage, callbacks=[cb, waiting], stop=stopper,
                                      verbose=0, checkpoint_config=tune.CheckpointConfig(num_to_keep=1)),
        )
        out(f"  {plan.total_trials} trials in {len(plan.stages)} stages; MLflow parent run {parent_run_id}")
    pending_env = "TUNE_MAX_PENDING_TRIALS_PG"
    pending_before = os.environ.get(pending_env)
    if pending_before is None:
        # Tune allows a custom searcher 1 pending trial at a time (its own random search: 200+).
        # A stage's configurations are drawn before its first trial (nothing adaptive inside a
        # stage), so its trials may be pending at once, as in Tune's random search: Tune then
        # stages the next trial while one runs, and a freed actor takes it at once;
        # stage them all (up to 2 per slot, at least 16 as Tune's old default: each staged trial
        # asks the cluster for its resources at once, an autoscaler sees that demand)
        os.environ[pending_env] = str(max(slots, min(max(st.n_trials for st in plan.stages), max(16, 2 * slots))))
    _LIVE_BUDGETS[search_id] = budget
    try:
        results = tuner.fit()
    except BaseException:
        try:
            cb.flush()  # every queued MLflow write lands before the caller ends the runs
        except Exception:
            pass
        raise
    finally:
        _LIVE_BUDGETS.pop(search_id, None)
        if pending_before is None:
            os.environ.pop(pending_env, None)
    cb.flush()  # the callback writes from a background thread: wait for all of it
    if placeholders:
        keep = {str(Path(r.checkpoint.path).resolve()) for r in results if r.checkpoint is not None}
        for d in placeholders:
            if Path(d).is_dir() and str(Path(d).resolve()) not in keep:
                shutil.rmtree(d, ignore_errors=True)
    if budget.exceeded:
        cb.reconcile(results)
        cb.end_stages("FAILED")
        raise TooManyFailuresError(
            f"search stopped: {cb.n_failed} trials failed, more than search.max_failures={search.max_failures} "
            "(each failed trial's error is in its MLflow run, tag dlops.error)")
    if len(plan.results) < plan.total_trials:
        # Tune returns normally after Ctrl-C (it saves the experiment state first)
        raise KeyboardInterrupt(f"search interrupted after {len(plan.results)} of {plan.total_trials} trials")
    cb.reconcile(results)
    cb.end_stages("FINISHED")
    outcome = SearchOutcome(
        plan=plan, results=results, callback=cb,
        checkpoints={r.metrics.get("trial_id"): r.checkpoint for r in results if r.checkpoint is not None},
        n_trials=len(results), n_failed=sum(1 for r in results if r.error is not None),
        released_actors=keeper.released,
    )
    for entry in plan.zoom_log:
        k = entry["stage"]
        rid = cb.stage_runs.get(k)
        if rid:
            client.set_tag(rid, "dlops.zoom",
                           json.dumps({"selected": entry["selected"], "reason": entry["reason"]})[:5000])
        for msg in entry["edges"]:
            out(f"  warning: stage {k}: {msg}")
            outcome.warnings.append(f"stage {k}: {msg}")
            if rid:
                client.set_tag(rid, "dlops.edge_warning", msg[:5000])
            client.set_tag(parent_run_id, "dlops.edge_warning", msg[:5000])
    return outcome


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


def fill_missing_checkpoints(exp_dir: str) -> list[str]:
    """Make every checkpoint name Tune's last experiment snapshot may refer to exist again.

    Tune writes its experiment snapshot to the storage path asynchronously (one sync behind),
    while a trial keeps only its newest checkpoint (``num_to_keep=1``): after a ``kill -9`` the
    snapshot can name a ``checkpoint_<k>`` that was already replaced by ``checkpoint_<k+n>``, and
    ``Tuner.restore`` would fail that trial. Before restoring, each missing
    ``checkpoint_<i>`` below a trial's newest one is re-created with hard links to the newest
    checkpoint's files (no extra disk), so the trial continues from its newest state (the
    trainable reads its epoch from the checkpoint file).

    Returns:
        The directories created (removed again after the search, except a trial's final one).
    """
    created: list[str] = []
    for tdir in sorted(Path(exp_dir).glob("t-*")):
        idx = sorted(int(p.name.split("_")[-1]) for p in tdir.glob("checkpoint_*") if p.name.split("_")[-1].isdigit())
        if not idx:
            continue
        newest = tdir / f"checkpoint_{idx[-1]:06d}"
        have = set(idx)
        for i in range(idx[-1]):
            if i in have:
                continue
            dst = tdir / f"checkpoint_{i:06d}"
            for src in newest.rglob("*"):
                rel = dst / src.relative_to(newest)
                if src.is_dir():
                    rel.mkdir(parents=True, exist_ok=True)
                else:
                    rel.parent.mkdir(parents=True, exist_ok=True)
                    try:
                        os.link(src, rel)
                    except OSError:
                        shutil.copy2(src, rel)
            dst.mkdir(exist_ok=True)
            created.append(str(dst))
    return created


def _use_fresh_objects(tuner: Any, searcher: Any, callback: Any, stopper: Any, keeper: Any = None,
                       extra_callbacks: Any = ()) -> None:
    """After ``Tuner.restore``: run with this session's searcher (wrapping the caller's plan, into
    which Tune loads the saved plan state), MLflow callback and stopper instead of the copies
    pickled in ``tuner.pkl`` (whose MLflow client and plan belong to the dead driver); the
    restored scheduler gets this session's :class:`ActorKeeper` (if it is a dlops scheduler).

    Ray 2.x keeps them on the Tuner's internal ``TuneConfig`` / ``RunConfig``.

    Raises:
        RuntimeError: this Ray version lays the Tuner out differently.
    """
    inner = getattr(tuner, "_local_tuner", None)
    tc = getattr(inner, "_tune_config", None)
    rc = getattr(inner, "_run_config", None)
    if tc is None or rc is None:
        raise RuntimeError("resume: cannot reach the restored Tuner's configs in this Ray version")
    tc.search_alg = searcher
    if keeper is not None and hasattr(tc.scheduler, "keeper"):
        tc.scheduler.keeper = keeper
    fresh = [callback, *extra_callbacks]
    names = {type(c).__name__ for c in fresh}
    rc.callbacks = fresh + [c for c in (rc.callbacks or []) if type(c).__name__ not in names]
    rc.stop = stopper
