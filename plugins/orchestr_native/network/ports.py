"""Published host ports: refused while anything on the host holds them, claimed host-wide while a container does.

A DNAT rule does not bind its port, so a bind test alone would let two containers (of any state dir) publish
the same one: each published port is also claimed in /run/orchestr/ports/<protocol>-<port>, a symlink to the
directory of the container that holds it. A claim whose container directory is gone is stale: its rules are
removed and the port is free again.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
from collections.abc import Iterable

from orchestr.errors import Conflict, RuntimeFailure
from orchestr.model import Port

DIR = "/run/orchestr/ports"


def published(ports: Iterable[Port]) -> list[dict]:
    """The ports to publish, as records, checked for what the rules can express. A port without a host port
    gets one picked at attach (pick_free), as Docker does for `-p CONTAINERPORT`."""
    out = []
    for p in ports:
        protocol = str(p.protocol).lower()
        where = f"port {p.host_port or p.container_port}/{p.protocol}"
        if protocol not in ("tcp", "udp"):
            raise RuntimeFailure(f"{where}: the protocol must be tcp or udp")
        host_ip = "0.0.0.0" if p.host_ip in ("", "::") else p.host_ip
        try:
            ipaddress.IPv4Address(host_ip)
        except ValueError:
            raise RuntimeFailure(f"{where}: host IP {p.host_ip!r} is not an IPv4 address") from None
        out.append({"host_ip": host_ip, "host_port": p.host_port, "container_port": p.container_port,
                    "protocol": protocol})
    return out


def pick_free(ports: list[dict]) -> None:
    """Gives each port without a host port one that nothing on the host binds and no container claims: one
    the kernel would hand out for a bind to port 0. Called under the network lock."""
    for p in ports:
        tries = 0
        while p["host_port"] is None:
            kind = socket.SOCK_STREAM if p["protocol"] == "tcp" else socket.SOCK_DGRAM
            with socket.socket(socket.AF_INET, kind) as s:
                s.bind((p["host_ip"], 0))
                port = s.getsockname()[1]
            if _holder(_claim({**p, "host_port": port})) is None and not any(
                    q is not p and (q["protocol"], q["host_port"]) == (p["protocol"], port) for q in ports):
                p["host_port"] = port
            tries += 1
            if tries > 100:
                raise RuntimeFailure(f"port {p['container_port']}/{p['protocol']}: no free host port found")


def check(ports: list[dict], owner: str) -> None:
    """Raises Conflict for a port another live container claims or anything on the host holds."""
    seen = set()
    for p in ports:
        name = _claim(p)
        if name in seen:
            raise Conflict(f"{_show(p)} is published twice")
        seen.add(name)
        holder = _holder(name)
        if holder == owner:
            continue
        if holder is not None and os.path.isdir(holder):
            raise Conflict(f"{_show(p)} is already in use")
        _try_bind(p)


def claim(ports: list[dict], owner: str) -> None:
    os.makedirs(DIR, exist_ok=True)
    for p in ports:
        path = os.path.join(DIR, _claim(p))
        if _holder(_claim(p)) == owner:
            continue
        try:
            os.unlink(path)  # stale: its container is gone
        except FileNotFoundError:
            pass
        os.symlink(owner, path)


def release(owner: str) -> None:
    """Drops every claim held by the container at owner."""
    try:
        names = os.listdir(DIR)
    except FileNotFoundError:
        return
    for name in names:
        if _holder(name) == owner:
            try:
                os.unlink(os.path.join(DIR, name))
            except FileNotFoundError:
                pass


def holders() -> set[str]:
    try:
        return {h for h in map(_holder, os.listdir(DIR)) if h}
    except FileNotFoundError:
        return set()


def stale() -> set[str]:
    """Holders whose container directory is gone."""
    return {h for h in holders() if not os.path.isdir(h)}


def _claim(p: dict) -> str:
    return f"{p['protocol']}-{p['host_port']}"


def _holder(name: str) -> str | None:
    try:
        return os.readlink(os.path.join(DIR, name))
    except OSError:
        return None


def _show(p: dict) -> str:
    return f"port {p['host_ip']}:{p['host_port']}/{p['protocol']}"


def _try_bind(p: dict) -> None:
    kind = socket.SOCK_STREAM if p["protocol"] == "tcp" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, kind) as s:
        if kind == socket.SOCK_STREAM:
            # a connection in TIME_WAIT is no user of the port; a listener still is, SO_REUSEADDR or not
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((p["host_ip"], p["host_port"]))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise Conflict(f"{_show(p)} is already in use") from None
            if e.errno == errno.EADDRNOTAVAIL:
                raise RuntimeFailure(f"{_show(p)}: {p['host_ip']} is not an address of this host") from None
            raise RuntimeFailure(f"{_show(p)}: cannot bind it: {e.strerror}") from None
