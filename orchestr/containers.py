"""What every runtime decides the same way about a container: its argv, its volumes, named-volume keys, times.

A runtime plugin calls these rather than writing its own, so that one ContainerSpec means the same container
on every runtime.
"""

from __future__ import annotations

import os
import posixpath
import time
from collections.abc import Sequence
from dataclasses import replace

from .errors import TerminalFailure
from .model import ContainerSpec, Volume

UNKNOWN_EXIT = 255  # the exit code of a container whose real one was lost (its supervisor or process vanished)
VOLUME_TYPES = ("bind", "volume", "tmpfs")


def argv(spec: ContainerSpec, entrypoint: Sequence[str] | None = None, cmd: Sequence[str] | None = None) -> list[str]:
    """The command line the container runs, as Kubernetes resolves it from the image's entrypoint and cmd:
    spec.command replaces the entrypoint, spec.args the cmd, and a command without args drops the image's cmd
    too. An empty command or args counts as not given. TerminalFailure when nothing is left to run."""
    if spec.command:
        resolved = [*spec.command, *(spec.args or ())]
    else:
        resolved = [*(entrypoint or ()), *(spec.args or cmd or ())]
    if not resolved:
        raise TerminalFailure(f"container {spec.name}: no command: image {spec.image} has no entrypoint or cmd "
                              "and the spec gives none", container=spec.name)
    return resolved


def volume_key(namespace: str, name: str) -> str:
    """The runtime's name for a named volume: volumes belong to a namespace, so two may share a name."""
    return f"{namespace}_{name}"


def rfc3339(ns: int | None = None) -> str:
    """Nanoseconds since the epoch (default: now) in RFC 3339, UTC; the fraction only when there is one."""
    ns = time.time_ns() if ns is None else ns
    seconds, fraction = divmod(ns, 1_000_000_000)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    return f"{stamp}.{fraction:09d}Z" if fraction else f"{stamp}Z"


def volumes(spec: ContainerSpec) -> tuple[Volume, ...]:
    """spec's volumes, checked, with targets normalised and bind sources resolved (symlinks followed): the
    runtime mounts the resolved source, the one these checks saw. TerminalFailure names the first bad one."""
    return tuple(_volume(spec, v) for v in spec.volumes)


def _volume(spec: ContainerSpec, v: Volume) -> Volume:
    def fail(message: str) -> TerminalFailure:
        return TerminalFailure(f"container {spec.name}: volume {v.target!r}: {message}", container=spec.name)

    if v.type not in VOLUME_TYPES:
        raise fail(f"unknown volume type {v.type!r}; expected bind, volume or tmpfs")
    if not v.target.startswith("/"):
        raise fail("the target must be an absolute path")
    target = "/" + posixpath.normpath(v.target).lstrip("/")  # normpath keeps a leading '//'
    if target == "/":
        raise fail("nothing may be mounted over the container's root")
    if v.type == "tmpfs":
        if v.source is not None:
            raise fail("a tmpfs volume takes no source")
        return replace(v, target=target)
    if v.type == "volume":
        if not v.source or "/" in v.source or v.source in (".", ".."):
            raise fail(f"a volume needs a plain name, got {v.source!r}")
        return replace(v, target=target)
    if not v.source or not v.source.startswith("/"):
        raise fail(f"a bind source must be an absolute host path, got {v.source!r}")
    source = os.path.realpath(v.source)
    if not os.path.exists(source):
        raise fail(f"the bind source {v.source} does not exist")
    if source == "/" and not (v.read_only or v.allow_host_root):
        shown = "the host's /" if v.source == "/" else f"{v.source}, which is the host's /,"
        raise fail(f"binding {shown} read-write is refused; set readOnly (or allowHostRoot)")
    return replace(v, target=target, source=source)
