"""Bridge networking through the CNI plugins Debian installs with containerd (/usr/lib/cni), as nerdctl does.

Each orchestr namespace is one CNI network: a bridge `ocd<hash>` with a /24 of 10.210.0.0/16 that nothing on the
host routes yet (the native runtime takes 10.88.0.0/16 onwards, the tests' CRI runtime 10.200.0.0/13), addresses
from host-local (its leases under /run/orchestr-containerd/<containerd namespace>/), outbound NAT and forwarding
rules of the bridge's own (firewall.py), published ports through portmap (TCP and UDP, 127.0.0.1 included). A
container gets a network namespace of its own at create (/run/netns/ocd-<hash>), so restarts keep its address;
/etc/hosts lists every container of the namespace by container and service name and is rewritten in place as they
come and go. Delete undoes it (see _delete), and removes the bridge with the last container. The chains portmap shares between every CNI user (CNI-HOSTPORT-*) are CNI's, and stay, as with nerdctl
and the CRI plugin.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import ipaddress
import json
import os
import shutil
import socket
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from orchestr.errors import Conflict, RuntimeFailure
from orchestr.model import L_SERVICE, ContainerSpec

from . import firewall
from .client import RUNTIME

if TYPE_CHECKING:
    from .network import Attached
    from .runtime import ContainerdRuntime

CNI_PATH = os.environ.get("ORCHESTR_CNI_PATH") or "/usr/lib/cni"
POOL = ipaddress.ip_network("10.210.0.0/16")
VERSION = "1.0.0"
RESULT = "cni-result.json"
NETNS_DIR = "/run/netns"
IP, PORTS = "io.orchestr.containerd/ip", "io.orchestr.containerd/ports"  # the container's labels (runtime.py)
NAME, LOG = "io.orchestr.containerd/name", "io.orchestr.containerd/log"


def bridge_name(cd_namespace: str, namespace: str) -> str:
    return "ocd" + hashlib.sha256(f"{cd_namespace}/{namespace}".encode()).hexdigest()[:8]


def _routes() -> list[tuple[ipaddress.IPv4Network, str]]:
    out = subprocess.run(["ip", "-4", "route", "show"], capture_output=True, text=True).stdout
    routes = []
    for line in out.splitlines():
        fields = line.split()
        if not fields or fields[0] == "default":
            continue
        with contextlib.suppress(ValueError):
            dev = fields[fields.index("dev") + 1] if "dev" in fields else ""
            routes.append((ipaddress.ip_network(fields[0], strict=False), dev))
    return routes


def subnet_for(bridge: str) -> ipaddress.IPv4Network:
    """The bridge's /24: the one it already routes, else the first of the pool (from its hash on) nothing routes."""
    routes = _routes()
    for net, dev in routes:
        if dev == bridge and net.subnet_of(POOL):
            return net
    subnets = list(POOL.subnets(new_prefix=24))
    start = int(bridge[3:], 16) % len(subnets)
    for i in range(len(subnets)):
        candidate = subnets[(start + i) % len(subnets)]
        if not any(candidate.overlaps(net) for net, _ in routes):
            return candidate
    raise RuntimeFailure(f"no /24 of {POOL} is free on this host for a bridge network", runtime=RUNTIME)


def conflist(runtime: ContainerdRuntime, namespace: str, ports: bool) -> dict:
    """The network of namespace: the bridge plugin with host-local addresses, and portmap when ports are published.
    NAT and forwarding are the bridge's own rules (firewall.py), not CNI's per-container ones."""
    bridge = bridge_name(runtime.conn.namespace, namespace)
    subnet = subnet_for(bridge)
    data_dir = f"/run/orchestr-containerd/{runtime.conn.namespace}/cni"
    plugins: list[dict] = [
        {"type": "bridge", "bridge": bridge, "isGateway": True, "ipMasq": False, "hairpinMode": True,
         "ipam": {"type": "host-local", "ranges": [[{"subnet": str(subnet)}]], "routes": [{"dst": "0.0.0.0/0"}],
                  "dataDir": data_dir}},
    ]
    if ports:
        plugins.append({"type": "portmap", "capabilities": {"portMappings": True}})
    return {"cniVersion": VERSION, "name": f"orchestr-{bridge}", "plugins": plugins}


def _invoke(plugin: dict, network: dict, command: str, id: str, netns: str, ifname: str,
            prev: dict | None = None, runtime_config: dict | None = None) -> dict:
    config = {"cniVersion": network["cniVersion"], "name": network["name"], **plugin}
    if prev is not None:
        config["prevResult"] = prev
    if runtime_config:
        config["runtimeConfig"] = runtime_config
    env = {"CNI_COMMAND": command, "CNI_CONTAINERID": id, "CNI_NETNS": netns, "CNI_IFNAME": ifname,
           "CNI_PATH": CNI_PATH, "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")}
    proc = subprocess.run([os.path.join(CNI_PATH, plugin["type"])], input=json.dumps(config).encode(), env=env,
                          capture_output=True, timeout=60)
    if proc.returncode != 0:
        try:
            message = json.loads(proc.stdout).get("msg") or proc.stdout.decode()
        except ValueError:
            message = (proc.stdout or proc.stderr).decode(errors="replace")
        raise RuntimeFailure(f"CNI {plugin['type']} {command}: {' '.join(message.split())}", runtime=RUNTIME)
    return json.loads(proc.stdout) if proc.stdout.strip() else (prev or {})


def _free_port(protocol: str, host_ip: str) -> int:
    kind = socket.SOCK_STREAM if protocol == "tcp" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((host_ip if host_ip != "0.0.0.0" else "", 0))
        return s.getsockname()[1]


def _check_port(protocol: str, host_ip: str, port: int, name: str) -> None:
    kind = socket.SOCK_STREAM if protocol == "tcp" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, kind) as s:
        try:
            s.bind((host_ip if host_ip != "0.0.0.0" else "", port))
        except OSError:
            raise Conflict(f"container {name}: host port {host_ip}:{port}/{protocol} is already in use",
                           runtime=RUNTIME, container=name) from None


def netns_path(cd_namespace: str, id: str) -> str:
    """The network namespace of container id of containerd namespace cd_namespace."""
    return os.path.join(NETNS_DIR, "ocd-" + hashlib.sha256(f"{cd_namespace}/{id}".encode()).hexdigest()[:16])


async def attach(runtime: ContainerdRuntime, spec: ContainerSpec, id: str, directory: Path,
                 files: dict[str, str]) -> Attached:
    from .network import Attached, resolv_conf

    ports = []
    for p in spec.ports:
        host_port = p.host_port or _free_port(p.protocol, p.host_ip)
        if p.host_port:
            _check_port(p.protocol, p.host_ip, p.host_port, spec.name)
        ports.append([p.container_port, host_port, p.protocol, p.host_ip])
    path = netns_path(runtime.conn.namespace, id)
    network = await anyio.to_thread.run_sync(conflist, runtime, spec.namespace, bool(ports))  # runs `ip route`
    bridge = network["plugins"][0]["bridge"]
    (directory / "hostname").write_text(spec.name + "\n")
    (directory / "resolv.conf").write_text(resolv_conf())
    (directory / "hosts").write_text("127.0.0.1\tlocalhost\n")
    files = {**files, "/etc/resolv.conf": str(directory / "resolv.conf")}

    def add() -> dict:
        if not os.path.exists(path):
            _ip("netns", "add", os.path.basename(path))
        _invoke({"type": "loopback"}, {"cniVersion": VERSION, "name": "lo"}, "ADD", id, path, "lo")
        result: dict | None = None
        mappings = {"portMappings": [{"hostPort": h, "containerPort": c, "protocol": proto, "hostIP": ip}
                                     for c, h, proto, ip in ports]}
        try:
            for plugin in network["plugins"]:
                result = _invoke(plugin, network, "ADD", id, path, "eth0", result,
                                 mappings if plugin["type"] == "portmap" else None)
        except BaseException:
            _delete(network, id, path, result, ports)
            raise
        assert result is not None
        (directory / RESULT).write_text(json.dumps({"network": network, "result": result, "ports": ports}))
        return result

    async with runtime.bridges_lock:
        # each look at the rules is ten iptables calls under the host's xtables lock, on which a fleet's creates
        # would queue: looked at once while this runtime knows them there (the link gone says another process
        # closed the bridge since), or one of its creates is making the link
        if runtime.bridges_open.get(bridge) is None or not (
                runtime.bridges_open[bridge] or os.path.exists(f"/sys/class/net/{bridge}")):
            await anyio.to_thread.run_sync(firewall.open_bridge, bridge,
                                           network["plugins"][0]["ipam"]["ranges"][0][0]["subnet"])
            runtime.bridges_open[bridge] = 0
        runtime.bridges_open[bridge] += 1
    try:
        result = await anyio.to_thread.run_sync(add)
    finally:
        runtime.bridges_open[bridge] -= 1
    ip = result["ips"][0]["address"].split("/")[0]
    labels = {IP: ip, PORTS: json.dumps(ports)}
    return Attached(path, files, labels)


def _delete(network: dict, id: str, path: str, result: dict | None, ports: list) -> None:
    """Undoes attach. portmap's DEL runs as CNI has it; the bridge plugin's (the veth, the address) is done here:
    removing the network namespace removes the veth pair, and host-local's lease is its file named by the address
    and holding the container's id, removed under host-local's own lock: one plugin process less per delete,
    under the host's xtables lock and on a busy host the dearest part. A lease not found so falls back to the
    bridge plugin's DEL."""
    mappings = {"portMappings": [{"hostPort": h, "containerPort": c, "protocol": proto, "hostIP": ip}
                                 for c, h, proto, ip in ports]}
    errors = []
    for plugin in reversed(network["plugins"]):
        if plugin["type"] == "bridge" and _release(plugin, network["name"], id, "eth0"):
            continue
        try:
            _invoke(plugin, network, "DEL", id, path, "eth0", result,
                    mappings if plugin["type"] == "portmap" else None)
        except RuntimeFailure as e:
            errors.append(str(e))
    if os.path.exists(path):
        _ip("netns", "delete", os.path.basename(path), check=False)
    if errors:
        raise RuntimeFailure("; ".join(errors), runtime=RUNTIME)


def _leased(directory: Path) -> bool:
    """Whether host-local has an address of the network whose leases are in directory given out."""
    with contextlib.suppress(FileNotFoundError):
        return any(entry.name != "lock" and not entry.name.startswith("last_reserved_ip")
                   for entry in os.scandir(directory))
    return False


def _release(bridge: dict, network: str, id: str, ifname: str) -> bool:
    """Removes host-local's lease of container id's interface; whether there was one."""
    directory = Path(bridge["ipam"]["dataDir"]) / network
    try:
        fd = os.open(directory / "lock", os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    released = False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        for lease in directory.iterdir():
            if lease.name == "lock" or lease.name.startswith("last_reserved_ip"):
                continue
            with contextlib.suppress(OSError):
                if lease.read_bytes().decode(errors="replace").split("\r\n")[:2] == [id, ifname]:
                    lease.unlink()
                    released = True
    finally:
        os.close(fd)
    return released


async def detach(runtime: ContainerdRuntime, id: str, directory: Path, namespace: str,
                 gone: Callable[[], Awaitable[object]] | None = None) -> None:
    try:
        saved = json.loads((directory / RESULT).read_text())
    except (OSError, ValueError):
        saved = None
    path = netns_path(runtime.conn.namespace, id)
    if saved is not None:
        await anyio.to_thread.run_sync(_delete, saved["network"], id, path, saved["result"], saved["ports"])
        bridge = saved["network"]["plugins"][0]["bridge"]
        # the bridge is the namespace's: host-local's leases say whether another container still uses it
        plugin, name = saved["network"]["plugins"][0], saved["network"]["name"]
        remaining = _leased(Path(plugin["ipam"]["dataDir"]) / name)
        if not remaining and bridge not in runtime.bridges_closing:  # the last ones deleted at once: one closes it
            runtime.bridges_closing.add(bridge)
            runtime.bridges_open.pop(bridge, None)
            try:
                await anyio.to_thread.run_sync(_close, bridge, Path(plugin["ipam"]["dataDir"]), name)
            finally:
                runtime.bridges_closing.discard(bridge)
        elif remaining:
            if gone is not None:
                await gone()
            await refresh_hosts(runtime, namespace)
    elif os.path.exists(path):
        _ip("netns", "delete", os.path.basename(path), check=False)


def _close(bridge: str, data_dir: Path, network: str) -> None:
    """Removes the bridge, its rules, and host-local's lock and last address (no lease is left), then its dirs."""
    subprocess.run(["ip", "link", "delete", bridge], capture_output=True)
    firewall.close_bridge(bridge)
    shutil.rmtree(data_dir / network, ignore_errors=True)
    for empty in (data_dir, data_dir.parent):
        with contextlib.suppress(OSError):
            empty.rmdir()


def _ip(*args: str, check: bool = True) -> None:
    """`ip`, whose netns add makes the bind-mounted namespace (no fork of this process, which runs gRPC threads)."""
    proc = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise RuntimeFailure(f"ip {' '.join(args)}: {proc.stderr.strip()}", runtime=RUNTIME)


def _write_hosts(path: Path, entries: list[tuple[str, str, str]]) -> None:
    """Rewrites a container's /etc/hosts in place: it is bind-mounted, so a new file would not be seen."""
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    lines += [f"{ip}\t{name}" + (f" {service}" if service != name else "") for ip, name, service in sorted(entries)]
    with contextlib.suppress(OSError), open(path, "r+" if path.exists() else "w") as f:
        f.seek(0)
        f.write("\n".join(lines) + "\n")
        f.truncate()


async def refresh_hosts(runtime: ContainerdRuntime, namespace: str) -> None:
    """Every bridge container of namespace gets an /etc/hosts naming all of them (by container and service name).
    Asked for by every create and delete, so a fleet's make or removal would list and write every file once per
    container: a refresh that begins after another was asked for covers that one too, which then returns at once."""
    asked = runtime.hosts_asked.setdefault(namespace, [0, 0])
    asked[0] += 1
    mine = asked[0]
    async with runtime.hosts_lock:
        if asked[1] >= mine:
            return
        asked[1] = asked[0]
        records = await runtime.records(namespace)
        entries = [(c.labels[IP], c.labels.get(NAME, c.id), c.labels.get(L_SERVICE, c.labels.get(NAME, c.id)))
                   for c in records if c.labels.get(IP)]
        for c in records:
            if c.labels.get(IP) and c.labels.get(LOG):
                _write_hosts(Path(c.labels[LOG]).parent / "hosts", entries)
