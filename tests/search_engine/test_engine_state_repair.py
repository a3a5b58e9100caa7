"""--resume survives state files that a kill -9 cut short (pure file work, no Ray cluster)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from dlops.search.plan import Stage, StagedPlan
from dlops.search.resume import PLAN_SNAPSHOT, NothingToResumeError, repair_state_files
from dlops.search.searcher import StagedSearcher
from dlops.search.space import Param


def _searcher(snapshot: Path) -> StagedSearcher:
    plan = StagedPlan([Param("lr", "log", 1e-4, 1.0)], [Stage(3), Stage(2)], "dev/error", "min", seed=0)
    return StagedSearcher(plan, snapshot_path=str(snapshot))


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
    done = repair_state_files(str(exp))
    assert any("rebuilt" in line for line in done)
    state = json.loads((exp / "searcher-state-2026.pkl").read_text())
    assert set(state["suggested"]) == {"a", "b"}
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
