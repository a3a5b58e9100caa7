"""``dlops submit``: run a project's main job on a Ray cluster through Ray's Jobs API.

The project file is validated here first (a bad file exits 2 and submits nothing). Then its folder
is uploaded as the job's ``working_dir`` (Ray's ``runtime_env``, minus run outputs). A first tiny
job (:data:`PROBE`) finds the cluster's Python that has dlops: Ray runs a job's entrypoint with the
*first* ``python`` on the head's ``PATH``, which need not be the Python that runs Ray (a head
started with ``.venv/bin/ray start --head`` from a shell without the venv). When no interpreter
there imports dlops, :func:`submit` raises :class:`SubmitError` saying what to install, before the
real job is submitted. The real job's entrypoint is ``/abs/python -m dlops.cli run FILE --set ...
--tracking-uri URI``. Ray Jobs sets ``RAY_ADDRESS`` for the job, so its driver joins that cluster.

The tracking URI must be one the cluster can reach: an ``http(s)://`` tracking server, or, for a
cluster on this machine only, an absolute SQLite path. A local store with a remote cluster is
refused (the runs would land on a head node's disk).
"""

from __future__ import annotations

from dlops.cluster import use_local_token  # shared with `dlops run`, `validate` and `serve`
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

#: the module whose import makes an interpreter fit to run the job
JOB_MODULE = "dlops.cli"

#: seconds the probe job may take (it waits for the working dir's upload and runtime env set-up)
PROBE_TIMEOUT_S = 180.0

# The probe job's shell command (POSIX sh; Linux /proc for the first candidate). Candidates, in order:
#  1. the Python the head's raylet starts Ray workers with, i.e. the one that ran `ray start`: the
#     first word of its `--python_worker_command=` argument. The job supervisor that runs this
#     command is such a worker (a child of the raylet), but Ray rewrites its process title
#     (`ray::JobSupervisor`) and /proc/PID/exe resolves a venv's symlink to the base interpreter,
#     so the raylet's command line is the one place on the node that names it. Ray has no public
#     API for it; tests/test_submit.py checks this against a real `ray start --head` of this Ray.
#  2. `python3` and `python` on the job's PATH (a container image or an activated environment).
# It prints `dlops-probe: RAY PATH` for candidate 1, then tries each candidate with `import {module}`:
# the first that works prints `dlops-probe: OK PATH` (its sys.executable, absolute), each one before
# it `dlops-probe: NO CANDIDATE: last error line`.
PROBE = r"""p=$PPID; found=""; i=0
while [ -z "$found" ] && [ "$i" -lt 6 ] && [ -r "/proc/$p/cmdline" ]; do
  found=$(tr '\0' '\n' < "/proc/$p/cmdline" | sed -n 's/^--python_worker_command=\([^ ]*\).*/\1/p' | head -n 1)
  p=$(sed 's/.*) [A-Za-z] \([0-9]*\) .*/\1/' "/proc/$p/stat"); i=$((i + 1))
done
[ -n "$found" ] && echo "dlops-probe: RAY $found"
for py in $found python3 python; do
  if out=$("$py" -c 'import sys, {module}; print("dlops-probe: OK " + sys.executable)' 2>&1); then
    echo "$out" | grep '^dlops-probe: OK ' | head -n 1; exit 0
  fi
  echo "dlops-probe: NO $py: $(echo "$out" | tail -n 1)"
done"""




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


def build_entrypoint(project_name: str, overrides: list[str], tracking_uri: str, resume: bool = False,
                     python: str = "python") -> str:
    """The job's shell command (arguments quoted with :func:`shlex.quote`); ``python`` is the
    cluster's interpreter (an absolute path from :func:`find_job_python`)."""
    import shlex

    args = [python, "-m", "dlops.cli", "run", project_name]
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


@dataclass
class ProbeResult:
    """What the probe job found: ``python``, the interpreter that imports dlops (None when none
    does); ``ray_python``, the one the head's Ray runs (None when not found); ``failed``, each
    candidate that did not import it, as ``CANDIDATE: last error line``."""

    python: Optional[str]
    ray_python: Optional[str]
    failed: list[str]


def parse_probe(logs: str) -> ProbeResult:
    """The probe job's answer, from its logs (lines ``dlops-probe: OK|RAY|NO ...``)."""
    got: dict[str, list[str]] = {"OK": [], "RAY": [], "NO": []}
    for line in logs.splitlines():
        head, _, rest = line.partition(" ")
        kind, _, value = rest.partition(" ")
        if head == "dlops-probe:" and kind in got:
            got[kind].append(value.strip())
    return ProbeResult((got["OK"] or [None])[0], (got["RAY"] or [None])[0], got["NO"])


def _submit_with_retries(client: Any, address: str, **kwargs: Any) -> None:
    for attempt in range(AGENT_RETRIES + 1):
        try:
            client.submit_job(**kwargs)
            return
        except RuntimeError as exc:
            # a head that has just started answers 500 until its job agent is up
            if "No available agent" in str(exc) and attempt < AGENT_RETRIES:
                time.sleep(2.0)
                continue
            raise SubmitError(f"--address: the Ray Jobs API at {address} refused the job: {exc}") from None


def find_job_python(client: Any, address: str, runtime_env: dict[str, Any], sid: str, module: str = JOB_MODULE,
                    timeout_s: float = PROBE_TIMEOUT_S) -> str:
    """Run the probe job (:data:`PROBE`, submission id ``SID-probe``) with the real job's
    ``runtime_env`` and return the absolute path of the cluster's Python that imports ``module``.

    Args:
        client: a ``ray.job_submission.JobSubmissionClient`` of ``address``.
        address: the Jobs API address (for messages).
        runtime_env: the real job's runtime env (its working dir, pip packages, env vars apply).
        sid: the real job's submission id.
        module: the module the interpreter must import.
        timeout_s: seconds to wait for the probe job, in s.

    Raises:
        SubmitError: no interpreter there imports ``module`` (the message names each candidate,
            its error and what to install), the probe job failed or did not end in ``timeout_s``.
    """
    probe_id = f"{sid}-probe"
    _submit_with_retries(client, address, entrypoint=PROBE.replace("{module}", module), submission_id=probe_id,
                         runtime_env=runtime_env, metadata={"dlops.probe": "python"})
    t0 = time.time()
    while True:
        status = str(client.get_job_status(probe_id).value)
        if status in TERMINAL:
            break
        if time.time() - t0 > timeout_s:
            client.stop_job(probe_id)
            raise SubmitError(f"--address: the check for dlops on the cluster at {address} (job {probe_id}) did not "
                              f"finish in {timeout_s:.0f} s; nothing else was submitted")
        time.sleep(0.25)
    logs = client.get_job_logs(probe_id)
    found = parse_probe(logs)
    if found.python:
        return found.python
    if status != "SUCCEEDED" or not found.failed:
        tail = "\n".join(logs.strip().splitlines()[-5:])
        raise SubmitError(f"--address: the check for dlops on the cluster at {address} (job {probe_id}) "
                          f"{status}; nothing else was submitted:\n{tail}")
    where = (f"the Python that runs Ray there ({found.ray_python} -m pip install dlops)" if found.ray_python
             else "the head's environment, the one that runs `ray start` (pip install dlops)")
    raise SubmitError(f"the Ray cluster at {address} has no Python that imports {module} (tried "
                      f"{'; '.join(found.failed)}); install dlops into {where}, or into your image, or give "
                      "the job a runtime_env that installs it; nothing was submitted")


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
        SubmitError: a tracking URI the cluster cannot reach, the Jobs API cannot be reached, or
            the cluster has no Python with dlops (see :func:`find_job_python`); nothing submitted
            but the probe job.
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
    use_local_token()
    from ray.job_submission import JobSubmissionClient

    try:
        client = JobSubmissionClient(address)
    except Exception as exc:  # noqa: BLE001  (Ray raises ConnectionError, RuntimeError, ValueError ...)
        raise SubmitError(f"--address: cannot reach the Ray Jobs API at {address}: {exc}") from None
    sid = submission_id(cfg.name)
    env = {"MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false", **(env_vars or {})}
    runtime_env = {"working_dir": str(path.parent), "excludes": EXCLUDES, "env_vars": env}
    python = find_job_python(client, address, runtime_env, sid)
    entry = build_entrypoint(path.name, list(overrides) + extra, uri, resume, python=python)
    _submit_with_retries(client, address, entrypoint=entry, submission_id=sid, runtime_env=runtime_env,
                         metadata={"dlops.project": cfg.name, "dlops.project_file": path.name})
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
