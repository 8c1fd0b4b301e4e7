"""Finds runtime plugins through the "orchestr" entry-point group and opens runtimes by name."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import pluggy

from . import hookspecs
from .config import DEFAULT_RUNTIME_PREFERENCE, Config
from .errors import RuntimeNotFound
from .runtime import Runtime

ENTRY_POINT_GROUP = "orchestr"


@dataclass(frozen=True, slots=True)
class RuntimeInfo:
    name: str
    factory: hookspecs.RuntimeFactory
    plugin: str  # the plugin's module name
    package: str  # the distribution it came from, "name version"


@functools.cache
def plugin_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager("orchestr")
    pm.add_hookspecs(hookspecs)
    pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    return pm


def runtimes(pm: pluggy.PluginManager | None = None) -> dict[str, RuntimeInfo]:
    """Every runtime some plugin provides; the first plugin registered for a name wins."""
    pm = pm or plugin_manager()
    dists = {id(plugin): f"{dist.project_name} {dist.version}" for plugin, dist in pm.list_plugin_distinfo()}
    found: dict[str, RuntimeInfo] = {}
    for impl in pm.hook.orchestr_runtimes.get_hookimpls():  # registration order
        for name, factory in (impl.function() or {}).items():
            found.setdefault(
                name, RuntimeInfo(name, factory, impl.plugin.__name__, dists.get(id(impl.plugin), "(not packaged)"))
            )
    return found


def default_runtime_name(config: Config, pm: pluggy.PluginManager | None = None) -> str:
    if config.default_runtime:
        return config.default_runtime
    available = runtimes(pm)
    for name in DEFAULT_RUNTIME_PREFERENCE:
        if name in available:
            return name
    if available:
        return sorted(available)[0]
    raise RuntimeNotFound("no runtime plugin is installed (see `orchestr plugins`)")


def open_runtime(name: str, config: Config, pm: pluggy.PluginManager | None = None) -> Runtime:
    available = runtimes(pm)
    try:
        info = available[name]
    except KeyError:
        known = ", ".join(sorted(available)) or "none"
        raise RuntimeNotFound(f"unknown runtime {name!r} (installed: {known})") from None
    return info.factory(config)
