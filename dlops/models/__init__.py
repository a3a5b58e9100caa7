"""Networks: the small CNN, torchvision backbones, heads and freeze policies."""

from __future__ import annotations


def available_models() -> list[str]:
    """Names accepted by ``model.name`` (sorted)."""
    try:
        from dlops.models.backbones import list_models
    except ImportError:
        return ["small_cnn"]
    return sorted(list_models())
