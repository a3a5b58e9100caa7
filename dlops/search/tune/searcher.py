"""Coarse-to-fine staged search as a Ray Tune ``Searcher``.

One ``Tuner`` runs every stage: :class:`StagedSearcher` returns ``None`` at a stage barrier
(Tune asks again later), ``Searcher.FINISHED`` after the last stage, and saves the whole
:class:`~dlops.search.plan.StagedPlan` state with the experiment, so ``Tuner.restore`` resumes
across stages. A scheduler such as ASHA still applies inside a stage: a trial it stops early
ends with its last result, which is what the zoom sees.

:attr:`StagedSearcher.at_barrier` tells whether the last answer was a barrier (``None``):
:class:`dlops.search.tune._private.ActorKeeper` keeps the trial actors alive while it is set, so
the next stage reuses them instead of starting new worker processes.
"""

from __future__ import annotations

import json
import os
from typing import Any, Optional

from ray.tune.search import Searcher

from dlops.search.plan import FINISHED, StagedPlan
from dlops.search.tune._private import backup_experiment_state


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
        state short (:func:`dlops.search.tune._private.repair_state_files`)."""
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
        if self.snapshot_path:  # Tune's experiment state, whole at this moment, beside the snapshot
            backup_experiment_state(os.path.dirname(checkpoint_path), os.path.dirname(self.snapshot_path))
        with open(checkpoint_path, "w") as f:
            f.write(text)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path) as f:
            self.set_state(json.load(f))
