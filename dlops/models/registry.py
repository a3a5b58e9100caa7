"""The model registry: ``@register_model`` and :func:`list_models` (in the manner of timm).

A registered *builder* makes the whole network for one architecture, head included::

    @register_model("my_net", head="classifier", torchvision=False)
    def my_net(num_outputs: int, in_channels: int, weights: str | None, **kwargs) -> nn.Module:
        ...

``weights`` is a torchvision weights name (``"DEFAULT"``, ``"IMAGENET1K_V1"``) or None; local
files and MLflow models are loaded afterwards by :func:`dlops.models.backbones.create_model`,
for every architecture alike. ``head`` is the dotted name of the module that
:func:`create_model` treats as the head: it is left out of a weights file when its shape
differs, and it is what ``freeze="backbone"`` leaves trainable.

This module imports nothing heavy: listing models needs neither torch nor torchvision.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

Builder = Callable[..., Any]


@dataclass(frozen=True)
class ModelSpec:
    """One registered architecture.

    Attributes:
        name: the registry name (``model.name`` in the project file).
        builder: ``builder(num_outputs, in_channels, weights, **kwargs) -> torch.nn.Module``.
        head: dotted module name of the head (e.g. ``"fc"``, ``"classifier.3"``, ``"heads.head"``).
        torchvision: whether ``weights`` may be a torchvision weights name.
        family: architecture family, for humans (``"resnet"``, ``"vit"``, ...).
    """

    name: str
    builder: Builder
    head: str
    torchvision: bool = True
    family: str = ""


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(
    name: str | Builder | None = None,
    *,
    head: str = "fc",
    torchvision: bool = True,
    family: str = "",
) -> Any:
    """Register a model builder under ``name`` (default: the function's name).

    Usable as ``@register_model``, ``@register_model()`` or ``@register_model("name", head=...)``.

    Args:
        name: registry name; when the decorator is used bare, the function's ``__name__``.
        head: dotted module name of the head in the built network.
        torchvision: whether the builder accepts torchvision weights names.
        family: architecture family (informational).

    Returns:
        The decorator (or, used bare, the function itself, unchanged).

    Raises:
        ValueError: ``name`` is already registered to a different builder.
    """

    def deco(fn: Builder, reg_name: str | None = None) -> Builder:
        key = reg_name or fn.__name__
        old = _REGISTRY.get(key)
        if old is not None and old.builder is not fn and (
            getattr(old.builder, "__qualname__", None) != getattr(fn, "__qualname__", None)
            or getattr(old.builder, "__module__", None) != getattr(fn, "__module__", None)
        ):
            raise ValueError(f"model {key!r} is already registered (by {old.builder!r})")
        _REGISTRY[key] = ModelSpec(name=key, builder=fn, head=head, torchvision=torchvision,
                                   family=family or key.rstrip("0123456789_"))
        return fn

    if callable(name):  # bare @register_model
        return deco(name)
    return lambda fn: deco(fn, name)  # type: ignore[arg-type]


def _ensure_builtins() -> None:
    # the built-in architectures register themselves when backbones is imported
    import dlops.models.backbones  # noqa: F401


def list_models() -> list[str]:
    """Names of every registered model, sorted."""
    _ensure_builtins()
    return sorted(_REGISTRY)


def get_model_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` of ``name``.

    Raises:
        ValueError: ``name`` is not registered; the message lists the supported names.
    """
    _ensure_builtins()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unsupported model {name!r}; supported models: {', '.join(sorted(_REGISTRY))}"
        ) from None
