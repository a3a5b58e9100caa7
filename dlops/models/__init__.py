"""Networks: the registry, the small CNN and torchvision backbones, heads, freeze policies, weights.

Importing this package registers the built-in architectures (:mod:`dlops.models.backbones`), as
importing timm does::

    from dlops.models import create_model, list_models

    model = create_model("resnet18", 5, weights="resnet18.pt", freeze="backbone", in_channels=1)

Modules, bottom up (none imports one above it): :mod:`~dlops.models.registry` (a leaf:
``@register_model``, :func:`list_models`), :mod:`~dlops.models.heads` (module surgery),
:mod:`~dlops.models.backbones` and :mod:`~dlops.models.small_cnn` (the architectures),
:mod:`~dlops.models.weights` (one weights reference parser, one loader),
:mod:`~dlops.models.freeze` (freeze policies), :mod:`~dlops.models.factory`
(:func:`create_model`), :mod:`~dlops.models.transfer` (model specs, transfer of features).

Importing the package imports neither torch nor torchvision; building a network does.
"""

from __future__ import annotations

from dlops.models import backbones as _backbones  # noqa: F401  (registers the built-in architectures)
from dlops.models.factory import create_model
from dlops.models.registry import get_model_spec, list_models, register_model

__all__ = ["available_models", "create_model", "get_model_spec", "list_models", "register_model"]


def available_models() -> list[str]:
    """Names accepted by ``model.name`` (sorted): :func:`list_models`."""
    return list_models()
