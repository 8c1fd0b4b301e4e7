"""Service ports: one host port that balances new connections across a service's ready replicas.

This is kube-proxy's iptables mode for one host. Each published port of a service gets a chain of its own,
ORCHESTR-SVC-<key>, holding one DNAT rule per endpoint (a ready replica's address): rule i of n matches with
`-m statistic --mode random --probability 1/(n-i)` and the last one always, so every endpoint gets an equal share
of new connections. Established connections keep their endpoint (conntrack), so changing the endpoints never
breaks a connection; a replica taken out gets no new ones. ORCHESTR-SERVICES (nat), jumped to from PREROUTING and
OUTPUT for local destinations, sends hostIP:hostPort to the port's chain. A port without endpoints has an empty
chain: its connections reach the host, where nothing listens on the port, and are refused.

Every change is one iptables-restore, so a port's endpoints are swapped atomically. The host port is checked
free and claimed host-wide as a container's published port is (ports.py), by the service's record directory,
<records>/<key>/, which holds what was published (service.json): a record whose directory is gone is stale and
its rules go with the next change. All of it goes with the last service port.

The native runtime's bridges already have what DNAT into them needs (firewall.py: FORWARD, route_localnet and
the MASQUERADE of 127.0.0.0/8). Other bridges (Docker's) get the same from here, for as long as a service port
points into them: route_localnet on the bridge, ORCHESTR-SVC-POSTROUTING (127.0.0.0/8 into the bridge:
MASQUERADE), ORCHESTR-SVC-FORWARD (DNAT'd connections into the bridge: ACCEPT) and ORCHESTR-SVC-INPUT (a packet
for 127.0.0.0/8 from the bridge that is no reply: DROP, so route_localnet opens no way to the host's
loopback-only services).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path

from orchestr import iptables
from orchestr.model import Port

from . import firewall, ports
from .names import digest

LOCK = "/run/orchestr/network.lock"  # the native network's: every host-wide change of orchestr's
SERVICES, CHAIN = "ORCHESTR-SERVICES", "ORCHESTR-SVC-"
POST, FWD, INP = "ORCHESTR-SVC-POSTROUTING", "ORCHESTR-SVC-FORWARD", "ORCHESTR-SVC-INPUT"
JUMPS = {
    "nat": (("PREROUTING", f"-m addrtype --dst-type LOCAL -j {SERVICES}"),
            ("OUTPUT", f"-m addrtype --dst-type LOCAL -j {SERVICES}"), ("POSTROUTING", f"-j {POST}")),
    "filter": (("FORWARD", f"-j {FWD}"), ("INPUT", f"-j {INP}")),
}
RECORD = "service.json"
_LOCALNET = "/run/orchestr/route-localnet"  # a file per bridge whose route_localnet was turned on from here


@contextlib.contextmanager
def locked() -> Iterator[None]:
    os.makedirs(os.path.dirname(LOCK), exist_ok=True)
    with open(LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


class Services:
    """The service ports of one runtime (and state dir): records under records, keys salted with salt."""

    def __init__(self, records: Path, salt: str, helpers: bool = False):
        self.records = Path(records)
        self.salt = salt
        self.helpers = helpers  # this runtime's bridges need the helper chains (one runtime only: Docker's)

    def key(self, namespace: str, service: str) -> str:
        return digest(f"{self.salt}\0{namespace}\0{service}")[:12]

    def published(self, namespace: str | None = None) -> list[dict]:
        """The records of the services published, of one namespace or all."""
        out = []
        try:
            entries = sorted(os.scandir(self.records), key=lambda e: e.name)
        except FileNotFoundError:
            return []
        for entry in entries:
            try:
                record = json.loads((Path(entry.path) / RECORD).read_text())
            except (OSError, ValueError):
                continue
            if namespace is None or record.get("namespace") == namespace:
                out.append(record)
        return out

    def publish(self, namespace: str, service: str, wanted: Sequence[Port], endpoints: Sequence[str],
                bridges: Sequence[str] = ()) -> None:
        """Makes the service's ports balance across endpoints (addresses); no ports: removes them. bridges:
        those of the endpoints that need the rules of a bridge not the native runtime's. Conflict when a port is
        taken. Call under locked()."""
        key = self.key(namespace, service)
        owner = self.records / key
        record = {"namespace": namespace, "service": service, "key": key,
                  "ports": [_record(p) for p in wanted], "endpoints": sorted(endpoints), "bridges": sorted(bridges)}
        try:
            before = json.loads((owner / RECORD).read_text())
        except (OSError, ValueError):
            before = None
        if before == record and _chain_exists(key) or not wanted and before is None:
            return
        drop_stale()
        if not wanted:
            _apply(key, [], [], bridges_in_use(self, key), self.helpers)
            ports.release(str(owner))
            shutil.rmtree(owner, ignore_errors=True)
            return
        claimed = ports.published(Port(p.container_port, p.host_port, p.protocol, p.host_ip) for p in wanted)
        ports.check(claimed, str(owner))
        os.makedirs(owner, mode=0o700, exist_ok=True)
        ports.release(str(owner))  # ports no longer wanted
        ports.claim(claimed, str(owner))
        _apply(key, record["ports"], record["endpoints"], bridges_in_use(self, key) | set(bridges), self.helpers)
        tmp = owner / (RECORD + ".tmp")
        tmp.write_text(json.dumps(record))
        os.replace(tmp, owner / RECORD)


def bridges_in_use(services: Services, skip: str) -> set[str]:
    """The bridges of every other published service of this runtime (others' runtimes keep their own files)."""
    return {b for r in services.published() if r.get("key") != skip for b in r.get("bridges", ())}


def _record(p: Port) -> dict:
    return {"protocol": p.protocol, "host_ip": "0.0.0.0" if p.host_ip in ("", "::") else p.host_ip,
            "host_port": p.host_port, "container_port": p.container_port}


def _chain(key: str, i: int) -> str:
    return f"{CHAIN}{key}-{i}"  # at most 28 characters, as iptables allows


def _tag(key: str) -> str:
    return f'-m comment --comment "orchestr svc {key}"'


def _chain_exists(key: str) -> bool:
    return any(line.startswith(f":{_chain(key, 0)} ") for line in iptables.saved().get("nat", []))


def _apply(key: str, wanted: list[dict], endpoints: list[str], bridges: set[str], helpers: bool) -> None:
    """One iptables-restore: the service's chains and dispatch rules as wanted (none: removed), the jumps, and
    (helpers) the helper chains for bridges."""
    saved = iptables.saved()
    nat, filt = saved.get("nat", []), saved.get("filter", [])
    tag = f"orchestr svc {key}"
    mine = [line for line in nat if line.startswith(f"-A {SERVICES} ") and tag in line]
    present = {line[1:].split()[0] for line in nat + filt if line.startswith(":")}
    own = sorted(c for c in present if c.startswith(f"{CHAIN}{key}-"))
    others = [c for c in present if c.startswith(CHAIN) and c not in own and c not in (POST, FWD, INP)]
    live = bool(wanted or others)
    script = ["*nat"]
    if live:  # declaring a chain empties it: SERVICES never, the helpers only when this runtime owns them
        script += [f":{c} - [0:0]" for c in (SERVICES, POST) if c not in present or helpers and c == POST]
    script += ["-D" + line[2:] for line in mine]
    for i, p in enumerate(wanted):
        chain = _chain(key, i)
        script.append(f":{chain} - [0:0]")  # declaring an existing chain empties it
        n = len(endpoints)
        for j, ip in enumerate(endpoints):
            odds = f"-m statistic --mode random --probability {1 / (n - j):.11f} " if j < n - 1 else ""
            script.append(f"-A {chain} -p {p['protocol']} {_tag(key)} {odds}-j DNAT --to-destination "
                          f"{ip}:{p['container_port']}")
        to = f"-d {p['host_ip']}/32 " if p["host_ip"] != "0.0.0.0" else ""
        proto = p["protocol"]
        script.append(f"-A {SERVICES} {to}-p {proto} -m {proto} --dport {p['host_port']} {_tag(key)} -j {chain}")
    for c in own[len(wanted):]:
        script += [f":{c} - [0:0]", f"-X {c}"]
    if live and helpers:
        script += [f"-A {POST} -s 127.0.0.0/8 -o {b} {_tag('bridge')} -j MASQUERADE" for b in sorted(bridges)]
    script += _jumps("nat", nat, live)
    if not live:
        script += [f":{c} - [0:0]" for c in (SERVICES, POST) if c in present]
        script += [f"-X {c}" for c in (SERVICES, POST) if c in present]
    script += ["COMMIT", "*filter"]
    if live:
        script += [f":{c} - [0:0]" for c in (FWD, INP) if c not in present or helpers]
    if live and helpers:
        for b in sorted(bridges):
            script += [f"-A {FWD} -o {b} -m conntrack --ctstate DNAT {_tag('bridge')} -j ACCEPT",
                       f"-A {INP} -i {b} -d 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT "
                       f"{_tag('bridge')} -j DROP"]
    script += _jumps("filter", filt, live)
    if not live:
        script += [f":{c} - [0:0]" for c in (FWD, INP) if c in present]
        script += [f"-X {c}" for c in (FWD, INP) if c in present]
    script.append("COMMIT")
    iptables.restore(script)
    if helpers or not live:
        _route_localnet(bridges if live else set())


def _jumps(table: str, lines: list[str], live: bool) -> list[str]:
    out = []
    for chain, target in JUMPS[table]:
        found = [line for line in lines if line.startswith(f"-A {chain} ") and target in line]
        if live and not found:
            out.append(f"-I {chain} 1 -m comment --comment orchestr {target}")
        elif not live:
            out += ["-D" + line[2:] for line in found]
    return out


def _route_localnet(bridges: set[str]) -> None:
    """route_localnet on the bridges that need it; turned off again on those it was turned on for and that no
    longer need it."""
    os.makedirs(_LOCALNET, exist_ok=True)
    for b in bridges:
        path = f"/proc/sys/net/ipv4/conf/{b}/route_localnet"
        with contextlib.suppress(FileNotFoundError):
            if firewall._sysctl(path, "1"):
                Path(_LOCALNET, b).touch()
    for b in os.listdir(_LOCALNET):
        if b not in bridges:
            with contextlib.suppress(FileNotFoundError):
                firewall._sysctl(f"/proc/sys/net/ipv4/conf/{b}/route_localnet", "0")
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(_LOCALNET, b))


def drop_stale() -> None:
    """The rules and claims of services whose record directory is gone (their state dir was removed). Call under
    locked()."""
    for holder in ports.stale():
        if os.path.basename(os.path.dirname(holder)) != "services":
            continue  # a container's claim: the native network drops those
        ports.release(holder)
        with contextlib.suppress(Exception):
            _apply(os.path.basename(holder), [], [], set(), False)
