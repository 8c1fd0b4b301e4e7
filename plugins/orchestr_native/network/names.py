"""Name resolution for bridged containers: /etc/hosts naming every peer of the namespace, and /etc/resolv.conf."""

from __future__ import annotations

import ipaddress
import os
import re

# The interpreter's own SHA-256 where it has one: hashlib's import loads OpenSSL's library for it, 11 M
# instructions (3 ms here) of every create on a bridge, to hash a few dozen bytes into a name.
try:
    from _sha2 import sha256 as _sha256  # Python 3.12 and later
except ImportError:
    try:
        from _sha256 import sha256 as _sha256  # Python 3.11
    except ImportError:  # an interpreter built without them
        from hashlib import sha256 as _sha256

HOST_RESOLV_CONF = "/etc/resolv.conf"


def digest(text: str) -> str:
    """The SHA-256 of text, in hex: what names of bridges and keys of service ports are cut from."""
    return _sha256(text.encode()).hexdigest()
_LOCAL = ("127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback")


def hosts(own: str, leases: dict[str, dict]) -> str:
    """The hosts file of the container at address own: itself first, then its peers by service and replica,
    so a service name resolves to its lowest replica when a resolver takes the first match."""
    return Hosts(leases).of(own)


class Hosts:
    """The hosts files of a namespace's containers, its lines made and sorted once for all of them: each
    create and delete rewrites every peer's file, so this is what a namespace of hundreds pays for per change."""

    def __init__(self, leases: dict[str, dict]):
        def line(ip: str) -> str:
            lease = leases[ip]
            return f"{ip}\t" + " ".join(dict.fromkeys(n for n in (lease.get("name"), lease.get("service")) if n))

        named = sorted((ip for ip, lease in leases.items() if lease.get("name")),
                       key=lambda ip: (leases[ip].get("service", ""), leases[ip].get("replica", 0), leases[ip]["name"]))
        self.order = {ip: i for i, ip in enumerate(named)}
        self.lines = [line(ip) for ip in named]
        self.leases = leases

    def of(self, own: str) -> str:
        i = self.order.get(own)
        if i is None:  # a lease without a name yet: its line alone
            mine = f"{own}\t" + " ".join(n for n in (self.leases.get(own, {}).get("service"),) if n)
            return "\n".join([*_LOCAL, mine, *self.lines]) + "\n"
        return "\n".join([*_LOCAL, self.lines[i], *self.lines[:i], *self.lines[i + 1:]]) + "\n"


def write_in_place(path: str, text: str) -> None:
    """Replaces the file's content keeping its inode: it is bind-mounted into a running container, and a
    rename would leave the container looking at the old file."""
    data = text.encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        return  # the container is being deleted
    try:
        os.pwrite(fd, data, 0)  # one write, then the cut: a reader sees the new lines, never a blank file
        os.ftruncate(fd, len(data))
    finally:
        os.close(fd)


def resolv_conf(host: str = HOST_RESOLV_CONF) -> str:
    """The host's resolv.conf without loopback nameservers, which mean nothing in another network namespace."""
    try:
        with open(host) as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return ""
    kept = []
    for line in lines:
        words = line.split()
        if words[:1] == ["nameserver"] and len(words) > 1 and _loopback(words[1]):
            continue
        if words and not line.lstrip().startswith(("#", ";")):
            kept.append(line)
    return "\n".join(kept) + "\n" if kept else ""


def _loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(re.sub(r"%.*$", "", address)).is_loopback
    except ValueError:
        return False
