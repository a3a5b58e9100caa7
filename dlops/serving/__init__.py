"""Serving a registered model (a single network or an ensemble) over HTTP with Ray Serve.

``dlops serve models:/NAME@champion`` loads the registered version the alias points to (MLflow
registry aliases; stages are deprecated) into Ray Serve replicas. The HTTP proxy listens on
127.0.0.1 unless ``--host`` says otherwise (Ray has no authentication).

HTTP API (JSON), on the route prefix (default ``/``):

* ``GET``: the model: ``{"model_uri", "name", "version", "kind": "single"|"ensemble", "task",
  "classes", "input_shape": [C, H, W], "tta", "ensemble_method"}`` (``ensemble_method`` None for a
  single model).
* ``POST`` ``{"inputs": [...]}``, an array (N, C, H, W) of float32 images preprocessed as in
  training (the model metadata's ``model_spec``: ``image_size``, ``mean``, ``std``): returns
  ``{"probabilities": (N, K), "predictions": [...]}``; for ``classification`` the predicted class
  name per image (argmax of the softmax), for ``multilabel`` the list of label names whose sigmoid
  is >= 0.5 per image. A body that is not JSON, lacks ``inputs`` or has the wrong shape gets HTTP
  400 with a message naming the field and the expected shape. A body over the size cap
  (``--max-request-mb``, default :data:`DEFAULT_MAX_REQUEST_MB` MB; announced or streamed) gets HTTP
  413 before it is parsed.

A single network is served through ``mlflow.pytorch`` (its outputs are logits; softmax or
sigmoid is applied here, per the spec's ``task``), with optional test-time augmentation
(:mod:`dlops.predict`); an ensemble through its pyfunc (:mod:`dlops.ensemble`: each member's TTA
views averaged, the members combined by the ensemble's method, looked up by name in the plugin
registry; ``tta`` overrides its model config).
"""

from __future__ import annotations

from dlops.errors import ServeError  # noqa: F401  (the kind lives in dlops.errors)
from dataclasses import dataclass
from typing import Any, Optional


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


def resolve_model(model_uri: str, tracking_uri: str) -> ModelRef:
    """The registered version behind ``model_uri``, checked before anything starts.

    Raises:
        ServeError: not a ``models:/`` URI, or no such model, alias or version in the store
            (the message names them and the store).
    """
    from mlflow import MlflowClient

    from dlops.tracking.store import is_local_store

    if not model_uri.startswith("models:/") or len(model_uri) <= len("models:/"):
        raise ServeError(f"MODEL_URI: expected models:/NAME@ALIAS or models:/NAME/VERSION, got {model_uri!r}")
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
        raise ServeError(f"MODEL_URI: no registered model version {model_uri!r} in {tracking_uri}") from None
    tags = mv.tags or {}
    if "dlops.members" not in tags:
        return ModelRef(model_uri, mv.name, str(mv.version), "single")
    from dlops.ensemble import DEFAULT_METHOD
    from dlops.errors import PluginError
    from dlops.plugins import get_registry

    method = tags.get("dlops.ensemble_method", DEFAULT_METHOD)
    try:
        get_registry().get("ensemble_methods", method)
    except PluginError as exc:
        raise ServeError(f"MODEL_URI: {model_uri} is an ensemble whose method no installed plugin provides: {exc}") from None
    return ModelRef(model_uri, mv.name, str(mv.version), "ensemble", method)


def probabilities(outputs: Any, task: str) -> Any:
    """Logits (N, K) -> probabilities: softmax over K for ``classification``, a sigmoid per
    label for ``multilabel``. Returns a float64 numpy array (N, K)."""
    import numpy as np

    z = np.asarray(outputs, dtype=np.float64)
    if task == "multilabel":
        return 1.0 / (1.0 + np.exp(-z))
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def decode(prob: Any, task: str, classes: list[str], threshold: float = 0.5) -> list[Any]:
    """Predictions from probabilities (N, K): the argmax class name per row (``classification``),
    or the label names with probability >= ``threshold`` (``multilabel``)."""
    import numpy as np

    p = np.asarray(prob)
    if task == "multilabel":
        return [[classes[j] for j in np.flatnonzero(row >= threshold)] for row in p]
    return [classes[int(j)] for j in p.argmax(axis=1)]


def check_inputs(body: Any, shape: tuple[int, int, int]) -> Any:
    """The request's ``inputs`` as float32 (N, C, H, W).

    Raises:
        ServeError: no ``inputs`` key, anything but nested lists of numbers (strings, booleans and
            nulls are refused), a shape other than (N, *shape) with N >= 1, NaN or inf.
    """
    import numpy as np

    if not isinstance(body, dict) or "inputs" not in body:
        raise ServeError('request body: expected a JSON object {"inputs": [...]} of shape (N, %d, %d, %d)' % shape)
    def numbers_only(v: Any) -> bool:
        if isinstance(v, list):
            return all(numbers_only(e) for e in v)
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    if not numbers_only(body["inputs"]):
        raise ServeError("inputs: expected nested lists of numbers (no strings, booleans or nulls)")
    try:
        x = np.asarray(body["inputs"], dtype=np.float32)
    except (TypeError, ValueError):
        raise ServeError("inputs: not a rectangular numeric array (ragged lists)") from None
    if x.ndim != 4 or tuple(x.shape[1:]) != tuple(shape) or x.shape[0] < 1:
        raise ServeError(f"inputs: expected shape (N, {shape[0]}, {shape[1]}, {shape[2]}), got {tuple(x.shape)}")
    if not np.isfinite(x).all():
        raise ServeError("inputs: NaN or inf values")
    return x


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


class ModelServer:
    """The Ray Serve deployment's class (wrapped by :func:`build_app`): one replica holds one
    copy of the model on CPU."""

    def __init__(self, ref: ModelRef, tracking_uri: str, tta: Optional[str], crop_fraction: float,
                 loopback: bool = True, max_request_mb: float = DEFAULT_MAX_REQUEST_MB) -> None:
        import mlflow

        self.max_request_mb = float(max_request_mb)
        self.max_request_bytes = int(self.max_request_mb * 1e6)

        if loopback:  # before Serve starts this replica's gRPC server (after the constructor)
            loopback_replica_grpc()

        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_registry_uri(tracking_uri)
        self.ref = ref
        # the version itself, not the alias: a replica serves what was resolved at start-up
        uri = f"models:/{ref.name}/{ref.version}"
        info = mlflow.models.get_model_info(uri)
        meta = info.metadata or {}
        spec = meta.get("model_spec") or {}
        self.task = spec.get("task", "classification")
        ci = meta.get("class_index") or {}
        self.classes = [ci[str(i)] for i in range(len(ci))] if ci else [str(c) for c in spec.get("class_names", [])]
        self.shape = (int(spec.get("in_channels", 3)), int(spec["image_size"]), int(spec["image_size"]))
        self.preprocessing = {"layout": "NCHW", "dtype": "float32", "image_size": int(spec["image_size"]),
                              "channels": self.shape[0], "mean": spec.get("mean"), "std": spec.get("std"),
                              "formula": "(pixel / 255 - mean) / std, per channel"}
        self.crop_fraction = crop_fraction
        if ref.kind == "ensemble":
            cfg = {"tta": tta, "crop_fraction": crop_fraction} if tta else None
            self.model = mlflow.pyfunc.load_model(uri, model_config=cfg)
            self.tta = tta or meta.get("tta", "none")
        else:
            self.model = mlflow.pytorch.load_model(uri, map_location="cpu").eval()
            self.tta = tta or "none"

    def describe(self) -> dict[str, Any]:
        return {"model_uri": self.ref.uri, "name": self.ref.name, "version": self.ref.version, "kind": self.ref.kind,
                "task": self.task, "classes": self.classes, "input_shape": list(self.shape), "tta": self.tta,
                "preprocessing": self.preprocessing, "max_request_mb": self.max_request_mb,
                "ensemble_method": self.ref.method}

    def predict(self, x: Any) -> dict[str, Any]:
        """Probabilities (N, K) and decoded predictions for float32 inputs (N, C, H, W)."""
        import numpy as np
        import torch

        if self.ref.kind == "ensemble":
            prob = np.asarray(self.model.predict(x), dtype=np.float64)
        else:
            from dlops.predict import predict_tta
            from dlops.train.loop import predict_proba

            prob = predict_tta(lambda v: predict_proba(self.model, v, task=self.task), torch.from_numpy(x),
                               self.tta, self.crop_fraction)
        if not np.isfinite(prob).all():
            raise ServeError("inputs: the model's outputs are not finite for these values (far outside the "
                             "preprocessed range? see preprocessing in GET)")
        return {"probabilities": prob.tolist(), "predictions": decode(prob, self.task, self.classes)}

    async def __call__(self, request: Any) -> Any:
        from starlette.responses import JSONResponse

        if request.method == "GET":
            return JSONResponse(self.describe())
        if request.method != "POST":
            return JSONResponse({"error": f"method {request.method} not allowed: GET describes the model, POST "
                                          "predicts"}, status_code=405, headers={"Allow": "GET, POST"})
        raw = await _read_body_capped(request, self.max_request_bytes)
        if raw is None:
            return JSONResponse({"error": f"request body: more than {self.max_request_mb:g} MB (the server's "
                                          "--max-request-mb); send fewer images per request"}, status_code=413)
        try:
            import json

            body = json.loads(raw)
        except Exception:
            return JSONResponse({"error": "request body: not JSON"}, status_code=400)
        try:
            return JSONResponse(self.predict(check_inputs(body, self.shape)))
        except ServeError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)


async def _read_body_capped(request: Any, cap: int) -> Optional[bytes]:
    """The request body, or None once it is longer than ``cap`` bytes: refused from its
    ``Content-Length`` before anything is read, or after the first chunk that crosses the cap
    (chunked uploads announce no length)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.strip().isdigit() and int(declared) > cap:
        return None
    chunks, n = [], 0
    async for chunk in request.stream():
        n += len(chunk)
        if n > cap:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def loopback_replica_grpc() -> None:
    """Bind this replica's inter-deployment gRPC server to loopback (a local, 127.0.0.1 cluster).

    Ray Serve 2.x (``ray/serve/_private/replica.py``, ``_on_initialized``) starts each replica's
    inter-deployment gRPC server on ``[::]:0``, every interface, whatever the node address
    (ray-project/ray#59908; a configurable bind is discussed in #64623). On a one-machine cluster
    the replicas only talk over loopback, so :class:`ModelServer`'s constructor, which Serve runs
    before it starts that server, calls this to rebind it to ``127.0.0.1``. A no-op when the Ray
    version has no such call (the test of ``dlops serve`` checks that nothing listens beyond
    loopback).
    """
    try:
        import ray.serve._private.replica as replica
    except Exception:  # noqa: BLE001  (another Ray layout: leave it)
        return
    orig = getattr(replica, "add_port_to_grpc_server", None)
    if orig is None or getattr(orig, "_dlops_loopback", False):
        return

    def bind(server: Any, address: str) -> Any:
        if address.startswith("[::]:") or address.startswith("0.0.0.0:"):
            address = "127.0.0.1:" + address.rsplit(":", 1)[1]
        return orig(server, address)

    bind._dlops_loopback = True  # type: ignore[attr-defined]
    replica.add_port_to_grpc_server = bind


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


def build_app(ref: ModelRef, tracking_uri: str, replicas: int = 1, num_cpus: float = 1.0,
              tta: Optional[str] = None, crop_fraction: float = 0.875, loopback: bool = True,
              max_request_mb: float = DEFAULT_MAX_REQUEST_MB) -> Any:
    """The Ray Serve application (``Deployment.bind(...)``) serving ``ref``.

    Args:
        ref: from :func:`resolve_model`.
        tracking_uri: the MLflow store holding the registry (the replicas read it).
        replicas: number of replicas (each loads the model once).
        num_cpus: CPUs per replica.
        tta: test-time augmentation (``none``, ``flip``, ``five_crop``, ``ten_crop``); None keeps
            the ensemble's own setting (``none`` for a single network).
        crop_fraction: crop side / image side for the crop modes.
        loopback: the cluster is this machine only (a local Ray on 127.0.0.1): bind the replicas'
            internal gRPC servers to loopback (:func:`loopback_replica_grpc`).
        max_request_mb: cap on a POST body, in MB (10**6 bytes); a longer one gets HTTP 413.

    Raises:
        ServeError: replicas < 1, num_cpus <= 0, a bad ``tta`` / ``crop_fraction``, or
            ``max_request_mb`` not > 0.
    """
    from ray import serve

    check_options(replicas, num_cpus, tta, crop_fraction, max_request_mb)
    dep = serve.deployment(ModelServer, name="dlops-model", num_replicas=replicas,
                           ray_actor_options={"num_cpus": num_cpus})
    return dep.bind(ref, tracking_uri, tta, crop_fraction, loopback, max_request_mb)


def start(ref: ModelRef, tracking_uri: str, host: str = "127.0.0.1", port: int = 8000, route_prefix: str = "/",
          **app_kwargs: Any) -> Any:
    """Start Serve's HTTP proxy on ``host:port`` (127.0.0.1 by default) and run the app under
    ``route_prefix``. Ray must be initialised. Returns the app's ``DeploymentHandle``."""
    import logging

    from ray import serve

    app = build_app(ref, tracking_uri, **app_kwargs)
    serve.start(http_options={"host": host, "port": port})
    # serve.run connects to the Serve instance just started and logs that "new http_options will
    # not be applied": they were, by serve.start (Ray's documented way to set host and port)
    serve_logger = logging.getLogger("ray.serve")
    notice = _DropLogLine("Connecting to existing Serve app")
    serve_logger.addFilter(notice)
    try:
        return serve.run(app, name="dlops", route_prefix=route_prefix)
    finally:
        serve_logger.removeFilter(notice)


class _DropLogLine:
    """A ``logging`` filter that drops the records whose message starts with ``prefix``."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def filter(self, record: Any) -> bool:
        return not record.getMessage().startswith(self.prefix)
