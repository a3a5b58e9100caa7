"""Resuming a search after its driver died: ``dlops run FILE --resume``.

The search to resume is the latest search run of the experiment (tag ``dlops.kind=search``)
whose status is not FINISHED (RUNNING after ``kill -9``, KILLED after Ctrl-C, FAILED after an
error). Its tag ``dlops.search_id`` names the Tune experiment directory
``<ray.storage_path>/<project name>-<search_id>``; :func:`dlops.search.tune.run_search` restores
it with ``Tuner.restore`` (finished trials are not run again, unfinished ones continue from
their last checkpoint, the staged searcher's plan comes back from the state Tune saved). The
parent run is reused (set back to RUNNING), every trial keeps its one run.

This module holds the MLflow side of a resume (Ray and MLflow are imported inside the functions);
repairing Tune's experiment folder is Tune-internal work and lives in
:mod:`dlops.search.tune._private` (``repair_state_files``, ``fill_missing_checkpoints``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from dlops.errors import NothingToResumeError
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
