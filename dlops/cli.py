"""The ``dlops`` command line: thin. Parse, load the project file, call the library.

Exit codes, mapped in one place (:class:`DlopsGroup`): 0 success; 2 bad input (project file,
override, data, resources, plugin name, tracking store, CLI option): any :class:`~dlops.errors.DlopsError`,
one clear line, nothing half-written; 1 a search that failed as a whole (the failure budget,
nothing to register); 130 interrupted (Ctrl-C; every open MLflow run is marked KILLED);
143 SIGTERM during ``dlops run`` (:mod:`dlops.signals`).
"""

from __future__ import annotations

import json
import sys
from typing import Any, NoReturn, Optional

import click

from dlops import __version__
from dlops.errors import EXIT_BAD_INPUT, DlopsError
from dlops.serving import DEFAULT_MAX_REQUEST_MB



def _fail(msg: str, code: int = EXIT_BAD_INPUT) -> NoReturn:
    click.echo(f"error: {msg}", err=True)
    sys.exit(code)


class DlopsGroup(click.Group):
    """The one place where errors become exit codes: a :class:`DlopsError` prints ``error: <message>``
    and exits with its ``exit_code`` (2 bad input, 1 a failed search); Ctrl-C exits 130."""

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
@click.option("--tracking-uri", envvar="MLFLOW_TRACKING_URI", default=None,
              help="MLflow tracking URI (default: sqlite:///mlflow.db in the working directory).")
@click.option("--ray-address", envvar="RAY_ADDRESS", default=None,
              help="Ray cluster address, e.g. ray://head:10001 (default: a local Ray on 127.0.0.1).")
@click.option("--resume", is_flag=True, default=False,
              help="Continue the latest unfinished search of this project (after a crash or kill) "
                   "instead of starting a new one.")
def run(project_file: str, overrides: tuple[str, ...], tracking_uri: Optional[str], ray_address: Optional[str],
        resume: bool) -> None:
    """Run the main job of PROJECT_FILE: setup, pretrain, search, register, report, ensemble."""
    from dlops.config import load_config
    from dlops.job import format_summary, run_project

    cfg = load_config(project_file, list(overrides))
    try:
        summary = run_project(cfg, tracking_uri=tracking_uri, ray_address=ray_address,
                              out=lambda s: click.echo(s, err=True), resume=resume)
    except KeyboardInterrupt:
        click.echo("interrupted: open MLflow runs were marked KILLED", err=True)
        sys.exit(130)
    click.echo(format_summary(summary))


@main.command()
@click.argument("project_file", type=click.Path(dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE")
@click.option("--ray-address", default=None, metavar="ADDRESS",
              help="Also check the trial's resource request (GPUs) against this running Ray cluster.")
def validate(project_file: str, overrides: tuple[str, ...], ray_address: Optional[str]) -> None:
    """Check PROJECT_FILE and its data without training anything (exit 2 on a problem)."""
    from dlops.config import load_config
    from dlops.job.run import load_data

    cfg = load_config(project_file, list(overrides))
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
@click.option("--tracking-uri", envvar="MLFLOW_TRACKING_URI", default=None,
              help="A tracking server the cluster reaches (a local store only for a cluster on this machine). "
                   "Default: tracking.uri of the file, else $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here.")
@click.option("--resume", is_flag=True, default=False, help="Pass --resume to the job.")
@click.option("--no-wait", is_flag=True, default=False, help="Submit and return; do not follow the logs.")
def submit(project_file: str, address: str, overrides: tuple[str, ...], tracking_uri: Optional[str], resume: bool,
           no_wait: bool) -> None:
    """Submit the main job of PROJECT_FILE to a Ray cluster (Ray Jobs API) and follow its logs.

    The project file's folder is the job's working dir (run outputs excluded). Exit code: the
    job's (0 succeeded, 1 failed); 2 for a bad file or an unreachable tracking store, before
    anything is submitted. Ctrl-C stops following; the job keeps running."""
    from dlops.config import load_config
    from dlops.submit import exit_code, submit as submit_job, wait
    from dlops.tracking.store import resolve_tracking_uri

    cfg = load_config(project_file, list(overrides))
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
@click.option("--replicas", default=1, show_default=True, type=click.IntRange(min=1))
@click.option("--num-cpus", default=1.0, show_default=True, type=float, help="CPUs per replica.")
@click.option("--tta", default=None, type=click.Choice(["none", "flip", "five_crop", "ten_crop"]),
              help="Test-time augmentation (default: the ensemble's own setting; none for a single model).")
@click.option("--crop-fraction", default=0.875, show_default=True, type=float)
@click.option("--max-request-mb", default=DEFAULT_MAX_REQUEST_MB, show_default=True, type=float,
              help="Cap on a POST body, in MB; a longer one gets HTTP 413 before it is parsed.")
def serve(model_uri: str, tracking_uri: Optional[str], ray_address: Optional[str], host: str, port: int,
          route_prefix: str, replicas: int, num_cpus: float, tta: Optional[str], crop_fraction: float,
          max_request_mb: float) -> None:
    """Serve MODEL_URI (models:/NAME@ALIAS or models:/NAME/VERSION, a single model or an
    ensemble) over HTTP with Ray Serve until Ctrl-C. GET describes the model; POST
    {"inputs": (N, C, H, W)} returns probabilities and predictions."""
    import time

    import signal

    from dlops.serving import check_options, port_free, resolve_model
    from dlops.tracking.store import resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri, None)
    check_options(replicas, num_cpus, tta, crop_fraction, max_request_mb)
    ref = resolve_model(model_uri, uri)
    port_free(host, port)
    try:
        from ray import serve as ray_serve
    except ImportError as exc:
        _fail(f"dlops serve needs Ray Serve: pip install 'dlops[serve]' ({exc})")

    from dlops.cluster import init_ray
    from dlops.serving import start

    def on_sigterm(signum: int, frame: object) -> None:  # systemd, Kubernetes: stop as on Ctrl-C
        raise SystemExit(143)

    started = init_ray(ray_address, None, None)
    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        start(ref, uri, host=host, port=port, route_prefix=route_prefix, replicas=replicas, num_cpus=num_cpus,
              tta=tta, crop_fraction=crop_fraction, loopback=not ray_address, max_request_mb=max_request_mb)
        click.echo(f"serving {ref.kind} model {ref.name} version {ref.version} ({model_uri}) at "
                   f"http://{host}:{port}{route_prefix}  (Ctrl-C to stop)", err=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        click.echo("stopping", err=True)
        sys.exit(130)
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        try:
            ray_serve.shutdown()
        except Exception:  # noqa: BLE001  (Ray may already be down)
            pass
        if started and not ray_address:
            import ray

            ray.shutdown()  # the local Ray this command started, with its agents


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
