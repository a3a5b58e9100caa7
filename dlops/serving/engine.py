"""The model a replica holds, without Ray: loaded once from the registry, always in eval mode,
and one batched forward for any number of images (:class:`Engine`).

A single network runs through :func:`dlops.predict.member_probabilities` as an ensemble of one
(test-time views in one forward); an ensemble through its pyfunc's members
(:class:`dlops.stacked.StackedMembers`, built once at load) and its ensemble method, exactly as
``mlflow.pyfunc.load_model(...).predict`` computes it.
"""

from __future__ import annotations

import time
from typing import Any, Optional

from dlops.serving.resolve import ModelRef


class Engine:
    """One loaded registered version and its forward.

    Args:
        ref: from :func:`dlops.serving.resolve_model`.
        tracking_uri: the MLflow store holding the registry.
        tta: test-time augmentation; None keeps the ensemble's own setting (``none`` for a single
            network).
        crop_fraction: crop side / image side for the crop modes (fraction).
        num_threads: torch intra-op threads (a replica's CPUs); None leaves torch's default.

    Attributes:
        spec: the model metadata's ``model_spec`` (``image_size``, ``in_channels``, ``mean``,
            ``std``, ``task``, ...), what request parsing needs.
        shape: (C, H, W) of one preprocessed image.
        load_s: seconds the load took (download + deserialise), for the readiness endpoint.

    Raises:
        Whatever MLflow or torch raise for a version that cannot be loaded (the replica's
        constructor fails with it; ``dlops serve`` reports it and stops).
    """

    def __init__(self, ref: ModelRef, tracking_uri: str, tta: Optional[str] = None, crop_fraction: float = 0.875,
                 num_threads: Optional[int] = None) -> None:
        import mlflow
        import torch

        t0 = time.perf_counter()
        if num_threads:
            torch.set_num_threads(max(1, int(num_threads)))
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_registry_uri(tracking_uri)
        self.ref = ref
        # the version itself, not the alias: a replica serves what was resolved at start-up
        uri = f"models:/{ref.name}/{ref.version}"
        info = mlflow.models.get_model_info(uri)
        meta = info.metadata or {}
        self.spec: dict[str, Any] = dict(meta.get("model_spec") or {})
        self.task = self.spec.get("task", "classification")
        ci = meta.get("class_index") or {}
        self.classes = [ci[str(i)] for i in range(len(ci))] if ci else [str(c) for c in self.spec.get("class_names", [])]
        self.shape = (int(self.spec.get("in_channels", 3)), int(self.spec["image_size"]), int(self.spec["image_size"]))
        self.crop_fraction = float(crop_fraction)
        from dlops.stacked import StackedMembers

        if ref.kind == "ensemble":
            cfg = {"tta": tta, "crop_fraction": crop_fraction} if tta else None
            py = mlflow.pyfunc.load_model(uri, model_config=cfg).unwrap_python_model()
            self.members = getattr(py, "stacked", None) or StackedMembers(py.members)
            self.method = py.method
            self.task = py.task
            self.tta = py.tta
            self.crop_fraction = py.crop_fraction
        else:
            model = mlflow.pytorch.load_model(uri, map_location="cpu")
            self.members = StackedMembers([model])
            self.method = None
            self.tta = tta or "none"
        self.load_s = time.perf_counter() - t0

    def forward(self, x: Any) -> Any:
        """Probabilities for preprocessed images.

        Args:
            x: float32 numpy array (N, C, H, W), N >= 1.

        Returns:
            float64 numpy array (N, K): softmax rows (``classification``) or per-label sigmoids
            (``multilabel``), averaged over the test-time views, combined over the members by
            the ensemble method for an ensemble.
        """
        import numpy as np
        import torch

        from dlops.predict import member_probabilities

        probs = member_probabilities(self.members, torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)),
                                     self.task, self.tta, self.crop_fraction)
        if self.method is None:
            return probs[0]
        return np.asarray(self.method.combine(probs), dtype=np.float64)


def check_loads(ref: ModelRef, tracking_uri: str, tta: Optional[str] = None, crop_fraction: float = 0.875) -> float:
    """Load ``ref`` here, in the driver, as a replica will, and run it on one zero image: a model
    that does not load (missing or corrupt weights, a class that does not unpickle, members that
    do not agree) fails in seconds with its real error, before Ray starts.

    Returns:
        The seconds it took (load + one forward).

    Raises:
        ServeError: naming the version and carrying the error's type and first line.
    """
    import numpy as np

    from dlops.errors import ServeError

    t0 = time.perf_counter()
    try:
        eng = Engine(ref, tracking_uri, tta, crop_fraction)
        out = eng.forward(np.zeros((1, *eng.shape), dtype=np.float32))
        if out.shape[0] != 1 or (eng.classes and out.shape[1] != len(eng.classes)):
            raise ValueError(f"outputs of shape {tuple(out.shape)} for 1 image and {len(eng.classes)} classes")
    except ServeError:
        raise
    except Exception as exc:  # noqa: BLE001  (whatever the model's loading raises is the message)
        first = (str(exc).strip().splitlines() or [""])[0][:400]
        raise ServeError(f"MODEL_URI: {ref.uri} (models:/{ref.name}/{ref.version}) does not load: "
                         f"{type(exc).__name__}: {first}") from None
    return time.perf_counter() - t0


class CheckLoads:
    """:func:`check_loads` in a background thread, started at construction, so that the caller
    can start Ray meanwhile (``dlops serve``); :meth:`result` waits and re-raises its error.

    Attributes:
        seconds: what the check took (load + one forward), once :meth:`result` returned; 0.0 before.
    """

    def __init__(self, ref: ModelRef, tracking_uri: str, tta: Optional[str] = None,
                 crop_fraction: float = 0.875) -> None:
        import threading

        self.seconds = 0.0
        self._error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._run, args=(ref, tracking_uri, tta, crop_fraction),
                                        name="dlops-check-loads", daemon=True)
        self._thread.start()

    def _run(self, *args: Any) -> None:
        try:
            self.seconds = check_loads(*args)
        except BaseException as exc:  # noqa: BLE001  (re-raised in the caller's thread)
            self._error = exc

    def result(self) -> float:
        """Wait for the check. Returns its seconds.

        Raises:
            ServeError: the model does not load (from :func:`check_loads`).
        """
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self.seconds
