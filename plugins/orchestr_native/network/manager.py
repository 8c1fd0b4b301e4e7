"""A bridged container's network: set up at create, repaired at start, removed at delete, swept when orphaned."""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import os
import shutil
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

from orchestr.config import private_dir
from orchestr.errors import RuntimeFailure
from orchestr.model import L_REPLICA, L_SERVICE, ContainerSpec, Port, serviced

from ..supervisor import records
from . import firewall, ipam, names, netns, ports, services

RUN = "/run/orchestr"
LOCK = os.path.join(RUN, "network.lock")
OWNERS = os.path.join(RUN, "bridges")  # a file per kept bridge naming the state dir it belongs to
# bridge -> how many of this process's threads wait for the lock to remove a container from it: all but the last
# leave telling the peers to it, which then tells them of every removal at once
_detaching: Counter[str] = Counter()
_detaching_lock = threading.Lock()
BRIDGE_PREFIX = "orc-"  # bridges are orc-<11 hex>, veths orc<10 hex>: `orc-+` in iptables means bridges only


class Network:
    """The bridge networks of one state dir; their records live in state_dir/native/network/<bridge>/."""

    def __init__(self, root: Path):
        self.root = Path(os.path.realpath(root))  # one spelling: it names bridges and owns port claims
        self.dir = self.root / "network"
        self.containers = self.root / "containers"

    def bridge(self, namespace: str) -> str:
        """The namespace's bridge: one per state dir and namespace, 15 characters as the kernel allows."""
        return BRIDGE_PREFIX + names.digest(f"{self.root}\0{namespace}")[:11]

    def capacity(self, namespace: str) -> int:
        """How many containers the namespace's bridge has addresses for: those of its subnet, or, before it has
        one, of the subnet it would get."""
        record = records.read_json(str(self.dir / self.bridge(namespace) / ipam.RECORD))
        return ipam.hosts(ipaddress.IPv4Network(record["subnet"])) if record else ipam.next_hosts()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Host-wide: bridges, subnets, published ports and iptables are shared by every state dir."""
        os.makedirs(RUN, exist_ok=True)
        with open(LOCK, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    # -- create, start, delete ----------------------------------------------------------

    def attach(self, id: str, spec: ContainerSpec, directory: Path,
               reserved: Callable[[dict], None] | None = None) -> dict:
        """Gives the new container its address, published ports, the hosts and resolv.conf files in directory,
        then its namespace and veth; returns what its config records. Nothing changes when a published port is
        taken. reserved, when given, is called with that record before the namespace and veth are made (the
        kernel's part, milliseconds): the container's start can begin meanwhile. A failure after it has been
        called undoes everything, then raises."""
        published = ports.published(p for p in spec.ports if not serviced(p))
        owner = str(self.containers / id)
        bridge = self.bridge(spec.namespace)
        with self._locked():
            # what crashes left on this bridge, bridges of removed state dirs, and claims on ports that would
            # shadow ours; the other bridges are swept when runtimes are opened for an apply (sweep) and when a
            # namespace's bridge is removed
            if published:
                self._drop_stale_claims()
            self._drop_ownerless()
            self._sweep_bridge(bridge)
            ports.pick_free(published)
            ports.check(published, owner)
            record = self._bridge(bridge, spec.namespace)
            subnet = ipaddress.IPv4Network(record["subnet"])
            here = self.dir / bridge
            leases = ipam.leases(here)
            lease = _lease(id, spec.name, spec.labels)
            ip = ipam.allocate(here, subnet, lease, set(leases))
            leases[ip] = lease
            net = {"ip": ip, "subnet": str(subnet), "gateway": str(ipam.gateway(subnet).ip), "bridge": bridge,
                   "veth": _veth(id), "netns": netns.path(id), "mtu": record["mtu"], "ports": published}
            try:
                self._publish(id, net, owner)
                (directory / "resolv.conf").write_text(names.resolv_conf())
                (directory / "hosts").write_text(names.hosts(ip, leases))
                self._rewrite_hosts(leases, skip=ip)
                if reserved is not None:
                    reserved(net)
                self._connect(net, create=True)
            except BaseException as e:
                self._remove(id, net, owner)
                self._settle(bridge)
                if isinstance(e, OSError):
                    raise _failure(spec.name, e) from None
                raise
        return net

    def ensure(self, config: dict) -> None:
        """Before a start: rebuilds what a reboot or a hand took away (namespace, veth, bridge, lease, rules)."""
        net, id = config["net"], config["id"]
        if netns.mounted(net["netns"]) and _link_exists(net["veth"]) and _link_exists(net["bridge"]):
            return
        owner = str(self.containers / id)
        with self._locked():
            try:
                self._bridge(net["bridge"], config["namespace"], net["subnet"])
                ipam.keep(self.dir / net["bridge"], net["ip"], _lease(id, config["name"], config["labels"]))
                present = netns.mounted(net["netns"])
                if not (present and _link_exists(net["veth"])):
                    self._connect(net, create=not present)
                if net["ports"]:
                    self._drop_stale_claims()
                    ports.check(net["ports"], owner)
                    firewall.remove_ports(id, net["ip"], net["ports"])
                    self._publish(id, net, owner)
            except OSError as e:
                raise _failure(config["name"], e) from None

    def detach(self, config: dict) -> None:
        """Removes the container's ports, namespace (its veth goes with it) and lease. The bridge stays after the
        namespace's last container, as docker0 does, so the next container of the namespace finds it."""
        net = config["net"]
        with self._queued(net["bridge"]) as last:
            try:
                self._remove(config["id"], net, str(self.containers / config["id"]))
            finally:
                if last():
                    self._settle(net["bridge"])

    @contextlib.contextmanager
    def _queued(self, bridge: str) -> Iterator[Callable[[], bool]]:
        """The lock, for a removal from bridge; yields a test of whether no other thread of this process waits to
        remove one meanwhile (a service's delete removes its replicas from several threads at once)."""
        with _detaching_lock:
            _detaching[bridge] += 1
        held = False
        try:
            with self._locked():
                with _detaching_lock:
                    _detaching[bridge] -= 1
                held = True
                yield lambda: not _detaching[bridge]
        finally:
            if not held:
                with _detaching_lock:
                    _detaching[bridge] -= 1

    def remove(self, namespace: str) -> bool:
        """Removes the namespace's bridge and its record, and orchestr's iptables chains with the host's last
        bridge; only once the namespace has no container on it. Whether it is gone (or was never there)."""
        bridge = self.bridge(namespace)
        with self._locked():
            self._sweep()
            if ipam.leases(self.dir / bridge):
                return False
            if (self.dir / bridge).exists() or _link_exists(bridge):
                self._drop(bridge)
        return True

    def publish_service(self, namespace: str, service: str, wanted: list[Port], endpoints: list[str]) -> None:
        """Balances the service's ports across endpoints, its ready replicas' addresses (services.py)."""
        with self._locked():
            self._services.publish(namespace, service, wanted, endpoints)

    def published_services(self, namespace: str) -> list[str]:
        return [r["service"] for r in self._services.published(namespace)]

    @property
    def _services(self) -> services.Services:
        return services.Services(self.root / "services", str(self.root))

    def sweep(self) -> None:
        """Removes what containers that no longer exist left behind (a crash half-way through a create)."""
        if not self.dir.exists():
            return
        with self._locked():
            self._sweep()
            if self._records():
                firewall.sync(_links().bridges(BRIDGE_PREFIX))  # puts back rules someone flushed

    # -- steps, all under the lock ------------------------------------------------------

    def _bridge(self, bridge: str, namespace: str, subnet: str | None = None) -> dict:
        here = self.dir / bridge
        record = records.read_json(str(here / ipam.RECORD))
        if record is not None and _link_exists(bridge):
            return record
        links = _links()
        routed, mtu = links.routes()
        if record is None:
            if subnet is None:
                recorded = [ipaddress.IPv4Network(r["subnet"]) for r in self._records().values()]
                try:
                    subnet = str(ipam.pick_subnet(routed + recorded))
                except RuntimeFailure:  # the pool is short: the bridges kept for empty namespaces give way
                    empty = [b for b in self._records() if b != bridge and not ipam.leases(self.dir / b)]
                    if not empty:
                        raise
                    for kept in empty:
                        self._drop(kept)
                    return self._bridge(bridge, namespace, subnet)
            record = {"namespace": namespace, "subnet": subnet, "mtu": mtu}
            private_dir(self.dir)  # tightens an older orchestr's 0755 one
            private_dir(here)
            records.write_json(str(here / ipam.RECORD), record)
        network = ipaddress.IPv4Network(record["subnet"])
        clash = next((r for r in routed if r.overlaps(network)), None)
        if clash is not None:
            raise RuntimeFailure(f"namespace {namespace}: its subnet {network} overlaps the host's route to {clash}; "
                                 "remove that route or the namespace's containers")
        os.makedirs(OWNERS, exist_ok=True)
        with open(os.path.join(OWNERS, bridge), "w") as f:  # so a bridge outliving its state dir is found
            f.write(str(self.root))
        try:
            links.create_bridge(bridge, ipam.gateway(network), record["mtu"])
            # containers still running from before the bridge went away get their veths back on it
            ids = (lease.get("id") for lease in ipam.leases(here).values())
            links.enslave(bridge, [_veth(id) for id in ids if id and _link_exists(_veth(id))])
            firewall.enable_forwarding(bridge)
            firewall.sync(links.bridges(BRIDGE_PREFIX))
        except BaseException:
            links.delete_link(bridge)
            raise
        return record

    def _connect(self, net: dict, create: bool) -> None:
        address = ipaddress.IPv4Interface(f"{net['ip']}/{ipaddress.IPv4Network(net['subnet']).prefixlen}")
        try:
            _links().connect(net["netns"], create, net["veth"], net["bridge"], net["mtu"], address,
                          ipaddress.IPv4Address(net["gateway"]))
        except BaseException:
            if create:
                netns.remove(net["netns"])
            raise

    def _publish(self, id: str, net: dict, owner: str) -> None:
        if not net["ports"]:
            return
        ports.claim(net["ports"], owner)
        try:
            firewall.add_ports(id, net["ip"], net["ports"])
        except RuntimeFailure:
            firewall.sync(_links().bridges(BRIDGE_PREFIX))  # the chains were flushed under us: put them back
            firewall.add_ports(id, net["ip"], net["ports"])

    def _remove(self, id: str, net: dict, owner: str) -> None:
        if net.get("ports") or owner in ports.holders():
            firewall.remove_ports(id, net.get("ip"), net.get("ports"))
            ports.release(owner)
        netns.remove(netns.path(id))
        if net.get("ip"):
            ipam.release(self.dir / net["bridge"], net["ip"])

    def _settle(self, bridge: str) -> None:
        """After leases went: tells the peers who is left."""
        self._rewrite_hosts(ipam.leases(self.dir / bridge))

    def _drop(self, bridge: str, here: Path | None = None) -> None:
        """Deletes bridge and its record (here: in this state dir), and the iptables rules of it."""
        _links().delete_link(bridge)
        shutil.rmtree(here or self.dir / bridge, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(OWNERS, bridge))
        firewall.sync(_links().bridges(BRIDGE_PREFIX))

    def _sweep(self) -> None:
        self._drop_stale_claims()
        self._drop_ownerless()
        for bridge in self._bridges():
            self._sweep_bridge(bridge)

    def _sweep_bridge(self, bridge: str) -> None:
        here = self.dir / bridge
        if not here.exists():
            return
        if not (here / ipam.RECORD).exists():  # a crash before the record: no container can be on it
            self._drop(bridge)
            return
        orphans = {ip: lease for ip, lease in ipam.leases(here).items() if not self._exists(lease.get("id"))}
        for ip, lease in orphans.items():
            id = lease.get("id")
            if id:
                self._remove(id, {"ip": ip, "bridge": bridge}, str(self.containers / id))
            else:  # a lease a crash left unwritten: nothing was set up for it yet
                ipam.release(here, ip)
        if orphans:
            self._settle(bridge)

    def _drop_ownerless(self) -> None:
        """Bridges kept for a state dir that has since been removed (every state dir's, as the iptables chains
        are shared): nothing else would ever delete them."""
        try:
            entries = list(os.scandir(OWNERS))
        except FileNotFoundError:
            return
        for entry in entries:
            try:
                fd = os.open(entry.path, os.O_RDONLY | os.O_CLOEXEC)  # bare calls: every bridged create does this
            except FileNotFoundError:
                continue
            try:
                owner = os.read(fd, 4096).decode()
            finally:
                os.close(fd)
            if not os.path.exists(os.path.join(owner, "network", entry.name, ipam.RECORD)):
                self._drop(entry.name, Path(owner) / "network" / entry.name)

    def _drop_stale_claims(self) -> None:
        """Claims of containers whose directory is gone (a state dir removed with containers in it), and their
        DNAT rules, which would shadow the next container to publish the port; the same of service ports."""
        services.drop_stale()
        for holder in ports.stale():
            firewall.remove_ports(os.path.basename(holder))
            ports.release(holder)

    def _exists(self, id: str | None) -> bool:
        return bool(id) and (self.containers / id / records.CONFIG).exists()

    def _bridges(self) -> list[str]:
        try:
            return [e.name for e in os.scandir(self.dir) if e.name.startswith(BRIDGE_PREFIX)]
        except FileNotFoundError:
            return []

    def _records(self) -> dict[str, dict]:
        found = {b: records.read_json(str(self.dir / b / ipam.RECORD)) for b in self._bridges()}
        return {b: r for b, r in found.items() if r}

    def _rewrite_hosts(self, leases: dict[str, dict], skip: str | None = None) -> None:
        files = names.Hosts(leases)
        for ip, lease in leases.items():
            if ip != skip and lease.get("id"):
                names.write_in_place(str(self.containers / lease["id"] / "hosts"), files.of(ip))


def _failure(name: str, e: OSError) -> RuntimeFailure:
    return RuntimeFailure(f"container {name}: cannot set up its network: {e.strerror or e}")


def _links():
    """links.py on first use: only bridged containers need it."""
    from . import links

    return links


def _lease(id: str, name: str, labels: dict[str, str]) -> dict:
    return {"id": id, "name": name, "service": labels.get(L_SERVICE, name), "replica": _int(labels.get(L_REPLICA))}


def _veth(id: str) -> str:
    return f"orc{id[:10]}"


def _link_exists(name: str) -> bool:
    return os.path.exists(f"/sys/class/net/{name}")


def _int(text: str | None) -> int:
    try:
        return int(text or 0)
    except ValueError:
        return 0
