"""The model registry: ``@register_model`` and :func:`list_models` (in the manner of timm).

A registered *builder* makes the whole network for one architecture, head included::

    @register_model("my_net", head="classifier", torchvision=False)
    def my_net(num_outputs: int, in_channels: int, weights: str | None, **kwargs) -> nn.Module:
        ...

``weights`` is a torchvision weights name (``"DEFAULT"``, ``"IMAGENET1K_V1"``) or None; local
files and MLflow models are loaded afterwards by :func:`dlops.models.create_model`, for every
architecture alike. ``head`` is the dotted name of the module that :func:`create_model` treats
as the head: it is left out of a weights file when its shape differs, and it is what
``freeze="backbone"`` leaves trainable.

This module is a leaf (as timm's ``_registry``): it imports no model file, nor torch. The
built-in architectures register themselves when the package :mod:`dlops.models` is imported
(which Python does before it imports this module), in :mod:`dlops.models.backbones`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

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
        spec_keys: integer keys of a model spec (:mod:`dlops.models.transfer`) passed to the
            builder as keyword arguments when present (``small_cnn``: ``hidden``, ``width``).
    """

    name: str
    builder: Builder
    head: str
    torchvision: bool = True
    family: str = ""
    spec_keys: tuple[str, ...] = ()


#: attribute set on every model built from the registry: the dotted name of its head
HEAD_ATTR = "dlops_head"

_REGISTRY: dict[str, ModelSpec] = {}


def register_model(
    name: str | Builder | None = None,
    *,
    head: str = "fc",
    torchvision: bool = True,
    family: str = "",
    spec_keys: tuple[str, ...] = (),
) -> Any:
    """Register a model builder under ``name`` (default: the function's name).

    Usable as ``@register_model``, ``@register_model()`` or ``@register_model("name", head=...)``.

    Args:
        name: registry name; when the decorator is used bare, the function's ``__name__``.
        head: dotted module name of the head in the built network.
        torchvision: whether the builder accepts torchvision weights names.
        family: architecture family (informational).
        spec_keys: integer keys of a model spec that the builder takes as keyword arguments.

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
                                   family=family or key.rstrip("0123456789_"), spec_keys=tuple(spec_keys))
        return fn

    if callable(name):  # bare @register_model
        return deco(name)
    return lambda fn: deco(fn, name)  # type: ignore[arg-type]


def list_models() -> list[str]:
    """Names of every registered model, sorted."""
    return sorted(_REGISTRY)


def get_model_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` of ``name``.

    Raises:
        ValueError: ``name`` is not registered; the message lists the supported names.
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unsupported model {name!r}; supported models: {', '.join(sorted(_REGISTRY))}"
        ) from None


def build_network(name: str, num_outputs: int, in_channels: int = 3, weights: str | None = None,
                  **kwargs: Any) -> Any:
    """The builder's network for ``name``, marked with its head (attribute ``dlops_head``).

    Nothing else: no weights file, no freeze policy (that is :func:`dlops.models.create_model`).

    Args:
        name: a registered model.
        num_outputs: outputs of the new head (>= 1).
        in_channels: input channels; the network takes (N, in_channels, H, W).
        weights: a torchvision weights name (``"DEFAULT"``) or None.
        **kwargs: passed to the builder.

    Returns:
        The ``torch.nn.Module``.

    Raises:
        ValueError: unsupported ``name``, ``num_outputs < 1``, or what the builder raises.
    """
    spec = get_model_spec(name)
    if num_outputs < 1:
        raise ValueError(f"num_outputs must be >= 1, got {num_outputs}")
    if weights is not None and not spec.torchvision:
        raise ValueError(f"{name} has no torchvision weights; {weights!r} is neither an existing file nor an "
                         "MLflow URI (models:/NAME@ALIAS)")
    model = spec.builder(num_outputs, in_channels=in_channels, weights=weights, **kwargs)
    setattr(model, HEAD_ATTR, spec.head)
    return model


def build_from_spec(model_spec: Mapping[str, Any], weights: str | None = None) -> Any:
    """:func:`build_network` for a model spec dict (``name``, ``num_classes``, ``in_channels``
    (default 3) and the architecture's :attr:`ModelSpec.spec_keys`).

    Raises:
        ValueError: as :func:`build_network`.
    """
    return build_network(model_spec["name"], int(model_spec["num_classes"]),
                         in_channels=int(model_spec.get("in_channels", 3)), weights=weights,
                         **builder_kwargs(model_spec))


def builder_kwargs(model_spec: Mapping[str, Any]) -> dict[str, int]:
    """The builder's keyword arguments in a model spec dict: its architecture's
    :attr:`ModelSpec.spec_keys` that the spec has (as ``int``), e.g. ``{"hidden": 64, "width": 16}``.

    Raises:
        ValueError: unsupported ``model_spec["name"]``.
    """
    spec = get_model_spec(model_spec["name"])
    return {k: int(model_spec[k]) for k in spec.spec_keys if model_spec.get(k) is not None}
