"""The MLflow pyfunc model of an ensemble: members' checkpoints as artifacts, averaged output."""

from __future__ import annotations

from typing import Any

import mlflow.pyfunc
import numpy as np


class EnsemblePyfunc(mlflow.pyfunc.PythonModel):
    """Input (N, C, H, W) float32, preprocessed exactly as in training (see the model metadata);
    output (N, K) class probabilities averaged over the members and, with test-time
    augmentation, over the views of each image (:mod:`dlops_plugins.ensemble.tta`): softmax rows
    for ``classification``, one sigmoid per label for ``multilabel`` (the members' spec ``task``).

    Artifacts: ``member_0`` ... ``member_{M-1}``, each a trial checkpoint directory
    (``state.pt`` + ``spec.json``). Model config (``mlflow.pyfunc.log_model(model_config=...)``):
    ``tta`` (one of ``TTA_MODES``, default ``none``) and ``crop_fraction`` (default 0.875); it can be
    overridden at load time with ``mlflow.pyfunc.load_model(uri, model_config={...})``.

    Raises (at load): ValueError for a bad ``tta`` or ``crop_fraction``, or members of
    different tasks.
    """

    def load_context(self, context: Any) -> None:
        from dlops.train.checkpoint import load_checkpoint_model
        from dlops_plugins.ensemble.tta import check_tta

        keys = sorted((k for k in context.artifacts if k.startswith("member_")), key=lambda k: int(k.split("_")[1]))
        loaded = [load_checkpoint_model(context.artifacts[k]) for k in keys]
        self.members = [m for m, _ in loaded]
        tasks = {sp.get("task", "classification") for _, sp in loaded}
        if len(tasks) != 1:
            raise ValueError(f"ensemble members mix tasks: {sorted(tasks)}")
        self.task = tasks.pop()
        cfg = dict(getattr(context, "model_config", None) or {})
        self.tta = str(cfg.get("tta", "none"))
        self.crop_fraction = float(cfg.get("crop_fraction", 0.875))
        check_tta(self.tta, self.crop_fraction)

    def predict(self, context, model_input, params=None):  # no type hints: MLflow would validate by them
        import torch

        from dlops.train.loop import predict_proba
        from dlops_plugins.ensemble.average import average_probabilities
        from dlops_plugins.ensemble.tta import predict_tta

        x = torch.as_tensor(np.asarray(model_input, dtype=np.float32))
        probs = np.stack([predict_tta(lambda v, m=m: predict_proba(m, v, task=self.task), x, self.tta,
                                      self.crop_fraction) for m in self.members])
        return average_probabilities(probs).astype(np.float32)
