"""`dlops run --resume` after the driver is killed with SIGKILL in the middle of stage 2."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from engine_helpers import VENV_BIN, runs_of, tiny_overrides

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"

STAGE1_EPOCHS = 60  # ~0.3 s each: long enough to be killed mid-stage with a wide margin (epoch 8-30)


def _cli(project: Path, tmp: Path, extra: list[str]) -> list[str]:
    cmd = [str(VENV_BIN / "dlops"), "run", str(project)]
    stages = f"[{{trials: 2, epochs: 1}}, {{trials: 2, epochs: {STAGE1_EPOCHS}}}]"
    for o in tiny_overrides(tmp, stages) + ["search.space.batch_size={scale: choice, choices: [8]}"]:
        cmd += ["--set", o]
    return cmd + extra


def _env() -> dict[str, str]:
    env = dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
    env.pop("RAY_ADDRESS", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the Ray processes the killed driver left behind
    except ProcessLookupError:
        pass


@pytest.mark.slow
def test_kill_9_in_stage_2_then_resume_continues_the_same_search(project_file: Path, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    log1 = open(tmp_path / "run1.log", "w")
    p1 = subprocess.Popen(_cli(project_file, tmp_path, []), cwd=tmp_path, env=_env(), stdout=log1,
                          stderr=subprocess.STDOUT, start_new_session=True)
    killed_at = None
    deadline = time.time() + 150
    try:
        # the driver creates the database; read it only once the search phase has begun
        while "[search] ..." not in (tmp_path / "run1.log").read_text():
            assert time.time() < deadline and p1.poll() is None, (tmp_path / "run1.log").read_text()[-4000:]
            time.sleep(0.3)
        client = MlflowClient(uri)
        while time.time() < deadline and p1.poll() is None:
            time.sleep(0.3)
            try:
                runs = runs_of(uri, "digits-transfer")
            except Exception:  # the database is being created
                continue
            stage1 = [r for r in runs if r.data.tags.get("dlops.kind") == "trial" and r.data.tags.get("dlops.stage") == "1"]
            steps = [len(client.get_metric_history(r.info.run_id, "dev/error")) for r in stage1]
            # both stage-2 trials started, one has a few epochs behind it (checkpoints), none finished
            if len(stage1) == 2 and max(steps) >= 8 and max(steps) < STAGE1_EPOCHS - 30:
                time.sleep(1.5)  # past Tune's 1 s experiment snapshot
                p1.send_signal(signal.SIGKILL)
                killed_at = time.time()
                break
        p1.wait(timeout=30)
    finally:
        _kill_group(p1)
        log1.close()
    assert killed_at is not None, "stage 2 never reached:\n" + (tmp_path / "run1.log").read_text()[-4000:]
    before = {r.info.run_id: r for r in runs_of(uri, "digits-transfer")}
    left_running = [r for r in before.values() if r.info.status == "RUNNING"]
    assert left_running, "the killed driver should have left runs RUNNING"
    stage0_before = {r.info.run_id: [(m.step, m.timestamp) for m in client.get_metric_history(r.info.run_id, "dev/error")]
                     for r in before.values()
                     if r.data.tags.get("dlops.kind") == "trial" and r.data.tags.get("dlops.stage") == "0"}
    assert len(stage0_before) == 2
    unfinished = {r.data.tags["dlops.trial_id"]: len(client.get_metric_history(r.info.run_id, "dev/error"))
                  for r in before.values() if r.data.tags.get("dlops.kind") == "trial"
                  and r.data.tags.get("dlops.stage") == "1" and r.info.status == "RUNNING"}
    assert unfinished, "no stage-2 trial was in progress when the driver was killed"

    p2 = subprocess.run(_cli(project_file, tmp_path, ["--resume"]), cwd=tmp_path, env=_env(),
                        capture_output=True, text=True, timeout=240, start_new_session=True)
    assert p2.returncode == 0, p2.stderr[-4000:]
    assert "[resume] search" in p2.stderr
    assert "(resume)" in p2.stderr  # the pretrained source network is reused, not trained again

    after = runs_of(uri, "digits-transfer")
    kinds = [r.data.tags.get("dlops.kind") for r in after]
    assert kinds.count("search") == 1 and kinds.count("pretrain") == 1
    assert kinds.count("stage") == 2 and kinds.count("trial") == 4  # no duplicate runs
    assert {r.info.status for r in after} == {"FINISHED"}, [(k, r.info.status) for k, r in zip(kinds, after)]
    trials = [r for r in after if r.data.tags.get("dlops.kind") == "trial"]
    assert len({r.data.tags["dlops.trial_id"] for r in trials}) == 4
    search = next(r for r in after if r.data.tags.get("dlops.kind") == "search")
    assert search.data.tags["dlops.resumes"] == "1"
    stages = {r.data.tags["dlops.stage"]: r.info.run_id for r in after if r.data.tags.get("dlops.kind") == "stage"}
    for r in trials:  # lineage kept: trial -> its stage -> the one search run
        assert r.data.tags["mlflow.parentRunId"] == stages[r.data.tags["dlops.stage"]]
    for rid in stages.values():
        assert client.get_run(rid).data.tags["mlflow.parentRunId"] == search.info.run_id
    # stage-2 trials were sampled in the zoomed box: the box of stage 1 is logged on its run
    assert any(k.startswith("box.") for k in client.get_run(stages["1"]).data.params)

    for r in trials:
        hist = client.get_metric_history(r.info.run_id, "dev/error")
        steps = sorted(m.step for m in hist)
        n = 1 if r.data.tags["dlops.stage"] == "0" else STAGE1_EPOCHS
        assert steps == list(range(1, n + 1)), (r.data.tags["dlops.trial_id"], steps[:20])  # no step twice
        if r.info.run_id in stage0_before:  # finished before the kill: not run again (same logged epoch)
            assert [(m.step, m.timestamp) for m in hist] == stage0_before[r.info.run_id]
            assert "dlops.resumed_first_epoch" not in r.data.tags
        tid = r.data.tags["dlops.trial_id"]
        if tid in unfinished and unfinished[tid] >= 2:
            # continued from its checkpoint, not from epoch 1
            first = int(r.data.tags["dlops.resumed_first_epoch"])
            # the checkpoint may be a few epochs ahead of what the killed driver had written to
            # MLflow (its writes are queued): those epochs are replayed from the checkpoint's
            # history, and the steps above are 1..N exactly once either way
            assert 1 < first <= STAGE1_EPOCHS, (tid, first, unfinished[tid])
