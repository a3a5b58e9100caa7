"""Resuming a search after its driver died: ``dlops run FILE --resume``.

The search to resume is the latest search run of the experiment (tag ``dlops.kind=search``)
whose status is not FINISHED (RUNNING after ``kill -9``, KILLED after Ctrl-C, FAILED after an
error). Its tag ``dlops.search_id`` names the Tune experiment directory
``<ray.storage_path>/<project name>-<search_id>``; :func:`dlops.search.run.run_search` restores
it with ``Tuner.restore`` (finished trials are not run again, unfinished ones continue from
their last checkpoint, the staged searcher's plan comes back from the state Tune saved). The
parent run is reused (set back to RUNNING), every trial keeps its one run.
"""

from __future__ import annotations

from dlops.errors import NothingToResumeError  # noqa: F401  (the kind lives in dlops.errors)
import json

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from dlops.tracking.store import TAG_KIND, TAG_SEARCH




@dataclass(frozen=True)
class ResumePoint:
    """The search to continue: its parent run, search id and Tune experiment directory."""

    parent_run_id: str
    search_id: str
    status: str  # the parent run's status before the resume
    experiment_dir: str
    restorable: bool  # Tune saved an experiment state there (else the search starts over, same ids)
    start_time: int  # ms


def experiment_dir(storage_path: str, project_name: str, search_id: str) -> str:
    """``<storage_path>/<project_name>-<search_id>``, absolute (the name ``run_search`` gives Tune)."""
    return str(Path(storage_path).resolve() / f"{project_name}-{search_id}")


def can_restore(path: str) -> bool:
    """Whether Tune left an experiment state in ``path`` that ``Tuner.restore`` can read."""
    from ray import tune

    try:
        return bool(Path(path).is_dir() and tune.Tuner.can_restore(path))
    except Exception:
        return False


def find_resumable(client: Any, experiment_id: str, storage_path: str, project_name: str) -> ResumePoint:
    """The latest search run of the experiment that did not finish.

    Raises:
        NothingToResumeError: there is none (the message says to run without ``--resume``).
    """
    runs = client.search_runs([experiment_id], filter_string=f"tags.`{TAG_KIND}` = 'search'",
                              order_by=["attributes.start_time DESC"], max_results=200)
    for r in runs:
        if r.info.status == "FINISHED":
            continue
        sid = r.data.tags.get(TAG_SEARCH)
        if not sid:
            continue
        d = experiment_dir(storage_path, project_name, sid)
        return ResumePoint(r.info.run_id, sid, r.info.status, d, can_restore(d), int(r.info.start_time or 0))
    raise NothingToResumeError(
        f"--resume: experiment {project_name!r} has no unfinished search run (tag {TAG_KIND}=search, "
        "status not FINISHED); run without --resume to start a new search"
    )


def reopen(client: Any, point: ResumePoint) -> None:
    """Set the parent run back to RUNNING, count the resume (tag ``dlops.resumes``), drop the old
    error tag, and end runs the dead driver left RUNNING that nothing continues: a pretraining run
    started after the parent (it is run again) and the search's ensemble runs (KILLED)."""
    run = client.get_run(point.parent_run_id)
    n = int(run.data.tags.get("dlops.resumes", "0")) + 1
    client.update_run(point.parent_run_id, status="RUNNING")
    client.set_tag(point.parent_run_id, "dlops.resumes", str(n))
    if "dlops.error" in run.data.tags:
        client.delete_tag(point.parent_run_id, "dlops.error")
    exp = run.info.experiment_id
    keep = run.data.tags.get("dlops.pretrain_run_id")
    for r in client.search_runs([exp], filter_string="attributes.status = 'RUNNING'", max_results=1000):
        kind = r.data.tags.get(TAG_KIND)
        stray_pretrain = (kind == "pretrain" and r.info.run_id != keep
                          and int(r.info.start_time or 0) >= point.start_time)
        stray_ensemble = kind == "ensemble" and r.data.tags.get(TAG_SEARCH) == point.search_id
        if stray_pretrain or stray_ensemble:
            client.set_terminated(r.info.run_id, status="KILLED")


def reuse_pretrain(client: Any, parent_run_id: str) -> Optional[tuple[dict[str, Any], str]]:
    """The source network of a finished pretraining run of this search, so a resume does not
    pretrain again: ``(state_dict, run id)``, or None when there is none to reuse.

    The model is loaded from ``runs:/<pretrain run id>/model`` (MLflow 3 resolves it to the
    logged model of that run).
    """
    import mlflow

    rid = client.get_run(parent_run_id).data.tags.get("dlops.pretrain_run_id")
    if not rid:
        return None
    try:
        if client.get_run(rid).info.status != "FINISHED":
            return None
        model = mlflow.pytorch.load_model(f"runs:/{rid}/model", map_location="cpu")
    except Exception:
        return None
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, rid


PLAN_SNAPSHOT = "dlops-plan.json"


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


def repair_state_files(exp_dir: str) -> list[str]:
    """Before ``Tuner.restore``: make sure the newest state files Tune will read are whole.

    A ``kill -9`` can cut a state file short while it is being copied into the experiment
    folder. Then: a damaged searcher state is rebuilt from the plan snapshot that
    :class:`~dlops.search.searcher.StagedSearcher` writes atomically with each save (trials it
    had suggested that Tune's experiment state does not hold and that never started are dropped,
    so the stage barrier does not wait for them; those Tune restores stay); a damaged
    experiment state is put back from its whole backup (``dlops-backup.<name>``, written with
    each searcher save); else a damaged experiment or search-generator state is removed when an
    older one is there to fall back on.

    Returns:
        What was repaired, one line each.

    Raises:
        NothingToResumeError: a damaged state with nothing to fall back on (the message names the file).
    """
    import glob
    import os
    import shutil

    import ray.cloudpickle as cloudpickle

    from dlops.search.searcher import BACKUP_PREFIX

    repaired: list[str] = []

    def readable(path: str, kind: str) -> bool:
        try:
            with open(path, "rb") as f:
                if kind == "json":
                    json.load(f)
                else:
                    cloudpickle.load(f)
            return True
        except Exception:
            return False

    newest: dict[str, str] = {}
    for pattern, kind in (("experiment_state-*.json", "json"), ("search_gen_state-*.json", "pickle")):
        files = sorted(glob.glob(os.path.join(exp_dir, pattern)))
        while files and not readable(files[-1], kind):
            backup = os.path.join(exp_dir, BACKUP_PREFIX + os.path.basename(files[-1]))
            if kind == "json" and os.path.exists(backup) and readable(backup, kind):
                # the same checkpoint, written whole by the searcher's save: put it in place
                tmp = files[-1] + ".repair"
                shutil.copyfile(backup, tmp)
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
    states = sorted(glob.glob(os.path.join(exp_dir, "searcher-state-*.pkl")))
    if states and not readable(states[-1], "json"):
        snap = os.path.join(exp_dir, PLAN_SNAPSHOT)
        try:
            with open(snap) as f:
                state = json.load(f)
        except Exception:
            raise NothingToResumeError(f"--resume: {states[-1]} is damaged and {snap} cannot be read") from None
        # trials Tune will restore (in the experiment state it reads) or that started (a t-<id>
        # folder) stay in the plan; only suggestions Tune never recorded are dropped
        known = {p.name[2:] for p in Path(exp_dir).glob("t-*")} | _tune_trial_ids(newest.get("json"))
        for key in [k for k in state["suggested"] if k not in state["results"] and k not in known]:
            cfg = state["suggested"].pop(key)
            state["trial_stage"].pop(key, None)
            if cfg.get("stage") == state["stage"]:
                state["pending"].insert(0, {k: v for k, v in cfg.items() if k not in ("stage", "epochs")})
        tmp = states[-1] + ".repair"
        with open(tmp, "w") as f:
            json.dump(state, f)
        os.replace(tmp, states[-1])
        repaired.append(f"rebuilt {os.path.basename(states[-1])} from {PLAN_SNAPSHOT}")
    return repaired
