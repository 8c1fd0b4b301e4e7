"""A container's network: its files (/etc/hosts, /etc/hostname, /etc/resolv.conf) and namespace. `none` gives a
network namespace of its own with loopback only; `host` the host's."""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable
from dataclasses import field
from pathlib import Path
from typing import TYPE_CHECKING

from orchestr.errors import TerminalFailure
from orchestr.model import ContainerSpec, Port
from orchestr.plain import Mutable, record

from .client import RUNTIME

if TYPE_CHECKING:
    from .runtime import ContainerdRuntime


@record
class Attached(Mutable):
    netns: str | None  # a path to join, "host", or None for a new one
    files: dict[str, str]  # container path -> host file bound there
    labels: dict[str, str] = field(default_factory=dict)


def resolv_conf() -> str:
    """The host's resolver without loopback servers, which a container cannot reach."""
    try:
        lines = Path("/etc/resolv.conf").read_text().splitlines()
    except OSError:
        lines = []
    kept = [line for line in lines if not (line.startswith("nameserver") and
                                          (line.split()[1:2] or [""])[0].startswith(("127.", "::1")))]
    return "\n".join(kept) + "\n"


async def attach(runtime: ContainerdRuntime, spec: ContainerSpec, id: str, directory: Path) -> Attached:
    if spec.network in ("host", "none"):
        return local(spec, directory)
    from . import cni

    files = {"/etc/hostname": str(directory / "hostname"), "/etc/hosts": str(directory / "hosts")}
    return await cni.attach(runtime, spec, id, directory, files)


def local(spec: ContainerSpec, directory: Path) -> Attached:
    """The files of network host or none, which need nothing but them."""
    files = {"/etc/hostname": str(directory / "hostname"), "/etc/hosts": str(directory / "hosts")}
    if spec.network == "host":
        (directory / "hostname").write_text(os.uname().nodename + "\n")
        try:
            (directory / "hosts").write_text(Path("/etc/hosts").read_text())
        except OSError:
            (directory / "hosts").write_text("127.0.0.1\tlocalhost\n")
        if os.path.exists("/etc/resolv.conf"):
            files["/etc/resolv.conf"] = "/etc/resolv.conf"
        return Attached("host", files)
    if spec.network == "none":
        if spec.ports:
            raise TerminalFailure(f"container {spec.name}: published ports need network: bridge", runtime=RUNTIME,
                                  container=spec.name)
        (directory / "hostname").write_text(spec.name + "\n")
        (directory / "hosts").write_text(f"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
                                         f"127.0.1.1\t{spec.name}\n")
        return Attached(None, files)
    raise ValueError(f"network {spec.network} is neither host nor none")


async def created(runtime: ContainerdRuntime, network: str, namespace: str) -> None:
    """Once the container's record is made: the namespace's /etc/hosts files name it too."""
    if network == "bridge":
        from . import cni

        await cni.refresh_hosts(runtime, namespace)


async def detach(runtime: ContainerdRuntime, id: str, directory: Path, network: str, namespace: str,
                 gone: Callable[[], Awaitable[object]] | None = None) -> None:
    """Undoes attach; gone, when given, is awaited before the namespace's /etc/hosts files are rewritten (the
    container's record must be gone from containerd's list by then)."""
    if network == "bridge":
        from . import cni

        await cni.detach(runtime, id, directory, namespace, gone)


def ports_of(raw: str | None) -> tuple[Port, ...]:
    if not raw:
        return ()
    try:
        return tuple(Port(container_port=p[0], host_port=p[1], protocol=p[2], host_ip=p[3]) for p in json.loads(raw))
    except (ValueError, IndexError, TypeError):
        return ()
