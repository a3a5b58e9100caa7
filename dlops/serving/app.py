"""The Ray Serve application: the deployment class (:class:`ModelServer`), :func:`build_app` and
:func:`start`.

A request's path through a replica: the body is read with a size cap (:mod:`dlops.serving.body`:
413 for a longer one, the rest drained so that the client sees the 413), parsed on its own
(:func:`dlops.serving.inputs.parse_request`: a bad request fails alone with its 4xx), then its
images join those of other clients in one batch (``@serve.batch``, up to ``max_batch_size``
images, waiting at most ``batch_wait_timeout_s``), one forward runs in a worker thread (the event
loop keeps reading requests meanwhile), and each request gets its own rows back. The queue is
bounded by Ray Serve itself: ``max_ongoing_requests`` per replica, ``max_queued_requests`` at the
proxy, beyond which the proxy answers 503 at once.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Optional

from ray import serve

from dlops.errors import ServeError
from dlops.serving._private import loopback_replica_grpc
from dlops.serving.body import read_body_capped, too_large_response
from dlops.serving.options import DEFAULT_BATCH_WAIT_S, DEFAULT_MAX_BATCH, ServeOptions
from dlops.serving.outputs import decode
from dlops.serving.resolve import DEFAULT_MAX_REQUEST_MB, ModelRef, check_options

#: the readiness path under the route prefix
READY_PATH = "/-/ready"


def _images(items: list[Any]) -> int:
    """``@serve.batch``'s batch size: images, not requests."""
    return sum(int(x.shape[0]) for x in items)


def _parser() -> tuple[Any, type, Any]:
    """``(parse_request, RequestError, describe_inputs)`` of :mod:`dlops.serving.inputs`; before
    that module existed, the JSON tensor check."""
    try:
        from dlops.serving.inputs import RequestError, describe_inputs, parse_request

        return parse_request, RequestError, describe_inputs
    except ImportError:  # pragma: no cover  (older tree)
        import json

        from dlops.serving.tensors import check_inputs

        class RequestError(ServeError):  # type: ignore[no-redef]
            def __init__(self, status: int, message: str) -> None:
                super().__init__(message)
                self.status = status

        def parse_request(body: bytes, content_type: Optional[str], spec: dict) -> Any:
            try:
                obj = json.loads(body)
            except ValueError:
                raise RequestError(400, "request body: not JSON") from None
            c, s = int(spec.get("in_channels", 3)), int(spec["image_size"])
            try:
                return check_inputs(obj, (c, s, s))
            except ServeError as exc:
                raise RequestError(400, str(exc)) from None

        return parse_request, RequestError, lambda spec: {}


class ModelServer:
    """The Ray Serve deployment's class (wrapped by :func:`build_app`): one replica holds one
    copy of the model on CPU (:class:`dlops.serving.engine.Engine`), in eval mode."""

    def __init__(self, ref: ModelRef, tracking_uri: str, tta: Optional[str], crop_fraction: float,
                 loopback: bool = True, max_request_mb: float = DEFAULT_MAX_REQUEST_MB,
                 max_batch_size: int = DEFAULT_MAX_BATCH, batch_wait_timeout_s: float = DEFAULT_BATCH_WAIT_S,
                 num_threads: int = 1, deployment: Optional[dict[str, Any]] = None) -> None:
        if loopback:  # before Serve starts this replica's gRPC server (after the constructor)
            loopback_replica_grpc()
        from dlops.serving.engine import Engine

        self.max_request_mb = float(max_request_mb)
        self.max_request_bytes = int(self.max_request_mb * 1e6)
        self.max_batch_size = int(max_batch_size)
        self.batch_wait_timeout_s = float(batch_wait_timeout_s)
        self.ref = ref
        self.deployment = dict(deployment or {})
        self.engine = Engine(ref, tracking_uri, tta, crop_fraction, num_threads=num_threads)
        self.task, self.classes, self.shape = self.engine.task, self.engine.classes, self.engine.shape
        self.tta = self.engine.tta
        self._parse, self._request_error, describe_inputs = _parser()
        self._inputs_doc = describe_inputs(self.engine.spec)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dlops-forward")
        self._batched.set_max_batch_size(self.max_batch_size)
        self._batched.set_batch_wait_timeout_s(self.batch_wait_timeout_s)
        self._ready_at = time.time()
        self.forwards = 0  # forwards run and the images they took: the batching actually achieved
        self.images = 0

    def describe(self) -> dict[str, Any]:
        spec = self.engine.spec
        pre = {"layout": "NCHW", "dtype": "float32", "image_size": self.shape[1], "channels": self.shape[0],
               "mean": spec.get("mean"), "std": spec.get("std"), "formula": "(pixel / 255 - mean) / std, per channel"}
        return {"model_uri": self.ref.uri, "name": self.ref.name, "version": self.ref.version, "kind": self.ref.kind,
                "task": self.task, "classes": self.classes, "input_shape": list(self.shape), "tta": self.tta,
                "crop_fraction": self.engine.crop_fraction if self.tta in ("five_crop", "ten_crop") else None,
                "members": list(self.ref.members) if self.ref.kind == "ensemble" else None,
                "preprocessing": pre, "inputs": self._inputs_doc, "max_request_mb": self.max_request_mb,
                "max_batch_size": self.max_batch_size, "batch_wait_timeout_s": self.batch_wait_timeout_s,
                "ensemble_method": self.ref.method, "deployment": self.deployment}

    def ready(self) -> dict[str, Any]:
        """What the readiness endpoint returns (a replica answers only once its model is loaded):
        ``replica`` is the answering replica's Ray Serve tag (several replicas: several tags);
        ``forwards`` and ``images`` count this replica's forwards and the images they took since
        it started, ``mean_batch_images`` their ratio (the batching across clients achieved)."""
        try:
            replica = serve.get_replica_context().replica_tag
        except Exception:  # noqa: BLE001  (outside a replica: tests of the class itself)
            replica = None
        return {"ready": True, "model_uri": self.ref.uri, "name": self.ref.name, "version": self.ref.version,
                "kind": self.ref.kind, "load_s": round(self.engine.load_s, 3), "replica": replica,
                "forwards": self.forwards, "images": self.images,
                "mean_batch_images": round(self.images / self.forwards, 2) if self.forwards else None}

    async def _forward(self, x: Any) -> Any:
        """One forward (N, C, H, W) -> (N, K) in the worker thread (torch releases the GIL)."""
        self.forwards += 1
        self.images += int(x.shape[0])
        return await asyncio.get_running_loop().run_in_executor(self._pool, self.engine.forward, x)

    @serve.batch(max_batch_size=DEFAULT_MAX_BATCH, batch_wait_timeout_s=DEFAULT_BATCH_WAIT_S, batch_size_fn=_images)
    async def _batched(self, xs: list[Any]) -> list[Any]:
        """The requests' arrays (n_i, C, H, W), concatenated, one forward, split back per request."""
        import numpy as np

        prob = await self._forward(np.concatenate(xs) if len(xs) > 1 else xs[0])
        return np.split(prob, np.cumsum([len(x) for x in xs])[:-1])

    async def predict(self, x: Any) -> dict[str, Any]:
        """Probabilities (N, K) and decoded predictions for float32 inputs (N, C, H, W): batched
        with other requests unless ``x`` alone fills a batch.

        Raises:
            ServeError: the outputs are not finite (inputs far outside the preprocessed range).
        """
        import numpy as np

        prob = await (self._forward(x) if len(x) >= self.max_batch_size else self._batched(x))
        if not np.isfinite(prob).all():
            raise ServeError("inputs: the model's outputs are not finite for these values (far outside the "
                             "preprocessed range? see preprocessing in GET)")
        return {"probabilities": prob.tolist(), "predictions": decode(prob, self.task, self.classes)}

    async def __call__(self, request: Any) -> Any:
        from starlette.responses import JSONResponse

        if request.method == "HEAD":  # health checkers: the headers of GET, no body
            from starlette.responses import Response

            return Response(status_code=200, media_type="application/json")
        if request.url.path.rstrip("/").endswith(READY_PATH):
            return JSONResponse(self.ready())
        if request.method == "GET":
            return JSONResponse(self.describe())
        if request.method != "POST":
            return JSONResponse({"error": f"method {request.method} not allowed: GET describes the model, POST "
                                          "predicts"}, status_code=405, headers={"Allow": "GET, HEAD, POST"})
        raw = await read_body_capped(request, self.max_request_bytes)
        if raw is None:
            return too_large_response(self.max_request_mb)
        try:
            x = self._parse(raw, request.headers.get("content-type"), self.engine.spec)
        except self._request_error as exc:
            return JSONResponse({"error": str(exc)}, status_code=int(getattr(exc, "status", 400)))
        except ServeError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        try:
            return JSONResponse(await self.predict(x))
        except ServeError as exc:
            return JSONResponse({"error": str(exc)}, status_code=422)


def build_app(ref: ModelRef, tracking_uri: str, options: Optional[ServeOptions] = None, tta: Optional[str] = None,
              crop_fraction: float = 0.875, loopback: bool = True,
              max_request_mb: float = DEFAULT_MAX_REQUEST_MB) -> Any:
    """The Ray Serve application (``Deployment.bind(...)``) serving ``ref``.

    Args:
        ref: from :func:`resolve_model`.
        tracking_uri: the MLflow store holding the registry (the replicas read it).
        options: replicas, autoscaling, queue bounds and batching (:mod:`dlops.serving.options`);
            None for the defaults.
        tta: test-time augmentation (``none``, ``flip``, ``five_crop``, ``ten_crop``); None keeps
            the ensemble's own setting (``none`` for a single network).
        crop_fraction: crop side / image side for the crop modes.
        loopback: the cluster is this machine only (a local Ray on 127.0.0.1): bind the replicas'
            internal gRPC servers to loopback (:func:`loopback_replica_grpc`).
        max_request_mb: cap on a POST body, in MB (10**6 bytes); a longer one gets HTTP 413.

    Raises:
        ServeError: a bad ``tta`` / ``crop_fraction``, or ``max_request_mb`` not > 0.
    """
    import math

    opts = options or ServeOptions()
    num_cpus = float(opts.ray_actor_options.get("num_cpus", 1.0))
    check_options(1, num_cpus, tta, crop_fraction, max_request_mb)
    # one failed constructor is the answer (the real error, at once), not 20 retries of a model
    # that will not load; replicas stop quickly on shutdown (no request outlives 5 s here)
    deployment = opts.deployment_kwargs()  # Ray Serve's names; GET reports them as given
    dep = serve.deployment(ModelServer, name="dlops-model", max_constructor_retry_count=1,
                           graceful_shutdown_wait_loop_s=0.5, graceful_shutdown_timeout_s=5, **deployment)
    return dep.bind(ref, tracking_uri, tta, crop_fraction, loopback, max_request_mb, opts.max_batch_size,
                    opts.batch_wait_timeout_s, max(1, math.floor(num_cpus)), deployment)


def start(ref: ModelRef, tracking_uri: str, host: str = "127.0.0.1", port: int = 8000, route_prefix: str = "/",
          **app_kwargs: Any) -> Any:
    """Start Serve's HTTP proxy on ``host:port`` (127.0.0.1 by default) and run the app under
    ``route_prefix``. Ray must be initialised. Returns the app's ``DeploymentHandle``.

    Raises:
        ServeError: the deployment failed (a replica's constructor raised: the model does not
            load); the message carries the replica's error.
    """
    import logging

    app = build_app(ref, tracking_uri, **app_kwargs)
    serve.start(http_options={"host": host, "port": port})
    # serve.run connects to the Serve instance just started and logs that "new http_options will
    # not be applied": they were, by serve.start (Ray's documented way to set host and port)
    serve_logger = logging.getLogger("ray.serve")
    notice = _DropLogLine("Connecting to existing Serve app")
    serve_logger.addFilter(notice)
    try:
        return serve.run(app, name="dlops", route_prefix=route_prefix)
    except RuntimeError as exc:  # Serve: "Deploying application dlops failed: ..."
        detail = str(exc)
        try:  # the replica's own traceback is in the deployment's status message
            dep_status = serve.status().applications["dlops"].deployments["dlops-model"]
            detail = dep_status.message or detail
        except Exception:  # noqa: BLE001  (no status: keep Serve's message)
            pass
        raise ServeError(f"{ref.uri} (version {ref.version}) failed to load in its replica: "
                         f"{_last_error(detail)}") from None
    finally:
        serve_logger.removeFilter(notice)


def _last_error(text: str) -> str:
    """The replica's own exception line out of Serve's deployment-failure message (its last
    ``Xxx: message`` line), or the whole text when there is none."""
    import re

    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    for ln in reversed(lines):
        if re.match(r"^(?:[A-Za-z_]\w*\.)*[A-Z]\w*: ", ln):  # e.g. _pickle.UnpicklingError: ...
            return ln
    return " ".join(lines[-3:]) if lines else text


class _DropLogLine:
    """A ``logging`` filter that drops the records whose message starts with ``prefix``."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def filter(self, record: Any) -> bool:
        return not record.getMessage().startswith(self.prefix)
