"""Freeze policies: keep frozen parts truly frozen (BatchNorm statistics too), re-initialise layers.

Grammar of a policy string (parsed by the pure function :func:`parse_freeze_policy`)::

    policy  := mode ("," option)*
    mode    := "none"                 # everything trains
             | "backbone"             # everything but the head is frozen
             | "until:" BLOCK         # modules up to and including BLOCK are frozen
    option  := "reinit_last=" N       # re-initialise the last N weight layers before the head

``BLOCK`` is a dotted module name of the model (``layer3`` for ResNets, ``features.6`` for
MobileNet/EfficientNet/ConvNeXt/VGG, ``features.denseblock3`` for DenseNet,
``encoder.layers.encoder_layer_5`` for ViT, ``features`` for the small CNN). "Up to" is module
order (``model.named_modules()``, which is the forward order of these networks): every parameter
owned by a module listed before the end of BLOCK is frozen. A policy that would freeze the head
raises ``ValueError``.

``reinit_last=N`` counts layers with a weight of two or more dimensions (convolutions, linear
layers, attention projections) backwards from the head, head excluded; those N layers and every
parametrised module between them and the head (normalisation layers included, whose running
statistics are reset too) get a fresh initialisation and are always trainable, whatever the
mode says. Seed torch before calling for a reproducible initialisation.

"Frozen" means bitwise frozen: the parameters get ``requires_grad=False`` and every BatchNorm
layer in the frozen part has its class switched to a ``Frozen<BatchNorm class>`` subclass whose
``train()`` always keeps it in eval mode, so ``model.train()`` never updates its running mean,
variance or batch counter. Give the optimizer only :func:`trainable_parameters` (or
:func:`param_groups`): an optimizer holding frozen parameters would still apply weight decay
to them.

Gradual unfreezing (:func:`unfreeze_at_epoch`): a schedule ``{epoch: policy}`` such as
``{0: "backbone", 3: "until:layer2", 6: "none"}``; at the start of each epoch call
``unfreeze_at_epoch(model, epoch, schedule, optimizer)``; at a listed epoch the parameters that the
new policy no longer freezes become trainable and are added to the optimizer as a new param
group (learning rate ``lr * backbone_lr_mult``). A schedule can only unfreeze.

This module imports torch only inside functions, so that a project file can be checked with
:func:`parse_freeze_policy` without torch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

from dlops.models.heads import head_name

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

__all__ = [
    "FreezePolicy",
    "apply_freeze",
    "frozen_batchnorm_modules",
    "param_groups",
    "parse_freeze_policy",
    "trainable_parameters",
    "unfreeze_at_epoch",
]

_MODES = ("none", "backbone", "until")
_REINIT_ATTR = "_dlops_reinit"
POLICY_ATTR = "dlops_freeze"


@dataclass(frozen=True)
class FreezePolicy:
    """A parsed freeze policy.

    Attributes:
        mode: ``"none"``, ``"backbone"`` or ``"until"``.
        block: the block name for ``"until"`` (None otherwise).
        reinit_last: number of weight layers before the head to re-initialise (>= 0).
    """

    mode: str = "none"
    block: str | None = None
    reinit_last: int = 0

    def __str__(self) -> str:
        s = f"until:{self.block}" if self.mode == "until" else self.mode
        return s + (f",reinit_last={self.reinit_last}" if self.reinit_last else "")


_BLOCK_RE = re.compile(r"^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*$")


def parse_freeze_policy(spec: str | FreezePolicy | None) -> FreezePolicy:
    """Parse a policy string (grammar in the module docstring). Pure; no torch.

    Args:
        spec: e.g. ``"none"``, ``"backbone"``, ``"until:layer3"``, ``"backbone,reinit_last=2"``;
            a :class:`FreezePolicy` is returned as it is; None means ``"none"``.

    Returns:
        The :class:`FreezePolicy`; ``str()`` of it gives the canonical string back.

    Raises:
        ValueError: unknown mode, empty or malformed block name, unknown option, or a
            ``reinit_last`` that is not an integer >= 0.
    """
    if spec is None:
        return FreezePolicy()
    if isinstance(spec, FreezePolicy):
        return spec
    if not isinstance(spec, str):
        raise ValueError(f"freeze policy must be a string, got {type(spec).__name__}")
    parts = [p.strip() for p in spec.split(",")]
    head, options = parts[0], parts[1:]
    if head in ("none", "backbone"):
        mode, block = head, None
    elif head.startswith("until:"):
        mode, block = "until", head[len("until:"):].strip()
        if not block or not _BLOCK_RE.match(block):
            raise ValueError(
                f"freeze policy {spec!r}: 'until:' needs a dotted module name such as "
                "'until:layer3' or 'until:features.6'"
            )
    else:
        raise ValueError(
            f"unknown freeze policy {spec!r}; expected 'none', 'backbone' or 'until:<block>', "
            "optionally followed by ',reinit_last=<N>'"
        )
    reinit = 0
    for opt in options:
        key, eq, value = opt.partition("=")
        if key.strip() != "reinit_last" or not eq:
            raise ValueError(f"freeze policy {spec!r}: unknown option {opt!r}; the only option is reinit_last=<N>")
        try:
            reinit = int(value.strip())
        except ValueError:
            raise ValueError(f"freeze policy {spec!r}: reinit_last must be an integer, got {value!r}") from None
        if reinit < 0:
            raise ValueError(f"freeze policy {spec!r}: reinit_last must be >= 0, got {reinit}")
    return FreezePolicy(mode=mode, block=block, reinit_last=reinit)


# --------------------------------------------------------------------------- frozen BatchNorm

_FROZEN_BN: dict[str, type] = {}


def _frozen_bn_class(base: type) -> type:
    """``Frozen<base>``: a subclass of BatchNorm class ``base`` whose train() keeps eval mode."""
    name = "Frozen" + base.__name__
    cls = _FROZEN_BN.get(name)
    if cls is None:

        def train(self, mode: bool = True):  # noqa: ARG001 - the mode is ignored on purpose
            return super(cls, self).train(False)

        cls = type(name, (base,), {
            "train": train,
            "__module__": __name__,
            "__qualname__": name,
            "__doc__": f"{base.__name__} frozen by dlops: train() keeps it in eval mode, so its "
                       "running statistics never change.",
            "_dlops_base": base,
        })
        _FROZEN_BN[name] = cls
    return cls


def __getattr__(name: str) -> Any:
    # Frozen BatchNorm classes are made on first use; pickle (torch.save of a whole model,
    # mlflow.pytorch) finds them here by name.
    if name.startswith("Frozen"):
        if name in _FROZEN_BN:
            return _FROZEN_BN[name]
        from torch import nn

        base = getattr(nn, name[len("Frozen"):], None)
        if isinstance(base, type) and issubclass(base, nn.modules.batchnorm._BatchNorm):
            return _frozen_bn_class(base)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _is_frozen_bn(m: Any) -> bool:
    return type(m).__name__ in _FROZEN_BN and _FROZEN_BN[type(m).__name__] is type(m)


def _freeze_bn(m: nn.Module) -> None:
    if not _is_frozen_bn(m):
        m.__class__ = _frozen_bn_class(type(m))
    m.eval()


def _unfreeze_bn(m: nn.Module, training: bool) -> None:
    if _is_frozen_bn(m):
        m.__class__ = type(m)._dlops_base
    m.train(training)


def frozen_batchnorm_modules(model: nn.Module) -> list[str]:
    """Dotted names of the BatchNorm layers that are frozen (pinned to eval mode)."""
    return [n for n, m in model.named_modules() if _is_frozen_bn(m)]


# --------------------------------------------------------------------------- policy -> module sets


def _under(name: str, prefix: str) -> bool:
    return prefix == "" or name == prefix or name.startswith(prefix + ".")


def _block_names(model: nn.Module, depth: int = 2) -> list[str]:
    return [n for n, _ in model.named_modules() if n and n.count(".") < depth]


def _reinit_modules(model: nn.Module, n: int, head: str) -> list[str]:
    """Names of the modules that ``reinit_last=n`` re-initialises (module order)."""
    if n == 0:
        return []
    mods = [(name, m) for name, m in model.named_modules() if not _under(name, head)]
    counted, start = 0, None
    for i in range(len(mods) - 1, -1, -1):
        params = list(mods[i][1].parameters(recurse=False))
        if any(p.ndim >= 2 for p in params):
            counted += 1
            if counted == n:
                start = i
                break
    if start is None:
        raise ValueError(
            f"reinit_last={n}: {type(model).__name__} has only {counted} weight layers before its head"
        )
    return [name for name, m in mods[start:] if any(True for _ in m.parameters(recurse=False))]


def _reset(name: str, m: nn.Module) -> None:
    fn = getattr(m, "reset_parameters", None) or getattr(m, "_reset_parameters", None)
    if fn is None:
        raise ValueError(f"reinit_last: module {name!r} ({type(m).__name__}) has no reset_parameters()")
    fn()


def _frozen_module_names(model: nn.Module, policy: FreezePolicy, head: str) -> set[str]:
    names = [n for n, _ in model.named_modules()]
    if policy.mode == "none":
        return set()
    if policy.mode == "backbone":
        return {n for n in names if not _under(n, head)}
    block = policy.block or ""
    if block not in names:
        raise ValueError(
            f"freeze policy until:{block}: {type(model).__name__} has no block {block!r}; "
            f"blocks: {', '.join(_block_names(model))}"
        )
    if _under(head, block) or _under(block, head):
        raise ValueError(f"freeze policy until:{block} would freeze the head {head!r}")
    end = max(i for i, n in enumerate(names) if _under(n, block))
    return {n for n in names[: end + 1] if not _under(n, head)}


def apply_freeze(model: nn.Module, policy: str | FreezePolicy | None) -> list[str]:
    """Apply a freeze policy to ``model`` in place.

    Parameters outside the frozen part get ``requires_grad=True``; the BatchNorm layers in the
    frozen part are pinned to eval mode (see the module docstring), the others are released.

    Args:
        model: the network; its head is :func:`dlops.models.heads.head_name`.
        policy: a policy string or :class:`FreezePolicy`.

    Returns:
        Dotted names of the frozen parameters.

    Raises:
        ValueError: a bad policy string, an unknown block (the message lists the blocks), a
            policy that would freeze the head, or ``reinit_last`` larger than the network.
    """
    pol = parse_freeze_policy(policy)
    head = head_name(model)
    frozen_mods = _frozen_module_names(model, pol, head)
    reinit = _reinit_modules(model, pol.reinit_last, head)
    modules = dict(model.named_modules())
    for name in reinit:
        _reset(name, modules[name])
        setattr(modules[name], _REINIT_ATTR, True)
    frozen_mods -= set(reinit)
    frozen_params: list[str] = []
    training = model.training
    for name, m in modules.items():
        is_frozen = name in frozen_mods
        for pname, p in m.named_parameters(recurse=False):
            p.requires_grad_(not is_frozen)
            if is_frozen:
                frozen_params.append(f"{name}.{pname}" if name else pname)
        if _is_bn(m):
            if is_frozen:
                _freeze_bn(m)
            else:
                _unfreeze_bn(m, training)
    setattr(model, POLICY_ATTR, str(pol))
    return frozen_params


def _is_bn(m: Any) -> bool:
    from torch import nn

    return isinstance(m, nn.modules.batchnorm._BatchNorm)


# --------------------------------------------------------------------------- optimizer helpers


def trainable_parameters(model: nn.Module) -> list[torch.nn.Parameter]:
    """The parameters with ``requires_grad=True``, in module order (give these to the optimizer)."""
    return [p for p in model.parameters() if p.requires_grad]


def param_groups(model: nn.Module, lr: float, backbone_lr_mult: float = 1.0) -> list[dict[str, Any]]:
    """Optimizer param groups: new layers at ``lr``, unfrozen backbone layers at ``lr * mult``.

    New layers are the head and the layers re-initialised by ``reinit_last``. Frozen
    parameters are left out. Empty groups are dropped.

    Args:
        model: the network, after :func:`apply_freeze` (or from ``create_model``).
        lr: learning rate of the new layers.
        backbone_lr_mult: factor (typically 0.1 or less) for the trainable pretrained layers.

    Returns:
        ``[{"name": "new", "params": [...], "lr": lr}, {"name": "backbone", "params": [...],
        "lr": lr * backbone_lr_mult}]`` for ``torch.optim.SGD(groups, lr=lr, ...)``.

    Raises:
        ValueError: ``lr <= 0`` or ``backbone_lr_mult < 0``.
    """
    if lr <= 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    if backbone_lr_mult < 0:
        raise ValueError(f"backbone_lr_mult must be >= 0, got {backbone_lr_mult}")
    head = head_name(model)
    new, backbone = [], []
    for name, m in model.named_modules():
        is_new = _under(name, head) or getattr(m, _REINIT_ATTR, False)
        for p in m.parameters(recurse=False):
            if p.requires_grad:
                (new if is_new else backbone).append(p)
    groups = [
        {"name": "new", "params": new, "lr": lr},
        {"name": "backbone", "params": backbone, "lr": lr * backbone_lr_mult},
    ]
    return [g for g in groups if g["params"]]


def unfreeze_at_epoch(
    model: nn.Module,
    epoch: int,
    schedule: Mapping[int | str, str],
    optimizer: Any = None,
    lr: float | None = None,
    backbone_lr_mult: float = 1.0,
) -> list[str]:
    """Gradual unfreezing: at the epochs listed in ``schedule`` switch to a less frozen policy.

    Call at the start of every epoch (0-based). When ``epoch`` is a key of ``schedule``, the
    parameters frozen now that its policy leaves trainable are unfrozen (their BatchNorm layers
    train again) and, if ``optimizer`` is given, added to it as one param group named
    ``"unfrozen@<epoch>"`` with learning rate ``(lr or optimizer.defaults["lr"]) * backbone_lr_mult``.

    Args:
        model: the network.
        epoch: the epoch about to start (0-based).
        schedule: ``{epoch: policy}`` (keys may be strings from YAML), e.g.
            ``{3: "until:layer2", 6: "none"}``; policies without ``reinit_last``.
        optimizer: a ``torch.optim.Optimizer`` to extend, or None (then rebuild it yourself
            from :func:`param_groups`).
        lr: base learning rate of the new group (default: the optimizer's default lr).
        backbone_lr_mult: factor for the unfrozen layers' learning rate.

    Returns:
        Dotted names of the parameters unfrozen now (empty when ``epoch`` is not listed).

    Raises:
        ValueError: a schedule key that is not an integer, a policy with ``reinit_last``, or a
            policy that would freeze a parameter that is trainable now (a schedule only unfreezes).
    """
    sched: dict[int, FreezePolicy] = {}
    for k, v in schedule.items():
        try:
            e = int(k)
        except (TypeError, ValueError):
            raise ValueError(f"unfreeze schedule: epoch {k!r} is not an integer") from None
        pol = parse_freeze_policy(v)
        if pol.reinit_last:
            raise ValueError(f"unfreeze schedule at epoch {e}: {v!r}: reinit_last has no place in a schedule")
        sched[e] = pol
    if epoch not in sched:
        return []
    pol = sched[epoch]
    head = head_name(model)
    frozen_mods = _frozen_module_names(model, pol, head)
    training = model.training
    unfrozen: list[str] = []
    newly = []
    to_change = []
    for name, m in model.named_modules():
        keep_frozen = name in frozen_mods and not getattr(m, _REINIT_ATTR, False)
        for pname, p in m.named_parameters(recurse=False):
            full = f"{name}.{pname}" if name else pname
            if keep_frozen and p.requires_grad:
                raise ValueError(
                    f"unfreeze schedule at epoch {epoch}: {pol} would freeze {full!r}, which trains "
                    "now; a schedule can only unfreeze"
                )
            if not keep_frozen and not p.requires_grad:
                to_change.append(p)
                unfrozen.append(full)
        if _is_bn(m) and _is_frozen_bn(m) and not keep_frozen:
            newly.append(m)
    for p in to_change:
        p.requires_grad_(True)
    for m in newly:
        _unfreeze_bn(m, training)
    setattr(model, POLICY_ATTR, str(pol))
    if optimizer is not None and to_change:
        base = lr if lr is not None else optimizer.defaults["lr"]
        held = {id(p) for g in optimizer.param_groups for p in g["params"]}
        params = [p for p in to_change if id(p) not in held]
        if params:
            optimizer.add_param_group({"name": f"unfrozen@{epoch}", "params": params, "lr": base * backbone_lr_mult})
    return unfrozen

