"""--resume survives state files that a kill -9 cut short (pure file work, no Ray cluster)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from dlops.errors import NothingToResumeError
from dlops.search.plan import Stage, StagedPlan
from dlops.search.tune._private import PLAN_SNAPSHOT, repair_state_files
from dlops.search.tune.searcher import StagedSearcher
from dlops.search.space import Param


def _plan() -> StagedPlan:
    return StagedPlan([Param("lr", "log", 1e-4, 1.0)], [Stage(3), Stage(2)], "dev/error", "min", seed=0)


def _searcher(snapshot: Path) -> StagedSearcher:
    return StagedSearcher(_plan(), snapshot_path=str(snapshot))


def test_snapshot_is_written_atomically_with_every_save(tmp_path: Path):
    snap = tmp_path / "exp" / PLAN_SNAPSHOT
    s = _searcher(snap)
    s.suggest("a")
    s.save(str(tmp_path / "state-1"))  # what Tune does at each experiment checkpoint
    assert json.loads(snap.read_text())["suggested"].keys() == {"a"}
    s.suggest("b")
    s.on_trial_complete("a", {"dev/error": 0.3})
    assert json.loads(snap.read_text())["suggested"].keys() == {"a"}  # not rewritten between saves
    s.save(str(tmp_path / "state-2"))
    state = json.loads(snap.read_text())
    assert state == json.loads(json.dumps(s.get_state())) == json.loads((tmp_path / "state-2").read_text())
    assert state["results"] == {"a": {"dev/error": 0.3}}
    assert not [p for p in snap.parent.iterdir() if p.name.endswith(".tmp")]  # no temp file left


def test_damaged_searcher_state_is_rebuilt_from_the_snapshot(tmp_path: Path):
    exp = tmp_path / "exp"
    s = _searcher(exp / PLAN_SNAPSHOT)
    for k in ("a", "b", "c"):
        s.suggest(k)
    s.on_trial_complete("a", {"dev/error": 0.3})
    s.save(str(tmp_path / "local-state"))  # Tune's save; its copy into the experiment folder is then cut short
    (exp / "t-a").mkdir()
    (exp / "t-b").mkdir()  # b started; c was suggested but never started
    (exp / "searcher-state-2026.pkl").write_bytes(b"")  # cut short by kill -9
    done = repair_state_files(str(exp), _plan())  # the resumed search's plan (fresh, same params and stages)
    assert any("rebuilt" in line for line in done)
    state = json.loads((exp / "searcher-state-2026.pkl").read_text())
    assert set(state["suggested"]) == {"a", "b"}  # c: neither started nor in Tune's experiment state
    fresh = _searcher(tmp_path / "other.json")
    fresh.restore(str(exp / "searcher-state-2026.pkl"))
    assert fresh.suggest("d") is not None  # c's slot is free again: the barrier does not wait for it
    assert fresh.suggest("e") is None  # barrier: a, b, d fill stage 0


def test_damaged_experiment_state_falls_back_or_says_so(tmp_path: Path):
    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "experiment_state-2026-01.json").write_text(json.dumps({"ok": 1}))
    (exp / "experiment_state-2026-02.json").write_text('{"trial_data": [')  # newest, cut short
    done = repair_state_files(str(exp))
    assert done == ["removed damaged experiment_state-2026-02.json"]
    assert sorted(os.listdir(exp)) == ["experiment_state-2026-01.json"]
    (exp / "experiment_state-2026-01.json").write_text("")
    with pytest.raises(NothingToResumeError, match="experiment_state-2026-01.json"):
        repair_state_files(str(exp))


def test_a_pending_trial_tune_restores_stays_in_the_rebuilt_plan(tmp_path: Path):
    exp = tmp_path / "exp"
    s = _searcher(exp / PLAN_SNAPSHOT)
    for k in ("a", "b", "c"):
        s.suggest(k)  # the whole stage is pending at once
    s.save(str(tmp_path / "local-state"))
    (exp / "t-a").mkdir()  # only a started; Tune's experiment state holds b and c as PENDING
    trial_data = [[json.dumps({"trial_id": k, "status": "PENDING"}), "{}"] for k in ("a", "b", "c")]
    (exp / "experiment_state-2026-01.json").write_text(json.dumps({"trial_data": trial_data}))
    (exp / "searcher-state-2026.pkl").write_bytes(b"\x80")  # cut short by kill -9
    repair_state_files(str(exp), _plan())
    state = json.loads((exp / "searcher-state-2026.pkl").read_text())
    # Tune runs b and c again: the plan keeps them, so their results count and no extra trials are drawn
    assert set(state["suggested"]) == {"a", "b", "c"}
    fresh = _searcher(tmp_path / "other.json")
    fresh.restore(str(exp / "searcher-state-2026.pkl"))
    assert fresh.suggest("d") is None  # barrier: the stage is full


def test_experiment_state_cut_short_is_put_back_from_the_searchers_backup(tmp_path: Path):
    """Tune writes experiment_state-*.json in place, then saves the searcher from the same
    staging folder: the save backs the whole file up next to the plan snapshot, and the repair
    puts it back when the experiment folder's copy was cut short (a kill while it was copied)."""
    staging, exp = tmp_path / "staging", tmp_path / "exp"
    staging.mkdir()
    state = {"trial_data": [["{}", "{}"]], "runner_data": {}, "stats": {}}
    (staging / "experiment_state-2026-03.json").write_text(json.dumps(state))
    s = _searcher(exp / PLAN_SNAPSHOT)
    s.suggest("a")
    s.save(str(staging / ".tmp_searcher_ckpt"))  # as Tune's Searcher.save_to_dir calls it
    backup = exp / "dlops-backup.experiment_state-2026-03.json"
    assert json.loads(backup.read_text()) == state
    (exp / "experiment_state-2026-03.json").write_text(json.dumps(state)[:20])  # the copy, cut short
    done = repair_state_files(str(exp))
    assert done == ["restored experiment_state-2026-03.json from dlops-backup.experiment_state-2026-03.json"]
    assert json.loads((exp / "experiment_state-2026-03.json").read_text()) == state
    # Tune's own glob does not see the backup as a state file of its own
    assert sorted(p.name for p in exp.glob("experiment_state-*.json")) == ["experiment_state-2026-03.json"]


def test_search_generator_state_cut_short_is_put_back_with_its_counter_caught_up(tmp_path: Path):
    """Tune rewrites search_gen_state-<session>.json (a pickle) at every snapshot under the same
    name, so a copy cut short has no older file to fall back on. The searcher's save backs up the
    previous snapshot's (whole in the staging folder); the repair puts it back with its trial
    counter raised to the trials of the experiment state Tune restores."""
    import ray.cloudpickle as cloudpickle

    staging, exp = tmp_path / "staging", tmp_path / "exp"
    staging.mkdir()
    gen = {"counter": 2, "total_samples": 10, "finished": False, "experiment": None}
    with open(staging / "search_gen_state-2026-03.json", "wb") as f:
        cloudpickle.dump(gen, f)
    s = _searcher(exp / PLAN_SNAPSHOT)
    s.suggest("a")
    s.save(str(staging / ".tmp_searcher_ckpt"))
    assert (exp / "dlops-backup.search_gen_state-2026-03.json").exists()
    trial_data = [[json.dumps({"trial_id": k, "status": "RUNNING"}), "{}"] for k in ("a", "b", "c")]
    (exp / "experiment_state-2026-03.json").write_text(json.dumps({"trial_data": trial_data}))
    (exp / "search_gen_state-2026-03.json").write_bytes(cloudpickle.dumps(gen)[:9])  # the copy, cut short
    done = repair_state_files(str(exp))
    assert done == ["restored search_gen_state-2026-03.json from dlops-backup.search_gen_state-2026-03.json"]
    with open(exp / "search_gen_state-2026-03.json", "rb") as f:
        assert cloudpickle.load(f) == {**gen, "counter": 3}  # three trials in the experiment state
    (exp / "dlops-backup.search_gen_state-2026-03.json").write_bytes(b"")  # no whole copy left
    (exp / "search_gen_state-2026-03.json").write_bytes(b"\x80")
    with pytest.raises(NothingToResumeError, match="search_gen_state-2026-03.json"):
        repair_state_files(str(exp))
