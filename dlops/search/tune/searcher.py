"""Coarse-to-fine staged search as a Ray Tune ``Searcher``.

One ``Tuner`` runs every stage: :class:`StagedSearcher` returns ``None`` at a stage barrier
(Tune asks again later), ``Searcher.FINISHED`` after the last stage, and saves the whole
:class:`~dlops.search.plan.StagedPlan` state with the experiment, so ``Tuner.restore`` resumes
across stages. A scheduler such as ASHA still applies inside a stage: a trial it stops early
ends with its last result, which is what the zoom sees.

:attr:`StagedSearcher.at_barrier` tells whether the last answer was a barrier (``None``):
:class:`dlops.search.tune._private.ActorKeeper` keeps the trial actors alive while it is set, so
the next stage reuses them instead of starting new worker processes.

With ``confirm=(top_k, seeds)`` (``search.confirm``) one more stage follows the last: the
``top_k`` best feasible configurations trained again on ``seeds`` fresh seeds
(:mod:`dlops.search.confirm`); its configs carry ``stage = len(stages)`` and ``confirm_of``.
Its state is saved with the plan's (key ``confirm``).
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Optional

from ray.tune.search import Searcher

from dlops.search.confirm import CONFIRM_KEY, confirm_configs, confirm_result
from dlops.search.plan import FINISHED, STAGE_KEY, StagedPlan
from dlops.search.tune._private import backup_state_files


def _write_atomically(text: str, dest: str, tmp_dir: str) -> None:
    """Write ``text`` to a temporary file in ``tmp_dir`` (same filesystem as ``dest``), then
    rename it onto ``dest``: a reader sees the old file or the new one, never part of one.
    Raises ``OSError`` when ``tmp_dir`` cannot be written (the temporary file is removed)."""
    fd, tmp = tempfile.mkstemp(dir=tmp_dir, prefix=".dlops-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, dest)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class StagedSearcher(Searcher):
    """Ray Tune adapter around a pure :class:`StagedPlan`.

    Args:
        plan: the staged plan (space, stages, metric, mode, constraints, zoom rule, seed).
    """

    def __init__(self, plan: StagedPlan, snapshot_path: Optional[str] = None,
                 confirm: Optional[tuple[int, int]] = None, base_seed: int = 0) -> None:
        super().__init__(metric=plan.metric, mode=plan.mode)
        self.plan = plan
        self.snapshot_path = snapshot_path
        self.at_barrier = False  # the last suggest answered None: waiting for a stage to end
        self.confirm = confirm  # (top_k, seeds) or None
        self.base_seed = base_seed
        # the confirmation stage: top (trial ids), pending configs, suggested (trial id -> config), results
        self.cstate: dict[str, Any] = {"top": None, "pending": [], "suggested": {}, "results": {}}

    @property
    def n_confirm(self) -> int:
        """The most confirmation trials this search can run (``top_k * seeds``; 0 without confirm)."""
        return self.confirm[0] * self.confirm[1] if self.confirm else 0

    def _suggest_confirm(self, trial_id: str) -> Any:
        """A confirmation trial's config; FINISHED once every one is issued."""
        from dlops.search.space import select_top

        st = self.cstate
        if trial_id in st["suggested"]:
            return dict(st["suggested"][trial_id])
        if st["top"] is None:
            p = self.plan
            top = select_top(p.outcomes(), p.metric, p.mode, p.constraints, k=self.confirm[0],  # type: ignore[index]
                             tie_break=p.rule.tie_break)
            st["top"] = [t.trial_id for t in top]
            st["pending"] = confirm_configs(top, self.confirm[1], self.base_seed,  # type: ignore[index]
                                            {STAGE_KEY: len(p.stages)})
        if not st["pending"]:
            return Searcher.FINISHED
        cfg = st["pending"].pop(0)
        st["suggested"][trial_id] = cfg
        return dict(cfg)

    def confirm_done(self) -> bool:
        """Whether every confirmation trial ended (True without confirm)."""
        st = self.cstate
        if not self.confirm:
            return True
        return st["top"] is not None and not st["pending"] and all(t in st["results"] for t in st["suggested"])

    def confirmation(self) -> Any:
        """The :class:`dlops.search.confirm.ConfirmResult` (None without confirm or before it ran)."""
        st = self.cstate
        if not self.confirm or st["top"] is None:
            return None
        top = [t for t in self.plan.outcomes() if t.trial_id in set(st["top"])]
        top.sort(key=lambda t: st["top"].index(t.trial_id))
        runs: dict[str, list[dict[str, Any]]] = {}
        for tid, cfg in st["suggested"].items():
            if tid in st["results"]:
                runs.setdefault(cfg[CONFIRM_KEY], []).append(st["results"][tid])
        p = self.plan
        return confirm_result(top, runs, p.metric, p.mode, p.constraints)

    def _snapshot(self, text: str) -> None:
        """Write ``text`` (the plan state as JSON) atomically to ``snapshot_path`` (write, then
        rename): the fallback of ``--resume`` when a ``kill -9`` cut Tune's copy of the searcher
        state short (:func:`dlops.search.tune._private.repair_state_files`)."""
        if not self.snapshot_path:
            return
        d = os.path.dirname(self.snapshot_path) or "."
        os.makedirs(d, exist_ok=True)
        _write_atomically(text, self.snapshot_path, tmp_dir=d)

    def set_search_properties(self, metric: Optional[str], mode: Optional[str], config: dict, **spec: Any) -> bool:
        # metric and mode come from the plan; a conflicting TuneConfig is an error, not a silent override
        if metric and metric != self.plan.metric or mode and mode != self.plan.mode:
            return False
        return True

    def suggest(self, trial_id: str) -> Optional[dict]:
        cfg = self.plan.suggest(trial_id)
        if cfg == FINISHED and self.confirm:
            cfg = self._suggest_confirm(trial_id)
        self.at_barrier = cfg is None
        if cfg == FINISHED or cfg is Searcher.FINISHED:
            return Searcher.FINISHED
        return cfg  # a dict, or None at a stage barrier

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        pass

    def on_trial_complete(self, trial_id: str, result: Optional[dict] = None, error: bool = False) -> None:
        if trial_id in self.cstate["suggested"]:
            ok = not error and result
            self.cstate["results"][trial_id] = ({k: v for k, v in result.items() if isinstance(v, (int, float))}
                                                if ok else {})
            return
        if error or not result:
            self.plan.record(trial_id, {})
        else:
            self.plan.record(trial_id, {k: v for k, v in result.items() if isinstance(v, (int, float))})

    # ---- state: Tune calls save/restore with the experiment checkpoint ---------------------
    def get_state(self) -> dict:
        return {**self.plan.state_dict(), "confirm": self.cstate}

    def set_state(self, state: dict) -> None:
        self.plan.load_state_dict(state)
        if "confirm" in state:
            self.cstate = json.loads(json.dumps(state["confirm"]))

    def save(self, checkpoint_path: str) -> None:
        """Write the searcher state (JSON) to ``checkpoint_path``; the same state goes atomically
        to ``snapshot_path`` first, so a copy cut short has a whole twin at least as new."""
        text = self._state_text(os.path.dirname(checkpoint_path))
        with open(checkpoint_path, "w") as f:
            f.write(text)

    def save_to_dir(self, checkpoint_dir: str, session_str: str = "default") -> None:
        """Tune saves the searcher with every experiment checkpoint (``TUNE_GLOBAL_CHECKPOINT_S``)
        into its staging folder ``checkpoint_dir`` and uploads that folder in the background.

        Ray's ``Searcher.save_to_dir`` writes a temporary file *inside* that folder and then
        renames it; an upload that lists the folder just before the rename fails to open the
        temporary file and Tune logs a ``FileNotFoundError`` traceback (seen in CI on Ray 2.60;
        harmless, the next upload carries the state, but alarming). The temporary file is written
        beside the folder instead, on the same filesystem, so the rename stays atomic and the
        upload only ever sees whole files."""
        text = self._state_text(checkpoint_dir)
        dest = os.path.join(checkpoint_dir, self.CKPT_FILE_TMPL.format(session_str))
        _write_atomically(text, dest, tmp_dir=os.path.dirname(os.path.abspath(checkpoint_dir)))

    def _state_text(self, staging_dir: str) -> str:
        """The state as JSON, written to ``snapshot_path`` first, with Tune's state files (whole
        at this moment in ``staging_dir``) backed up beside it."""
        text = json.dumps(self.get_state())
        self._snapshot(text)
        if self.snapshot_path:
            backup_state_files(staging_dir, os.path.dirname(self.snapshot_path))
        return text

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path) as f:
            self.set_state(json.load(f))
