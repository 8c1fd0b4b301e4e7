"""What orchestr adds to the pod network the CRI runtime makes (with CNI): DNS settings, host ports picked and
checked, /etc/hosts naming the namespace's replicas, and `network: none`.

CRI has no network-less pod: every pod that is not on the host's network gets CNI's. For `network: none`
orchestr sets every interface but loopback down right after the sandbox starts, in the pod's network namespace
on this host (the one the sandbox's runtime spec names, else its process's), which takes their routes with them; the container (without CAP_NET_ADMIN) cannot set them up
again. They stay in place rather than go, because CNI's teardown finds what to undo (the bridge plugin's
masquerading rules) from the addresses on the pod's interface.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import subprocess
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

from orchestr.errors import Conflict, RuntimeFailure
from orchestr.model import Port

from .proto import cri_pb2 as pb

RUNTIME = "cri"
RESOLV_CONF = Path("/etc/resolv.conf")
HOSTS_HEAD = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"


def dns_config(resolv: Path = RESOLV_CONF) -> pb.DNSConfig:
    """The host's resolver settings without loopback servers, which mean nothing inside a pod."""
    config = pb.DNSConfig()
    try:
        lines = resolv.read_text().splitlines()
    except OSError:
        return config
    for line in lines:
        words = line.split("#", 1)[0].split()
        if len(words) < 2:
            continue
        if words[0] == "nameserver":
            try:
                if not ipaddress.ip_address(words[1].split("%")[0]).is_loopback:
                    config.servers.append(words[1])
            except ValueError:
                continue
        elif words[0] in ("search", "domain"):
            config.searches[:] = words[1:]
        elif words[0] == "options":
            config.options.extend(words[1:])
    return config


def _bindable(host_ip: str, port: int, protocol: str) -> bool:
    kind = socket.SOCK_DGRAM if protocol == "udp" else socket.SOCK_STREAM
    with socket.socket(socket.AF_INET, kind) as s:
        try:
            s.bind((host_ip, port))
        except OSError:
            return False
        return True


def _free(host_ip: str, protocol: str, taken: set[tuple[int, str]]) -> int:
    kind = socket.SOCK_DGRAM if protocol == "udp" else socket.SOCK_STREAM
    for _ in range(64):
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind((host_ip, 0))
            port = s.getsockname()[1]
        if (port, protocol) not in taken:
            return port
    raise RuntimeFailure("no free host port found", runtime=RUNTIME)


def pick_ports(name: str, ports: Iterable[Port], taken: Iterable[Port]) -> tuple[Port, ...]:
    """ports with a host port each: a free one where none is given, as Docker does; Conflict for one that
    another pod publishes or a process here listens on. CNI's portmap only rewrites packets, so nothing else
    would notice two pods publishing one port."""
    used = {(p.host_port, p.protocol) for p in taken if p.host_port}
    picked = []
    for p in ports:
        if p.host_port:
            if (p.host_port, p.protocol) in used or not _bindable(p.host_ip, p.host_port, p.protocol):
                raise Conflict(f"container {name}: host port {p.host_ip}:{p.host_port}/{p.protocol} is already in use",
                               runtime=RUNTIME, container=name)
            picked.append(p)
        else:
            picked.append(replace(p, host_port=_free(p.host_ip, p.protocol, used)))
        used.add((picked[-1].host_port, p.protocol))
    return tuple(picked)


def hosts(entries: Iterable[tuple[str, str, str]]) -> str:
    """An /etc/hosts naming each replica (ip, name, service) by its name and its service's."""
    lines = [HOSTS_HEAD]
    for ip, name, service in sorted(entries):
        aliases = name if service in ("", name) else f"{name} {service}"
        lines.append(f"{ip}\t{aliases}\n")
    return "".join(lines)


def write_hosts(path: Path, text: str) -> None:
    """Rewrites path in place: it is bind-mounted into a running container, which sees the same inode."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
    try:
        data = text.encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
    finally:
        os.close(fd)


def netns(info: dict[str, str]) -> str | None:
    """The pod's network namespace from PodSandboxStatus's verbose info: the path its runtime spec names (both
    containerd and CRI-O give it; CRI-O's pods without an infra container have no process), else the sandbox
    process's."""
    try:
        details = json.loads(info.get("info") or "{}")
        for ns in ((details.get("runtimeSpec") or {}).get("linux") or {}).get("namespaces") or []:
            if ns.get("type") == "network" and ns.get("path"):
                return str(ns["path"])
        pid = int(details.get("pid") or 0)
    except (ValueError, TypeError, AttributeError):
        return None
    return f"/proc/{pid}/ns/net" if pid else None


def isolate(path: str) -> None:
    """Sets every interface but loopback down in the network namespace at path (`network: none`)."""
    netns = f"--net={path}"
    shown = subprocess.run(["nsenter", netns, "ip", "-o", "link", "show"], capture_output=True, text=True)
    if shown.returncode != 0:
        raise RuntimeFailure(f"cannot enter the pod's network namespace: {shown.stderr.strip()}", runtime=RUNTIME)
    for line in shown.stdout.splitlines():
        name = line.split(":", 2)[1].strip().split("@")[0]
        if name != "lo":
            down = subprocess.run(["nsenter", netns, "ip", "link", "set", name, "down"], capture_output=True,
                                  text=True)
            if down.returncode != 0:
                raise RuntimeFailure(f"cannot set {name} down in the pod's network namespace: {down.stderr.strip()}",
                                     runtime=RUNTIME)
