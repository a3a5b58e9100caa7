"""The plugin manager: built-in plugins plus third-party ones from entry points (group ``dlops``).

Built-ins are listed in :data:`BUILTIN_PLUGINS` and registered exactly like third-party plugins
(by importing a module and registering it with pluggy); the core imports none of them by name.
Provider hooks are called through pluggy, one plugin at a time, so that a plugin that fails to
import, implements a hook no spec defines (a misspelled ``dlops_reporter``), or returns the wrong
shape is recorded in :attr:`PluginRegistry.errors` with its name and the reason, and unregistered;
it does not take the other plugins down.

As in pytest, a module-level function whose name starts with ``dlops_`` is a hook
implementation whether or not it carries ``@hookimpl``.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata as md
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable

import pluggy

from dlops import hookspecs
from dlops.errors import PluginError  # noqa: F401  (re-exported: the kind lives in dlops.errors)

ENTRY_POINT_GROUP = "dlops"

#: Built-in plugins: (name, module). Registered like any third-party plugin.
BUILTIN_PLUGINS: tuple[tuple[str, str], ...] = (
    ("augment", "dlops_plugins.augment.policies"),
    ("augment_tv2", "dlops_plugins.augment.tv2"),
    ("bias_variance", "dlops_plugins.reporters.bias_variance"),
    ("error_analysis", "dlops_plugins.reporters.error_analysis"),
    ("learning_curves", "dlops_plugins.reporters.learning_curves"),
    ("data_curve", "dlops_plugins.reporters.data_curve"),
    ("ensemble", "dlops_plugins.ensemble.average"),
)

#: provider hook name -> registry kind
PROVIDER_HOOKS = {
    "dlops_augment_policies": "augment_policies",
    "dlops_reporters": "reporters",
    "dlops_ensemble_methods": "ensemble_methods",
}

#: registry kind -> what one of its entries is called in messages
KIND_NOUNS = {"augment_policies": "augment policy", "reporters": "reporter", "ensemble_methods": "ensemble method"}


def _check_value(kind: str, key: str, value: Any) -> None:
    """Check the shape of one provided object (called on load).

    Raises:
        PluginError: an augmentation policy that is not callable, a reporter without a callable
            ``report`` or with an unknown scope, an ensemble method without a callable ``combine``.
    """
    if kind == "augment_policies" and not callable(value):
        raise PluginError(f"augment policy {key!r} must be a factory(magnitude, image_size, train), "
                          f"got {type(value).__name__}")
    if kind == "reporters":
        if not callable(getattr(value, "report", None)):
            raise PluginError(f"reporter {key!r} must have a report(context) method, got {type(value).__name__}")
        from dlops.reporting import reporter_scopes

        reporter_scopes(value, key)
    if kind == "ensemble_methods" and not callable(getattr(value, "combine", None)):
        raise PluginError(f"ensemble method {key!r} must have a combine(probs) method, got {type(value).__name__}")


@dataclass
class PluginInfo:
    """What one plugin is and what it provides."""

    name: str
    module: str
    version: str
    source: str  # "builtin" or "entry point (<dist> <version>)"
    provides: dict[str, list[str]] = field(default_factory=dict)
    hooks: list[str] = field(default_factory=list)  # the lifecycle hooks it implements


@dataclass
class PluginRegistry:
    """Registries by name, built from every plugin that loaded."""

    manager: pluggy.PluginManager
    plugins: list[PluginInfo]
    errors: dict[str, str]
    augment_policies: dict[str, Any]
    reporters: dict[str, Any]
    ensemble_methods: dict[str, Any]

    def get(self, kind: str, name: str) -> Any:
        """Return the provider ``name`` of registry ``kind``.

        Raises:
            PluginError: no plugin provides it; the message lists the names that exist.
        """
        reg = getattr(self, kind)
        if name not in reg:
            raise PluginError(f"unknown {KIND_NOUNS.get(kind, kind)} {name!r}; available: {sorted(reg)}")
        return reg[name]

    @property
    def hook(self) -> Any:
        """pluggy's hook relay: ``registry.hook.dlops_before_phase(phase=..., context=...)``."""
        return self.manager.hook


class _Manager(pluggy.PluginManager):
    """pluggy's manager, taking every ``dlops_*`` function of a plugin as a hook implementation
    (as pytest does for ``pytest_*``), so that an undecorated or misspelled hook is seen."""

    def parse_hookimpl_opts(self, plugin: Any, name: str) -> Any:
        opts = super().parse_hookimpl_opts(plugin, name)
        if opts is None and name.startswith(f"{hookspecs.PROJECT_NAME}_") and callable(getattr(plugin, name, None)):
            return {}
        return opts


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


def _candidates() -> list[tuple[str, str, str, Callable[[], Any]]]:
    """(name, module path, source, loader) for every plugin, built-ins first."""
    out: list[tuple[str, str, str, Callable[[], Any]]] = []
    for name, mod in BUILTIN_PLUGINS:
        out.append((name, mod, "builtin", lambda m=mod: importlib.import_module(m)))
    for ep in md.entry_points(group=ENTRY_POINT_GROUP):
        dist = getattr(ep, "dist", None)
        src = f"entry point ({dist.name} {dist.version})" if dist is not None else "entry point"
        out.append((ep.name, ep.value, src, ep.load))
    return out


def _unknown_hooks(pm: pluggy.PluginManager, plugin: Any) -> list[str]:
    """Hook names ``plugin`` implements that no spec in :mod:`dlops.hookspecs` defines."""
    return sorted(hc.name for hc in (pm.get_hookcallers(plugin) or []) if hc.spec is None)


def _did_you_mean(name: str) -> str:
    specs = [n for n in dir(hookspecs) if n.startswith(f"{hookspecs.PROJECT_NAME}_")]
    close = difflib.get_close_matches(name, specs, n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def _provided(pm: pluggy.PluginManager, plugin: Any) -> dict[str, dict[str, Any]]:
    """Call each provider hook of ``plugin`` alone, through pluggy; {kind: {name: object}}.

    Raises:
        PluginError: a hook returned something that is not a dict keyed by name.
    """
    staged: dict[str, dict[str, Any]] = {}
    for hook_name, kind in PROVIDER_HOOKS.items():
        impls = [i for i in getattr(pm.hook, hook_name).get_hookimpls() if i.plugin is plugin]
        for impl in impls:
            provided = impl.function()
            if not isinstance(provided, dict) or not all(isinstance(k, str) for k in provided):
                raise PluginError(f"{hook_name}() must return a dict keyed by name, got {type(provided).__name__}")
            staged.setdefault(kind, {}).update(provided)
    return staged


def build_registry() -> PluginRegistry:
    """Load every plugin and build the registries (no caching; see :func:`get_registry`).

    Never raises for a broken plugin: each one is named in ``errors`` with the reason (failed to
    import; a hook no spec defines; the wrong shape; a name another plugin already provides).
    """
    pm = _Manager(hookspecs.PROJECT_NAME)
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
        unknown = _unknown_hooks(pm, plugin)
        if unknown:
            pm.unregister(name=name)
            errors[name] = (f"plugin {name!r} ({mod}) implements unknown hook "
                            + ", ".join(f"{u}{_did_you_mean(u)}" for u in unknown)
                            + "; no spec in dlops.hookspecs defines it")
            continue
        try:
            staged = _provided(pm, plugin)
            for kind, provided in staged.items():
                for key, value in provided.items():
                    _check_value(kind, key, value)
                    if key in regs[kind]:
                        raise PluginError(f"{KIND_NOUNS[kind]} {key!r} is already provided by another plugin")
        except Exception as exc:
            pm.unregister(name=name)
            errors[name] = f"plugin {name!r} ({mod}) has the wrong shape: {exc}"
            continue
        info = PluginInfo(name=name, module=mod, version=_version_of(mod), source=source)
        for kind, provided in staged.items():
            regs[kind].update(provided)
            info.provides[kind] = sorted(provided)
        info.hooks = sorted(hc.name for hc in (pm.get_hookcallers(plugin) or []) if hc.name not in PROVIDER_HOOKS)
        infos.append(info)
    pm.check_pending()  # every hook left registered has a spec (the loop unregistered the others)
    return PluginRegistry(manager=pm, plugins=infos, errors=errors, **regs)


@lru_cache(maxsize=1)
def get_registry() -> PluginRegistry:
    """The process-wide plugin registry (built once)."""
    return build_registry()
