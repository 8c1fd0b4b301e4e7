"""Finds runtime plugins through the "orchestr" entry-point group and opens runtimes by name."""

from __future__ import annotations

import functools
import importlib
import os
import sys
from collections.abc import Iterator

import pluggy

from . import hookspecs
from .config import DEFAULT_RUNTIME_PREFERENCE, Config
from .errors import UnknownRuntime
from .plain import Frozen, record
from .runtime import Runtime

ENTRY_POINT_GROUP = "orchestr"


@record
class RuntimeInfo(Frozen):
    """A runtime some plugin offers, and where it comes from."""

    name: str
    factory: hookspecs.RuntimeFactory
    plugin: str  # the plugin's module name
    package: str  # the distribution it came from, "name version"
    shadowed_by: str | None = None  # the plugin whose runtime of the same name wins, when this one loses


_packages: dict[int, str] = {}  # id(plugin module) -> "distribution version", for the plugins found here


@functools.cache
def plugin_manager() -> pluggy.PluginManager:
    """The process's plugin manager, with every plugin of the entry-point group registered."""
    return new_plugin_manager()


def new_plugin_manager(register_entry_points: bool = True) -> pluggy.PluginManager:
    pm = pluggy.PluginManager("orchestr")
    pm.add_hookspecs(hookspecs)
    if os.environ.get("ORCHESTR_TRACE_PLUGINS", "") not in ("", "0"):
        pm.add_hookcall_monitoring(_trace_before, _trace_after)
    if not register_entry_points:
        return pm
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


def _trace_before(hook_name: str, impls: list, kwargs: dict) -> None:
    names = ", ".join(impl.plugin_name for impl in reversed(impls))  # pluggy calls the last one first
    print(f"orchestr: plugin hook {hook_name}({', '.join(map(str, kwargs))}) calls {names or 'nothing'}",
          file=sys.stderr)


def _trace_after(outcome, hook_name: str, impls: list, kwargs: dict) -> None:
    try:
        result = outcome.get_result()
    except BaseException as e:  # noqa: BLE001 - reported here, raised again by pluggy to the caller
        print(f"orchestr: plugin hook {hook_name} raised {e!r}", file=sys.stderr)
        return
    print(f"orchestr: plugin hook {hook_name} returned {result!r}", file=sys.stderr)


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
    """The name = value lines of one [group] of an entry_points.txt (an ini file). Read with bare system calls,
    and decoded only when it names the group: every command looks at every installed distribution's."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return []
    try:
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
    except OSError:
        return []
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if f"[{group}]".encode() not in data:
        return []
    found, inside = [], False
    for line in map(str.strip, data.decode("utf-8", "replace").splitlines()):
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


def offers(pm: pluggy.PluginManager | None = None) -> list[RuntimeInfo]:
    """Every runtime every plugin offers, in pluggy's call order (see hookspecs.orchestr_runtimes): for each
    name the first offer wins and the later ones are marked shadowed."""
    pm = pm or plugin_manager()
    found: dict[str, RuntimeInfo] = {}
    out = []
    for offered in pm.hook.orchestr_runtimes():
        for name, factory in offered.items():
            plugin, package = _origin(pm, factory)
            winner = found.get(name)
            info = RuntimeInfo(name, factory, plugin, package, winner.plugin if winner else None)
            found.setdefault(name, info)
            out.append(info)
    return out


def runtimes(pm: pluggy.PluginManager | None = None) -> dict[str, RuntimeInfo]:
    """The runtime that wins for each name some plugin offers."""
    return {info.name: info for info in offers(pm) if info.shadowed_by is None}


def _origin(pm: pluggy.PluginManager, factory: object) -> tuple[str, str]:
    """(plugin module, "distribution version") of the registered plugin that defines factory: the plugin
    whose module holds the factory's, or is the package above it."""
    inner = getattr(factory, "func", factory)  # a functools.partial
    module = getattr(inner, "__module__", None) or type(inner).__module__
    best = None
    for plugin in pm.get_plugins():
        name = getattr(plugin, "__name__", None) or type(plugin).__module__
        if (module == name or module.startswith(name + ".")) and (best is None or len(name) > len(best[0])):
            best = (name, plugin)
    if best is None:
        return module, "(not packaged)"
    dists = {id(p): f"{d.project_name} {d.version}" for p, d in pm.list_plugin_distinfo()}
    return best[0], _packages.get(id(best[1])) or dists.get(id(best[1]), "(not packaged)")


def default_runtime_name(config: Config, pm: pluggy.PluginManager | None = None) -> str:
    if config.default_runtime:
        return config.default_runtime
    available = runtimes(pm)
    for name in DEFAULT_RUNTIME_PREFERENCE:
        if name in available:
            return name
    if available:
        return sorted(available)[0]
    raise UnknownRuntime("no runtime plugin is installed (see `orchestr plugins`)")


def open_runtime(name: str, config: Config, pm: pluggy.PluginManager | None = None) -> Runtime:
    available = runtimes(pm)
    try:
        info = available[name]
    except KeyError:
        known = ", ".join(sorted(available)) or "none"
        raise UnknownRuntime(f"unknown runtime {name!r} (installed: {known})") from None
    return info.factory(config)
