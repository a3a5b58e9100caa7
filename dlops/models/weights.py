"""Weights: one reference grammar (:func:`parse_weights_ref`), one way to read and fit a state dict.

Grammar of a weights reference (``model.weights`` in the project file, ``weights=`` of
:func:`dlops.models.create_model`), parsed by the pure function :func:`parse_weights_ref`::

    weights := "pretrain"                       # kind "pretrain": the source network that
                                                #   `dlops run` trains on the source task
             | "models:/" NAME "@" ALIAS        # kind "registry": an MLflow registered model
             | "models:/" NAME "/" VERSION      #   (VERSION: digits)
             | "runs:/" RUN_ID "/" PATH         # kind "run": an MLflow model logged in a run
             | PATH                             # kind "file": an existing file, or text that
                                                #   looks like a path (contains "/", starts
                                                #   with ".", ends in .pt .pth .bin .ckpt)
             | TORCHVISION_NAME                 # kind "torchvision": UPPERCASE [A-Z][A-Z0-9_]*,
                                                #   e.g. DEFAULT, IMAGENET1K_V1 (downloads:
                                                #   online only)

The alternatives are tried in this order: an existing file called ``DEFAULT`` is a file.
Anything else raises ``ValueError`` naming ``model.weights`` and the value. None (from scratch)
is no reference: callers test for it before parsing.

Reading: a file is a ``state_dict`` saved with ``torch.save``, loaded with ``weights_only=True``
on the CPU; an MLflow model is loaded with ``mlflow.pytorch.load_model`` and its ``state_dict``
used. Every state dict read, or handed over (:func:`apply_state_dict`), goes through the one
normaliser :func:`normalise_state_dict`: checkpoint wrappers (``{"state_dict": ...}``,
``{"model_state_dict": ...}``, ``{"model": ...}``) are unwrapped and the ``module.``
(``torch.nn.DataParallel`` / DDP) and ``_orig_mod.`` (``torch.compile``) prefixes stripped, in
any nesting.

Fitting (:func:`fit_state_dict`): head tensors whose shape differs (another number of classes)
are left out and reported; a first-conv weight with another number of input channels is adapted
(:func:`dlops.models.heads.adapt_conv_weight`); any other mismatch, missing or unexpected key
raises ``ValueError`` naming the keys, because it means the weights belong to another
architecture.

The two uses: :func:`load_weights` (into a network, by :func:`dlops.models.create_model`) and
:func:`load_source_state` (the source network of a transfer, by ``dlops run``; its features are
copied into every trial's network by :func:`dlops.models.transfer.transfer_features`, which fits
them with the same :func:`fit_state_dict`).

The parser imports nothing heavy; torch and mlflow are imported when weights are read.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Union

from dlops.errors import DataError
from dlops.models.heads import adapt_conv_weight, first_conv_name, head_name
from dlops.models.registry import build_from_spec

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

__all__ = [
    "KINDS",
    "LoadReport",
    "WeightsRef",
    "apply_state_dict",
    "fit_state_dict",
    "load_source_state",
    "load_weights",
    "normalise_state_dict",
    "parse_weights_ref",
    "read_state_dict",
]

log = logging.getLogger("dlops.models")

#: the kinds of weights reference, in the order the grammar tries them
KINDS = ("pretrain", "registry", "run", "file", "torchvision")

_TORCHVISION_RE = re.compile(r"^[A-Z][A-Z0-9_]*$")
_VERSION_RE = re.compile(r"^[0-9]+$")
_PATH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")
_PREFIXES = ("module.", "_orig_mod.")

_GRAMMAR = ("pretrain, models:/NAME@ALIAS, models:/NAME/VERSION, runs:/RUN_ID/PATH, a state_dict file "
            "(saved with torch.save), or a torchvision weights name such as DEFAULT or IMAGENET1K_V1")


@dataclass(frozen=True)
class WeightsRef:
    """A parsed weights reference.

    Attributes:
        kind: ``"pretrain"``, ``"registry"`` (``models:/``), ``"run"`` (``runs:/``), ``"file"``
            or ``"torchvision"``.
        value: the reference: the URI, the file path, the torchvision weights name, ``"pretrain"``.
    """

    kind: str
    value: str

    def __str__(self) -> str:
        return self.value

    @property
    def is_mlflow(self) -> bool:
        """Whether it is read with MLflow (kinds ``registry`` and ``run``)."""
        return self.kind in ("registry", "run")


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except (OSError, ValueError):  # a name too long, a NUL byte
        return False


def parse_weights_ref(text: Union[str, os.PathLike[str]], base: Union[str, os.PathLike[str], None] = None) -> WeightsRef:
    """Parse a weights reference (grammar in the module docstring). No torch, no MLflow.

    Args:
        text: the reference; an ``os.PathLike`` is always a file.
        base: a folder (the project file's) against which a relative path is tried first: when
            ``base / text`` exists, the reference is that file (the value is ``base / text``).

    Returns:
        The :class:`WeightsRef`.

    Raises:
        ValueError: ``text`` is empty, a malformed ``models:/`` or ``runs:/`` URI, or none of the
            alternatives; the message starts ``model.weights:`` and names the value.
    """
    if isinstance(text, os.PathLike):
        return WeightsRef("file", os.fspath(text))
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"model.weights: expected {_GRAMMAR}; got {text!r}")
    if text == "pretrain":
        return WeightsRef("pretrain", text)
    if text.startswith("models:/"):
        rest = text[len("models:/"):]
        name, at, alias = rest.partition("@")
        if at:
            ok = bool(name) and bool(alias) and "/" not in name and "/" not in alias
        else:
            name, slash, version = rest.partition("/")
            ok = bool(name) and bool(slash) and bool(_VERSION_RE.match(version))
        if not ok:
            raise ValueError(f"model.weights: {text!r} is not models:/NAME@ALIAS or models:/NAME/VERSION")
        return WeightsRef("registry", text)
    if text.startswith("runs:/"):
        run_id, slash, path = text[len("runs:/"):].partition("/")
        if not run_id or not slash or not path:
            raise ValueError(f"model.weights: {text!r} is not runs:/RUN_ID/PATH")
        return WeightsRef("run", text)
    if base is not None and not Path(text).is_absolute() and _exists(Path(base) / text):
        return WeightsRef("file", str(Path(base) / text))
    if _exists(Path(text)) or "/" in text or os.sep in text or text.startswith(".") \
            or text.endswith(_PATH_SUFFIXES):
        return WeightsRef("file", text)
    if _TORCHVISION_RE.match(text):
        return WeightsRef("torchvision", text)
    raise ValueError(f"model.weights: {text!r} is no such file and not a weights reference; expected {_GRAMMAR}")


def _as_ref(weights: Union[str, os.PathLike[str], WeightsRef]) -> WeightsRef:
    return weights if isinstance(weights, WeightsRef) else parse_weights_ref(weights)


# --------------------------------------------------------------------------- reading


def _strip_prefixes(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for p in _PREFIXES:
            if key.startswith(p):
                key, changed = key[len(p):], True
    return key


def normalise_state_dict(obj: Any, source: str = "state dict") -> dict[str, torch.Tensor]:
    """The one state-dict normaliser: unwrap checkpoint wrappers, strip wrapper prefixes.

    A dict that is not all tensors is unwrapped through its first key among ``state_dict``,
    ``model_state_dict``, ``model`` that holds a dict (repeatedly). Every key then loses its
    ``module.`` (``torch.nn.DataParallel``, DDP) and ``_orig_mod.`` (``torch.compile``)
    prefixes, in any nesting (``_orig_mod.module.``, ``module._orig_mod.``...).

    Args:
        obj: what ``torch.load`` returned, or a state dict.
        source: the file or URI, for the message.

    Returns:
        ``{key: tensor}`` (the tensors themselves, not copies).

    Raises:
        DataError: not a state dict (a dict of tensors), nor a wrapper of one.
    """
    import torch

    for _ in range(4):
        if not isinstance(obj, Mapping) or all(isinstance(v, torch.Tensor) for v in obj.values()):
            break
        inner = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise DataError(f"weights {source!r} do not hold a state_dict (a dict of tensors); "
                        "save one with torch.save(model.state_dict(), path)")
    return {_strip_prefixes(str(k)): v for k, v in obj.items()}


def read_state_dict(weights: Union[str, os.PathLike[str], WeightsRef]) -> dict[str, torch.Tensor]:
    """Read and normalise (:func:`normalise_state_dict`) the state dict of a file or MLflow model.

    Args:
        weights: a reference of kind ``file``, ``registry`` or ``run``.

    Returns:
        ``{key: tensor}`` on the CPU.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: another kind of reference (``pretrain``, ``torchvision``), or a bad reference.
        DataError: the file cannot be read with ``torch.load(weights_only=True)``, holds no state
            dict, or the MLflow model cannot be loaded or is no ``torch.nn.Module``.
    """
    import torch

    ref = _as_ref(weights)
    source = ref.value
    if ref.is_mlflow:
        import mlflow.pytorch

        try:
            loaded = mlflow.pytorch.load_model(source, map_location="cpu")
        except Exception as exc:
            raise DataError(f"cannot load MLflow model {source!r}: {type(exc).__name__}: {exc}") from exc
        if not isinstance(loaded, torch.nn.Module):
            raise DataError(f"MLflow model {source!r} is a {type(loaded).__name__}, not a torch nn.Module")
        return normalise_state_dict(loaded.state_dict(), source)
    if ref.kind != "file":
        raise ValueError(f"weights {source!r} ({ref.kind}) are not read from a file or MLflow model")
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {source!r} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise DataError(
            f"cannot read weights file {source!r}: not a state dict that torch.load(weights_only=True) "
            f"reads ({type(exc).__name__}). Save one with torch.save(model.state_dict(), path)"
        ) from exc
    return normalise_state_dict(obj, source)


# --------------------------------------------------------------------------- fitting


@dataclass
class LoadReport:
    """What :func:`load_weights` / :func:`apply_state_dict` did.

    Attributes:
        source: the file or URI.
        loaded: keys copied into the model.
        skipped: head keys left out, ``{key: (shape in file, shape in model)}``.
        adapted: keys adapted to other input channels (the first conv).
        missing_head: head keys the weights do not give (the head keeps its initialisation).
    """

    source: str
    loaded: list[str] = field(default_factory=list)
    skipped: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = field(default_factory=dict)
    adapted: list[str] = field(default_factory=list)
    missing_head: list[str] = field(default_factory=list)


def _is_head_key(key: str, head: str) -> bool:
    return key.startswith(head + ".") if head else True


def fit_state_dict(
    model: nn.Module,
    state: Mapping[str, torch.Tensor],
    head: str | None = None,
    source: str = "state dict",
    keep_head: bool = True,
) -> tuple[dict[str, torch.Tensor], LoadReport]:
    """Match a normalised state dict against ``model``'s keys and shapes (nothing is loaded).

    Args:
        model: the network (its head already sized for the new task).
        state: ``{key: tensor}`` after :func:`normalise_state_dict`.
        head: dotted head name (default :func:`dlops.models.heads.head_name`).
        source: the file or URI, for messages and the report.
        keep_head: load head tensors of the same shape (``load_weights``); False leaves every head
            tensor out (transfer learning: the softmax layer is always a new one).

    Returns:
        ``(tensors to load, report)``; the first conv's weight adapted to the model's input
        channels when they differ (report ``adapted``).

    Raises:
        DataError: keys outside the head that are missing, unexpected or of another shape
            (another architecture); the message names up to 5 of each.
    """
    head = head_name(model) if head is None else head
    own = model.state_dict()
    try:
        first_conv = first_conv_name(model) + ".weight"
    except ValueError:
        first_conv = None
    report = LoadReport(source=source)
    unexpected = [k for k in state if k not in own and not _is_head_key(k, head)]
    missing = [k for k in own if k not in state and not _is_head_key(k, head)]
    bad_shape: list[str] = []
    to_load: dict[str, torch.Tensor] = {}
    for k, v in state.items():
        if k not in own or (not keep_head and _is_head_key(k, head)):
            continue
        want = own[k]
        if tuple(v.shape) == tuple(want.shape):
            to_load[k] = v
        elif _is_head_key(k, head):
            report.skipped[k] = (tuple(v.shape), tuple(want.shape))
        elif k == first_conv and v.ndim == 4 and v.shape[0] == want.shape[0] and v.shape[2:] == want.shape[2:]:
            to_load[k] = adapt_conv_weight(v.float(), want.shape[1]).to(want.dtype)
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
        raise DataError(
            f"weights {source!r} do not fit {type(model).__name__} (another architecture?): " + "; ".join(parts)
        )
    report.missing_head = [k for k in own if _is_head_key(k, head) and k not in to_load]
    report.loaded = sorted(to_load)
    return to_load, report


def apply_state_dict(
    model: nn.Module,
    state: Any,
    head: str | None = None,
    source: str = "state dict",
    keep_head: bool = True,
) -> LoadReport:
    """Normalise (:func:`normalise_state_dict`), fit (:func:`fit_state_dict`) and load a state
    dict into ``model``, in place. Skipped head keys are logged as a warning.

    Raises:
        DataError: not a state dict, or one of another architecture (see :func:`fit_state_dict`).
    """
    to_load, report = fit_state_dict(model, normalise_state_dict(state, source), head=head, source=source,
                                     keep_head=keep_head)
    model.load_state_dict(to_load, strict=False)
    if report.skipped:
        log.warning("weights %s: head %r left out (shape differs): %s", source,
                    head_name(model) if head is None else head,
                    {k: f"{a} -> {b}" for k, (a, b) in report.skipped.items()})
    return report


def load_weights(model: nn.Module, source: Union[str, os.PathLike[str], WeightsRef],
                 head: str | None = None) -> LoadReport:
    """Load a state_dict from a local file or an MLflow model into ``model``, in place.

    Head tensors (under ``head``) whose shape differs are left out; a first-conv weight with
    another number of input channels is adapted as in :func:`dlops.models.heads.adapt_first_conv`.

    Args:
        model: the network (its head already sized for the new task).
        source: a file saved with ``torch.save``, ``models:/NAME@ALIAS`` / ``runs:/ID/PATH``, or
            a :class:`WeightsRef` of those kinds.
        head: dotted head name (default :func:`dlops.models.heads.head_name`).

    Returns:
        A :class:`LoadReport`; skipped head keys are also logged as a warning.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: (:class:`dlops.errors.DataError` but for a bad reference) unreadable file,
            not a state_dict, MLflow load failure, or keys outside the head that are missing,
            unexpected or of another shape (another architecture).
    """
    ref = _as_ref(source)
    return apply_state_dict(model, read_state_dict(ref), head=head, source=ref.value)


# --------------------------------------------------------------------------- the source network


def load_source_state(weights: Union[str, WeightsRef], spec: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The state dict of the source network of a transfer (``model.weights`` of ``dlops run``).

    A file or MLflow model is read and normalised (:func:`read_state_dict`), then checked
    against a network built from ``spec`` (:func:`fit_state_dict`, head left out), so that
    weights of another architecture are refused here, before any trial starts; a torchvision
    weights name builds ``spec``'s network with those weights (a download: online only).

    Args:
        weights: a reference of kind ``file``, ``registry``, ``run`` or ``torchvision``.
        spec: the model spec (``name``, ``num_classes``, ``in_channels``, ...; see
            :mod:`dlops.models.transfer`).

    Returns:
        ``{key: tensor}`` on the CPU, keys normalised (no ``module.`` / ``_orig_mod.``); trials
        copy everything but the head with :func:`dlops.models.transfer.transfer_features`.

    Raises:
        DataError: the message starts ``model.weights: `` and names the file or model: a bad
            reference, ``pretrain`` (trained by the job, not read), no such file, unreadable
            file, no state dict, an MLflow model that cannot be loaded, torchvision weights that
            cannot be had, or weights of another architecture (naming the keys).
    """
    try:
        ref = _as_ref(weights)
    except ValueError as exc:
        raise DataError(str(exc)) from None
    if ref.kind == "pretrain":
        raise DataError("model.weights: 'pretrain' is the source network the job trains; it is not read")
    if ref.kind == "torchvision":
        try:
            net = build_from_spec(spec, weights=ref.value)
        except Exception as exc:
            raise DataError(f"model.weights: torchvision weights {ref.value!r} for {spec['name']}: {exc}") from None
        return {k: v.detach().clone() for k, v in net.state_dict().items()}
    try:
        state = read_state_dict(ref)
    except FileNotFoundError:
        raise DataError(f"model.weights: no such file {ref.value!r}") from None
    except ValueError as exc:
        raise DataError(f"model.weights: {exc}") from None
    try:
        fit_state_dict(build_from_spec(spec), state, source=ref.value, keep_head=False)
    except ValueError as exc:
        raise DataError(f"model.weights: {exc}") from None
    return state
