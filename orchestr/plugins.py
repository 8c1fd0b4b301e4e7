"""Finds runtime plugins through the "orchestr" entry-point group and opens runtimes by name."""

from __future__ import annotations

import functools
import importlib
import os
import sys
from collections.abc import Iterator
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


_packages: dict[int, str] = {}  # id(plugin module) -> "distribution version", for the plugins found here


@functools.cache
def plugin_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager("orchestr")
    pm.add_hookspecs(hookspecs)
    for name, value, package in _entry_points(ENTRY_POINT_GROUP):
        if pm.has_plugin(name) or pm.is_blocked(name):
            continue
        module, _, attr = value.partition(":")
        plugin = importlib.import_module(module.strip())
        for part in filter(None, attr.strip().split(".")):
            plugin = getattr(plugin, part)
        pm.register(plugin, name=name)
        _packages[id(plugin)] = package
    return pm


def _entry_points(group: str) -> Iterator[tuple[str, str, str]]:
    """(name, value, "distribution version") of every entry point in group, in sys.path order.

    Reads each installed distribution's entry_points.txt itself, as pluggy would through importlib.metadata,
    whose import alone costs every CLI command tens of milliseconds.
    """
    for entry in sys.path:
        try:
            names = sorted(os.listdir(entry or "."))
        except OSError:
            continue
        for dist in names:
            if not dist.endswith((".dist-info", ".egg-info")):
                continue
            where = os.path.join(entry or ".", dist)
            points = _section(os.path.join(where, "entry_points.txt"), group)
            if points:
                package = _package(where)
                for name, value in points:
                    yield name, value, package


def _section(path: str, group: str) -> list[tuple[str, str]]:
    """The name = value lines of one [group] of an entry_points.txt (an ini file)."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    found, inside = [], False
    for line in map(str.strip, lines):
        if line.startswith("["):
            inside = line == f"[{group}]"
        elif inside and "=" in line and not line.startswith(("#", ";")):
            name, _, value = line.partition("=")
            found.append((name.strip(), value.split("[")[0].strip()))
    return found


def _package(dist_dir: str) -> str:
    """The "name version" of a distribution, from its METADATA (or an egg's PKG-INFO) headers."""
    fields: dict[str, str] = {}
    for meta in ("METADATA", "PKG-INFO"):
        try:
            with open(os.path.join(dist_dir, meta), encoding="utf-8") as f:
                for line in f:
                    if not line.strip():
                        break  # the headers end at the first blank line
                    key, sep, value = line.partition(":")
                    if sep and key in ("Name", "Version"):
                        fields.setdefault(key, value.strip())
            break
        except OSError:
            continue
    return f"{fields.get('Name', '?')} {fields.get('Version', '?')}"


def runtimes(pm: pluggy.PluginManager | None = None) -> dict[str, RuntimeInfo]:
    """Every runtime some plugin provides; the first plugin registered for a name wins."""
    pm = pm or plugin_manager()
    dists = {id(plugin): f"{dist.project_name} {dist.version}" for plugin, dist in pm.list_plugin_distinfo()}
    dists.update((id(plugin), _packages[id(plugin)]) for plugin in pm.get_plugins() if id(plugin) in _packages)
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
