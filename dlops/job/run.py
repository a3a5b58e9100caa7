"""``run_project``: open the job's context (store, Ray, signals), run the phases in order with their
lifecycle hooks, and end every open run whatever happens.

Every run ends FINISHED, FAILED or KILLED, also on Ctrl-C, SIGTERM or an exception.
"""

from __future__ import annotations

import math
import os
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from dlops.config import ProjectConfig
from dlops.errors import DataError, NothingToResumeError
from dlops.job.context import JobContext
from dlops.job.phases import PHASES
from dlops.job.summary import RunSummary
from dlops.tracking.store import TAG_KIND, TAG_SEARCH


def run_project(cfg: ProjectConfig, tracking_uri: Optional[str] = None, ray_address: Optional[str] = None,
                out: Callable[[str], None] = print, resume: bool = False) -> RunSummary:
    """Run the main job (:mod:`dlops.job.phases`) and return its summary.

    Args:
        cfg: a validated project.
        tracking_uri: overrides ``tracking.uri`` (else ``$MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db``).
        ray_address: the Ray cluster; else ``$RAY_ADDRESS``, else ``ray.address``, else a local Ray
            on 127.0.0.1. The environment comes before the file here, unlike the tracking URI:
            Ray Jobs sets ``$RAY_ADDRESS`` for a job's driver, so a ``dlops submit`` job joins the
            cluster it was submitted to whatever address the file names.
        out: where progress lines go.
        resume: continue the latest unfinished search of the experiment (same parent run,
            same trials; see :mod:`dlops.search.resume`) instead of starting a new one.

    Raises:
        DlopsError: bad input (data, store, resources, weights, plugin), found before any run is
            created where it can be; ``SearchFailedError`` (failure budget, nothing to register)
            after the search's runs ended FAILED.
        KeyboardInterrupt: re-raised after every open run is marked KILLED (Ctrl-C). On SIGTERM
            the open runs end KILLED and the process exits 143 (:mod:`dlops.signals`).
    """
    from dlops import signals
    from dlops.cluster import init_ray
    from dlops.console import quiet_libraries
    from dlops.tracking.store import check_tracking_server, resolve_tracking_uri

    quiet_libraries()
    uri = resolve_tracking_uri(tracking_uri, cfg.tracking.uri)
    check_tracking_server(uri)  # an unreachable server is bad input, found before anything starts
    data = load_data(cfg)  # bad data is found before Ray starts or any run is created
    source_state = check_weights(cfg, data, uri)  # so are bad weights
    changes = check_resume(cfg, uri) if resume else []  # so is a change that would alter the search
    t_ray = time.perf_counter()
    started = init_ray(ray_address or os.environ.get("RAY_ADDRESS") or cfg.ray.address, cfg.ray.num_cpus,
                       cfg.ray.num_gpus)
    t_ray = time.perf_counter() - t_ray
    sigterm = signals.install()  # after ray.init, whose native SIGTERM handler aborts: see dlops.signals
    try:
        ctx = open_context(cfg, data, uri, out, resume, changes)
        ctx.summary.phase_s["ray_start"] = t_ray
        ctx.source_state = source_state
        signals.set_cleanup(lambda: end_open(ctx, "KILLED", timeout=10.0))  # a SIGTERM: see dlops.signals
        run_phases(ctx)
        return ctx.summary
    finally:
        signals.restore(sigterm)
        if started:
            import ray

            ray.shutdown()


def load_data(cfg: ProjectConfig) -> Any:
    """The project's task data (:func:`dlops.data.sources.load_task`), checked
    (:func:`dlops.data.checks.check_task`; its warnings in ``data.warnings``).

    Raises:
        DataError: a folder, file or label that cannot be used, or data that fail a check
            (the message names it, the counts and a fix).
    """
    from dlops.data.checks import check_task
    from dlops.data.sources import load_task

    key = {"digits": "data", "imagefolder": "data.target_dir", "list": "data.target_csv"}[cfg.data.source]
    try:
        data = load_task(cfg.data, cfg.seed, cfg.task)
    except (ValueError, OSError) as exc:  # DataError included: the message gets the key it is about
        text = str(exc)
        raise DataError(text if text.startswith("data") else f"{key}: {text}") from None
    d = cfg.data
    where = {"digits": "data (digits)", "imagefolder": d.target_dir, "list": d.target_csv}[d.source]
    data.warnings = check_task(data, cfg.human_level_error, str(where), d.source)  # before any trial (dlops.data.checks)
    return data


def check_resume(cfg: ProjectConfig, uri: str) -> list[dict[str, Any]]:
    """Before Ray starts: compare the project file with the one the search to resume started
    from (:func:`dlops.search.resume.check_resume_changes`). Reads the store only.

    Returns:
        The safe changes it accepts (recorded on the search run once it is reopened).

    Raises:
        ConfigError: a change that would alter the search (its keys named); the search run is
            left as it was.
        NothingToResumeError: no store at ``uri``, no experiment of the project in it, or no
            unfinished search in the experiment (found here, before Ray starts).
    """
    from mlflow import MlflowClient

    from dlops.search.resume import check_resume_changes, find_resumable

    if store_missing(uri):
        raise NothingToResumeError(f"--resume: there is no store at {uri} to resume from; "
                                   "run without --resume to start a new search")
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(cfg.experiment_name)
    if exp is None:
        raise NothingToResumeError(f"--resume: the store {uri} has no experiment {cfg.experiment_name!r} to resume "
                                   "from; run without --resume to start a new search")
    point = find_resumable(client, exp.experiment_id, cfg.ray.storage_path, cfg.name)
    return check_resume_changes(client, point, cfg.model_dump(mode="json"))


def open_context(cfg: ProjectConfig, data: Any, uri: str, out: Callable[[str], None], resume: bool,
                 resume_changes: Optional[list[dict[str, Any]]] = None) -> JobContext:
    """Check resources and the source model, open the store and the experiment, and create (or,
    with ``resume``, reopen) the search run. A request the cluster cannot meet leaves no run and no
    new store. ``resume_changes`` (from :func:`check_resume`, which has already refused a missing
    store or experiment before Ray started) are recorded on the reopened run.

    Raises:
        ResourceError, NothingToResumeError, DataError, TrackingError: as :func:`run_project`.
    """
    import mlflow
    from mlflow import MlflowClient

    from dlops.search.resources import check_resources
    from dlops.tracking.store import check_artifact_root, ensure_experiment

    check_resources(cfg.search.resources.cpu, cfg.search.resources.gpu, cfg.ray.autoscaler)
    mlflow.set_tracking_uri(uri)
    os.environ["MLFLOW_TRACKING_URI"] = uri  # reaches Ray workers started from here explicitly
    client = MlflowClient(uri)
    existed = client.get_experiment_by_name(cfg.experiment_name) is not None
    exp_id = ensure_experiment(client, cfg.experiment_name, uri, cfg.tracking.artifact_location)
    if not cfg.tracking.artifact_location:  # an explicit location is the user's (e.g. a shared NFS folder)
        check_artifact_root(client, exp_id, uri, created=not existed)  # before any run or training
    mlflow.set_experiment(experiment_id=exp_id)
    if resume:
        from dlops.search.resume import find_resumable, reopen

        point = find_resumable(client, exp_id, cfg.ray.storage_path, cfg.name)
        reopen(client, point)
        parent_id, search_id = point.parent_run_id, point.search_id
        out(f"[resume] search {search_id} (parent run {parent_id}, was {point.status})")
        if resume_changes:
            from dlops.search.resume import record_resume_changes

            record_resume_changes(client, parent_id, resume_changes)
            out("  resume: accepted changes " + ", ".join(f"{c['key']}: {c['old']} -> {c['new']}" for c in resume_changes)
                + " (tag dlops.resume_changes)")
    else:
        search_id = uuid.uuid4().hex[:12]
        parent_id = client.create_run(exp_id, run_name=f"{cfg.name}-search-{search_id[:8]}",  # unique per search
                                      tags={TAG_KIND: "search", TAG_SEARCH: search_id}).info.run_id
    return JobContext(config=cfg, data=data, client=client, tracking_uri=uri, experiment_id=exp_id,
                      search_run_id=parent_id, search_id=search_id, out=out, resume=resume, open_runs=[parent_id],
                      summary=RunSummary(tracking_uri=uri, experiment_id=exp_id, search_run_id=parent_id))


def store_missing(uri: str) -> bool:
    """A ``sqlite:///`` store whose file does not exist yet (nothing to resume from, no registry)."""
    return uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).exists()


def check_weights(cfg: ProjectConfig, data: Any, uri: str) -> Optional[dict[str, Any]]:
    """``model.weights`` checked before Ray starts or any run is created: a registered model must
    exist in the store; a state-dict file is read and fitted to the project's network now (and
    returned, so the pretrain phase does not read it again).

    Returns:
        The source network's state dict for a file; None for ``pretrain``, none, a registered
        model or a torchvision weights name (those load in the pretrain phase).

    Raises:
        DataError: naming ``model.weights``, the file or model, and the reason.
    """
    from dlops.models.weights import load_source_state, parse_weights_ref

    w = cfg.model.weights or ""
    if not w or w == "pretrain":
        return None
    ref = parse_weights_ref(w)
    if ref.kind == "registry":
        from mlflow import MlflowClient

        check_registered_model(MlflowClient(uri) if not store_missing(uri) else None, w, uri)
        return None
    if ref.kind == "file":
        from dlops.job.source import make_spec

        return load_source_state(ref, make_spec(cfg, data))
    return None


def check_registered_model(client: Any, uri_or_alias: str, tracking_uri: str) -> None:
    """``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` must exist before anything starts.

    Raises:
        DataError: naming the model, the alias or version, and the store.
    """
    from dlops.tracking.registry import get_model_version

    if client is None:
        raise DataError(f"model.weights: {uri_or_alias!r}: the store {tracking_uri} does not exist yet")
    try:
        get_model_version(client, uri_or_alias)
    except LookupError:
        raise DataError(f"model.weights: no registered model version {uri_or_alias!r} in {tracking_uri}") from None


def run_phases(ctx: JobContext) -> None:
    """Run every phase in order, each timed and wrapped in its lifecycle hooks; then end the search
    run FINISHED. On any error the open runs end FAILED (KILLED on Ctrl-C) and the search run
    gets the error as tag ``dlops.error``; the error is re-raised."""
    from dlops.plugins import get_registry

    hook = get_registry().hook
    try:
        for name, phase in PHASES:
            with timed(ctx, name):
                hook.dlops_before_phase(phase=name, context=ctx)
                try:
                    phase(ctx)
                except BaseException as exc:
                    try:
                        hook.dlops_on_phase_error(phase=name, context=ctx, error=exc)
                    except Exception:  # noqa: BLE001  (an error hook must not hide the original error)
                        pass
                    raise
                hook.dlops_after_phase(phase=name, context=ctx)
        log_totals(ctx)
        ctx.client.set_terminated(ctx.search_run_id, "FINISHED")
    except BaseException as exc:
        end_open(ctx, "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
        if not isinstance(exc, KeyboardInterrupt):
            try:
                ctx.client.set_tag(ctx.search_run_id, "dlops.error", f"{type(exc).__name__}: {exc}"[:5000])
            except Exception:  # noqa: BLE001
                pass
        raise


@contextmanager
def timed(ctx: JobContext, name: str) -> Iterator[None]:
    """Print ``[name] ...`` and ``[name] 1.2 s``; record the seconds in ``summary.phase_s``."""
    ctx.out(f"[{name}] ...")
    t0 = time.perf_counter()
    try:
        yield
    finally:
        ctx.summary.phase_s[name] = time.perf_counter() - t0
        ctx.out(f"[{name}] {ctx.summary.phase_s[name]:.1f} s")


def end_open(ctx: JobContext, status: str, timeout: Optional[float] = None) -> None:
    """End this job's runs still RUNNING with ``status`` (MLflow only: Ray may be gone)."""
    from dlops.tracking.store import end_open_runs

    end_open_runs(ctx.client, ctx.open_run_ids(timeout), status)


def log_totals(ctx: JobContext) -> None:
    """The search run's ``time/<phase>_s`` (seconds) and ``best/<metric>`` metrics."""
    from mlflow.entities import Metric

    s, ts = ctx.summary, int(time.time() * 1000)
    ctx.client.log_batch(ctx.search_run_id,
                         metrics=[Metric(f"time/{k}_s", v, ts, 0) for k, v in s.phase_s.items()]
                         + [Metric(f"best/{k}", v, ts, 0) for k, v in s.best_metrics.items() if math.isfinite(v)])
