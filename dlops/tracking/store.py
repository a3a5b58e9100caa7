"""Where MLflow logs: the tracking URI, the experiment, and ending runs that are still open."""

from __future__ import annotations

from dlops.errors import TrackingError  # noqa: F401  (the kind lives in dlops.errors)
import os
from pathlib import Path
from typing import Any, Optional

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
DEFAULT_ARTIFACT_DIR = "mlartifacts"

#: tags on every dlops run
TAG_KIND = "dlops.kind"  # pretrain | search | stage | trial | ensemble | report
TAG_SEARCH = "dlops.search_id"
TAG_STAGE = "dlops.stage"
TAG_STAGE_METHOD = "dlops.stage_method"  # on trial runs: random | sobol | gp | confirm (their stage's method)
TAG_TRIAL = "dlops.trial_id"
TAG_PARENT = "mlflow.parentRunId"


def resolve_tracking_uri(cli_uri: Optional[str], file_uri: Optional[str]) -> str:
    """``--tracking-uri`` > project file > ``$MLFLOW_TRACKING_URI`` > ``sqlite:///mlflow.db`` (cwd).

    A relative SQLite path is made absolute, so Ray workers and later commands find the same file.
    """
    uri = cli_uri or file_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        rel = uri[len("sqlite:///"):]
        uri = "sqlite:///" + str(Path(rel).resolve())
    return uri




def check_tracking_server(uri: str, timeout_s: float = 5.0) -> None:
    """For an ``http(s)://`` tracking URI, check that an MLflow server answers its ``/health``
    endpoint within ``timeout_s`` seconds (MLflow's own client would retry for minutes).

    Raises:
        TrackingError: naming the URI and the reason (refused, timed out, not MLflow).
    """
    import urllib.error
    import urllib.request

    if not uri.startswith(("http://", "https://")):
        return
    url = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as r:
            if r.status != 200:
                raise TrackingError(f"--tracking-uri: {url} answered HTTP {r.status}, not an MLflow server")
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):  # a server behind authentication: MLflow's client has the credentials
            return
        raise TrackingError(f"--tracking-uri: {url} answered HTTP {exc.code}; is {uri} an MLflow server?") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise TrackingError(f"--tracking-uri: no MLflow tracking server answers at {uri} ({reason})") from None


def is_local_store(uri: str) -> bool:
    return uri.startswith("sqlite:") or uri.startswith("file:") or "://" not in uri


def ensure_experiment(client: Any, name: str, uri: str, artifact_location: Optional[str] = None) -> str:
    """Get or create the experiment; with a local store its artifacts go to ``./mlartifacts``
    (absolute), with a tracking server to the server's default (artifact proxy). It is tagged
    ``mlflow.experimentKind = custom_model_development`` (MLflow 3.x opens it as model training,
    not GenAI) unless it has a kind already."""
    from dlops.tracking.context import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, set_experiment_kind

    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            client.restore_experiment(exp.experiment_id)
        set_experiment_kind(client, exp.experiment_id)  # model training, not GenAI (unless a kind is set)
        return exp.experiment_id
    loc = artifact_location
    if loc is None and is_local_store(uri):
        loc = Path(DEFAULT_ARTIFACT_DIR).resolve().as_uri()
    return client.create_experiment(name, artifact_location=loc, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})


def end_open_runs(client: Any, run_ids: list[str], status: str = "KILLED") -> list[str]:
    """Terminate every run in ``run_ids`` that is still RUNNING; returns those it ended."""
    ended = []
    for rid in run_ids:
        try:
            if client.get_run(rid).info.status == "RUNNING":
                client.set_terminated(rid, status=status)
                ended.append(rid)
        except Exception:  # a run that cannot be read cannot be ended either; keep going
            continue
    return ended


def check_artifact_root(client: Any, experiment_id: str, uri: str, created: bool = False) -> None:
    """With a tracking server (``http(s)://``), the experiment's artifacts must go where both the
    server and every client can reach them: the server's artifact proxy (``mlflow-artifacts:``,
    ``mlflow server --serve-artifacts``) or an object store (``s3://``, ``gs://``, ...). A
    ``file://`` (or plain path) root is a folder on the server's machine: a client would write its
    artifacts to its own disk instead, where the server and other clients never see them.

    Args:
        created: the experiment was just created for this check's caller; it is deleted again
            when the check fails (nothing is left behind).

    Raises:
        TrackingError: naming the experiment's artifact location and how to fix the server.
    """
    if not uri.startswith(("http://", "https://")):
        return
    loc = client.get_experiment(experiment_id).artifact_location or ""
    if loc.startswith("file:") or "://" not in loc and not loc.startswith("mlflow-artifacts:"):
        if created:
            try:
                client.delete_experiment(experiment_id)
            except Exception:  # noqa: BLE001
                pass
        raise TrackingError(
            f"--tracking-uri {uri}: the experiment's artifact location {loc!r} is a folder on the server's "
            "machine; this client would write its models there on its own disk, where the server cannot "
            "serve them. Start the server with --serve-artifacts (artifacts proxied as mlflow-artifacts:/) "
            "or an object store every client reaches (--default-artifact-root s3://...), or set "
            "tracking.artifact_location to storage both see")
