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

from dlops.models.freeze import trainable_parameters  # noqa: F401  (re-exported for trials)


def build_model(spec: Mapping[str, Any]) -> nn.Module:
    """A fresh network (random init) for ``spec``, with a head of ``num_classes`` outputs.

    Raises:
        ValueError: unknown ``spec["name"]``; the message lists the supported names.
    """
    from dlops.models.backbones import create_model

    name = spec["name"]
    kwargs: dict[str, Any] = {}
    if name == "small_cnn":
        kwargs = {"hidden": int(spec.get("hidden", 64)), "width": int(spec.get("width", 16))}
    return create_model(name, int(spec["num_classes"]), weights=None, in_channels=int(spec.get("in_channels", 3)),
                        **kwargs)


def head_of(model: nn.Module) -> str:
    """The dotted name of the model's head (``head``, ``fc``, ``classifier.3``, ``heads.head``...)."""
    return getattr(model, "dlops_head", None) or "head"


def transfer_features(model: nn.Module, source_state: Mapping[str, torch.Tensor]) -> list[str]:
    """Copy every source tensor whose name and shape match into ``model``, except the head's:
    the softmax layer is always replaced by a new one (transfer learning). Returns the names copied.

    Raises:
        ValueError: nothing matched (the source network is of another architecture).
    """
    own = model.state_dict()
    head = head_of(model) + "."
    src = {k[len("module."):] if k.startswith("module.") else k: v for k, v in source_state.items()}
    copied = [k for k, v in src.items() if k in own and own[k].shape == v.shape and not k.startswith(head)]
    if not copied:
        raise ValueError("model.weights: no tensor of the source network matches the model (other architecture?)")
    own.update({k: src[k] for k in copied})
    model.load_state_dict(own)
    return copied


def apply_freeze(model: nn.Module, policy: str) -> nn.Module:
    """Freeze by policy (see :func:`dlops.models.freeze.parse_freeze_policy`: ``none``,
    ``backbone``, ``until:<block>``, ``,reinit_last=N``); returns the model.

    Frozen means bitwise frozen: ``requires_grad`` is off and frozen BatchNorm layers stay in
    eval mode whenever ``model.train()`` is called.

    Raises:
        ValueError: an unknown policy.
    """
    from dlops.models.freeze import apply_freeze as _apply

    _apply(model, policy)
    return model
