"""The Ray Serve application: the deployment class (:class:`ModelServer`), :func:`build_app` and
:func:`start`."""

from __future__ import annotations

from typing import Any, Optional

from dlops.errors import ServeError
from dlops.serving._private import loopback_replica_grpc
from dlops.serving.outputs import decode
from dlops.serving.resolve import DEFAULT_MAX_REQUEST_MB, ModelRef, check_options
from dlops.serving.tensors import check_inputs


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
