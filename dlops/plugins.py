"""The plugin manager: built-in plugins plus third-party ones from entry points (group ``dlops``).

Built-ins are listed in :data:`BUILTIN_PLUGINS` and registered exactly like third-party plugins
(by importing a module and registering it). A plugin that fails to import, or whose hook returns
the wrong shape, is recorded in :attr:`PluginRegistry.errors` with its name and the reason; it
does not take the other plugins down.
"""

from __future__ import annotations

from dlops.errors import PluginError  # noqa: F401  (the kind lives in dlops.errors)
import importlib
import importlib.metadata as md
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import pluggy

from dlops import hookspecs

ENTRY_POINT_GROUP = "dlops"

#: Built-in plugins: (name, module). Registered like any third-party plugin.
BUILTIN_PLUGINS: tuple[tuple[str, str], ...] = (
    ("augment", "dlops_plugins.augment.policies"),
    ("augment_tv2", "dlops_plugins.augment.tv2"),
    ("bias_variance", "dlops_plugins.reporters.bias_variance"),
    ("error_analysis", "dlops_plugins.reporters.error_analysis"),
    ("learning_curves", "dlops_plugins.reporters.learning_curves"),
    ("ensemble", "dlops_plugins.ensemble.average"),
)

#: provider hook name -> registry kind
PROVIDER_HOOKS = {
    "dlops_augment_policies": "augment_policies",
    "dlops_reporters": "reporters",
    "dlops_ensemble_servers": "ensemble_servers",
}


def _check_value(kind: str, key: str, value: Any) -> None:
    """Check the shape of one provided object (called on load).

    Raises:
        PluginError: an augmentation policy that is not callable, or a reporter without a
            callable ``report``.
    """
    if kind == "augment_policies" and not callable(value):
        raise PluginError(f"augment policy {key!r} must be a factory(magnitude, image_size, train), "
                          f"got {type(value).__name__}")
    if kind == "reporters" and not callable(getattr(value, "report", None)):
        raise PluginError(f"reporter {key!r} must have a report(context) method, got {type(value).__name__}")




@dataclass
class PluginInfo:
    """What one plugin is and what it provides."""

    name: str
    module: str
    version: str
    source: str  # "builtin" or "entry point <dist>"
    provides: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class PluginRegistry:
    """Registries by name, built from every plugin that loaded."""

    manager: pluggy.PluginManager
    plugins: list[PluginInfo]
    errors: dict[str, str]
    augment_policies: dict[str, Any]
    reporters: dict[str, Any]
    ensemble_servers: dict[str, Any]

    def get(self, kind: str, name: str) -> Any:
        """Return the provider ``name`` of registry ``kind``.

        Raises:
            PluginError: no plugin provides it; the message lists the names that exist.
        """
        reg = getattr(self, kind)
        if name not in reg:
            raise PluginError(
                f"unknown {kind[:-1].replace('_', ' ')} {name!r}; available: {sorted(reg)}"
            )
        return reg[name]


def _version_of(module_name: str) -> str:
    from dlops import __version__

    top = module_name.split(".")[0]
    if top in ("dlops", "dlops_plugins"):
        return __version__
    try:
        return md.version(top)
    except md.PackageNotFoundError:
        mod = importlib.import_module(top)
        return str(getattr(mod, "__version__", "unknown"))


def _candidates() -> list[tuple[str, str, str, Any]]:
    """(name, module path, source, loader) for every plugin, built-ins first."""
    out: list[tuple[str, str, str, Any]] = []
    for name, mod in BUILTIN_PLUGINS:
        out.append((name, mod, "builtin", lambda m=mod: importlib.import_module(m)))
    for ep in md.entry_points(group=ENTRY_POINT_GROUP):
        dist = getattr(ep, "dist", None)
        src = f"entry point ({dist.name} {dist.version})" if dist is not None else "entry point"
        out.append((ep.name, ep.value, src, ep.load))
    return out


def build_registry() -> PluginRegistry:
    """Load every plugin and build the registries (no caching; see :func:`get_registry`)."""
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    infos: list[PluginInfo] = []
    errors: dict[str, str] = {}
    regs: dict[str, dict[str, Any]] = {k: {} for k in PROVIDER_HOOKS.values()}
    for name, mod, source, load in _candidates():
        if name in errors or any(i.name == name for i in infos):
            errors[name] = f"plugin name {name!r} is registered twice ({mod})"
            continue
        try:
            plugin = load()
            pm.register(plugin, name=name)
        except Exception as exc:  # a broken plugin must not take the others down
            errors[name] = f"plugin {name!r} ({mod}) failed to load: {type(exc).__name__}: {exc}"
            continue
        info = PluginInfo(name=name, module=mod, version=_version_of(mod), source=source)
        staged: dict[str, dict[str, Any]] = {}
        try:
            for hook_name, kind in PROVIDER_HOOKS.items():
                impl = getattr(plugin, hook_name, None)
                if impl is None:
                    continue
                provided = impl()
                if not isinstance(provided, dict) or not all(isinstance(k, str) for k in provided):
                    raise PluginError(
                        f"{hook_name}() must return a dict keyed by name, got {type(provided).__name__}"
                    )
                for key in provided:
                    _check_value(kind, key, provided[key])
                    if key in regs[kind]:
                        raise PluginError(f"{kind[:-1]} {key!r} is already provided by another plugin")
                staged[kind] = provided
        except Exception as exc:
            pm.unregister(name=name)
            errors[name] = f"plugin {name!r} ({mod}) has the wrong shape: {exc}"
            continue
        for kind, provided in staged.items():
            regs[kind].update(provided)
            info.provides[kind] = sorted(provided)
        infos.append(info)
    return PluginRegistry(manager=pm, plugins=infos, errors=errors, **regs)


@lru_cache(maxsize=1)
def get_registry() -> PluginRegistry:
    """The process-wide plugin registry (built once)."""
    return build_registry()
