"""StagedSearcher.save_to_dir: Tune uploads its staging folder in the background, so the folder
must only ever hold whole files (CI, 2026-12-02: Ray's own save_to_dir left a temporary file
there that the upload listed and then could not open)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def _searcher(snapshot: Path | None = None):
    from dlops.search.plan import Stage, StagedPlan
    from dlops.search.space import Param
    from dlops.search.tune.searcher import StagedSearcher

    plan = StagedPlan([Param("lr", "log", 1e-4, 1.0)], [Stage(3, epochs=2)], "dev/error", "min", seed=0)
    return StagedSearcher(plan, snapshot_path=str(snapshot) if snapshot else None)


def test_the_staging_folder_holds_only_whole_files_at_every_rename(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    staging = tmp_path / "exp" / "driver_artifacts"
    staging.mkdir(parents=True)
    (staging / "experiment_state-x.json").write_text("{}")
    s = _searcher(tmp_path / "snap" / "plan.json")
    s.suggest("t0")
    seen: list[list[str]] = []
    real_replace = os.replace

    def watching_replace(src, dst, *a, **k):  # what an upload listing the folder now would see
        seen.append(sorted(os.listdir(staging)))
        return real_replace(src, dst, *a, **k)

    monkeypatch.setattr(os, "replace", watching_replace)
    s.save_to_dir(str(staging), session_str="2026-12-02")
    monkeypatch.setattr(os, "replace", real_replace)
    assert seen, "save_to_dir wrote nothing atomically"
    for listing in seen:
        assert [n for n in listing if n.startswith(".") or "tmp" in n] == [], listing
    assert sorted(os.listdir(staging)) == ["experiment_state-x.json", "searcher-state-2026-12-02.pkl"]
    assert [n for n in os.listdir(staging.parent) if n != "driver_artifacts"] == []  # no temp left beside


def test_save_to_dir_round_trips_through_ray_restore_from_dir(tmp_path: Path) -> None:
    s = _searcher()
    cfg = s.suggest("t0")
    s.on_trial_complete("t0", {"dev/error": 0.25})
    s.save_to_dir(str(tmp_path), session_str="a")
    twin = _searcher()
    twin.restore_from_dir(str(tmp_path))  # Ray's Searcher.restore_from_dir finds the newest file
    assert twin.get_state() == s.get_state()
    assert twin.get_state() != _searcher().get_state()  # the suggestion and result are in it
    assert cfg["lr"] > 0

