"""Module surgery: find and replace submodules, the head of a network, the first convolution.

Head replacement per architecture family: each model registers its head's name with
:func:`~dlops.models.registry.register_model` (the table is in :mod:`dlops.models.backbones`).

First convolution: with ``in_channels != 3`` the first convolution of a torchvision model is
rebuilt for that many channels; its (pretrained or loaded) weights are averaged over the RGB
channels and rescaled by ``3 / in_channels``, so that a grey image gives the same activations as
the RGB image with that grey in all three channels (the rule of timm's ``adapt_input_conv``).

torch is imported inside the functions: importing this module (and :mod:`dlops.models`) stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dlops.models.registry import HEAD_ATTR

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

__all__ = [
    "HEAD_ATTR",
    "adapt_conv_weight",
    "adapt_first_conv",
    "first_conv_name",
    "get_submodule",
    "head_name",
    "replace_head",
    "set_submodule",
]


def get_submodule(model: nn.Module, path: str) -> nn.Module:
    """The submodule at dotted ``path`` (``"classifier.3"``); ``""`` is the model itself.

    Raises:
        ValueError: no such submodule.
    """
    if not path:
        return model
    try:
        return model.get_submodule(path)
    except AttributeError:
        raise ValueError(f"{type(model).__name__} has no submodule {path!r}") from None


def set_submodule(model: nn.Module, path: str, new: nn.Module) -> None:
    """Replace the submodule at dotted ``path`` by ``new`` (works inside ``nn.Sequential``).

    Raises:
        ValueError: no such submodule, or ``path`` is empty.
    """
    from torch import nn

    if not path:
        raise ValueError("cannot replace the model itself")
    parent_path, _, last = path.rpartition(".")
    parent = get_submodule(model, parent_path)
    if not hasattr(parent, last) and not (last.isdigit() and isinstance(parent, nn.Sequential)):
        raise ValueError(f"{type(model).__name__} has no submodule {path!r}")
    setattr(parent, last, new)


def head_name(model: nn.Module) -> str:
    """Dotted name of the head of ``model``.

    Models from :func:`dlops.models.create_model` carry it (attribute ``dlops_head``); for any
    other model it is the last ``nn.Linear`` in module order.

    Raises:
        ValueError: the model has no recorded head and no ``nn.Linear``.
    """
    from torch import nn

    name = getattr(model, HEAD_ATTR, None)
    if isinstance(name, str):
        return name
    last = None
    for n, m in model.named_modules():
        if isinstance(m, nn.Linear):
            last = n
    if last is None:
        raise ValueError(f"cannot tell the head of {type(model).__name__}: it has no nn.Linear")
    return last


def replace_head(model: nn.Module, path: str, num_outputs: int) -> nn.Linear:
    """Replace the ``nn.Linear`` at ``path`` by a fresh ``Linear(in_features, num_outputs)``.

    If ``path`` names an ``nn.Sequential``, its last ``nn.Linear`` is replaced.

    Args:
        model: the network, changed in place.
        path: dotted name of the head (``"fc"``, ``"classifier.3"``, ``"heads.head"``).
        num_outputs: outputs (logits) of the new head.

    Returns:
        The new layer (PyTorch's default initialisation; on the device/dtype of the old one).

    Raises:
        ValueError: ``num_outputs < 1`` or there is no ``nn.Linear`` at ``path``.
    """
    from torch import nn

    if num_outputs < 1:
        raise ValueError(f"num_outputs must be >= 1, got {num_outputs}")
    old = get_submodule(model, path)
    if isinstance(old, nn.Sequential):
        idx = [i for i, m in enumerate(old) if isinstance(m, nn.Linear)]
        if not idx:
            raise ValueError(f"{path!r} of {type(model).__name__} holds no nn.Linear")
        path = f"{path}.{idx[-1]}" if path else str(idx[-1])
        old = old[idx[-1]]
    if not isinstance(old, nn.Linear):
        raise ValueError(f"{path!r} of {type(model).__name__} is a {type(old).__name__}, not nn.Linear")
    new = nn.Linear(old.in_features, num_outputs, bias=old.bias is not None,
                    device=old.weight.device, dtype=old.weight.dtype)
    set_submodule(model, path, new)
    return new


def first_conv_name(model: nn.Module) -> str:
    """Dotted name of the first ``nn.Conv2d`` in module order.

    Raises:
        ValueError: the model has no ``nn.Conv2d``.
    """
    from torch import nn

    for n, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            return n
    raise ValueError(f"{type(model).__name__} has no nn.Conv2d to adapt to the input channels")


def adapt_conv_weight(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """A conv weight for another number of input channels (timm's ``adapt_input_conv`` rule).

    Args:
        weight: (out, c_old, kh, kw).
        in_channels: the new number of input channels.

    Returns:
        (out, in_channels, kh, kw): the mean over ``c_old``, times ``c_old / in_channels``.
    """
    c_old = weight.shape[1]
    mean = weight.mean(dim=1, keepdim=True)
    return (mean * (c_old / in_channels)).repeat(1, in_channels, 1, 1).contiguous()


def adapt_first_conv(model: nn.Module, in_channels: int, path: str | None = None) -> nn.Conv2d:
    """Rebuild the first ``nn.Conv2d`` for ``in_channels`` input channels, in place.

    The new weight is the old one averaged over its input channels and scaled by
    ``c_old / in_channels`` (for 1 channel: the sum over RGB), so a grey input replicated to RGB
    and the same grey input as 1 channel give the same activations.

    Args:
        model: the network.
        in_channels: new number of input channels (>= 1).
        path: dotted name of the conv (default: the first ``nn.Conv2d`` in module order).

    Returns:
        The conv now in place (the old one if the channels already match).

    Raises:
        ValueError: ``in_channels < 1``, no conv, or a grouped conv (groups > 1).
    """
    import torch
    from torch import nn

    if in_channels < 1:
        raise ValueError(f"in_channels must be >= 1, got {in_channels}")
    path = path or first_conv_name(model)
    old = get_submodule(model, path)
    if not isinstance(old, nn.Conv2d):
        raise ValueError(f"{path!r} is a {type(old).__name__}, not nn.Conv2d")
    if old.in_channels == in_channels:
        return old
    if old.groups != 1:
        raise ValueError(f"cannot adapt grouped conv {path!r} (groups={old.groups})")
    new = nn.Conv2d(in_channels, old.out_channels, old.kernel_size, stride=old.stride,
                    padding=old.padding, dilation=old.dilation, bias=old.bias is not None,
                    padding_mode=old.padding_mode, device=old.weight.device, dtype=old.weight.dtype)
    with torch.no_grad():
        new.weight.copy_(adapt_conv_weight(old.weight, in_channels))
        if old.bias is not None:
            new.bias.copy_(old.bias)
    set_submodule(model, path, new)
    return new
