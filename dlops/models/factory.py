"""``create_model``: a registered network, its new head, its weights and its freeze policy
(in the manner of timm's ``create_model``). Exported as :func:`dlops.models.create_model`."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Union

from dlops.models.freeze import apply_freeze
from dlops.models.registry import build_network, get_model_spec
from dlops.models.weights import WeightsRef, load_weights, parse_weights_ref

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

__all__ = ["create_model"]


def create_model(
    name: str,
    num_outputs: int,
    weights: Union[str, os.PathLike[str], WeightsRef, None] = None,
    freeze: Any = "none",
    in_channels: int = 3,
    **kwargs: Any,
) -> nn.Module:
    """Build a registered network with a new head of ``num_outputs`` logits.

    Args:
        name: a registered model (:func:`dlops.models.list_models`), e.g. ``"resnet18"``,
            ``"small_cnn"``.
        num_outputs: outputs of the new head (classes, or labels for a multi-label head).
        weights: None (random initialisation) or a weights reference
            (:func:`dlops.models.weights.parse_weights_ref`): a torchvision weights name
            (``"DEFAULT"``; needs the network), a local state_dict file (a ``str`` or a path),
            or an MLflow model URI ``models:/NAME@ALIAS``, ``models:/NAME/VERSION``,
            ``runs:/ID/PATH``. Files and MLflow models are loaded by
            :func:`dlops.models.weights.load_weights` (head of another size left out, first conv
            adapted, ``module.`` / ``_orig_mod.`` stripped).
        freeze: a freeze policy string (:func:`dlops.models.freeze.parse_freeze_policy`, e.g.
            ``"backbone"``, ``"until:layer3,reinit_last=1"``) or a ``FreezePolicy``.
        in_channels: input channels (1 grey, 3 RGB); the model takes (N, in_channels, H, W).
        **kwargs: passed to the builder (torchvision constructor kwargs such as
            ``image_size`` for ViT; ``hidden``/``width`` for ``small_cnn``).

    Returns:
        The network, in train mode, mapping (N, in_channels, H, W) float32 to (N, num_outputs)
        logits. ``model.dlops_head`` is the head's dotted name; after file/MLflow weights,
        ``model.dlops_load_report`` is the :class:`dlops.models.weights.LoadReport`.

    Raises:
        ValueError: unsupported ``name`` (the message lists the supported ones), a bad weights
            reference or torchvision weights name, weights of another architecture
            (:class:`dlops.errors.DataError`), a bad freeze policy, ``num_outputs < 1``.
        FileNotFoundError: a weights path that does not exist.
    """
    get_model_spec(name)  # an unsupported name is the first thing to report
    if num_outputs < 1:
        raise ValueError(f"num_outputs must be >= 1, got {num_outputs}")
    ref = None if weights is None else weights if isinstance(weights, WeightsRef) else parse_weights_ref(weights)
    if ref is not None and ref.kind == "pretrain":
        raise ValueError("weights='pretrain' is the source network that `dlops run` trains; give None, a "
                         "torchvision weights name, a state_dict file or an MLflow model URI")
    tv = ref.value if ref is not None and ref.kind == "torchvision" else None
    model = build_network(name, num_outputs, in_channels=in_channels, weights=tv, **kwargs)
    if ref is not None and tv is None:
        model.dlops_load_report = load_weights(model, ref)
    apply_freeze(model, freeze)
    model.train()
    return model
