"""The MLflow model of a registered dlops network: the ``pytorch`` flavor and a dlops ``python_function``.

``mlflow.pytorch.log_model`` writes a pyfunc flavor (``loader_module: mlflow.pytorch``) that takes
only float32 arrays of the signature's exact dtype (MLflow enforces tensor signatures strictly:
``dtype of input float64 does not match expected dtype float32``, which is what a JSON body decodes
to) and returns logits. :func:`log_model` writes the same ``pytorch`` flavor (so
``mlflow.pytorch.load_model`` gives the network as before) with this module as the pyfunc loader
(MLflow's custom-flavor mechanism: ``Model.log(flavor=module)`` calls :func:`save_model`). Its
``predict``:

* takes what :func:`dlops.serving.inputs.model_input_array` takes: (N, C, S, S) arrays of any
  numeric dtype (float64/int64 as JSON decodes them), base64-encoded images (decoded and
  preprocessed exactly as training's eval transform), dicts with ``images``/``inputs``, and
  ``dataframe_split`` frames (an ``image`` column of base64 strings, or C*S*S numeric columns);
* returns float32 probabilities (N, K): softmax rows for ``classification``, one sigmoid per label
  for ``multilabel`` (the model spec's ``task``); the class names are the model metadata's
  ``class_index``.

Bad input raises ``MlflowException`` (``INVALID_PARAMETER_VALUE``), so ``mlflow models serve``
answers 400 with the message of :class:`dlops.serving.inputs.RequestError`.

The signature (:func:`model_signature`) declares the outputs only: an input schema would make
MLflow reject float64 before this ``predict`` sees it, and it cannot describe "a tensor or images";
the model metadata's ``model_spec`` and ``dlops.serving.inputs.describe_inputs`` describe the inputs.
"""

from __future__ import annotations

import os
import sys
from typing import Any

__all__ = ["DlopsPyfunc", "log_model", "model_signature", "save_model", "to_mlflow_error"]


def model_signature(num_outputs: int) -> Any:
    """The signature of a dlops model: outputs (-1, ``num_outputs``) float32, no input schema
    (see the module docstring: the pyfunc checks its inputs itself)."""
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    return ModelSignature(outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, int(num_outputs)))]))


def to_mlflow_error(exc: Exception) -> Exception:
    """A :class:`~dlops.serving.inputs.RequestError` as the ``MlflowException`` (invalid parameter
    value: HTTP 400 in MLflow's scoring server) that carries its message."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    return MlflowException(str(exc), error_code=INVALID_PARAMETER_VALUE)


def save_model(pytorch_model: Any, path: str, mlflow_model: Any = None, **kwargs: Any) -> None:
    """``mlflow.pytorch.save_model`` with this module as the pyfunc flavor's loader.

    Args:
        pytorch_model: the network (``torch.nn.Module``).
        path: the local model directory to write.
        mlflow_model: the ``mlflow.models.Model`` being written (``Model.log`` passes it).
        **kwargs: passed to ``mlflow.pytorch.save_model`` (signature, metadata, extra_files,
            pip_requirements, serialization_format, ...).
    """
    import mlflow.pytorch
    from mlflow.models import Model

    if mlflow_model is None:
        mlflow_model = Model()
    mlflow.pytorch.save_model(pytorch_model, path, mlflow_model=mlflow_model, **kwargs)
    conf = mlflow_model.flavors["python_function"]
    conf["loader_module"] = __name__
    conf.pop("data", None)  # the loader gets the model directory (mlflow.pytorch.load_model reads it)
    mlflow_model.save(os.path.join(path, "MLmodel"))


def log_model(pytorch_model: Any, name: str = "model", **kwargs: Any) -> Any:
    """Log ``pytorch_model`` to the active run as a dlops model (``mlflow.pytorch.log_model``'s
    arguments; see :func:`save_model`). Returns MLflow's ``ModelInfo``."""
    from mlflow.models import Model

    return Model.log(artifact_path=None, name=name, flavor=sys.modules[__name__], pytorch_model=pytorch_model,
                     **kwargs)


class DlopsPyfunc:
    """The pyfunc of a single registered network (what :func:`_load_pyfunc` returns).

    Attributes:
        model: the ``torch.nn.Module`` on CPU, in eval mode.
        spec: the model metadata's ``model_spec`` (image_size, mean, std, in_channels, task).
    """

    def __init__(self, model: Any, spec: dict) -> None:
        self.model = model.eval()
        self.spec = dict(spec)
        self.task = self.spec.get("task", "classification")

    def get_raw_model(self) -> Any:
        return self.model

    def predict(self, data: Any, params: Any = None) -> Any:
        """Probabilities (N, K) float32 for ``data`` (any input of
        :func:`dlops.serving.inputs.model_input_array`).

        Raises:
            MlflowException: bad input (INVALID_PARAMETER_VALUE), naming the problem.
        """
        import numpy as np
        import torch

        from dlops.serving.inputs import RequestError, model_input_array
        from dlops.train.loop import predict_proba

        try:
            x = model_input_array(data, self.spec)
        except RequestError as exc:
            raise to_mlflow_error(exc) from None
        with torch.no_grad():
            return np.asarray(predict_proba(self.model, torch.from_numpy(x), task=self.task), dtype=np.float32)


def _load_pyfunc(path: str, model_config: Any = None) -> DlopsPyfunc:
    """MLflow's pyfunc loader hook: ``path`` is the model directory (the flavor has no ``data``)."""
    import mlflow.pytorch
    from mlflow.models import Model

    meta = Model.load(os.path.join(path, "MLmodel")).metadata or {}
    return DlopsPyfunc(mlflow.pytorch.load_model(path, map_location="cpu"), meta.get("model_spec") or {})
