"""The iptables rules of a bridge network, one set per bridge rather than CNI's per container (its bridge plugin's
ipMasq and its firewall plugin each add and remove rules for every container, one iptables call at a time under
the host's xtables lock, which is most of what a container's create and delete cost).

In chains of orchestr's own, jumped to first from FORWARD and POSTROUTING: traffic within the bridge, replies and
published ports (DNAT) into it and new connections from it to anywhere but another orchestr containerd bridge are
accepted, everything else to or from it dropped (namespaces cannot reach each other but through published ports),
and what leaves the host from its subnet is masqueraded. The rules go with the bridge; the chains and their jumps
with the last bridge. A lock file keeps two orchestr processes from interleaving their changes.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
from collections.abc import Iterator

from orchestr.errors import RuntimeFailure

from .client import RUNTIME

FORWARD, NAT = "ORCHESTR-CD-FORWARD", "ORCHESTR-CD-NAT"
PREFIX = "ocd"  # every bridge of orchestr's containerd runtime
LOCK = "/run/orchestr-containerd/iptables.lock"


def _iptables(table: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["iptables", "-w", "-t", table, *args], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise RuntimeFailure(f"iptables -t {table} {' '.join(args)}: {proc.stderr.strip()}", runtime=RUNTIME)
    return proc


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    os.makedirs(os.path.dirname(LOCK), mode=0o700, exist_ok=True)
    fd = os.open(LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _rules(bridge: str, subnet: str) -> list[tuple[str, str, list[str]]]:
    tag = ["-m", "comment", "--comment", f"orchestr-containerd {bridge}"]
    return [
        ("filter", FORWARD, ["-i", bridge, "-o", bridge, *tag, "-j", "ACCEPT"]),
        ("filter", FORWARD, ["-o", bridge, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED,DNAT", *tag,
                             "-j", "ACCEPT"]),
        ("filter", FORWARD, ["-i", bridge, "!", "-o", f"{PREFIX}+", *tag, "-j", "ACCEPT"]),
        ("filter", FORWARD, ["-i", bridge, *tag, "-j", "DROP"]),
        ("filter", FORWARD, ["-o", bridge, *tag, "-j", "DROP"]),
        ("nat", NAT, ["-s", subnet, "!", "-o", bridge, *tag, "-j", "MASQUERADE"]),
    ]


def _chains() -> None:
    """Our chains and the jumps to them, first in FORWARD and POSTROUTING."""
    for table, chain, parent in (("filter", FORWARD, "FORWARD"), ("nat", NAT, "POSTROUTING")):
        _iptables(table, "-N", chain, check=False)
        if _iptables(table, "-C", parent, "-j", chain, check=False).returncode != 0:
            _iptables(table, "-I", parent, "1", "-j", chain)


def open_bridge(bridge: str, subnet: str) -> None:
    """The bridge's rules, unless they are there already."""
    with _locked():
        _chains()
        for table, chain, rule in _rules(bridge, subnet):
            if _iptables(table, "-C", chain, *rule, check=False).returncode != 0:
                # every bridge's accepts before any bridge's drops: a published port of one namespace is reached
                # from another's containers through DNAT
                where = ["-A", chain] if rule[-1] == "DROP" else ["-I", chain, "1"]
                _iptables(table, *where, *rule)
        with open("/proc/sys/net/ipv4/ip_forward") as f:
            forwarding = f.read().strip() == "1"
        if not forwarding:  # as CNI's bridge plugin with isGateway does
            with open("/proc/sys/net/ipv4/ip_forward", "w") as f:
                f.write("1")


def close_bridge(bridge: str) -> None:
    """Removes the bridge's rules, and the chains once no bridge has any."""
    with _locked():
        for table, chain in (("filter", FORWARD), ("nat", NAT)):
            listed = _iptables(table, "-S", chain, check=False).stdout.splitlines()
            for line in listed:
                if line.startswith(f"-A {chain} ") and f"orchestr-containerd {bridge}" in line:
                    _iptables(table, "-D", chain, *_split(line)[2:], check=False)
        for table, chain, parent in (("filter", FORWARD, "FORWARD"), ("nat", NAT, "POSTROUTING")):
            left = [line for line in _iptables(table, "-S", chain, check=False).stdout.splitlines()
                    if line.startswith("-A ")]
            if not left:
                _iptables(table, "-D", parent, "-j", chain, check=False)
                _iptables(table, "-X", chain, check=False)


def _split(line: str) -> list[str]:
    import shlex

    return shlex.split(line)
