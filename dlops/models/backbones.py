"""Backbones: :func:`create_model`, head replacement per family, weights from files or MLflow.

Supported architectures (see :func:`dlops.models.registry.list_models`):

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

Weights (``weights=``):

* ``None``: random initialisation.
* a torchvision weights name (``"DEFAULT"``, ``"IMAGENET1K_V1"``): torchvision downloads them
  (online only; never used in tests). Checked against the architecture's weights enum first.
* a local file: a ``state_dict`` saved with ``torch.save`` (or a checkpoint dict holding one
  under ``"state_dict"``, ``"model_state_dict"`` or ``"model"``), loaded with
  ``weights_only=True`` on the CPU; a ``module.`` (DataParallel/DDP) or ``_orig_mod.``
  (``torch.compile``) prefix is stripped.
* an MLflow model URI (``models:/NAME@ALIAS``, ``models:/NAME/VERSION``, ``runs:/ID/model``):
  loaded with ``mlflow.pytorch.load_model``; its ``state_dict`` is used.

For files and MLflow models, head tensors whose shape differs (another number of classes) are
left out and reported (log warning plus :attr:`LoadReport.skipped`, found on the returned model as
``model.dlops_load_report``); any other mismatch, missing or unexpected key raises ``ValueError``,
because it means the weights belong to another architecture.

With ``in_channels != 3`` the first convolution of a torchvision model is rebuilt for that many
channels; its (pretrained or loaded) weights are averaged over the RGB channels and rescaled by
``3 / in_channels``, so that a grey image gives the same activations as the RGB image with that
grey in all three channels (the rule of timm's ``adapt_input_conv``).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dlops.models.registry import get_model_spec, list_models, register_model

__all__ = [
    "LoadReport",
    "adapt_first_conv",
    "create_model",
    "get_submodule",
    "head_name",
    "list_models",
    "load_weights",
    "register_model",
    "replace_head",
    "set_submodule",
]

log = logging.getLogger("dlops.models")

#: attribute set on every model built by :func:`create_model`: the dotted name of its head
HEAD_ATTR = "dlops_head"


# --------------------------------------------------------------------------- module surgery


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
    if not path:
        raise ValueError("cannot replace the model itself")
    parent_path, _, last = path.rpartition(".")
    parent = get_submodule(model, parent_path)
    if not hasattr(parent, last) and not (last.isdigit() and isinstance(parent, nn.Sequential)):
        raise ValueError(f"{type(model).__name__} has no submodule {path!r}")
    setattr(parent, last, new)


def head_name(model: nn.Module) -> str:
    """Dotted name of the head of ``model``.

    Models from :func:`create_model` carry it (attribute ``dlops_head``); for any other model it
    is the last ``nn.Linear`` in module order.

    Raises:
        ValueError: the model has no recorded head and no ``nn.Linear``.
    """
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


def _first_conv_name(model: nn.Module) -> str:
    for n, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            return n
    raise ValueError(f"{type(model).__name__} has no nn.Conv2d to adapt to the input channels")


def _adapt_conv_weight(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """(out, c_old, kh, kw) -> (out, in_channels, kh, kw): mean over c_old, times c_old / in_channels."""
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
    if in_channels < 1:
        raise ValueError(f"in_channels must be >= 1, got {in_channels}")
    path = path or _first_conv_name(model)
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
        new.weight.copy_(_adapt_conv_weight(old.weight, in_channels))
        if old.bias is not None:
            new.bias.copy_(old.bias)
    set_submodule(model, path, new)
    return new


# --------------------------------------------------------------------------- builders


def _check_tv_weights(name: str, weights: str) -> Any:
    """The torchvision weights enum member ``weights`` of model ``name`` (no download)."""
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

        w = _check_tv_weights(tv_name, weights) if weights else None
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


@register_model("small_cnn", head="head", torchvision=False, family="small_cnn")
def small_cnn(num_outputs: int, in_channels: int = 1, weights: str | None = None, **kwargs: Any) -> nn.Module:
    """:class:`dlops.models.small_cnn.SmallCNN` (kwargs: ``hidden``, ``width``)."""
    from dlops.models.small_cnn import SmallCNN

    if weights:
        raise ValueError(
            f"small_cnn has no torchvision weights; {weights!r} is neither a local file nor an "
            "MLflow URI (models:/NAME@ALIAS)"
        )
    return SmallCNN(num_classes=num_outputs, in_channels=in_channels, **kwargs)


# --------------------------------------------------------------------------- weights


@dataclass
class LoadReport:
    """What :func:`load_weights` did.

    Attributes:
        source: the file or URI.
        loaded: keys copied into the model.
        skipped: head keys left out, ``{key: (shape in file, shape in model)}``.
        adapted: keys adapted to other input channels (the first conv).
        missing_head: head keys the file does not have (the head keeps its initialisation).
    """

    source: str
    loaded: list[str] = field(default_factory=list)
    skipped: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = field(default_factory=dict)
    adapted: list[str] = field(default_factory=list)
    missing_head: list[str] = field(default_factory=list)


def is_mlflow_uri(weights: str) -> bool:
    """Whether ``weights`` is an MLflow model URI (``models:/...``, ``runs:/...``)."""
    return weights.startswith(("models:/", "runs:/"))


def _looks_like_path(weights: str) -> bool:
    return (os.sep in weights or "/" in weights or weights.startswith(".")
            or weights.endswith((".pt", ".pth", ".bin", ".ckpt")) or Path(weights).exists())


def _strip_prefixes(sd: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in sd.items():
        for p in ("module.", "_orig_mod."):
            while k.startswith(p):
                k = k[len(p):]
        out[k] = v
    return out


def _read_state_dict(source: str) -> dict[str, torch.Tensor]:
    if is_mlflow_uri(source):
        import mlflow.pytorch

        try:
            loaded = mlflow.pytorch.load_model(source, map_location="cpu")
        except Exception as exc:
            raise ValueError(f"cannot load MLflow model {source!r}: {type(exc).__name__}: {exc}") from exc
        if not isinstance(loaded, nn.Module):
            raise ValueError(f"MLflow model {source!r} is a {type(loaded).__name__}, not a torch nn.Module")
        return loaded.state_dict()
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {source!r} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(
            f"cannot read weights file {source!r} with torch.load(weights_only=True): "
            f"{type(exc).__name__}: {exc}. Save a state_dict: torch.save(model.state_dict(), path)"
        ) from exc
    if isinstance(obj, dict) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in ("state_dict", "model_state_dict", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"weights file {source!r} does not hold a state_dict (a dict of tensors)")
    return obj


def _is_head_key(key: str, head: str) -> bool:
    return key.startswith(head + ".") if head else True


def load_weights(model: nn.Module, source: str | os.PathLike, head: str | None = None) -> LoadReport:
    """Load a state_dict from a local file or an MLflow model URI into ``model``, in place.

    Head tensors (under ``head``) whose shape differs are left out; a first-conv weight with
    another number of input channels is adapted as in :func:`adapt_first_conv`.

    Args:
        model: the network (its head already sized for the new task).
        source: a file saved with ``torch.save`` or ``models:/NAME@ALIAS`` / ``runs:/ID/PATH``.
        head: dotted head name (default :func:`head_name`).

    Returns:
        A :class:`LoadReport`; skipped head keys are also logged as a warning.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: unreadable file, not a state_dict, MLflow load failure, or keys outside the
            head that are missing, unexpected or of another shape (another architecture).
    """
    source = os.fspath(source)
    head = head_name(model) if head is None else head
    sd = _strip_prefixes(_read_state_dict(source))
    own = model.state_dict()
    first_conv = None
    try:
        first_conv = _first_conv_name(model) + ".weight"
    except ValueError:
        pass
    report = LoadReport(source=source)
    unexpected = [k for k in sd if k not in own and not _is_head_key(k, head)]
    missing = [k for k in own if k not in sd and not _is_head_key(k, head)]
    bad_shape: list[str] = []
    to_load: dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        if k not in own:
            continue
        want = own[k]
        if tuple(v.shape) == tuple(want.shape):
            to_load[k] = v
        elif _is_head_key(k, head):
            report.skipped[k] = (tuple(v.shape), tuple(want.shape))
        elif k == first_conv and v.ndim == 4 and v.shape[0] == want.shape[0] and v.shape[2:] == want.shape[2:]:
            to_load[k] = _adapt_conv_weight(v.float(), want.shape[1]).to(want.dtype)
            report.adapted.append(k)
        else:
            bad_shape.append(f"{k}: {tuple(v.shape)} in the weights, {tuple(want.shape)} in the model")
    if unexpected or missing or bad_shape:
        parts = []
        if bad_shape:
            parts.append(f"shape mismatch outside the head: {bad_shape[:5]}")
        if missing:
            parts.append(f"missing keys: {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        if unexpected:
            parts.append(f"unexpected keys: {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
        raise ValueError(
            f"weights {source!r} do not fit {type(model).__name__} (another architecture?): "
            + "; ".join(parts)
        )
    report.missing_head = [k for k in own if _is_head_key(k, head) and k not in to_load]
    model.load_state_dict(to_load, strict=False)
    report.loaded = sorted(to_load)
    if report.skipped:
        log.warning("weights %s: head %r left out (shape differs): %s", source, head,
                    {k: f"{a} -> {b}" for k, (a, b) in report.skipped.items()})
    return report


# --------------------------------------------------------------------------- create_model


def create_model(
    name: str,
    num_outputs: int,
    weights: str | os.PathLike | None = None,
    freeze: Any = "none",
    in_channels: int = 3,
    **kwargs: Any,
) -> nn.Module:
    """Build a registered network with a new head of ``num_outputs`` logits.

    Args:
        name: a registered model (:func:`list_models`), e.g. ``"resnet18"``, ``"small_cnn"``.
        num_outputs: outputs of the new head (classes, or labels for a multi-label head).
        weights: None, a torchvision weights name (``"DEFAULT"``; needs the network), a local
            state_dict file, or an MLflow model URI ``models:/NAME@ALIAS`` (see module docs).
        freeze: a freeze policy string (:func:`dlops.models.freeze.parse_freeze_policy`, e.g.
            ``"backbone"``, ``"until:layer3,reinit_last=1"``) or a ``FreezePolicy``.
        in_channels: input channels (1 grey, 3 RGB); the model takes (N, in_channels, H, W).
        **kwargs: passed to the builder (torchvision constructor kwargs such as
            ``image_size`` for ViT; ``hidden``/``width`` for ``small_cnn``).

    Returns:
        The network, in train mode, mapping (N, in_channels, H, W) float32 to (N, num_outputs)
        logits. ``model.dlops_head`` is the head's dotted name; after file/MLflow weights,
        ``model.dlops_load_report`` is the :class:`LoadReport`.

    Raises:
        ValueError: unsupported ``name`` (the message lists the supported ones), a bad weights
            name or weights of another architecture, a bad freeze policy, ``num_outputs < 1``.
        FileNotFoundError: a weights path that does not exist.
    """
    from dlops.models.freeze import apply_freeze

    spec = get_model_spec(name)
    if num_outputs < 1:
        raise ValueError(f"num_outputs must be >= 1, got {num_outputs}")
    tv_weights: str | None = None
    file_weights: str | None = None
    if weights is not None:
        w = os.fspath(weights)
        if is_mlflow_uri(w) or isinstance(weights, os.PathLike) or _looks_like_path(w):
            file_weights = w
        elif spec.torchvision:
            _check_tv_weights(name, w)
            tv_weights = w
        else:
            raise ValueError(
                f"{name} has no torchvision weights; {w!r} is neither an existing file nor an "
                "MLflow URI (models:/NAME@ALIAS)"
            )
    model = spec.builder(num_outputs, in_channels=in_channels, weights=tv_weights, **kwargs)
    setattr(model, HEAD_ATTR, spec.head)
    if file_weights is not None:
        report = load_weights(model, file_weights, head=spec.head)
        model.dlops_load_report = report
    apply_freeze(model, freeze)
    model.train()
    return model
