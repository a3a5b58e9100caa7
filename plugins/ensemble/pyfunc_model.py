"""The MLflow pyfunc model of an ensemble: members' checkpoints as artifacts, averaged output."""

from __future__ import annotations

import os
from typing import Any

import mlflow.pyfunc
import numpy as np


class EnsemblePyfunc(mlflow.pyfunc.PythonModel):
    """Input (N, C, H, W) float32, preprocessed exactly as in training (see the model metadata);
    output (N, K) averaged class probabilities.

    Artifacts: ``member_0`` ... ``member_{M-1}``, each a trial checkpoint directory
    (``state.pt`` + ``spec.json``).
    """

    def load_context(self, context):
        from dlops.search.trainable import load_checkpoint_model

        keys = sorted((k for k in context.artifacts if k.startswith("member_")), key=lambda k: int(k.split("_")[1]))
        self.members = [load_checkpoint_model(context.artifacts[k])[0] for k in keys]

    def predict(self, context, model_input, params=None):
        import torch

        from dlops.train.loop import predict_proba
        from dlops_plugins.ensemble.average import average_probabilities

        x = torch.as_tensor(np.asarray(model_input, dtype=np.float32))
        probs = np.stack([predict_proba(m, x) for m in self.members])
        return average_probabilities(probs).astype(np.float32)
