"""The iptables rules of a bridge network, one set per bridge rather than CNI's per container (its bridge plugin's
ipMasq and its firewall plugin each add and remove rules for every container, one iptables call at a time under
the host's xtables lock, which is most of what a container's create and delete cost).

In chains of orchestr's own, jumped to first from FORWARD and POSTROUTING: traffic within the bridge, replies and
published ports (DNAT) into it and new connections from it to anywhere but another orchestr containerd bridge are
accepted, everything else to or from it dropped (namespaces cannot reach each other but through published ports),
and what leaves the host from its subnet is masqueraded. The rules go with the bridge; the chains and their jumps
with the last bridge, each change read with one iptables-save and made with one iptables-restore. A lock file keeps
two orchestr processes from interleaving their changes.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator

from orchestr import iptables

from .client import RUNTIME

FORWARD, NAT = "ORCHESTR-CD-FORWARD", "ORCHESTR-CD-NAT"
PREFIX = "ocd"  # every bridge of orchestr's containerd runtime
LOCK = "/run/orchestr-containerd/iptables.lock"


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    os.makedirs(os.path.dirname(LOCK), mode=0o700, exist_ok=True)
    fd = os.open(LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


CHAINS = (("filter", FORWARD, "FORWARD"), ("nat", NAT, "POSTROUTING"))  # table, our chain, the one jumping to it


def _tag(bridge: str) -> str:
    return f"orchestr-containerd {bridge}"


def _rules(bridge: str, subnet: str) -> list[tuple[str, str]]:
    """(table, rule) in iptables-restore's words: the accepts go first in the chain, the drops last."""
    tag = f'-m comment --comment "{_tag(bridge)}"'
    return [
        ("filter", f"-I {FORWARD} 1 -i {bridge} -o {bridge} {tag} -j ACCEPT"),
        ("filter", f"-I {FORWARD} 1 -o {bridge} -m conntrack --ctstate RELATED,ESTABLISHED,DNAT {tag} -j ACCEPT"),
        # every bridge's accepts before any bridge's drops: a published port of one namespace is reached from
        # another's containers through DNAT
        ("filter", f"-I {FORWARD} 1 -i {bridge} ! -o {PREFIX}+ {tag} -j ACCEPT"),
        ("filter", f"-A {FORWARD} -i {bridge} {tag} -j DROP"),
        ("filter", f"-A {FORWARD} -o {bridge} {tag} -j DROP"),
        ("nat", f"-I {NAT} 1 -s {subnet} ! -o {bridge} {tag} -j MASQUERADE"),
    ]


def open_bridge(bridge: str, subnet: str) -> None:
    """The bridge's rules, and the chains and jumps they need, unless they are all there: one iptables-save and at
    most one iptables-restore."""
    with _locked():
        saved = iptables.saved(RUNTIME)
        script = []
        for table, chain, parent in CHAINS:
            lines = saved.get(table, [])
            wanted = [rule for t, rule in _rules(bridge, subnet) if t == table]
            mine = [line for line in lines if line.startswith(f"-A {chain} ") and _tag(bridge) in line]
            todo = [] if any(line.split()[0] == f":{chain}" for line in lines) else [f":{chain} - [0:0]"]
            if f"-A {parent} -j {chain}" not in lines:
                todo.append(f"-I {parent} 1 -j {chain}")
            if len(mine) != len(wanted):  # some missing: all made again
                todo += ["-D" + line[2:] for line in mine] + wanted
            if todo:
                script += [f"*{table}", *todo, "COMMIT"]
        iptables.restore(script, RUNTIME)
        with open("/proc/sys/net/ipv4/ip_forward") as f:
            forwarding = f.read().strip() == "1"
        if not forwarding:  # as CNI's bridge plugin with isGateway does
            with open("/proc/sys/net/ipv4/ip_forward", "w") as f:
                f.write("1")


def close_bridge(bridge: str) -> None:
    """Removes the bridge's rules, and the chains and their jumps once no bridge has any, in one iptables-restore."""
    with _locked():
        saved = iptables.saved(RUNTIME)
        script = []
        for table, chain, parent in CHAINS:
            lines = saved.get(table, [])
            rules = [line for line in lines if line.startswith(f"-A {chain} ")]
            todo = ["-D" + line[2:] for line in rules if _tag(bridge) in line]
            if len(todo) == len(rules):
                todo += ["-D" + line[2:] for line in lines if line == f"-A {parent} -j {chain}"]
                if any(line.split()[0] == f":{chain}" for line in lines):
                    todo.append(f"-X {chain}")
            if todo:
                script += [f"*{table}", *todo, "COMMIT"]
        iptables.restore(script, RUNTIME)
