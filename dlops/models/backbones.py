"""The built-in architectures: torchvision backbones and the small CNN, registered by name.

Importing :mod:`dlops.models` imports this module, which registers (``@register_model``):

=====================  ==========================  ===============
name                   family                      head replaced
=====================  ==========================  ===============
small_cnn              :class:`SmallCNN`            ``head`` (whole MLP)
resnet18/34/50         ResNet                      ``fc``
mobilenet_v3_small     MobileNetV3                 ``classifier.3``
mobilenet_v3_large     MobileNetV3                 ``classifier.3``
efficientnet_b0        EfficientNet                ``classifier.1``
convnext_tiny          ConvNeXt                    ``classifier.2``
densenet121            DenseNet                    ``classifier``
vgg11_bn               VGG                         ``classifier.6``
vit_b_16               VisionTransformer           ``heads.head``
=====================  ==========================  ===============

A torchvision builder takes a torchvision weights name (``"DEFAULT"``, ``"IMAGENET1K_V1"``):
torchvision downloads them (online only; never used in tests); the name is checked against the
architecture's weights enum first. With ``in_channels != 3`` the first convolution is adapted
(:func:`dlops.models.heads.adapt_first_conv`). Weights files and MLflow models are loaded by
:func:`dlops.models.create_model` (:mod:`dlops.models.weights`), for every architecture alike.

torch and torchvision are imported when a network is built, not when this module is imported.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dlops.models.heads import adapt_first_conv, replace_head
from dlops.models.registry import register_model

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

__all__ = ["small_cnn", "torchvision_weights"]


def torchvision_weights(name: str, weights: str) -> Any:
    """The torchvision weights enum member ``weights`` of model ``name`` (no download).

    Raises:
        ValueError: not a weights name of ``name``; the message lists the names there are.
    """
    import torchvision

    enum = torchvision.models.get_model_weights(name)
    try:
        return enum[weights]
    except KeyError:
        raise ValueError(
            f"{weights!r} is not a weights name of {name}, a local file or an MLflow URI "
            f"(models:/NAME@ALIAS); torchvision weights of {name}: "
            f"{', '.join(['DEFAULT', *enum.__members__])}"
        ) from None


def _torchvision_builder(tv_name: str, head: str):
    def build(num_outputs: int, in_channels: int = 3, weights: str | None = None, **kwargs: Any) -> nn.Module:
        import torchvision

        w = torchvision_weights(tv_name, weights) if weights else None
        model = torchvision.models.get_model(tv_name, weights=w, **kwargs)
        if in_channels != 3:
            adapt_first_conv(model, in_channels)
        replace_head(model, head, num_outputs)
        return model

    build.__name__ = build.__qualname__ = tv_name
    build.__doc__ = f"torchvision ``{tv_name}`` with a new ``{head}`` of ``num_outputs`` logits."
    return build


_TORCHVISION_HEADS = {
    "resnet18": ("fc", "resnet"),
    "resnet34": ("fc", "resnet"),
    "resnet50": ("fc", "resnet"),
    "mobilenet_v3_small": ("classifier.3", "mobilenet_v3"),
    "mobilenet_v3_large": ("classifier.3", "mobilenet_v3"),
    "efficientnet_b0": ("classifier.1", "efficientnet"),
    "convnext_tiny": ("classifier.2", "convnext"),
    "densenet121": ("classifier", "densenet"),
    "vgg11_bn": ("classifier.6", "vgg"),
    "vit_b_16": ("heads.head", "vit"),
}

for _name, (_head, _family) in _TORCHVISION_HEADS.items():
    register_model(_name, head=_head, torchvision=True, family=_family)(_torchvision_builder(_name, _head))


@register_model("small_cnn", head="head", torchvision=False, family="small_cnn", spec_keys=("hidden", "width"))
def small_cnn(num_outputs: int, in_channels: int = 1, weights: str | None = None, **kwargs: Any) -> nn.Module:
    """:class:`dlops.models.small_cnn.SmallCNN` (kwargs: ``hidden``, ``width``).

    Raises:
        ValueError: ``weights`` is given (the small CNN has no torchvision weights).
    """
    from dlops.models.small_cnn import SmallCNN

    if weights:
        raise ValueError(
            f"small_cnn has no torchvision weights; {weights!r} is neither a local file nor an "
            "MLflow URI (models:/NAME@ALIAS)"
        )
    return SmallCNN(num_classes=num_outputs, in_channels=in_channels, **kwargs)
