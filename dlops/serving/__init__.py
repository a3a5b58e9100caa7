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
