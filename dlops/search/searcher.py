"""Coarse-to-fine staged search as a Ray Tune ``Searcher``.

One ``Tuner`` runs every stage: :class:`StagedSearcher` returns ``None`` at a stage barrier
(Tune asks again later), ``Searcher.FINISHED`` after the last stage, and saves the whole
:class:`~dlops.search.plan.StagedPlan` state with the experiment, so ``Tuner.restore`` resumes
across stages. A scheduler such as ASHA still applies inside a stage: a trial it stops early
ends with its last result, which is what the zoom sees.

:attr:`StagedSearcher.at_barrier` tells whether the last answer was a barrier (``None``):
:func:`dlops.search.run.run_search` keeps the trial actors alive while it is set, so the next
stage reuses them instead of starting new worker processes.
"""

from __future__ import annotations

import json
import os
from typing import Any, Optional

from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search import Searcher

from dlops.search.plan import FINISHED, StagedPlan


#: prefix of the backup of Tune's experiment state (Tune's own glob, experiment_state-*.json, skips it)
BACKUP_PREFIX = "dlops-backup."


class StagedSearcher(Searcher):
    """Ray Tune adapter around a pure :class:`StagedPlan`.

    Args:
        plan: the staged plan (space, stages, metric, mode, constraints, zoom rule, seed).
    """

    def __init__(self, plan: StagedPlan, snapshot_path: Optional[str] = None) -> None:
        super().__init__(metric=plan.metric, mode=plan.mode)
        self.plan = plan
        self.snapshot_path = snapshot_path
        self.at_barrier = False  # the last suggest answered None: waiting for a stage to end

    def _snapshot(self, text: str) -> None:
        """Write ``text`` (the plan state as JSON) atomically to ``snapshot_path`` (write, then
        rename): the fallback of ``--resume`` when a ``kill -9`` cut Tune's copy of the searcher
        state short (:func:`dlops.search.resume.repair_state_files`)."""
        if not self.snapshot_path:
            return
        import os
        import tempfile

        d = os.path.dirname(self.snapshot_path) or "."
        os.makedirs(d, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=d, prefix=".dlops-plan-", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, self.snapshot_path)

    def set_search_properties(self, metric: Optional[str], mode: Optional[str], config: dict, **spec: Any) -> bool:
        # metric and mode come from the plan; a conflicting TuneConfig is an error, not a silent override
        if metric and metric != self.plan.metric or mode and mode != self.plan.mode:
            return False
        return True

    def suggest(self, trial_id: str) -> Optional[dict]:
        cfg = self.plan.suggest(trial_id)
        self.at_barrier = cfg is None
        if cfg == FINISHED:
            return Searcher.FINISHED
        return cfg  # a dict, or None at a stage barrier

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        pass

    def on_trial_complete(self, trial_id: str, result: Optional[dict] = None, error: bool = False) -> None:
        if error or not result:
            self.plan.record(trial_id, {})
        else:
            self.plan.record(trial_id, {k: v for k, v in result.items() if isinstance(v, (int, float))})

    # ---- state: Tune calls save/restore with the experiment checkpoint ---------------------
    def get_state(self) -> dict:
        return self.plan.state_dict()

    def set_state(self, state: dict) -> None:
        self.plan.load_state_dict(state)

    def save(self, checkpoint_path: str) -> None:
        """Tune saves the searcher with every experiment checkpoint (``TUNE_GLOBAL_CHECKPOINT_S``)
        and copies the file into the experiment folder afterwards; the same state is written
        atomically to ``snapshot_path`` first, so a copy cut short has a whole twin at least as new."""
        text = json.dumps(self.get_state())
        self._snapshot(text)
        self._backup_experiment_state(os.path.dirname(checkpoint_path))
        with open(checkpoint_path, "w") as f:
            f.write(text)

    def _backup_experiment_state(self, staging_dir: str) -> None:
        """Copy Tune's experiment state, which Tune has just written whole into ``staging_dir``
        (its ``save_to_dir`` writes it, then saves the searcher), atomically next to the plan
        snapshot as ``dlops-backup.<name>``. Tune writes that file in place and copies it into
        the experiment folder in the background, so a process that exits at the wrong moment
        (``kill -9``, SIGTERM) can leave it cut short; ``--resume`` then puts the backup in its
        place (:func:`dlops.search.resume.repair_state_files`)."""
        if not self.snapshot_path:
            return
        import glob

        states = glob.glob(os.path.join(staging_dir, "experiment_state-*.json"))
        if not states:
            return
        newest = max(states, key=os.path.getmtime)
        try:
            with open(newest, "rb") as f:
                data = f.read()
        except OSError:
            return
        d = os.path.dirname(self.snapshot_path) or "."
        tmp = os.path.join(d, ".dlops-backup.tmp")
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, os.path.join(d, BACKUP_PREFIX + os.path.basename(newest)))

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path) as f:
            self.set_state(json.load(f))


class _KeepActors:
    """Scheduler mixin: hands Tune's controller to ``keeper`` (a
    :class:`dlops.search.run.ActorKeeper`, or None: a plain scheduler). ``choose_trial_to_run``
    runs once per Tune step, after the searcher was asked for trials and before Tune stages them;
    ``on_trial_add`` shows the keeper the trials' resource request; ``on_trial_complete`` /
``on_trial_error`` tell it when the last trial ends. The keeper is not pickled
    with the Tuner (a restored search attaches a new one)."""

    keeper: Any = None

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        if self.keeper is not None:
            self.keeper.see_trial(trial)
        super().on_trial_add(tune_controller, trial)  # type: ignore[misc]

    def choose_trial_to_run(self, tune_controller: Any) -> Any:
        if self.keeper is not None:
            self.keeper.sync(tune_controller)
        return super().choose_trial_to_run(tune_controller)  # type: ignore[misc]

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
        d.pop("keeper", None)
        return d


class KeepActorsFIFO(_KeepActors, FIFOScheduler):
    """Tune's FIFO scheduler (its default) that keeps trial actors across stage barriers."""


class KeepActorsASHA(_KeepActors, ASHAScheduler):
    """Tune's ASHA scheduler that keeps trial actors across stage barriers."""
