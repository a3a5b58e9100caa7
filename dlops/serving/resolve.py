"""What ``dlops serve`` checks in the driver before Ray starts: the registered version behind a
``models:/`` URI, the options, and that the port is free. Light: no torch, ray or mlflow at
module level."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from dlops.errors import ServeError

#: default cap on a POST body, in MB (10**6 bytes): ~10 float32 images of 3 x 224 x 224 as JSON
DEFAULT_MAX_REQUEST_MB = 32.0


@dataclass
class ModelRef:
    """A registered model version resolved from ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION``."""

    uri: str
    name: str
    version: str
    kind: str  # "single" | "ensemble"
    method: Optional[str] = None  # an ensemble's method (a plugin's ``dlops_ensemble_methods``)
    members: tuple[str, ...] = ()  # an ensemble's members (dlops.tracking.registry.member_names)


def resolve_model(model_uri: str, tracking_uri: str) -> ModelRef:
    """The registered version behind ``model_uri``, checked before anything starts.

    Raises:
        ServeError: not a ``models:/`` URI, or no such model, alias or version in the store
            (the message names them and the store).
    """
    from mlflow import MlflowClient

    from dlops.tracking.store import is_local_store

    from dlops.tracking.registry import parse_model_uri

    try:
        parse_model_uri(model_uri)
    except ValueError:
        raise ServeError(f"MODEL_URI: expected models:/NAME@ALIAS or models:/NAME/VERSION, got {model_uri!r}") from None
    if is_local_store(tracking_uri):
        from pathlib import Path

        path = tracking_uri[len("sqlite:///"):] if tracking_uri.startswith("sqlite:///") else None
        if path is not None and not Path(path).exists():
            raise ServeError(f"--tracking-uri: the store {tracking_uri} does not exist (no {model_uri} to serve)")
    from dlops.tracking.store import TrackingError, check_tracking_server

    try:
        check_tracking_server(tracking_uri)
    except TrackingError as exc:
        raise ServeError(str(exc)) from None
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    from dlops.tracking.registry import get_model_version

    try:
        mv = get_model_version(client, model_uri)
    except LookupError:
        from dlops.tracking.registry import why_missing

        raise ServeError(f"MODEL_URI: no registered model version {model_uri!r} in {tracking_uri}: "
                         f"{why_missing(client, model_uri)}") from None
    tags = mv.tags or {}
    kind = "ensemble" if "dlops.members" in tags else "single"
    _check_model_files(f"models:/{mv.name}/{mv.version}", model_uri, kind, tracking_uri)
    if kind == "single":
        return ModelRef(model_uri, mv.name, str(mv.version), "single")
    from dlops.ensemble import DEFAULT_METHOD
    from dlops.errors import PluginError
    from dlops.plugins import get_registry

    method = tags.get("dlops.ensemble_method", DEFAULT_METHOD)
    try:
        get_registry().get("ensemble_methods", method)
    except PluginError as exc:
        raise ServeError(f"MODEL_URI: {model_uri} is an ensemble whose method no installed plugin provides: {exc}") from None
    from dlops.tracking.registry import member_names

    return ModelRef(model_uri, mv.name, str(mv.version), "ensemble", method, tuple(member_names(tags)))


def _check_model_files(version_uri: str, model_uri: str, kind: str, tracking_uri: str) -> None:
    """The version's ``MLmodel`` can be read and says what serving needs (a ``model_spec`` with
    ``image_size``; the pytorch flavour for a single model), checked in the driver in about a
    second, before Ray starts. Loading the weights is left to the replica (whose failure
    :func:`dlops.serving.start` reports at once).

    Raises:
        ServeError: the files cannot be read (artifacts deleted or unreachable) or lack those.
    """
    import mlflow

    # models:/ URIs resolve against the process's registry URI, not the client's: without this
    # the look-up went to the default store (./mlflow.db), and a --tracking-uri elsewhere failed
    # with "Registered Model ... not found" (or, worse, read another store's version)
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    try:
        info = mlflow.models.get_model_info(version_uri)
    except Exception as exc:  # noqa: BLE001  (MlflowException, OSError: the artifacts are gone)
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ServeError(f"MODEL_URI: {model_uri} ({version_uri}): its model files cannot be read: {first[:300]}") from None
    spec = (info.metadata or {}).get("model_spec") or {}
    if "image_size" not in spec:
        raise ServeError(f"MODEL_URI: {model_uri} ({version_uri}) has no model_spec.image_size in its MLmodel "
                         "metadata: not a model logged by dlops")
    if kind == "single" and "pytorch" not in (info.flavors or {}):
        raise ServeError(f"MODEL_URI: {model_uri} ({version_uri}) is not a pytorch model (flavors: "
                         f"{sorted(info.flavors or {})})")
    if kind == "single":
        # the weights file itself: without it MLflow's loader goes on to look for an exported
        # model.pt2 and fails naming that file (after torch's own traceback), not the missing one
        data = str(info.flavors["pytorch"].get("model_data") or "data")
        try:
            names = {a.path.rsplit("/", 1)[-1] for a in mlflow.artifacts.list_artifacts(f"{version_uri}/{data}")}
        except Exception:  # noqa: BLE001  (a store that cannot list: the test load says what is wrong)
            return
        if not names & {"model.pth", "model.pt2"}:
            raise ServeError(f"MODEL_URI: {model_uri} ({version_uri}): its weights file {data}/model.pth is missing "
                             f"from the artifacts (in {data}/: {', '.join(sorted(names)) or 'nothing'})")


def port_free(host: str, port: int) -> None:
    """Raises ServeError naming ``--port`` when ``host:port`` cannot be bound (in use, or not an
    address of this machine), before Ray starts."""
    import socket

    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
    except OSError as exc:
        raise ServeError(f"--port: cannot listen on {host}:{port} ({exc.strerror or exc})") from None


def check_options(replicas: int = 1, num_cpus: float = 1.0, tta: Optional[str] = None,
                  crop_fraction: float = 0.875, max_request_mb: float = DEFAULT_MAX_REQUEST_MB) -> None:
    """Raises ServeError naming the option: replicas < 1, num_cpus <= 0, an unknown ``tta``,
    ``crop_fraction`` outside (0, 1], or ``max_request_mb`` not > 0."""
    import math

    from dlops.predict import check_tta

    if not (isinstance(max_request_mb, (int, float)) and math.isfinite(max_request_mb) and max_request_mb > 0):
        raise ServeError(f"--max-request-mb must be a number > 0 (MB), got {max_request_mb}")
    if replicas < 1:
        raise ServeError(f"--replicas must be >= 1, got {replicas}")
    if num_cpus <= 0:
        raise ServeError(f"--num-cpus must be > 0, got {num_cpus}")
    try:
        check_tta(tta or "none", crop_fraction)
    except ValueError as exc:
        raise ServeError(str(exc).replace("ensemble.tta", "--tta").replace("ensemble.crop_fraction",
                                                                            "--crop-fraction")) from None
