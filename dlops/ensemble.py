"""The registered ensemble: an MLflow pyfunc model whose artifacts are its members' checkpoints.

Its output combines the members' probabilities with the project's ensemble method (a plugin's,
looked up by name in the plugin registry: ``ensemble.method``, default ``average``) after each
member has averaged its own test-time views (:mod:`dlops.predict`). The core owns this model so
that any ensemble method a plugin provides is served the same way by ``dlops serve``,
``mlflow.pyfunc.load_model`` and ``mlflow models serve``.
"""

from __future__ import annotations

import warnings
from typing import Any

import mlflow.pyfunc
import numpy as np

#: the ensemble method of an ensemble registered without one (dlops < 0.2 registered ``average`` only)
DEFAULT_METHOD = "average"


def ensemble_method(name: str) -> Any:
    """The ensemble method ``name`` from the plugin registry (an object with ``combine``).

    Raises:
        dlops.errors.PluginError: no installed plugin provides it (the message lists those that exist).
    """
    from dlops.plugins import get_registry

    return get_registry().get("ensemble_methods", name)


def load_member(path: str) -> tuple[Any, dict[str, Any]]:
    """One member: ``(torch module on CPU in eval mode, its model spec)`` from a trial checkpoint
    directory or an MLflow pytorch model directory (``MLmodel`` with ``model_spec`` metadata).

    Raises:
        FileNotFoundError: neither a checkpoint nor an MLflow model directory.
    """
    import os

    if os.path.exists(os.path.join(path, "MLmodel")):
        import mlflow.pytorch
        from mlflow.models import Model

        spec = dict((Model.load(os.path.join(path, "MLmodel")).metadata or {}).get("model_spec") or {})
        return mlflow.pytorch.load_model(path, map_location="cpu").eval(), spec
    from dlops.train.checkpoint import load_checkpoint_model

    return load_checkpoint_model(path)


def _load_named(key: str, path: str) -> tuple[Any, dict[str, Any]]:
    """:func:`load_member`, its error naming the member and its files (a truncated checkpoint
    otherwise says only ``OSError: [Errno 22] Invalid argument``).

    Raises:
        RuntimeError: the member does not load (chained from the loader's error).
    """
    try:
        return load_member(path)
    except Exception as exc:  # noqa: BLE001  (whatever torch or MLflow raise: named, chained)
        import os

        from dlops.train.checkpoint import CHECKPOINT_FILE

        files = path if os.path.exists(os.path.join(path, "MLmodel")) else os.path.join(path, CHECKPOINT_FILE)
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        raise RuntimeError(f"ensemble member {key} ({files}) does not load: {type(exc).__name__}: {first}") from exc


class _QuietTypeHintNotice:
    """Drops MLflow's notice "Add type hints to the `predict` method" (printed in ANSI yellow when
    a ``PythonModel`` subclass is defined, in every process that loads the ensemble) between its
    construction and :meth:`restore`. Our ``predict`` has no type hints on purpose: MLflow would
    validate inputs by them and refuse what JSON decodes to. MLflow shows the notice under its own
    ``simplefilter("once")``, placed in front of any filter of ours, so a ``warnings`` filter cannot
    silence it; ``warnings.showwarning``, which Python documents as replaceable, can."""

    NOTICE = "Add type hints to the `predict` method"

    def __init__(self) -> None:
        self._show = warnings.showwarning
        warnings.showwarning = self._filter

    def _filter(self, message: Any, category: Any, filename: str, lineno: int, file: Any = None,
                line: Any = None) -> None:
        if self.NOTICE not in str(message):
            self._show(message, category, filename, lineno, file, line)

    def restore(self) -> None:
        warnings.showwarning = self._show


_quiet = _QuietTypeHintNotice()


class EnsemblePyfunc(mlflow.pyfunc.PythonModel):
    """Input (N, C, H, W), preprocessed exactly as in training (see the model metadata), of any
    numeric dtype (float64/int64 as JSON decodes it), or encoded images (base64 strings, an
    ``image`` column of a DataFrame), decoded and preprocessed by
    :func:`dlops.serving.inputs.model_input_array` with the first member's spec; bad input raises
    ``MlflowException`` (HTTP 400 under ``mlflow models serve``). Output (N, K) float32: the members' probabilities (softmax rows for ``classification``, one
    sigmoid per label for ``multilabel``: the members' spec ``task``), each member's averaged over
    the views of each image with test-time augmentation (:mod:`dlops.predict`), combined over
    the members by the ensemble method.

    Artifacts: ``member_0`` ... ``member_{M-1}``, each a trial checkpoint directory
    (:mod:`dlops.train.checkpoint`: the ensembles of ``dlops run``) or a downloaded MLflow pytorch
    model directory (it has an ``MLmodel`` file and ``model_spec`` metadata: the ensembles of
    registered versions, ``dlops ensemble``), loaded with ``mlflow.pytorch.load_model``. Model config (``mlflow.pyfunc.log_model(model_config=...)``):
    ``tta`` (one of :data:`dlops.predict.TTA_MODES`, default ``none``), ``crop_fraction``
    (default 0.875) and ``method`` (an ensemble method's name, default ``average``); it can be
    overridden at load time with ``mlflow.pyfunc.load_model(uri, model_config={...})``.

    Raises (at load): ValueError for a bad ``tta`` or ``crop_fraction``, or members of
    different tasks; :class:`dlops.errors.PluginError` for an ensemble method no installed plugin
    provides.
    """

    def load_context(self, context: Any) -> None:
        from dlops.predict import check_tta

        keys = sorted((k for k in context.artifacts if k.startswith("member_")), key=lambda k: int(k.split("_")[1]))
        loaded = [_load_named(k, context.artifacts[k]) for k in keys]
        self.members = [m for m, _ in loaded]
        from dlops.stacked import StackedMembers

        self.stacked = StackedMembers(self.members)  # built once: one forward per architecture
        tasks = {sp.get("task", "classification") for _, sp in loaded}
        if len(tasks) != 1:
            raise ValueError(f"ensemble members mix tasks: {sorted(tasks)}")
        self.task = tasks.pop()
        self.spec = dict(loaded[0][1]) if loaded else {}  # image_size, mean, std: for encoded-image inputs
        cfg = dict(getattr(context, "model_config", None) or {})
        self.tta = str(cfg.get("tta", "none"))
        self.crop_fraction = float(cfg.get("crop_fraction", 0.875))
        check_tta(self.tta, self.crop_fraction)
        self.method_name = str(cfg.get("method", DEFAULT_METHOD))
        self.method = ensemble_method(self.method_name)

    def predict(self, context, model_input, params=None):  # no type hints: MLflow would validate by them
        import torch

        from dlops.predict import member_probabilities

        from dlops.serving.inputs import RequestError, model_input_array

        try:
            x = torch.as_tensor(model_input_array(model_input, self.spec))
        except RequestError as exc:
            from dlops.serving.pyfunc import to_mlflow_error

            raise to_mlflow_error(exc) from None
        probs = member_probabilities(getattr(self, "stacked", None) or self.members, x, self.task, self.tta,
                                     self.crop_fraction)
        return np.asarray(self.method.combine(probs), dtype=np.float32)


_quiet.restore()
