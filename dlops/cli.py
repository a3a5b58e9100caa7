"""The ``dlops`` command line: thin. Parse, load the project file, call the library.

Exit codes, mapped in one place (:class:`DlopsGroup`): 0 success; 2 bad input (project file,
override, data, resources, plugin name, tracking store, CLI option): any :class:`~dlops.errors.DlopsError`,
one clear line, nothing half-written (for the registry commands: an unknown model, version or alias,
a version of another model, nothing to roll back to: :class:`~dlops.errors.RegistryError`, nothing
changed); 1 a search that failed as a whole (the failure budget, nothing to register), or a
promotion the gate refused (:class:`~dlops.errors.GateRefusedError`, its reason on stderr); 130 interrupted (Ctrl-C; every open MLflow run is marked KILLED);
143 SIGTERM during ``dlops run`` (:mod:`dlops.signals`).
"""

from __future__ import annotations

import atexit
import json
import sys
from typing import Any, NoReturn, Optional

import click

from dlops import __version__
from dlops.errors import EXIT_BAD_INPUT, DlopsError
from dlops.serving import DEFAULT_MAX_REQUEST_MB


def _skip_the_final_collection() -> None:
    """At exit, after every other ``atexit`` handler (registered first, so it runs last: Ray's
    shutdown, MLflow's flushes and ``weakref.finalize`` run before it): :func:`gc.freeze`, so the
    interpreter's final garbage collection does not walk the millions of objects torch, MLflow and
    Ray leave behind. That collection took 3.5 s after the summary of a ``dlops run`` (py-spy: the
    main thread in ``gc_collect_main``, no Python frame); objects still free by reference
    counting as the modules are torn down."""
    import gc

    gc.freeze()


atexit.register(_skip_the_final_collection)



def _fail(msg: str, code: int = EXIT_BAD_INPUT) -> NoReturn:
    click.echo(f"error: {msg}", err=True)
    sys.exit(code)


def _load(project_file: str, overrides: tuple[str, ...]) -> Any:
    """The validated project; a BROKEN plugin (named, with its reason) is a warning on stderr first,
    so that an "unknown reporter" or "unknown policy" error reads in its light."""
    from dlops.config import load_config
    from dlops.plugins import get_registry

    for name, why in get_registry().errors.items():
        click.echo(f"warning: plugin {name} is BROKEN and was skipped: {why}", err=True)
    return load_config(project_file, list(overrides))


class DlopsGroup(click.Group):
    """The one place where errors become exit codes: a :class:`DlopsError` prints ``error: <message>``
    and exits with its ``exit_code`` (2 bad input, 1 a failed search or a refused promotion); Ctrl-C
    exits 130."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except DlopsError as exc:
            _fail(str(exc), exc.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)


@click.group(cls=DlopsGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="dlops")
def main() -> None:
    """dlops: staged hyperparameter search on Ray Tune, MLflow run trees and registry,
    transfer learning, bias/variance reports and ensembles, from one project file."""


@main.command()
@click.argument("project_file", type=click.Path(dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE",
              help="Override a key of the project file (YAML value); repeatable.")
@click.option("--tracking-uri", default=None,  # no envvar: the file's tracking.uri comes before $MLFLOW_TRACKING_URI
              help="MLflow tracking URI. Default: tracking.uri of the file, else $MLFLOW_TRACKING_URI, "
                   "else sqlite:///mlflow.db in the working directory.")
@click.option("--ray-address", envvar="RAY_ADDRESS", default=None,
              help="Ray cluster address, e.g. ray://head:10001. Default: $RAY_ADDRESS (a Ray Job's "
                   "driver gets its cluster there), else ray.address of the file, else a local Ray on 127.0.0.1.")
@click.option("--resume", is_flag=True, default=False,
              help="Continue the latest unfinished search of this project (after a crash or kill) "
                   "instead of starting a new one.")
def run(project_file: str, overrides: tuple[str, ...], tracking_uri: Optional[str], ray_address: Optional[str],
        resume: bool) -> None:
    """Run the main job of PROJECT_FILE: setup, pretrain, search, register, report, ensemble."""
    from dlops.job import format_summary, run_project

    cfg = _load(project_file, overrides)
    try:
        summary = run_project(cfg, tracking_uri=tracking_uri, ray_address=ray_address,
                              out=lambda s: click.echo(s, err=True), resume=resume)
    except KeyboardInterrupt:
        click.echo("interrupted: open MLflow runs were marked KILLED; to continue this search run:\n  "
                   + resume_command(project_file, overrides, tracking_uri, ray_address), err=True)
        sys.exit(130)
    click.echo(format_summary(summary))


def resume_command(project_file: str, overrides: tuple[str, ...], tracking_uri: Optional[str],
                   ray_address: Optional[str]) -> str:
    """The exact command that continues an interrupted ``dlops run`` (shell-quoted)."""
    import shlex

    args = ["dlops", "run", project_file]
    for o in overrides:
        args += ["--set", o]
    if tracking_uri:
        args += ["--tracking-uri", tracking_uri]
    if ray_address:
        args += ["--ray-address", ray_address]
    return shlex.join(args + ["--resume"])


@main.command()
@click.argument("project_file", type=click.Path(dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE")
@click.option("--ray-address", default=None, metavar="ADDRESS",
              help="Also check the trial's resource request (GPUs) against this running Ray cluster.")
def validate(project_file: str, overrides: tuple[str, ...], ray_address: Optional[str]) -> None:
    """Check PROJECT_FILE and its data without training anything (exit 2 on a problem)."""
    from dlops.job.run import load_data

    cfg = _load(project_file, overrides)
    data = load_data(cfg)  # the data checks of dlops run (dlops.data.checks)
    address = ray_address or cfg.ray.address
    if address:
        from dlops.cluster import init_ray
        from dlops.search.resources import check_resources

        started = init_ray(address, None, None)
        try:
            check_resources(cfg.search.resources.cpu, cfg.search.resources.gpu, cfg.ray.autoscaler)
        finally:
            if started:
                import ray

                ray.shutdown()
    for w in data.warnings:
        click.echo(f"warning: {w}", err=True)
    n = sum(s.trials for s in cfg.search.stages)
    click.echo(f"{project_file}: ok ({len(cfg.search.stages)} stages, {n} trials, metric {cfg.search.metric} "
               f"{cfg.search.mode}; data: train {len(data.train)}, train-dev {len(data.train_dev)}, dev "
               f"{len(data.dev)}, test {len(data.test)}, {len(data.class_names)} classes"
               f"{'; resources fit ' + address if address else ''})")


@main.command()
@click.argument("target")
@click.option("--split", default="dev", show_default=True, help="Split for error analysis: train, train_dev, dev, test.")
@click.option("--reporter", "reporters", multiple=True, help="Reporter to run (default: the project's); repeatable.")
@click.option("--tracking-uri", envvar="MLFLOW_TRACKING_URI", default=None,
              help="MLflow tracking URI (default: sqlite:///mlflow.db in the working directory).")
def report(target: str, split: str, reporters: tuple[str, ...], tracking_uri: Optional[str]) -> None:
    """Compute the reports again for TARGET (a run id or models:/NAME@ALIAS) and log them."""
    from dlops.reporting import recompute_reports
    from dlops.tracking.store import check_tracking_server, resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri, None)
    check_tracking_server(uri)
    recompute_reports(target, uri, split, list(reporters) or None, out=click.echo)


@main.command()
@click.argument("project_file", type=click.Path(dir_okay=False))
@click.option("--address", envvar=["RAY_API_SERVER_ADDRESS", "RAY_ADDRESS"], required=True, metavar="URL",
              help="The cluster's Ray Jobs API, e.g. http://head:8265 (as `ray job submit`: "
                   "$RAY_API_SERVER_ADDRESS, else $RAY_ADDRESS).")
@click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE", help="As for dlops run; repeatable.")
@click.option("--tracking-uri", default=None,  # no envvar: the file's tracking.uri comes before $MLFLOW_TRACKING_URI
              help="A tracking server the cluster reaches (a local store only for a cluster on this machine). "
                   "Default: tracking.uri of the file, else $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here.")
@click.option("--resume", is_flag=True, default=False, help="Pass --resume to the job.")
@click.option("--no-wait", is_flag=True, default=False, help="Submit and return; do not follow the logs.")
def submit(project_file: str, address: str, overrides: tuple[str, ...], tracking_uri: Optional[str], resume: bool,
           no_wait: bool) -> None:
    """Submit the main job of PROJECT_FILE to a Ray cluster (Ray Jobs API) and follow its logs.

    The project file's folder is the job's working dir (run outputs excluded); the job runs with
    the cluster's Python that has dlops (found by a first tiny job). Exit code: the job's (0
    succeeded, 1 failed); 2 for a bad file, an unreachable tracking store or a cluster whose
    Python lacks dlops, before the job is submitted. Ctrl-C stops following; the job keeps running."""
    from dlops.submit import exit_code, submit as submit_job, wait
    from dlops.tracking.store import resolve_tracking_uri

    cfg = _load(project_file, overrides)
    uri = resolve_tracking_uri(tracking_uri, cfg.tracking.uri)
    sub = submit_job(project_file, list(overrides), address, uri, resume=resume)
    click.echo(f"submitted {sub.submission_id} to {address}: {sub.entrypoint}", err=True)
    if no_wait:
        click.echo(sub.submission_id)
        return
    try:
        status = wait(sub, out=click.echo)
    except KeyboardInterrupt:
        click.echo(f"stopped following; the job keeps running (RAY_AUTH_MODE=token ray job stop --address {address} "
                   f"{sub.submission_id})", err=True)
        sys.exit(130)
    click.echo(f"job {sub.submission_id}: {status}", err=True)
    sys.exit(exit_code(status))


@main.command()
@click.argument("model_uri")
@click.option("--tracking-uri", envvar="MLFLOW_TRACKING_URI", default=None,
              help="MLflow tracking URI holding the registry (default: sqlite:///mlflow.db in the working directory).")
@click.option("--ray-address", envvar="RAY_ADDRESS", default=None,
              help="Ray cluster address (default: a local Ray on 127.0.0.1).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address the HTTP proxy listens on. Ray has no authentication: keep 127.0.0.1 unless a "
                   "reverse proxy with authentication is in front.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--route-prefix", default="/", show_default=True)
@click.option("--replicas", default=None, type=click.IntRange(min=1),
              help="Replicas (Ray Serve's num_replicas; default 1, or autoscaling from --serve-config).")
@click.option("--num-cpus", default=None, type=float, help="CPUs per replica (default 1).")
@click.option("--serve-config", default=None, type=click.Path(dir_okay=False),
              help="YAML of deployment options with Ray Serve's names: num_replicas, autoscaling_config "
                   "(min_replicas, max_replicas, target_ongoing_requests, ...), max_ongoing_requests, "
                   "max_queued_requests, max_batch_size, batch_wait_timeout_s, ray_actor_options. Flags win.")
@click.option("--max-batch-size", default=None, type=int,
              help="Most images in one forward, batched across clients (default 32).")
@click.option("--batch-wait-timeout-s", default=None, type=float,
              help="Seconds the first request of a batch waits for more (default 0.005).")
@click.option("--max-ongoing-requests", default=None, type=int,
              help="Requests a replica works on at once (default 32).")
@click.option("--max-queued-requests", default=None, type=int,
              help="Requests queued at the proxy beyond those; more get HTTP 503 at once (default 64; -1: no limit).")
@click.option("--tta", default=None, type=click.Choice(["none", "flip", "five_crop", "ten_crop"]),
              help="Test-time augmentation (default: the ensemble's own setting; none for a single model).")
@click.option("--crop-fraction", default=0.875, show_default=True, type=float)
@click.option("--max-request-mb", default=DEFAULT_MAX_REQUEST_MB, show_default=True, type=float,
              help="Cap on a POST body, in MB; a longer one gets HTTP 413 before it is parsed.")
def serve(model_uri: str, tracking_uri: Optional[str], ray_address: Optional[str], host: str, port: int,
          route_prefix: str, replicas: Optional[int], num_cpus: Optional[float], serve_config: Optional[str],
          max_batch_size: Optional[int], batch_wait_timeout_s: Optional[float], max_ongoing_requests: Optional[int],
          max_queued_requests: Optional[int], tta: Optional[str], crop_fraction: float,
          max_request_mb: float) -> None:
    """Serve MODEL_URI (models:/NAME@ALIAS or models:/NAME/VERSION, a single model or an
    ensemble) over HTTP with Ray Serve until Ctrl-C. GET describes the model, GET /-/ready says it
    is loaded; POST images (raw bytes, multipart, {"images": [base64]}) or {"inputs": (N, C, H, W)}
    returns probabilities and predictions, batched across clients; beyond the queue bound, 503."""
    import time

    import signal

    from dlops.serving import check_options, load_serve_options, port_free, resolve_model
    from dlops.tracking.store import resolve_tracking_uri

    t_start = time.perf_counter()
    uri = resolve_tracking_uri(tracking_uri, None)
    check_options(replicas or 1, 1.0 if num_cpus is None else num_cpus, tta, crop_fraction, max_request_mb)
    options = load_serve_options(serve_config, num_replicas=replicas, num_cpus=num_cpus, max_batch_size=max_batch_size,
                                 batch_wait_timeout_s=batch_wait_timeout_s, max_ongoing_requests=max_ongoing_requests,
                                 max_queued_requests=max_queued_requests)
    ref = resolve_model(model_uri, uri)
    port_free(host, port)
    try:
        from ray import serve as ray_serve
    except ImportError as exc:
        _fail(f"dlops serve needs Ray Serve: pip install 'dlops[serve]' ({exc})")

    from dlops.cluster import init_ray
    from dlops.serving import start
    from dlops.serving.engine import CheckLoads

    def on_sigterm(signum: int, frame: object) -> None:  # systemd, Kubernetes: stop as on Ctrl-C
        click.echo("stopping (SIGTERM)", err=True)
        raise SystemExit(143)

    # the driver's test load (a broken model: exit 2 with its real error, no crash-looping
    # replica) runs in a thread while Ray starts: mostly imports and unpickling in this process,
    # while Ray's start is mostly waiting for its own processes, so the two overlap
    check = CheckLoads(ref, uri, tta, crop_fraction)
    t_checked = time.perf_counter()
    try:
        started = init_ray(ray_address, None, None)
    except BaseException:
        check.result()  # a model that does not load is the first thing to say; else the cluster's error
        raise
    t_ray = time.perf_counter()
    try:
        check.result()
    except BaseException:
        if started:
            import ray

            ray.shutdown()
        raise
    t_loaded = time.perf_counter()
    signal.signal(signal.SIGTERM, on_sigterm)
    # a server started with `&` from a script inherits SIGINT ignored (POSIX: a background job of
    # a non-interactive shell), and `kill -INT` would then do nothing: take Ctrl-C as in a terminal
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        start(ref, uri, host=host, port=port, route_prefix=route_prefix, options=options, tta=tta,
              crop_fraction=crop_fraction, loopback=not ray_address, max_request_mb=max_request_mb)
        t_ready = time.perf_counter()
        click.echo(f"serving {ref.kind} model {ref.name} version {ref.version} ({model_uri}) at "
                   f"http://{host}:{port}{route_prefix}  (Ctrl-C to stop)", err=True)
        click.echo(f"start-up {t_ready - t_start:.1f} s: checks {t_checked - t_start:.1f} s, Ray {t_ray - t_checked:.1f} s "
                   f"with the test load beside it ({check.seconds:.1f} s; {t_loaded - t_ray:.1f} s waited after Ray), "
                   f"Serve + replicas (model load included) {t_ready - t_loaded:.1f} s; "
                   f"readiness: http://{host}:{port}{route_prefix.rstrip('/')}/-/ready", err=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        click.echo("stopping", err=True)
        sys.exit(130)
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if not (started and not ray_address):
            # someone else's cluster: take our app down there. The local Ray this command started
            # goes down whole below; Serve's own shutdown there only raced the Ctrl-C that reached
            # Ray's processes too ("(raylet) Task ServeController.graceful_shutdown failed ...")
            try:
                ray_serve.shutdown()
            except Exception:  # noqa: BLE001  (Ray may already be down)
                pass
        if started and not ray_address:
            import ray

            ray.shutdown()  # the local Ray this command started, with its agents


_TRACKING = click.option("--tracking-uri", envvar="MLFLOW_TRACKING_URI", default=None,
                         help="MLflow tracking URI holding the registry (default: sqlite:///mlflow.db in the "
                              "working directory).")


def _registry_client(tracking_uri: Optional[str]) -> Any:
    """The ``MlflowClient`` of the registry; an unreachable server or a missing store is exit 2."""
    from pathlib import Path

    from mlflow import MlflowClient

    from dlops.errors import RegistryError
    from dlops.tracking.store import check_tracking_server, resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri, None)
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).exists():
        raise RegistryError(f"--tracking-uri: the store {uri} does not exist (no registered models)")
    check_tracking_server(uri)
    import mlflow

    mlflow.set_tracking_uri(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _fmt(v: Any) -> str:
    return "-" if v is None else f"{float(v):.4g}"


@main.group()
def models() -> None:
    """Inspect the model registry (registered models dlops made, their aliases and history)."""


@models.command("list")
@_TRACKING
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def models_list(tracking_uri: Optional[str], as_json: bool) -> None:
    """Every registered model dlops made, its aliases and the optimizing metric of each aliased version."""
    from dlops.tracking.registry import list_models

    rows = list_models(_registry_client(tracking_uri))
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        al = "; ".join(f"@{a} -> v{e['version']}" + (" (DANGLING: version deleted)" if e["dangling"] else
                                                     f" {e.get('metric', '?')}={_fmt(e.get('value'))}")
                       for a, e in r["aliases"].items()) or "no aliases"
        click.echo(f"{r['name']:<32} {r['kind']:<9} {al}")


@models.command("show")
@click.argument("name")
@_TRACKING
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def models_show(name: str, tracking_uri: Optional[str], as_json: bool) -> None:
    """NAME's versions (newest first) with aliases, gate metrics, provenance, members and the promotion history."""
    from dlops.tracking.registry import show_model

    info = show_model(_registry_client(tracking_uri), name)
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    click.echo(f"{info['name']} ({info['kind'] or 'not made by dlops'})")
    present = {v["version"] for v in info["versions"]}
    for a, e in info["aliases"].items():
        if e["dangling"] or e["version"] not in present:
            click.echo(f"  @{a} -> version {e['version']}: DANGLING (the version was deleted; never followed)")
    for a, v in info.get("lost_aliases", {}).items():
        click.echo(f"  @{a}: points nowhere: its version {v} was deleted (dlops promote NAME VERSION to set it)")
    for v in info["versions"]:
        g = v.get("gate") or {}
        click.echo(f"  version {v['version']}" + (f"  [{', '.join('@' + a for a in v['aliases'])}]" if v["aliases"]
                                                   else ""))
        if g:
            opt = ", ".join(f"{k}={_fmt(x)} ({g['mode']})" for k, x in v["optimizing"].items())
            sat = ", ".join(f"{k} [{_fmt(x)}]" for k, x in v["satisficing"].items()) or "none"
            click.echo(f"    optimizing: {opt}; satisficing: {sat}")
        if v.get("baseline"):
            click.echo(f"    best member: {', '.join(f'{k}={_fmt(x)}' for k, x in v['baseline'].items())}")
        click.echo(f"    run {v['run_id']}  search {v['search_run_id'] or '-'}  project {v['project'] or '-'}")
        fp = v.get("fingerprint")
        if fp:
            click.echo(f"    fingerprint: {fp['task']}, {len(fp['classes'])} classes, dev split {fp['dev_split']}, "
                       f"test split {fp['test_split']}")
        if v.get("data_manifest"):
            click.echo(f"    data manifest: {v['data_manifest']}")
        if v.get("members"):
            click.echo(f"    members: {', '.join(map(str, v['members']))}")
    click.echo("  promotion history:" if info["history"] else "  promotion history: none")
    for e in info["history"]:
        gone = " (version deleted)" if e["to_deleted"] else ""
        click.echo(f"    {e['time']} {e['user']} @{e['alias']}: {e['from'] or '-'} -> {e['to']}{gone} "
                   f"[{e['decision']}, {e['command']}] {e['reason']}")


@main.command()
@click.argument("name")
@click.argument("version")
@click.option("--alias", default="champion", show_default=True, type=click.Choice(["champion", "challenger"]),
              help="The alias to move (what each means: README, 'The model registry').")
@click.option("--force", is_flag=True, help="Move the alias even when the gate refuses (needs --reason; recorded).")
@click.option("--reason", default=None, help="Why (recorded in the promotion history; required with --force).")
@click.option("--dry-run", is_flag=True, help="Print the gate's decision only (exit 1 when it refuses).")
@_TRACKING
def promote(name: str, version: str, alias: str, force: bool, reason: Optional[str], dry_run: bool,
            tracking_uri: Optional[str]) -> None:
    """Gate NAME version VERSION (its stored optimizing metric, satisficing constraints and
    fingerprint) against NAME@ALIAS and move the alias when it wins. Exit 1: the gate refused
    (its reason on stderr); 2: unknown model, version or a bad option; nothing changed."""
    from dlops.tracking.registry import promote as do_promote

    m = do_promote(_registry_client(tracking_uri), name, version, alias, force=force, reason=reason,
                   dry_run=dry_run)
    verb = "would move" if dry_run else ("moved" if m.moved else "left")
    click.echo(f"{m.name}@{m.alias}: {verb} {m.from_version or '-'} -> {m.to_version} [{m.decision}] {m.reason}")


@main.command()
@click.argument("name")
@click.option("--alias", default="champion", show_default=True, type=click.Choice(["champion", "challenger"]),
              help="The alias to move (what each means: README, 'The model registry').")
@click.option("--dry-run", is_flag=True, help="Print the target version only.")
@_TRACKING
def rollback(name: str, alias: str, dry_run: bool, tracking_uri: Optional[str]) -> None:
    """Move NAME@ALIAS back to the version it pointed at before its last move (from the promotion
    history). Exit 2 when there is none (or it was deleted); nothing changed."""
    from dlops.tracking.registry import rollback as do_rollback

    m = do_rollback(_registry_client(tracking_uri), name, alias, dry_run=dry_run)
    verb = "would move" if dry_run else "moved"
    click.echo(f"{m.name}@{m.alias}: {verb} {m.from_version or '-'} -> {m.to_version} [{m.decision}] {m.reason}")


@main.command("ensemble")
@click.argument("name")
@click.option("--versions", default=None, metavar="V1,V2,...", help="Registered versions of NAME to combine.")
@click.option("--top-k", type=click.IntRange(min=2), default=None,
              help="The K best versions of NAME (across searches) that meet their constraints and share a fingerprint.")
@click.option("--method", default="average", show_default=True, help="Ensemble method (a plugin's).")
@click.option("--tta", default="none", show_default=True, type=click.Choice(["none", "flip", "five_crop", "ten_crop"]))
@click.option("--crop-fraction", default=0.875, show_default=True, type=float)
@click.option("--name", "ensemble_name", default=None, help="Registered name of the ensemble (default NAME-ensemble).")
@_TRACKING
def ensemble_cmd(name: str, versions: Optional[str], top_k: Optional[int], method: str, tta: str,
                 crop_fraction: float, ensemble_name: Optional[str], tracking_uri: Optional[str]) -> None:
    """Build an ensemble of registered versions of NAME, evaluate it on their common test split,
    register it as a version of NAME-ensemble and gate it against its best member. Exit 2 for
    unknown versions or members with different preprocessing or classes (nothing registered)."""
    from dlops.registry_ensemble import build_registry_ensemble

    client = _registry_client(tracking_uri)
    res = build_registry_ensemble(client, name, versions=versions, top_k=top_k, method=method, tta=tta,
                                  crop_fraction=crop_fraction, ensemble_name=ensemble_name,
                                  out=lambda s: click.echo(s, err=True))
    click.echo(res)


@main.group()
def plugins() -> None:
    """Inspect plugins."""


@plugins.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def plugins_list(as_json: bool) -> None:
    """Every plugin, its version, where it comes from and what it provides."""
    from dlops.plugins import get_registry

    reg = get_registry()
    if as_json:
        click.echo(json.dumps({
            "plugins": [{"name": p.name, "module": p.module, "version": p.version, "source": p.source,
                         "provides": p.provides, "hooks": p.hooks} for p in reg.plugins],
            "errors": reg.errors,
        }, indent=2))
    else:
        w = max([len(p.source) for p in reg.plugins] + [8])
        for p in reg.plugins:
            prov = "; ".join([f"{k}: {', '.join(v) or '-'}" for k, v in p.provides.items()]
                             + ([f"hooks: {', '.join(p.hooks)}"] if p.hooks else [])) or "-"
            click.echo(f"{p.name:<16} {p.version:<10} {p.source:<{w}} {prov}")
        for name, err in reg.errors.items():
            click.echo(f"{name:<16} BROKEN     {err}", err=True)


if __name__ == "__main__":
    main()
