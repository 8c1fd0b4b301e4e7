"""iptables rules of the bridge networks: outbound NAT, forwarding, namespace isolation and published ports.

Everything sits in orchestr's own chains, jumped to from the built-in ones and tagged with an "orchestr"
comment: ORCHESTR-FORWARD and ORCHESTR-INPUT (filter), ORCHESTR-POSTROUTING and ORCHESTR-DNAT (nat). The first
three are a function of the host's orchestr bridges and are rewritten whole, in one iptables-restore, whenever a
bridge comes or goes; the jumps are added only when missing. ORCHESTR-DNAT holds one rule per published port,
tagged with its container's id, and is never rewritten. All of it goes with the last orchestr bridge.

The rules, with B one bridge and S its subnet:
  FORWARD      replies and DNAT'd connections into any orchestr bridge: ACCEPT (dockerd sets the policy to DROP,
               and with br_netfilter loaded bridged traffic passes FORWARD too); B to B: ACCEPT; one orchestr
               bridge to another: DROP, which isolates namespaces; from an orchestr bridge elsewhere: ACCEPT;
               anything else into an orchestr bridge: DROP. Forwarding is on for the whole host, so without
               that last rule a neighbour routing S via this host would reach every port of every container
               whenever the policy is ACCEPT: only published ports (DNAT'd) are for the world.
  INPUT        a packet for 127.0.0.0/8 arriving on an orchestr bridge that is no reply: DROP. route_localnet
               (below) would otherwise let a container reach services the host binds to loopback only.
  POSTROUTING  S leaving by anything but B: MASQUERADE (outbound NAT; also a container reaching another
               namespace's published port); S to B when DNAT'd: MASQUERADE (a container reaching a published
               port of its own namespace, so the reply comes back the way the request went); 127.0.0.0/8 into
               an orchestr bridge: MASQUERADE (the host's own connections to 127.0.0.1:hostPort).
  DNAT         from PREROUTING and OUTPUT for local destinations: hostIP:hostPort -> containerIP:containerPort.
"""

from __future__ import annotations

import ipaddress

from orchestr import iptables
from orchestr.errors import RuntimeFailure

TAG = "orchestr"
ANY_BRIDGE = "orc-+"
FORWARD, INPUT, POSTROUTING, DNAT = "ORCHESTR-FORWARD", "ORCHESTR-INPUT", "ORCHESTR-POSTROUTING", "ORCHESTR-DNAT"
CHAINS = {"filter": (FORWARD, INPUT), "nat": (POSTROUTING, DNAT)}
JUMPS = {
    "filter": (("FORWARD", f"-j {FORWARD}"), ("INPUT", f"-j {INPUT}")),
    "nat": (("PREROUTING", f"-m addrtype --dst-type LOCAL -j {DNAT}"),
            ("OUTPUT", f"-m addrtype --dst-type LOCAL -j {DNAT}"), ("POSTROUTING", f"-j {POSTROUTING}")),
}
_C = f"-m comment --comment {TAG}"


def sync(bridges: dict[str, ipaddress.IPv4Network]) -> None:
    """Makes orchestr's chains fit bridges, every orchestr bridge of the host; with none, removes them all."""
    saved = iptables.saved()
    script = []
    for table in ("filter", "nat"):
        lines = saved.get(table, [])
        present = {line[1:].split()[0] for line in lines if line.startswith(":")}
        jumps = {chain: [line for line in lines if line.startswith(f"-A {chain} ") and target in line]
                 for chain, target in JUMPS[table]}
        script.append(f"*{table}")
        if bridges:
            for chain in CHAINS[table]:
                if chain != DNAT or chain not in present:  # declaring a chain empties it: never the port rules
                    script.append(f":{chain} - [0:0]")
            script += [f"-A {line}" for line in _rules(table, bridges)]
            script += [f"-I {chain} 1 {_C} {target}" for chain, target in JUMPS[table] if not jumps[chain]]
        else:
            script += ["-D" + line[2:] for found in jumps.values() for line in found]
            for chain in CHAINS[table]:
                if chain in present:
                    script += [f":{chain} - [0:0]", f"-X {chain}"]
        script.append("COMMIT")
    iptables.restore(script)


def _rules(table: str, bridges: dict[str, ipaddress.IPv4Network]) -> list[str]:
    if table == "filter":
        return [
            f"{FORWARD} -o {ANY_BRIDGE} -m conntrack --ctstate RELATED,ESTABLISHED {_C} -j ACCEPT",
            f"{FORWARD} -o {ANY_BRIDGE} -m conntrack --ctstate DNAT {_C} -j ACCEPT",
            *(f"{FORWARD} -i {b} -o {b} {_C} -j ACCEPT" for b in sorted(bridges)),
            f'{FORWARD} -i {ANY_BRIDGE} -o {ANY_BRIDGE} -m comment --comment "{TAG}: namespaces are isolated" -j DROP',
            f"{FORWARD} -i {ANY_BRIDGE} {_C} -j ACCEPT",
            f'{FORWARD} -o {ANY_BRIDGE} -m comment --comment "{TAG}: only published ports are reachable" -j DROP',
            f"{INPUT} -i {ANY_BRIDGE} -d 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT {_C} -j DROP",
        ]
    out = [f"{POSTROUTING} -s 127.0.0.0/8 -o {ANY_BRIDGE} {_C} -j MASQUERADE"]
    for b, subnet in sorted(bridges.items()):
        out += [f"{POSTROUTING} -s {subnet} ! -o {b} {_C} -j MASQUERADE",
                f"{POSTROUTING} -s {subnet} -o {b} -m conntrack --ctstate DNAT {_C} -j MASQUERADE"]
    return out


def add_ports(id: str, ip: str, ports: list[dict]) -> None:
    if ports:
        iptables.restore(["*nat", *(f"-A {DNAT} {_dnat(id, ip, p)}" for p in ports), "COMMIT"])


def remove_ports(id: str, ip: str | None = None, ports: list[dict] | None = None) -> None:
    """Deletes the container's DNAT rules: those given when they are all there (one call), else whatever the
    chain holds for id."""
    if ports and ip:
        try:
            iptables.restore(["*nat", *(f"-D {DNAT} {_dnat(id, ip, p)}" for p in ports), "COMMIT"])
            return
        except RuntimeFailure:
            pass  # some are gone already: fall back to what is there
    stale = [line for line in iptables.saved().get("nat", []) if line.startswith(f"-A {DNAT} ") and f"{TAG} {id}" in line]
    if stale:
        iptables.restore(["*nat", *("-D" + line[2:] for line in stale), "COMMIT"])


def enable_forwarding(bridge: str) -> None:
    """IPv4 forwarding for the host, and route_localnet on the bridge so 127.0.0.1:hostPort can be DNAT'd to it.

    Forwarding is host-wide: turning it on would also make the host a router between its other interfaces. So,
    as dockerd does, when this is what turns it on the FORWARD policy becomes DROP; orchestr's own traffic is
    accepted by its rules. A host that forwarded already keeps its policy."""
    if _sysctl("/proc/sys/net/ipv4/ip_forward", "1"):
        iptables.run(["iptables", "-w", "-P", "FORWARD", "DROP"])
    _sysctl(f"/proc/sys/net/ipv4/conf/{bridge}/route_localnet", "1")


def _dnat(id: str, ip: str, p: dict) -> str:
    to = f"-d {p['host_ip']}/32 " if p["host_ip"] != "0.0.0.0" else ""
    proto = p["protocol"]
    return (f'{to}-p {proto} -m {proto} --dport {p["host_port"]} -m comment --comment "{TAG} {id}" '
            f"-j DNAT --to-destination {ip}:{p['container_port']}")


def _sysctl(path: str, value: str) -> bool:
    """Sets the sysctl at path to value; True when it had another."""
    with open(path, "r+") as f:
        if f.read().strip() == value:
            return False
        f.seek(0)
        f.write(value)
        return True
