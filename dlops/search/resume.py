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


# ---- resume with a changed project file ------------------------------------------------------

#: keys a resume may change: they do not alter which configurations run or how they are scored
#: (a prefix covers every key under it). ``search.stages[k].epochs`` of a stage that has not
#: started is safe too (:func:`classify_changes`); anything else is refused.
SAFE_RESUME_KEYS = ("search.max_failures", "search.max_concurrent", "human_level_error", "report", "ensemble",
                    "registry", "ray.address", "ray.num_cpus", "ray.num_gpus", "ray.autoscaler")

#: tag on the search run: the safe changes each resume accepted (JSON list of ``{key, old, new, resume}``)
TAG_RESUME_CHANGES = "dlops.resume_changes"


def project_changes(old: Any, new: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """The keys where two project dicts (``ProjectConfig.model_dump(mode="json")``) differ. Pure.

    Dicts are compared key by key (``search.space.lr.low``), lists of equal length item by item
    (``search.stages[1].epochs``); a list whose length changed is one change (``search.stages``).
    A key only one side has is skipped (a newer or older schema's default), except a parameter
    added to or dropped from ``search.space``.

    Returns:
        ``[(key, old value, new value), ...]`` in key order (a missing key's value is None).
    """
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[tuple[str, Any, Any]] = []
        for k in sorted(set(old) | set(new), key=str):
            key = f"{prefix}.{k}" if prefix else str(k)
            if (k not in old or k not in new) and prefix != "search.space":
                continue  # a key of one dlops version's schema only (its default), not a change of the file
            out += project_changes(old.get(k), new.get(k), key)
        return out
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        out = []
        for i, (a, b) in enumerate(zip(old, new)):
            out += project_changes(a, b, f"{prefix}[{i}]")
        return out
    return [] if old == new else [(prefix, old, new)]


def classify_changes(changes: list[tuple[str, Any, Any]], started_stages: int) -> tuple[list[str], list[str]]:
    """Split changed keys into ``(refused, accepted)``. Pure.

    Accepted: a key under :data:`SAFE_RESUME_KEYS`, and ``search.stages[k].epochs`` for a stage
    ``k >= started_stages`` (no trial of it has run: its trials train for the new number of epochs).
    Everything else (the space, the stages' trials and methods, the metric, mode, constraints,
    zoom, data, model, seed, ...) would alter the search and is refused.

    Args:
        changes: from :func:`project_changes`.
        started_stages: how many stages have at least one trial (0 when none ran).
    """
    import re

    refused, accepted = [], []
    for key, _, _ in changes:
        m = re.fullmatch(r"search\.stages\[(\d+)\]\.epochs", key)
        if any(key == s or key.startswith(s + ".") for s in SAFE_RESUME_KEYS) or (m and int(m.group(1)) >= started_stages):
            accepted.append(key)
        else:
            refused.append(key)
    return refused, accepted


def check_resume_changes(client: Any, point: ResumePoint, project: dict[str, Any]) -> list[dict[str, Any]]:
    """Compare ``project`` (the file as this resume reads it, ``model_dump(mode="json")``) with
    the one the search started from (artifact ``project.json`` of its run). Reads only.

    Returns:
        The accepted changes, ``[{"key", "old", "new"}, ...]`` (empty when nothing changed, or
        when the search run has no ``project.json``: its driver died before logging it, no trial ran).

    Raises:
        ConfigError: a change that would alter the search; the message names every such key with
            its old and new value, and says to undo it or start a new search (nothing is changed).
    """
    import json
    import tempfile

    from dlops.errors import ConfigError

    with tempfile.TemporaryDirectory() as td:
        try:
            path = client.download_artifacts(point.parent_run_id, "project.json", td)
        except Exception:  # noqa: BLE001 - no project logged yet: nothing ran to compare with
            return []
        with open(path) as f:
            started_from = json.load(f)
    changes = project_changes(started_from, project)
    if not changes:
        return []
    runs = client.search_runs([client.get_run(point.parent_run_id).info.experiment_id],
                              filter_string=f"tags.`{TAG_SEARCH}` = '{point.search_id}' and tags.`{TAG_KIND}` = 'trial'",
                              max_results=50000)
    stages = [int(r.data.tags.get("dlops.stage", 0)) for r in runs]
    started = max(stages) + 1 if stages else 0
    refused, accepted = classify_changes(changes, started)
    if refused:
        shown = "; ".join(f"{k}: {json.dumps(o)} -> {json.dumps(n)}" for k, o, n in changes if k in refused)
        raise ConfigError(
            f"--resume: the project file differs from the one search {point.search_id} started from in keys that "
            f"would alter the search ({shown}); undo these changes to resume, or run without --resume to start a "
            f"new search (safe to change on a resume: {', '.join(SAFE_RESUME_KEYS)}, and the epochs of stages "
            f"not started yet: stage {started} on)")
    return [{"key": k, "old": o, "new": n} for k, o, n in changes if k in accepted]


def record_resume_changes(client: Any, parent_run_id: str, changes: list[dict[str, Any]]) -> None:
    """Add ``changes`` (from :func:`check_resume_changes`) to tag :data:`TAG_RESUME_CHANGES` of the
    search run, each with the resume's number (tag ``dlops.resumes``)."""
    import json

    if not changes:
        return
    tags = client.get_run(parent_run_id).data.tags
    n = int(tags.get("dlops.resumes", "1"))
    old = json.loads(tags.get(TAG_RESUME_CHANGES, "[]"))
    text = json.dumps(old + [dict(c, resume=n) for c in changes])
    client.set_tag(parent_run_id, TAG_RESUME_CHANGES, text[:5000])
