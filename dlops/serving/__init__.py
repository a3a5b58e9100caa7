"""Serving a registered model (a single network or an ensemble) over HTTP with Ray Serve.

``dlops serve models:/NAME@champion`` loads the registered version the alias points to (MLflow
registry aliases; stages are deprecated) into Ray Serve replicas. The HTTP proxy listens on
127.0.0.1 unless ``--host`` says otherwise (Ray has no authentication).

HTTP API, on the route prefix (default ``/``):

* ``GET``: the model: ``{"model_uri", "name", "version", "kind": "single"|"ensemble", "task",
  "classes", "input_shape": [C, H, W], "tta", "inputs", "preprocessing", "max_request_mb",
  "max_batch_size", "batch_wait_timeout_s", "ensemble_method"}``.
* ``GET <prefix>/-/ready``: ``{"ready": true, "name", "version", "kind", "model_uri", "load_s"}``,
  answered by a replica, so only once its model is loaded.
* ``POST``: images (raw bytes, multipart, base64 JSON) or a tensor ``{"inputs": (N, C, H, W)}``,
  parsed per request by :func:`dlops.serving.inputs.parse_request` (4xx naming the problem);
  returns ``{"probabilities": (N, K), "predictions": [...]}`` (the argmax class name per image for
  ``classification``, the labels with sigmoid >= 0.5 for ``multilabel``). A body over
  ``--max-request-mb`` gets 413 (:mod:`dlops.serving.body`); beyond the queue bound
  (:mod:`dlops.serving.options`) Ray Serve's proxy answers 503 at once.

Modules: :mod:`~dlops.serving.resolve` (driver-side checks, light), :mod:`~dlops.serving.options`
(deployment options), :mod:`~dlops.serving.engine` (the loaded model and its forward, no Ray),
:mod:`~dlops.serving.app` (the deployment: batching, HTTP), :mod:`~dlops.serving.body`,
:mod:`~dlops.serving.outputs`, :mod:`~dlops.serving.inputs`, :mod:`~dlops.serving._private` (Ray
internals).
"""

from __future__ import annotations

from dlops.errors import ServeError  # noqa: F401  (the kind lives in dlops.errors)
from typing import Any

from dlops.serving._private import loopback_replica_grpc
from dlops.serving.options import ServeOptions, load_serve_options
from dlops.serving.outputs import decode, probabilities
from dlops.serving.resolve import DEFAULT_MAX_REQUEST_MB, ModelRef, check_options, port_free, resolve_model
from dlops.serving.tensors import check_inputs

__all__ = ["DEFAULT_MAX_REQUEST_MB", "ModelRef", "ModelServer", "ServeError", "ServeOptions", "build_app",
           "check_inputs", "check_options", "decode", "load_serve_options", "loopback_replica_grpc", "port_free",
           "probabilities", "resolve_model", "start"]


def __getattr__(name: str) -> Any:
    """The Ray Serve app's names, imported on first use (``dlops.serving.app`` imports Ray)."""
    if name in ("ModelServer", "build_app", "start"):
        from dlops.serving import app

        return getattr(app, name)
    raise AttributeError(f"module 'dlops.serving' has no attribute {name!r}")
