"""``dlops submit``: run a project's main job on a Ray cluster through Ray's Jobs API.

The project file is validated here first (a bad file exits 2 and submits nothing). Then its folder
is uploaded as the job's ``working_dir`` (Ray's ``runtime_env``, minus run outputs) and the job's
entrypoint is ``python -m dlops.cli run FILE --set ... --tracking-uri URI`` on the cluster, whose
nodes must have dlops installed. Ray Jobs sets ``RAY_ADDRESS`` for the job, so its driver joins
that cluster.

The tracking URI must be one the cluster can reach: an ``http(s)://`` tracking server, or, for a
cluster on this machine only, an absolute SQLite path. A local store with a remote cluster is
refused (the runs would land on a head node's disk).
"""

from __future__ import annotations

from dlops.errors import SubmitError  # noqa: F401  (the kind lives in dlops.errors)
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional
from urllib.parse import urlparse

#: never uploaded with the working dir: run outputs, environments, checkpoints
EXCLUDES = ["mlruns/", "mlartifacts/", "ray_results/", ".venv/", "venv/", ".git/", "__pycache__/", "*.db",
            "*.db-journal", "*.ckpt", "checkpoint_*/", ".pytest_cache/"]

#: how often to retry while a fresh head's job agent is not up yet (2 s apart)
AGENT_RETRIES = 15

#: Ray job states that are final
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")




@dataclass
class Submission:
    submission_id: str
    address: str
    entrypoint: str
    working_dir: str


def is_loopback_address(address: str) -> bool:
    """``http://127.0.0.1:8265``, ``localhost``, ``[::1]``: the cluster is this machine."""
    host = urlparse(address if "://" in address else f"http://{address}").hostname or ""
    return host in ("127.0.0.1", "localhost", "::1") or host.startswith("127.")


def job_tracking_uri(tracking_uri: str, address: str) -> str:
    """The tracking URI the job will use.

    Raises:
        SubmitError: a local store (SQLite or a file path) with a cluster that is not on this
            machine, or a relative SQLite path (it would resolve inside the job's working dir).
    """
    if tracking_uri.startswith(("http://", "https://", "databricks", "postgresql", "mysql")):
        return tracking_uri
    if not is_loopback_address(address):
        raise SubmitError(f"--tracking-uri: {tracking_uri} is a store on this machine, which the cluster at {address} "
                          "cannot reach; pass a tracking server, e.g. --tracking-uri http://mlflow:5000")
    if "://" not in tracking_uri and ":" not in tracking_uri.split("/")[0]:  # a plain path: a file store
        return str(Path(tracking_uri).resolve())
    if tracking_uri.startswith("sqlite:///") and not tracking_uri.startswith("sqlite:////"):
        raise SubmitError(f"--tracking-uri: {tracking_uri} is relative; the job runs in an uploaded copy of the "
                          "project folder, so give an absolute path (sqlite:////abs/path/mlflow.db)")
    return tracking_uri


def build_entrypoint(project_name: str, overrides: list[str], tracking_uri: str, resume: bool = False) -> str:
    """The job's shell command (arguments quoted with :func:`shlex.quote`)."""
    import shlex

    args = ["python", "-m", "dlops.cli", "run", project_name]
    for o in overrides:
        args += ["--set", o]
    args += ["--tracking-uri", tracking_uri]
    if resume:
        args.append("--resume")
    return " ".join(shlex.quote(a) for a in args)


def input_paths(cfg: Any, project_dir: Path, address: str) -> list[str]:
    """Overrides for the job's input files (data folders and CSVs, a local ``model.weights``).

    ``load_config`` has made them absolute, taken from the project file's folder; in the job they
    would be taken from the uploaded copy of that folder. For a cluster on this machine they are
    passed as absolute paths. For another cluster a path inside the project folder is uploaded
    with it (left as is); one outside it cannot reach the cluster.

    Raises:
        SubmitError: naming the key, for a path outside the project folder with a remote cluster.
    """
    from dlops.config import PATH_KEYS
    from dlops.models.weights import parse_weights_ref

    found = [(f"{sec}.{key}", getattr(getattr(cfg, sec), key)) for sec, key in PATH_KEYS]
    w = cfg.model.weights
    if w and parse_weights_ref(w).kind == "file":
        found.append(("model.weights", w))
    out = []
    root = project_dir.resolve()
    for key, value in found:
        if not value or "://" in value:
            continue
        path = Path(value).resolve()
        if is_loopback_address(address):
            out.append(f"{key}={path}")
        elif root != path and root not in path.parents:
            raise SubmitError(f"{key}: {value} is outside the project folder {root}, which is all that is uploaded "
                              f"to the cluster at {address}; move it inside, or give a path every node sees")
    return out


def local_outputs(cfg: Any, tracking_uri: str, address: str, cwd: Optional[Path] = None) -> list[str]:
    """Overrides that keep a job's outputs where ``dlops run`` would put them here.

    The job runs in an uploaded copy of the project folder (under Ray's temp dir), so relative
    output paths would land there. For a cluster on this machine: ``ray.storage_path`` (if
    relative) becomes ``cwd/<path>``, and with a local store a new experiment's artifacts go to
    ``cwd/mlartifacts`` (``tracking.artifact_location``, unless the file sets it).
    """
    from dlops.tracking.store import DEFAULT_ARTIFACT_DIR, is_local_store

    if not is_loopback_address(address):
        return []
    base = (cwd or Path.cwd()).resolve()
    out = []
    if "://" not in cfg.ray.storage_path and not Path(cfg.ray.storage_path).is_absolute():
        out.append(f"ray.storage_path={base / cfg.ray.storage_path}")
    if is_local_store(tracking_uri) and cfg.tracking.artifact_location is None:
        out.append(f"tracking.artifact_location={(base / DEFAULT_ARTIFACT_DIR).as_uri()}")
    return out


def use_local_token() -> bool:
    """Send this machine's Ray token, as ``ray.init`` does: Ray >= 2.59 starts clusters with token
    authentication (https://docs.ray.io/en/latest/ray-security/token-auth.html) and the Jobs
    client only sends the token with ``RAY_AUTH_MODE=token``. When ``RAY_AUTH_MODE`` is unset and
    a token exists (``$RAY_AUTH_TOKEN``, ``$RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``), set
    it to ``token`` for this process. Returns True when it did."""
    import os

    if os.environ.get("RAY_AUTH_MODE"):
        return False
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    if os.environ.get("RAY_AUTH_TOKEN") or path.is_file():
        os.environ["RAY_AUTH_MODE"] = "token"
        return True
    return False


def submission_id(project: str, now: Optional[float] = None) -> str:
    """``dlops-<project>-<UTC time>-<4 hex>``: unique, readable in ``ray job list``."""
    import os

    t = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now if now is not None else time.time()))
    return f"dlops-{re.sub(r'[^A-Za-z0-9_-]', '-', project)}-{t}-{os.urandom(2).hex()}"


def submit(project_file: str, overrides: list[str], address: str, tracking_uri: str, resume: bool = False,
           env_vars: Optional[dict[str, str]] = None) -> Submission:
    """Validate ``project_file`` with ``overrides`` and submit its main job to ``address``.

    Args:
        project_file: the project file; its folder becomes the job's working dir.
        overrides: ``KEY.PATH=VALUE`` as for ``dlops run --set``.
        address: the Jobs API of the cluster (``http://HEAD:8265``).
        tracking_uri: see :func:`job_tracking_uri`.
        resume: pass ``--resume`` to the job.
        env_vars: extra environment variables for the job.

    Returns:
        The submission (its id is what ``ray job status`` / ``ray job logs`` take).

    Raises:
        dlops.config.ConfigError: a bad project file (nothing submitted).
        SubmitError: a tracking URI the cluster cannot reach, or the Jobs API cannot be reached.
    """
    from dlops.config import load_config

    cfg = load_config(project_file, overrides)
    uri = job_tracking_uri(tracking_uri, address)
    if is_loopback_address(address):  # a remote cluster may reach a server that this machine cannot
        from dlops.tracking.store import TrackingError, check_tracking_server

        try:
            check_tracking_server(uri)
        except TrackingError as exc:
            raise SubmitError(str(exc)) from None
    path = Path(project_file).resolve()
    extra = input_paths(cfg, path.parent, address) + local_outputs(cfg, uri, address)
    entry = build_entrypoint(path.name, list(overrides) + extra, uri, resume)
    use_local_token()
    from ray.job_submission import JobSubmissionClient

    try:
        client = JobSubmissionClient(address)
    except Exception as exc:  # noqa: BLE001  (Ray raises ConnectionError, RuntimeError, ValueError ...)
        raise SubmitError(f"--address: cannot reach the Ray Jobs API at {address}: {exc}") from None
    sid = submission_id(cfg.name)
    env = {"MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false", **(env_vars or {})}
    runtime_env = {"working_dir": str(path.parent), "excludes": EXCLUDES, "env_vars": env}
    for attempt in range(AGENT_RETRIES + 1):
        try:
            client.submit_job(entrypoint=entry, submission_id=sid, runtime_env=runtime_env,
                              metadata={"dlops.project": cfg.name, "dlops.project_file": path.name})
            break
        except RuntimeError as exc:
            # a head that has just started answers 500 until its job agent is up
            if "No available agent" in str(exc) and attempt < AGENT_RETRIES:
                time.sleep(2.0)
                continue
            raise SubmitError(f"--address: the Ray Jobs API at {address} refused the job: {exc}") from None
    return Submission(sid, address, entry, str(path.parent))


def wait(sub: Submission, out: Callable[[str], None], poll_s: float = 1.0, timeout_s: Optional[float] = None) -> str:
    """Follow the job: print its new log lines until it ends. Returns the final status
    (``SUCCEEDED``, ``FAILED``, ``STOPPED``).

    Raises:
        TimeoutError: ``timeout_s`` passed first (the job keeps running).
    """
    from ray.job_submission import JobSubmissionClient

    use_local_token()
    client = JobSubmissionClient(sub.address)
    shown = 0
    t0 = time.time()
    while True:
        status = str(client.get_job_status(sub.submission_id).value)
        logs = client.get_job_logs(sub.submission_id)
        if len(logs) > shown:
            out(logs[shown:].rstrip("\n"))
            shown = len(logs)
        if status in TERMINAL:
            return status
        if timeout_s is not None and time.time() - t0 > timeout_s:
            raise TimeoutError(f"job {sub.submission_id} still {status} after {timeout_s} s")
        time.sleep(poll_s)


def exit_code(status: str) -> int:
    """0 for SUCCEEDED, 1 for FAILED, 130 for STOPPED (interrupted)."""
    return {"SUCCEEDED": 0, "STOPPED": 130}.get(status, 1)


def describe(job: Any) -> str:
    """One line for a ``JobDetails`` (``ray.job_submission``)."""
    return f"{job.submission_id}  {job.status}  {job.entrypoint}"
