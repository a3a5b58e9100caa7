"""Ray Tune's private parts that dlops.search.tune._private touches are laid out as it expects in
the installed Ray. A Ray upgrade that moves any of them fails here, loudly, with the name of what
moved; at run time the speed-ups would only warn and step aside (slower searches, unnoticed).

The static part reads the installed classes (no Ray cluster); the live part runs one tiny real
search and checks the controller Tune hands to a scheduler, the restored Tuner's configs and the
files Tune leaves in the experiment folder.
"""

from __future__ import annotations

import glob
import inspect
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from engine_helpers import pickled_by_value

from dlops.search.tune import _private


def test_the_controller_sets_every_attribute_the_keeper_uses() -> None:
    from ray.tune.execution.tune_controller import TuneController

    init = inspect.getsource(TuneController.__init__)
    missing = [a for a in _private.CONTROLLER_LAYOUT if f"self.{a} =" not in init and f"self.{a}:" not in init]
    assert not missing, f"TuneController.__init__ no longer sets {missing}: update dlops/search/tune/_private.py"


def test_the_actor_cache_and_manager_have_the_methods_used() -> None:
    from ray.air.execution._internal import RayActorManager
    from ray.tune.utils.object_cache import _ObjectCache

    for cls, attr in ((_ObjectCache, "_actor_cache"), (RayActorManager, "_actor_manager")):
        methods = _private.CONTROLLER_LAYOUT[attr]
        assert all(callable(getattr(cls, m, None)) for m in methods), (cls, methods)
    assert "kill" in inspect.signature(RayActorManager.remove_actor).parameters


def test_the_tuner_keeps_its_configs_where_resume_replaces_them() -> None:
    from ray import tune
    from ray.tune.impl.tuner_internal import TunerInternal

    assert "self._local_tuner" in inspect.getsource(tune.Tuner.__init__)
    src = inspect.getsource(TunerInternal)
    for name, fields in _private.TUNER_LAYOUT.items():
        assert f"self.{name}" in src, f"TunerInternal has no {name}"
    for cls, fields in ((tune.TuneConfig, _private.TUNER_LAYOUT["_tune_config"]),
                        (tune.RunConfig, _private.TUNER_LAYOUT["_run_config"])):
        assert set(fields) <= set(cls.__dataclass_fields__), (cls, fields)


def test_tune_writes_the_experiment_state_before_it_saves_the_searcher() -> None:
    """backup_experiment_state relies on this order in TuneController.save_to_dir."""
    from ray.tune.execution.tune_controller import TuneController

    src = inspect.getsource(TuneController.save_to_dir)
    assert "experiment_state_file_name" in src and "_search_alg.save_to_dir" in src
    assert src.index("experiment_state_file_name") < src.index("_search_alg.save_to_dir")


def test_the_search_generator_saves_the_searcher_before_its_own_state() -> None:
    """backup_state_files backs up the search-generator state the previous save wrote (so it is
    whole) and the repair sets its counter: both rely on this order and these keys."""
    from ray.tune.search.search_generator import SearchGenerator

    src = inspect.getsource(SearchGenerator.save_to_dir)
    assert "base_searcher.save_to_dir" in src and "_atomic_save" in src
    assert src.index("base_searcher.save_to_dir") < src.index("_atomic_save")
    assert SearchGenerator.CKPT_FILE_TMPL.format("*") == _private.STATE_FILES[1][0]
    assert "\"counter\"" in inspect.getsource(SearchGenerator.get_state)
    assert "state[\"counter\"]" in inspect.getsource(SearchGenerator.set_state)


def test_both_keep_actors_schedulers_choose_as_fifo_does() -> None:
    """_KeepActors replaces FIFOScheduler.choose_trial_to_run (a scan of every trial) with the
    same choice past the ended trials only when that is the choice its scheduler inherits; if
    Ray gives ASHA a choice of its own, ASHA keeps it and the speed-up is gone: say so here."""
    from ray.tune.schedulers import FIFOScheduler

    for cls in (_private.KeepActorsFIFO, _private.KeepActorsASHA):
        assert cls._base_choice() is FIFOScheduler.choose_trial_to_run, cls
    src = inspect.getsource(FIFOScheduler.choose_trial_to_run)
    assert src.index("Trial.PENDING") < src.index("Trial.PAUSED"), "FIFO's choice changed: check first_pending_or_paused"


def test_the_schedulers_hooks_keep_their_signatures() -> None:
    from ray.tune.schedulers import FIFOScheduler

    for hook, params in (("on_trial_add", ["tune_controller", "trial"]),
                         ("choose_trial_to_run", ["tune_controller"]),
                         ("on_trial_complete", ["tune_controller", "trial", "result"]),
                         ("on_trial_error", ["tune_controller", "trial"])):
        assert list(inspect.signature(getattr(FIFOScheduler, hook)).parameters)[1:] == params, hook


class _Probe(_private.KeepActorsFIFO):
    """A dlops scheduler that records what the real controller lacks."""

    problems: Any = None
    paced: Any = None

    def choose_trial_to_run(self, tune_controller: Any) -> Any:
        if _Probe.problems is None:
            _Probe.problems = _private.controller_layout_problems(tune_controller)
            _Probe.paced = _private.pace_snapshots(tune_controller, 0.0)  # floor 0 s: this test's period
        return super().choose_trial_to_run(tune_controller)


def _trainable(config: dict) -> None:
    import tempfile

    from ray import tune

    with tempfile.TemporaryDirectory() as d:
        Path(d, "x").write_text("1")
        tune.report({"dev/error": float(config["x"]), "epoch": 1}, checkpoint=tune.Checkpoint.from_directory(d))


@pytest.mark.slow
def test_a_real_search_meets_the_layout(ray_on_cluster, tmp_path: Path) -> None:
    for _ in pickled_by_value(sys.modules[__name__]):  # the workers cannot import this test folder
        _real_search_meets_the_layout(tmp_path)


def _real_search_meets_the_layout(tmp_path: Path) -> None:
    from ray import tune

    from dlops.search.plan import Stage, StagedPlan
    from dlops.search.space import Param
    from dlops.search.tune.runtime import tune_environment
    from dlops.search.tune.searcher import StagedSearcher

    plan = StagedPlan([Param("x", "linear", 0.0, 1.0)], [Stage(2, 1)], "dev/error", "min", seed=0)
    exp = tmp_path / "ray" / "layout"
    searcher = StagedSearcher(plan, snapshot_path=str(exp / _private.PLAN_SNAPSHOT))
    _Probe.problems = _Probe.paced = None
    with tune_environment({"TUNE_GLOBAL_CHECKPOINT_S": "0"}):
        tune.Tuner(tune.with_resources(_trainable, {"cpu": 1}),
                   tune_config=tune.TuneConfig(metric="dev/error", mode="min", search_alg=searcher,
                                               scheduler=_Probe(), num_samples=2, reuse_actors=True),
                   run_config=tune.RunConfig(name="layout", storage_path=str(tmp_path / "ray"), verbose=0,
                                             checkpoint_config=tune.CheckpointConfig(num_to_keep=1))).fit()
    assert _Probe.problems == [], f"TuneController lacks {_Probe.problems}: update dlops/search/tune/_private.py"
    assert _Probe.paced is True, "the live TuneController's checkpoint manager is not laid out as pace_snapshots expects"
    for pattern, _ in _private.STATE_FILES:
        assert glob.glob(str(exp / pattern)), f"Tune no longer writes {pattern}"
    assert glob.glob(str(exp / _private.SEARCHER_STATE)), "Tune no longer writes the searcher state there"
    state = json.loads(sorted(exp.glob("experiment_state-*.json"))[-1].read_text())
    assert _private._tune_trial_ids(str(sorted(exp.glob("experiment_state-*.json"))[-1])) and "trial_data" in state
    assert list(exp.glob(_private.BACKUP_PREFIX + "experiment_state-*.json")), "the searcher's save saw no state"
    gen_backups = list(exp.glob(_private.BACKUP_PREFIX + "search_gen_state-*.json"))
    assert gen_backups, "the searcher's save saw no search-generator state"
    import ray.cloudpickle as cloudpickle

    with open(gen_backups[0], "rb") as f:
        assert isinstance(cloudpickle.load(f)["counter"], int), "the search-generator state has no int counter"
    assert list(exp.glob("*/checkpoint_000000")), "trial checkpoints are no longer checkpoint_<6 digits>"
    restored = tune.Tuner.restore(str(exp), trainable=_trainable)
    _private.use_fresh_objects(restored, searcher, object(), None)  # raises if the configs moved
    assert restored._local_tuner._tune_config.search_alg is searcher


def test_the_checkpoint_manager_is_laid_out_as_pace_snapshots_expects() -> None:
    """pace_snapshots replaces the manager's auto-period update, which Tune calls after every
    snapshot with its duration, and sets the period Tune compares the time since the last one with."""
    from ray.tune.execution.experiment_state import _ExperimentCheckpointManager
    from ray.tune.execution.tune_controller import TuneController

    assert "self._checkpoint_manager = " in inspect.getsource(TuneController.__init__)
    period, update = _private.CHECKPOINT_MANAGER_LAYOUT
    assert f"self.{period} = " in inspect.getsource(_ExperimentCheckpointManager.__init__)
    sync = inspect.getsource(_ExperimentCheckpointManager.sync_up_experiment_state)
    assert f"self.{update}(time_taken=" in sync and f"< self.{period}" in sync


def test_pace_snapshots_keeps_snapshots_near_5_percent_with_a_1_s_floor() -> None:
    """On Tune's own checkpoint manager: after a 0.5 s snapshot the next waits 9.5 s (19 x 0.5),
    after a 10 ms one it waits the 1 s floor; Tune's own auto rule would wait at least 10 s."""
    from types import SimpleNamespace

    from ray.tune.execution.experiment_state import _ExperimentCheckpointManager

    mgr = _ExperimentCheckpointManager(storage=None, checkpoint_period=1)
    assert _private.pace_snapshots(SimpleNamespace(_checkpoint_manager=mgr), 1.0)
    mgr._update_auto_checkpoint_time(time_taken=0.5)
    assert mgr._checkpoint_period == pytest.approx(9.5)
    mgr._update_auto_checkpoint_time(time_taken=0.01)
    assert mgr._checkpoint_period == pytest.approx(1.0)
    with pytest.warns(RuntimeWarning, match="cannot pace"):
        assert not _private.pace_snapshots(SimpleNamespace(), 1.0)
