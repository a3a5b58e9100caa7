"""Every use of Ray Tune's private parts, in one module.

Ray Tune offers no public API for what follows; each use says why it is needed and, for the
speed-ups, the benchmark figure that keeps it (``bench/README.md``, search_overhead). Every
attribute, method and file name touched here is listed in :data:`CONTROLLER_LAYOUT`,
:data:`TUNER_LAYOUT` and :data:`STATE_FILES`, and ``tests/search/tune/test_private_layout.py``
fails loudly when the installed Ray lays them out differently (checked on Ray 2.60). At run time
a changed layout never fails a search: the speed-ups warn once and step aside (Tune's own
behaviour), and resume raises a clear error.

What is here:

1. :class:`ActorKeeper` and the ``KeepActors*`` schedulers: Tune's controller
   (``TuneController._actor_cache``) keeps trial actors across a stage barrier. **Kept**:
   8 x 1 s trials, 2 slots: stage 2 ran on 2 actors instead of 1 in every repetition and the
   ~2 s barrier went (dlops 5.73 s vs 7.74 s for plain Tune with the same barrier, third
   session; 8.25 s -> 6.81 s when it was added), and on a GPU node every actor Tune does not
   keep is a new worker process that imports torch and initialises CUDA again.
   :meth:`ActorKeeper.release_unstarted` (``_stopping_actors``, ``_started_actors``,
   ``_actor_manager``: the end of the search does not wait for actors that never started).
   **Kept**: 8 x 1 s trials, 2 slots, with vs without it (``bench/search_overhead.py
   --release-ab``, 3 interleaved pairs on 2 shared, loaded cores, 2026-12-01): median 12.63 s vs
   13.50 s (0.935), faster in each pair (14.30/14.46, 12.63/13.50, 11.14/12.75 s); Tune's wait is
   for an actor's start-up, longer on GPU nodes (no-op trials: 0.2-0.8 s).
   The same schedulers choose the next trial as Tune's ``FIFOScheduler`` does (first
   ``PENDING``, else first ``PAUSED``) but past the ended trials (:mod:`~dlops.search.tune.trial_list`;
   a public hook, no private part): Tune's scan of every trial at every step was 30% of its loop
   late in a 10,000-trial run (``CHOOSE_PAST_ENDED = False`` and ``bench/search_overhead.py
   --fifo-scan`` give Tune's own scan back for the A/B).
2. :func:`use_fresh_objects`: after ``Tuner.restore``, this session's searcher, callbacks and
   stopper replace the pickled copies (``Tuner._local_tuner._tune_config`` / ``_run_config``).
   Not a speed-up: ``Tuner.restore`` takes none of them, and the pickled copies hold a dead
   driver's MLflow client, so resume needs it.
3. :func:`backup_state_files`: relies on Tune's ``TuneController.save_to_dir`` writing
   ``experiment_state-*.json`` whole into its staging folder just before it saves the search
   algorithm there, and on ``SearchGenerator.save_to_dir`` saving the base searcher before it
   writes ``search_gen_state-*.json`` (whose ``counter`` the repair sets). Not a speed-up: it
   lets ``--resume`` survive an exit while Tune copies those files.
4. :func:`repair_state_files`, :func:`fill_missing_checkpoints`: Tune's experiment-folder layout
   (:data:`STATE_FILES`, ``trial_data`` in the experiment state, ``checkpoint_<6 digits>``).
   Not speed-ups: they repair what a ``kill -9`` leaves, so ``--resume`` can restore.
5. :func:`pace_snapshots`: Tune's own ``TUNE_GLOBAL_CHECKPOINT_S=auto`` rule (the period is 19
   times the last snapshot's duration, so snapshots take at most ~5% of the driver's time) with
   a floor of 1 s instead of Tune's 10 s (``_ExperimentCheckpointManager._checkpoint_period``,
   ``_update_auto_checkpoint_time``: :data:`CHECKPOINT_MANAGER_LAYOUT`). A snapshot serialises
   every trial and the plan, so with a fixed 1 s period its cost per second grows with the
   trials done. Figures: ``bench/README.md`` (search_overhead, the scale run).
"""

from __future__ import annotations

import copy
import glob
import json
import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

from dlops.errors import NothingToResumeError
from dlops.search.tune.trial_list import EndedPrefix, first_pending_or_paused

#: ``TuneController`` instance attributes used here -> the methods used on them, or their type
CONTROLLER_LAYOUT: dict[str, Any] = {
    "_actor_cache": ("increase_max", "decrease_max"),  # Tune's _ObjectCache of finished actors
    "_actor_manager": ("remove_actor", "is_actor_started"),  # Ray's RayActorManager
    "_stopping_actors": dict,  # TrackedActor -> time it was asked to stop
    "_started_actors": set,  # TrackedActors whose __init__ finished
}
#: ``TuneController._checkpoint_manager`` (Tune's _ExperimentCheckpointManager) -> what pace_snapshots uses
CHECKPOINT_MANAGER_LAYOUT = ("_checkpoint_period", "_update_auto_checkpoint_time")
#: ``Tuner`` -> ``_local_tuner`` (a ``TunerInternal``) -> these configs and their public fields
TUNER_LAYOUT: dict[str, tuple[str, ...]] = {
    "_tune_config": ("search_alg", "scheduler"),
    "_run_config": ("callbacks", "stop"),
}
#: Tune's state files in an experiment folder (glob, how to read it)
STATE_FILES = (("experiment_state-*.json", "json"), ("search_gen_state-*.json", "pickle"))
SEARCHER_STATE = "searcher-state-*.pkl"  # the base searcher's save (dlops writes JSON into it)
#: prefix of the backup of Tune's experiment state (Tune's own glob, experiment_state-*.json, skips it)
BACKUP_PREFIX = "dlops-backup."
PLAN_SNAPSHOT = "dlops-plan.json"  # the plan state, written atomically with each searcher save


def controller_layout_problems(controller: Any) -> list[str]:
    """What of :data:`CONTROLLER_LAYOUT` ``controller`` (a ``TuneController``) lacks; [] when all is there."""
    missing = []
    for attr, want in CONTROLLER_LAYOUT.items():
        obj = getattr(controller, attr, None)
        if isinstance(want, tuple):
            missing += [f"{attr}.{m}" for m in want if not callable(getattr(obj, m, None))]
        elif not isinstance(obj, want):
            missing.append(f"{attr} ({want.__name__})")
    return missing


# ---- 1. keeping trial actors across stage barriers ---------------------------------------------


class ActorKeeper:
    """Keeps up to ``slots`` trial actors cached while ``searcher`` is at a stage barrier, and
    does not let the end of the search wait for actors Tune has already given up on.

    Tune's actor cache (``TuneController._actor_cache``, a private ``_ObjectCache``) holds as
    many finished actors per resource request as it expects to need (``increase_max`` per staged
    trial), plus one. At a barrier no trial is staged, so every other actor is stopped and the
    next stage starts new ones (a new worker process and its imports each: seconds). While the
    searcher is at a barrier the keeper raises the expected count by ``slots`` for the trials'
    resource request, and lowers it again as soon as the searcher hands out the next stage's
    trials (before Tune stages them, so they take the kept actors). Figure: see the module
    docstring (1.).

    If a Ray version lays the controller out differently, the keeper warns once and does
    nothing (the search runs, barriers are slower).
    """

    def __init__(self, searcher: Any, slots: int) -> None:
        self.searcher = searcher
        self.slots = max(0, int(slots))
        self.extra = 0  # what the keeper added to the cache's expected count
        self.key: Any = None  # the trials' resource request (the cache's key)
        self.disabled = False
        self.released: Optional[int] = None  # set when the last trial ended (release_unstarted's count)
        self.snapshot_floor_s: Optional[float] = None  # set: pace Tune's snapshots (pace_snapshots) once
        self.paced: Optional[bool] = None  # pace_snapshots' answer, once it ran
        self.pace_stats = SnapshotPace()  # the paced snapshots' durations and periods

    def pace(self, controller: Any) -> None:
        """Pace Tune's experiment snapshots (:func:`pace_snapshots`) once, if ``snapshot_floor_s`` is set."""
        if self.snapshot_floor_s is not None and self.paced is None:
            self.paced = pace_snapshots(controller, self.snapshot_floor_s, self.pace_stats)

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
        cache = getattr(controller, "_actor_cache", None)  # private: no public way to keep actors
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
        :meth:`release_unstarted`)."""
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
        does nothing. Figure: 8 x 1 s trials 12.63 s with it vs 13.50 s without (module docstring, 1.).
        """
        if self.disabled:
            return 0
        problems = [p for p in controller_layout_problems(controller) if not p.startswith("_actor_cache")]
        if problems:
            self._give_up("the Tune controller has no " + ", ".join(problems))
            return 0
        stopping, started = controller._stopping_actors, controller._started_actors
        manager = controller._actor_manager
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


#: the KeepActors schedulers choose the next trial past the ended ones (False: Tune's own scan, for the A/B)
CHOOSE_PAST_ENDED = True


class _KeepActors:
    """Scheduler mixin: hands Tune's controller to ``keeper`` (an :class:`ActorKeeper`, or None: a
    plain scheduler). A scheduler is the one object Tune hands its controller to (public hooks).
    ``choose_trial_to_run`` runs once per Tune step, after the searcher was asked for trials and
    before Tune stages them; ``on_trial_add`` shows the keeper the trials' resource request;
    ``on_trial_complete`` / ``on_trial_error`` tell it when the last trial ends. The keeper is
    not pickled with the Tuner (a restored search attaches a new one)."""

    keeper: Any = None

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        if self.keeper is not None:
            self.keeper.see_trial(trial)
        super().on_trial_add(tune_controller, trial)  # type: ignore[misc]

    def choose_trial_to_run(self, tune_controller: Any) -> Any:
        if self.keeper is not None:
            self.keeper.pace(tune_controller)
            self.keeper.sync(tune_controller)
        if not CHOOSE_PAST_ENDED or type(self)._base_choice() is not FIFOScheduler.choose_trial_to_run:
            return super().choose_trial_to_run(tune_controller)  # type: ignore[misc]
        # FIFO's choice (ASHA's too: it inherits it) scans every trial at every step, 30% of
        # Tune's loop at 10,000 trials (bench/README.md); the same choice past the ended ones
        if getattr(self, "_prefix", None) is None:
            self._prefix = EndedPrefix()
        trials = tune_controller.get_trials()
        return first_pending_or_paused(trials, self._prefix.start(trials))

    @classmethod
    def _base_choice(cls) -> Any:
        """The ``choose_trial_to_run`` this mixin's scheduler class would use without it."""
        mro = cls.__mro__
        for klass in mro[mro.index(_KeepActors) + 1:]:
            if "choose_trial_to_run" in vars(klass):
                return vars(klass)["choose_trial_to_run"]
        return None

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
        if self.keeper is not None:
            self.keeper.trial_ended(tune_controller, trial)
        super().on_trial_complete(tune_controller, trial, result)  # type: ignore[misc]

    def on_trial_error(self, tune_controller: Any, trial: Any) -> None:
        if self.keeper is not None:
            self.keeper.trial_ended(tune_controller, trial)
        super().on_trial_error(tune_controller, trial)  # type: ignore[misc]

    def __getstate__(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d.pop("keeper", None)  # (the EndedPrefix pickles without Tune's trial list by itself)
        return d


class KeepActorsFIFO(_KeepActors, FIFOScheduler):
    """Tune's FIFO scheduler (its default) that keeps trial actors across stage barriers."""


class KeepActorsASHA(_KeepActors, ASHAScheduler):
    """Tune's ASHA scheduler that keeps trial actors across stage barriers."""


# ---- 5. Tune's snapshot period, paced by its cost -----------------------------------------------

#: the snapshot period is this many times the last snapshot's duration (Tune's own auto rule: 1/20 = 5%)
SNAPSHOT_COST_FACTOR = 19.0


@dataclass
class SnapshotPace:
    """What the paced snapshots of one search cost, as Tune reported them (durations in s)."""

    count: int = 0  # snapshots taken
    last_s: float = 0.0  # the last one's duration
    longest_s: float = 0.0  # the longest one's
    longest_period_s: float = 0.0  # the longest period set: the most state a kill -9 could lose


def pace_snapshots(controller: Any, floor_s: float, pace: Optional[SnapshotPace] = None) -> bool:
    """Make Tune's experiment snapshot period ``max(floor_s, 19 x the last snapshot's duration)`` (s).

    This is Tune's ``TUNE_GLOBAL_CHECKPOINT_S=auto`` rule (at most ~5% of the driver's time goes to
    snapshots) with dlops's floor (1 s: a ``kill -9`` loses little) instead of Tune's 10 s; Tune
    has no public setting for the floor. With a fixed 1 s period the snapshot grew from 25% to 38%
    of Tune's loop in a 10,000-trial run (bench/README.md, search_overhead). Returns False, with one warning, and leaves Tune's fixed
    period when the installed Ray lays the checkpoint manager out differently.
    """
    mgr = getattr(controller, "_checkpoint_manager", None)
    if not (isinstance(getattr(mgr, "_checkpoint_period", None), float)
            and callable(getattr(mgr, "_update_auto_checkpoint_time", None))):
        warnings.warn("dlops: cannot pace Tune's experiment snapshots with this Ray version (no "
                      "_checkpoint_manager._checkpoint_period / _update_auto_checkpoint_time); they stay at "
                      "a fixed period (slower at thousands of trials, same results)", RuntimeWarning, stacklevel=2)
        return False
    floor = float(floor_s)

    def update(time_taken: float) -> None:  # Tune calls it after each snapshot with its duration (s)
        mgr._checkpoint_period = max(floor, SNAPSHOT_COST_FACTOR * float(time_taken))
        if pace is not None:
            pace.count += 1
            pace.last_s = float(time_taken)
            pace.longest_s = max(pace.longest_s, pace.last_s)
            pace.longest_period_s = max(pace.longest_period_s, mgr._checkpoint_period)

    mgr._update_auto_checkpoint_time = update
    return True


# ---- 2. a restored Tuner runs with this session's objects ---------------------------------------


def use_fresh_objects(tuner: Any, searcher: Any, callback: Any, stopper: Any, keeper: Any = None,
                      extra_callbacks: Any = ()) -> None:
    """After ``Tuner.restore``: run with this session's searcher (wrapping the caller's plan, into
    which Tune loads the saved plan state), MLflow callback and stopper instead of the copies
    pickled in ``tuner.pkl`` (whose MLflow client and plan belong to the dead driver); the
    restored scheduler gets this session's :class:`ActorKeeper` (if it is a dlops scheduler).

    Ray 2.x keeps them on the Tuner's internal ``TuneConfig`` / ``RunConfig``
    (:data:`TUNER_LAYOUT`); ``Tuner.restore`` takes none of them.

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


# ---- 3. backing up Tune's state files with each searcher save ----------------------------------


def backup_state_files(staging_dir: str, dest_dir: str) -> None:
    """Copy Tune's state files from its staging folder ``staging_dir`` atomically into
    ``dest_dir`` as ``dlops-backup.<name>`` (one per kind in :data:`STATE_FILES`, the newest).

    ``TuneController.save_to_dir`` writes ``experiment_state-*.json`` whole into the staging
    folder, then saves the search algorithm there: Tune's ``SearchGenerator.save_to_dir`` saves
    the base searcher (dlops's, which calls this) and only then writes
    ``search_gen_state-*.json`` (atomically). So the experiment state backed up here is this
    snapshot's, and the search-generator state is the previous snapshot's, whole (its
    ``counter`` may be a few trials behind; :func:`repair_state_files` brings it up to the
    experiment state). Tune copies both files into the experiment folder in the background, so a
    process that exits at the wrong moment (``kill -9``, SIGTERM) can leave either cut short,
    and a session rewrites the same file names at every snapshot, so there is no older copy of
    its own to fall back on; ``--resume`` then puts the backup in its place.
    Skips a kind that ``staging_dir`` does not hold (yet) or that cannot be read."""
    d = dest_dir or "."
    for pattern, _kind in STATE_FILES:
        states = glob.glob(os.path.join(staging_dir, pattern))
        if not states:
            continue
        newest = max(states, key=os.path.getmtime)
        tmp = os.path.join(d, ".dlops-backup.tmp")
        try:  # streamed: the experiment state of 10,000 trials is tens of MB
            shutil.copyfile(newest, tmp)
        except OSError:
            if os.path.exists(tmp):
                os.unlink(tmp)
            continue
        os.replace(tmp, os.path.join(d, BACKUP_PREFIX + os.path.basename(newest)))


# ---- 4. Tune's experiment folder after a kill -9 ------------------------------------------------


def _tune_trial_ids(experiment_state: Optional[str]) -> set[str]:
    """Trial ids in a Tune experiment state file (``trial_data``: [trial JSON, metadata] pairs);
    empty when there is none or it cannot be read."""
    if not experiment_state:
        return set()
    try:
        with open(experiment_state) as f:
            data = json.load(f)
        return {str(json.loads(entry[0])["trial_id"]) for entry in data.get("trial_data", [])}
    except Exception:
        return set()


def _readable(path: str, kind: str) -> bool:
    import ray.cloudpickle as cloudpickle

    try:
        with open(path, "rb") as f:
            if kind == "json":
                json.load(f)
            else:
                cloudpickle.load(f)
        return True
    except Exception:
        return False


def _search_gen_state_caught_up(backup: str, dest: str, trials: int) -> None:
    """Write to ``dest`` the search-generator state in ``backup`` with its ``counter`` (trials
    created) at least ``trials``, the number in the experiment state Tune restores: the
    counter numbers new trials' tags and ends the search at ``num_samples``."""
    import ray.cloudpickle as cloudpickle

    with open(backup, "rb") as f:
        state = cloudpickle.load(f)
    if isinstance(state, dict) and isinstance(state.get("counter"), int):
        state["counter"] = max(state["counter"], trials)
    with open(dest, "wb") as f:
        cloudpickle.dump(state, f)


def _repair_tune_states(exp_dir: str, repaired: list[str]) -> dict[str, str]:
    """Put back or remove damaged experiment / search-generator states; the newest whole one of each kind."""
    newest: dict[str, str] = {}
    for pattern, kind in STATE_FILES:
        files = sorted(glob.glob(os.path.join(exp_dir, pattern)))
        while files and not _readable(files[-1], kind):
            backup = os.path.join(exp_dir, BACKUP_PREFIX + os.path.basename(files[-1]))
            if os.path.exists(backup) and _readable(backup, kind):
                # written whole by the searcher's save: put it in place
                tmp = files[-1] + ".repair"
                if kind == "json":  # the same snapshot
                    shutil.copyfile(backup, tmp)
                else:  # the previous snapshot's: count the trials Tune created since
                    _search_gen_state_caught_up(backup, tmp, len(_tune_trial_ids(newest.get("json"))))
                os.replace(tmp, files[-1])
                repaired.append(f"restored {os.path.basename(files[-1])} from {os.path.basename(backup)}")
                break
            bad = files.pop()
            if not files:
                raise NothingToResumeError(f"--resume: {bad} is damaged and there is no older copy; "
                                           "start the search again without --resume")
            os.remove(bad)
            repaired.append(f"removed damaged {os.path.basename(bad)}")
        if files:
            newest[kind] = files[-1]
    return newest


def repair_state_files(exp_dir: str, plan: Any = None) -> list[str]:
    """Before ``Tuner.restore``: make sure the newest state files Tune will read are whole.

    A ``kill -9`` can cut a state file short while it is being copied into the experiment
    folder. Then: a damaged searcher state is rebuilt from the plan snapshot that
    :class:`~dlops.search.tune.searcher.StagedSearcher` writes atomically with each save (trials
    it had suggested that Tune's experiment state does not hold and that never started are
    dropped with :meth:`StagedPlan.forget`, so the stage barrier does not wait for them; those
    Tune restores stay); a damaged experiment state is put back from its whole backup
    (``dlops-backup.<name>``, written with each searcher save), and so is a damaged
    search-generator state (the previous snapshot's, its trial counter brought up to the
    experiment state's trials: :func:`backup_state_files`); else a damaged experiment or
    search-generator state is removed when an older one is there to fall back on.

    Args:
        exp_dir: the Tune experiment folder.
        plan: a :class:`~dlops.search.plan.StagedPlan` of the search's params and stages (it is
            not changed: a copy loads the snapshot). Needed only to rebuild a damaged searcher
            state.

    Returns:
        What was repaired, one line each.

    Raises:
        NothingToResumeError: a damaged state with nothing to fall back on (the message names the file).
        ValueError: the searcher state must be rebuilt and no ``plan`` was given.
    """
    repaired: list[str] = []
    newest = _repair_tune_states(exp_dir, repaired)
    states = sorted(glob.glob(os.path.join(exp_dir, SEARCHER_STATE)))
    if states and not _readable(states[-1], "json"):
        if plan is None:
            raise ValueError(f"repair_state_files: {states[-1]} is damaged; pass the search's plan to rebuild it")
        snap = os.path.join(exp_dir, PLAN_SNAPSHOT)
        rebuilt = copy.deepcopy(plan)
        try:
            with open(snap) as f:
                snapshot = json.load(f)
            rebuilt.load_state_dict(snapshot)
        except Exception:
            raise NothingToResumeError(f"--resume: {states[-1]} is damaged and {snap} cannot be read") from None
        # trials Tune will restore (in the experiment state it reads) or that started (a t-<id>
        # folder) stay in the plan; only suggestions Tune never recorded are dropped
        known = {p.name[2:] for p in Path(exp_dir).glob("t-*")} | _tune_trial_ids(newest.get("json"))
        for key in [k for k in rebuilt.suggested if k not in known]:
            rebuilt.forget(key)  # (a trial with a result is kept by forget itself)
        tmp = states[-1] + ".repair"
        with open(tmp, "w") as f:
            extra = {"confirm": snapshot["confirm"]} if "confirm" in snapshot else {}  # the searcher's confirmation stage
            json.dump({**rebuilt.state_dict(), **extra}, f)
        os.replace(tmp, states[-1])
        repaired.append(f"rebuilt {os.path.basename(states[-1])} from {PLAN_SNAPSHOT}")
    return repaired


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
