"""Building the network of a trial from a JSON model spec, and transferring source weights.

A *model spec* is a plain dict that travels with every checkpoint and registered model, so the
network can be rebuilt anywhere (a Ray worker, a serving replica)::

    {"name": "small_cnn", "num_classes": 5, "in_channels": 1, "hidden": 64, "width": 16,
     "freeze": "backbone", "image_size": 8, "mean": [0.5], "std": [0.5],
     "class_names": ["5", "6", "7", "8", "9"]}
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from dlops.errors import DataError
from dlops.models.factory import create_model
from dlops.models.freeze import apply_freeze as _apply_freeze
from dlops.models.freeze import trainable_parameters  # noqa: F401  (re-exported for trials)
from dlops.models.registry import HEAD_ATTR, builder_kwargs
from dlops.models.weights import apply_state_dict


def build_model(spec: Mapping[str, Any]) -> nn.Module:
    """A fresh network (random init) for ``spec``, with a head of ``num_classes`` outputs.

    Raises:
        ValueError: unknown ``spec["name"]``; the message lists the supported names.
    """
    return create_model(spec["name"], int(spec["num_classes"]), weights=None,
                        in_channels=int(spec.get("in_channels", 3)), **builder_kwargs(spec))


def head_of(model: nn.Module) -> str:
    """The dotted name of the model's head (``head``, ``fc``, ``classifier.3``, ``heads.head``...)."""
    return getattr(model, HEAD_ATTR, None) or "head"


def transfer_features(model: nn.Module, source_state: Mapping[str, torch.Tensor]) -> list[str]:
    """Copy the source network's tensors into ``model``, except the head's: the softmax layer is
    always replaced by a new one (transfer learning). Returns the names copied (sorted).

    The state dict is normalised and fitted as every weights file is
    (:func:`dlops.models.weights.apply_state_dict`): ``module.`` / ``_orig_mod.`` prefixes and
    checkpoint wrappers are removed, a first conv of another number of input channels is adapted.

    Raises:
        DataError: (a ``ValueError``) the message starts ``model.weights:``: not a state dict, or
            the source network is of another architecture (keys outside the head missing,
            unexpected or of another shape; named).
    """
    try:
        report = apply_state_dict(model, source_state, head=head_of(model), source="the source network",
                                  keep_head=False)
    except ValueError as exc:
        raise DataError(f"model.weights: {exc}") from None
    return report.loaded


def apply_freeze(model: nn.Module, policy: str) -> nn.Module:
    """Freeze by policy (see :func:`dlops.models.freeze.parse_freeze_policy`: ``none``,
    ``backbone``, ``until:<block>``, ``,reinit_last=N``); returns the model.

    Frozen means bitwise frozen: ``requires_grad`` is off and frozen BatchNorm layers stay in
    eval mode whenever ``model.train()`` is called.

    Raises:
        ValueError: an unknown policy.
    """
    _apply_freeze(model, policy)
    return model
