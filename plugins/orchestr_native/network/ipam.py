"""Addresses: a subnet per orchestr namespace carved from a pool, and a lease file per container address.

Leases live in the namespace's directory under state_dir/native/network/<bridge>/, one file per address
holding the container's id, name and service, created exclusively (O_EXCL). Everything that allocates or
reads leases runs under the host-wide network lock, so concurrent creates from several processes never share
an address; a lease left unreadable by a crash is released by the next sweep.
"""

from __future__ import annotations

import ipaddress
import json
import os
from pathlib import Path

from orchestr.config import private
from orchestr.errors import RuntimeFailure

POOL_ENV = "ORCHESTR_NATIVE_SUBNET"
PREFIX_ENV = "ORCHESTR_NATIVE_SUBNET_PREFIX"  # the size of a new namespace's subnet, as a prefix length
# Private ranges Docker (172.17.0.0/16 and up) and most LANs (192.168.x) leave alone; the first one with room
# that no host route overlaps is used.
DEFAULT_POOLS = tuple(f"10.{n}.0.0/16" for n in range(88, 100))
SUBNET_PREFIX = 24  # each namespace's share of the pool, unless PREFIX_ENV says otherwise: 253 containers
RECORD = "bridge.json"


def pools() -> list[ipaddress.IPv4Network]:
    text = os.environ.get(POOL_ENV)
    if not text:
        return [ipaddress.IPv4Network(p) for p in DEFAULT_POOLS]
    try:
        return [ipaddress.IPv4Network(text.strip(), strict=False)]
    except ValueError:
        raise RuntimeFailure(f"{POOL_ENV}={text!r} is not an IPv4 network such as 10.88.0.0/16") from None


def prefix() -> int:
    """The prefix length of the subnet a namespace's bridge gets when it is made."""
    text = os.environ.get(PREFIX_ENV)
    if not text:
        return SUBNET_PREFIX
    value = text.strip().removeprefix("/")
    if not value.isdigit() or not 16 <= int(value) <= 30:
        raise RuntimeFailure(f"{PREFIX_ENV}={text!r} is not a prefix length from 16 to 30, such as 22 "
                             f"(for {hosts(ipaddress.IPv4Network('10.0.0.0/22'))} containers a namespace)")
    return int(value)


def hosts(subnet: ipaddress.IPv4Network) -> int:
    """How many containers subnet has addresses for: all but its network, gateway and broadcast addresses."""
    return max(subnet.num_addresses - 3, 0)


def next_hosts() -> int:
    """hosts() of the subnet the next new namespace gets."""
    size = max(prefix(), min(pool.prefixlen for pool in pools()))
    return hosts(ipaddress.IPv4Network(f"10.0.0.0/{size}", strict=False))


def pick_subnet(taken: list[ipaddress.IPv4Network]) -> ipaddress.IPv4Network:
    """The first block of the pool that overlaps nothing in taken (host routes and recorded subnets)."""
    candidates = pools()
    for pool in candidates:
        if pool.prefixlen > 30:
            raise RuntimeFailure(f"{POOL_ENV}={pool} is too small; use a /30 or larger, such as 10.88.0.0/16")
        for block in pool.subnets(new_prefix=max(prefix(), pool.prefixlen)):
            if not any(block.overlaps(t) for t in taken):
                return block
    where = str(candidates[0]) if len(candidates) == 1 else f"{candidates[0]} to {candidates[-1]}"
    raise RuntimeFailure(f"no free /{prefix()} subnet left in {where} for another namespace's bridge; "
                         f"set {POOL_ENV} to a free range")


def gateway(subnet: ipaddress.IPv4Network) -> ipaddress.IPv4Interface:
    return ipaddress.IPv4Interface(f"{subnet.network_address + 1}/{subnet.prefixlen}")


# (lease path) -> ((inode, mtime, size), lease): every create and delete reads every lease of its namespace, and
# a lease file is written once, so one apply of hundreds of replicas reads each one once rather than each time
_read: dict[str, tuple[tuple[int, int, int], dict]] = {}


def leases(directory: Path) -> dict[str, dict]:
    """Address -> lease of one namespace; a lease that cannot be read maps to {}."""
    found = {}
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return {}
    for entry in entries:
        if not entry.name[:1].isdigit():  # the bridge record and its temporary copies
            continue
        try:
            info = entry.stat()
            key = (info.st_ino, info.st_mtime_ns, info.st_size)
            known = _read.get(entry.path)
            if known is not None and known[0] == key:
                found[entry.name] = known[1]
                continue
            with open(entry.path) as f:
                found[entry.name] = json.load(f)
            _read[entry.path] = (key, found[entry.name])
        except (OSError, ValueError):
            found[entry.name] = {}
    return found


def allocate(directory: Path, subnet: ipaddress.IPv4Network, lease: dict, taken: set[str]) -> str:
    """Leases the lowest free address of subnet after the gateway's to lease["id"]; taken are the known leases."""
    for n in range(int(subnet.network_address) + 2, int(subnet.broadcast_address)):
        ip = str(ipaddress.IPv4Address(n))
        if ip in taken:
            continue
        try:
            with open(directory / ip, "x", opener=private) as f:
                f.write(json.dumps(lease))
        except FileExistsError:
            continue
        return ip
    raise RuntimeFailure(f"no free address left in {subnet} for container {lease.get('name')}")


def keep(directory: Path, ip: str, lease: dict) -> None:
    """Puts back the lease of a container that holds ip (after its records were lost); refuses if another has it."""
    try:
        with open(directory / ip, "x", opener=private) as f:
            f.write(json.dumps(lease))
    except FileExistsError:
        holder = leases(directory).get(ip, {}).get("id")
        if holder not in (None, lease["id"]):
            raise RuntimeFailure(f"container {lease.get('name')}: its address {ip} is leased to another container; "
                                 "recreate it") from None


def release(directory: Path, ip: str) -> None:
    _read.pop(str(directory / ip), None)
    try:
        os.unlink(directory / ip)
    except FileNotFoundError:
        pass
