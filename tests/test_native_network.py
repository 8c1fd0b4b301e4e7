"""The native runtime's bridge network on the real kernel: names, published ports, isolation, addresses, leaks.

Real containers of the real NativeRuntime (its image store, supervisor, namespaces), real bridges, veths,
network namespaces and iptables rules. Traffic stays on 127.0.0.1 or inside the network namespaces these
tests create.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import ipaddress
import json
import os
import secrets
import socket
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from conftest import TEST_IMAGE

from orchestr.config import Config
from orchestr.errors import Conflict, RuntimeFailure
from orchestr.model import L_NAMESPACE, L_REPLICA, L_SERVICE, ContainerSpec, Port, RestartPolicy, State
from orchestr.plugins import open_runtime
from orchestr_native import containers as containers_module
from orchestr_native.network import ipam, names, netns, ports
from orchestr_native.network.manager import Network

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the native runtime needs root")

NEVER = RestartPolicy.NEVER
# until the server answers, a bounded number of tries (this busybox wget crashes with -T)
WGET_RETRY = "i=0; until wget -qO- {url}; do i=$((i+1)); [ $i -lt 100 ] || exit 1; sleep 0.05; done"


@pytest.fixture(scope="module")
def state(tmp_path_factory, busybox_archive) -> Path:
    """A state dir with the busybox image imported, shared by this module's tests (each has its namespaces)."""
    path = tmp_path_factory.mktemp("network") / "state"
    runtime = open_runtime("native", Config(state_dir=path))
    anyio.run(runtime.import_image, busybox_archive)
    return path


def _ids(state: Path) -> set[str]:
    events = state / "native" / "events.jsonl"
    if not events.exists():
        return set()
    return {json.loads(line)["id"] for line in events.read_text().splitlines() if '"create"' in line}


def _leftovers(state: Path, namespaces: list[str], ids: set[str]) -> list[str]:
    """What the given containers and namespaces could leave on the host: links, netns files, rules, leases."""
    network = Network(state / "native")
    bridges = {network.bridge(ns) for ns in namespaces}
    veths = {f"orc{i[:10]}" for i in ids}
    links = sorted(set(os.listdir("/sys/class/net")) & (bridges | veths))
    files = sorted(set(os.listdir(netns.DIR)) & ids) if os.path.isdir(netns.DIR) else []
    rules = [line for line in subprocess.run(["iptables-save"], capture_output=True, text=True, check=True).stdout
             .splitlines() if any(b in line for b in bridges) or any(i in line for i in ids)]
    leases = sorted(str(p) for p in (state / "native" / "network").glob("*/*")
                    if p.name != ipam.RECORD or p.parent.name in bridges)  # a kept bridge's, when asked
    claims = sorted(h for h in ports.holders() if h.startswith(str(state)))
    return [*links, *files, *rules, *leases, *claims]


class Net:
    """The runtime and a few helpers for one test; everything it made is deleted and checked afterwards."""

    def __init__(self, state: Path):
        self.state = state
        self.rt = open_runtime("native", Config(state_dir=state))
        self.namespaces: list[str] = []

    def namespace(self) -> str:
        ns = f"n{uuid.uuid4().hex[:10]}"
        self.namespaces.append(ns)
        return ns

    def spec(self, ns: str, name: str, *command: str, **kw) -> ContainerSpec:
        service, _, replica = name.rpartition("-")
        labels = {L_NAMESPACE: ns, L_SERVICE: service or name, L_REPLICA: replica if service else "0"}
        kw.setdefault("restart_policy", NEVER)
        return ContainerSpec(name=name, namespace=ns, image=TEST_IMAGE, labels=labels,
                             command=command or ("sleep", "300"), **kw)

    async def up(self, ns: str, name: str, *command: str, **kw):
        c = await self.rt.create(self.spec(ns, name, *command, **kw))
        await self.rt.start(c.id)
        return await self.rt.inspect(c.id)

    async def run(self, ns: str, name: str, script: str) -> tuple[int, str]:
        """Runs script in a new container; its exit code and stdout."""
        c = await self.rt.create(self.spec(ns, name, "sh", "-c", script))
        await self.rt.start(c.id)
        code = await self.rt.wait(c.id)
        out = "".join([line.data.decode() async for line in self.rt.logs(c.id) if line.stream == "stdout"])
        return code, out


@pytest.fixture
async def net(anyio_backend, state):
    before = _ids(state)
    n = Net(state)
    yield n
    for c in await n.rt.list():
        await n.rt.delete(c.id, force=True)
    for ns in n.namespaces:  # their bridges outlive their containers until removed
        await n.rt.remove_network(ns)
    await n.rt.close()
    ids = _ids(state) - before
    with anyio.move_on_after(10):  # the kernel drops a veth with its namespace a moment after the unmount
        while _leftovers(state, n.namespaces, ids):
            await anyio.sleep(0.05)
    assert _leftovers(state, n.namespaces, ids) == []
    with Network(state / "native")._locked():  # other state dirs on the host may have bridges of their own
        if not any(link.startswith("orc-") for link in os.listdir("/sys/class/net")):
            rules = subprocess.run(["iptables-save"], capture_output=True, text=True, check=True).stdout
            assert "ORCHESTR" not in rules, "orchestr's chains outlived the host's last orchestr bridge"


def _host_mtu() -> int:
    """The MTU of the interface of the host's default route."""
    for line in Path("/proc/net/route").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == "00000000" and fields[7] == "00000000":
            return int(Path(f"/sys/class/net/{fields[0]}/mtu").read_text())
    return 1500


def _free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _socket_in(pid: int, kind: int) -> socket.socket:
    """A socket made in the network namespace of process pid (a socket stays in the namespace it was made in)."""
    return netns.inside(f"/proc/{pid}/ns/net", lambda: socket.socket(socket.AF_INET, kind), create=False)


async def _fetch(url: str) -> bytes:
    """The body at url, asked again while the server is still starting, for at most ten seconds."""
    with anyio.fail_after(10):
        while True:
            try:
                return await anyio.to_thread.run_sync(lambda: urllib.request.urlopen(url, timeout=2).read())
            except (ConnectionError, urllib.error.URLError):  # urlopen wraps a refused connection
                await anyio.sleep(0.05)


# -- names ----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_peers_reach_each_other_by_service_and_container_name(net):
    ns = net.namespace()
    web = await net.up(ns, "web-0", "sh", "-c", "echo hello from $HOSTNAME > /var/www/index.html; "
                       "exec httpd -f -p 8080 -h /var/www")
    assert web.ip and ipaddress.ip_address(web.ip).is_private
    code, out = await net.run(ns, "client-0", WGET_RETRY.format(url="http://web:8080/") + " && "
                              "wget -qO- http://web-0:8080/ && cat /etc/hosts /etc/resolv.conf && ip route && "
                              "echo mtu=$(cat /sys/class/net/eth0/mtu) lo=$(cat /sys/class/net/lo/flags)")
    assert code == 0, out
    assert f"mtu={_host_mtu()} lo=0x9\n" in out  # the default route's MTU; lo is up
    client = next(c for c in await net.rt.list(ns) if c.name == "client-0")
    assert out.count("hello from web-0\n") == 2
    assert f"{web.ip}\tweb-0 web\n" in out and f"{client.ip}\tclient-0 client\n" in out
    assert "nameserver 127." not in out
    assert f"default via {ipaddress.ip_network(web.ip + '/24', strict=False)[1]} dev eth0" in out
    assert {c.name: c.ip for c in await net.rt.list(ns)} == {"web-0": web.ip, "client-0": client.ip}
    assert client.ip != web.ip
    # the web container, created first, learnt of the client; and forgets it once the client is deleted
    hosts = (await net.rt.exec(web.id, ["cat", "/etc/hosts"])).stdout.decode()
    assert f"{client.ip}\tclient-0 client\n" in hosts and hosts.index("web-0") < hosts.index("client-0")
    await net.rt.delete(client.id)
    hosts = (await net.rt.exec(web.id, ["cat", "/etc/hosts"])).stdout.decode()
    assert "client" not in hosts and f"{web.ip}\tweb-0 web\n" in hosts


@pytest.mark.anyio
async def test_a_stopped_container_learns_at_its_start_who_came_and_went_meanwhile(net):
    ns = net.namespace()
    sleeper = ("sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait")
    web = await net.up(ns, "web-0", *sleeper)
    gone = await net.up(ns, "gone-0", *sleeper)
    await net.rt.stop(web.id)
    await net.rt.delete(gone.id, force=True)
    late = await net.up(ns, "late-0", *sleeper)
    await net.rt.start(web.id)
    hosts = (await net.rt.exec(web.id, ["cat", "/etc/hosts"])).stdout.decode()
    assert f"{late.ip}\tlate-0 late\n" in hosts and "gone" not in hosts and f"{web.ip}\tweb-0 web\n" in hosts


@pytest.mark.anyio
async def test_peers_deleted_at_once_all_leave_the_hosts_file_of_those_left(net):
    ns = net.namespace()
    sleeper = ("sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait")
    kept = await net.up(ns, "kept-0", *sleeper)
    going = [await net.up(ns, f"going-{i}", *sleeper) for i in range(6)]
    async with anyio.create_task_group() as tg:  # each in a worker thread: they queue for the network's lock
        for c in going:
            tg.start_soon(functools.partial(net.rt.delete, c.id, force=True))
    hosts = (await net.rt.exec(kept.id, ["cat", "/etc/hosts"])).stdout.decode()
    assert "going" not in hosts and f"{kept.ip}\tkept-0 kept\n" in hosts


@pytest.mark.anyio
async def test_network_none_and_host_have_no_address(net):
    ns = net.namespace()
    for network in ("none", "host"):
        c = await net.rt.create(net.spec(ns, f"{network}-0", "true", network=network))
        assert c.ip is None and (await net.rt.inspect(c.id)).ip is None
    assert not (net.state / "native" / "network" / Network(net.state / "native").bridge(ns)).exists()


@contextlib.contextmanager
def _next_door(where: str, host_ip: str, peer_ip: str) -> Iterator[None]:
    """A network namespace at where, joined to the host by a veth pair: host_ip/30 on the host's end, peer_ip/30
    on its eth0. Removed afterwards, veth and all."""
    host_side = f"otst{uuid.uuid4().hex[:8]}"
    netns.inside(where, lambda: None, create=True)
    try:
        for argv in (["ip", "link", "add", host_side, "type", "veth", "peer", "name", "eth0", "netns", where],
                     ["ip", "addr", "add", f"{host_ip}/30", "dev", host_side], ["ip", "link", "set", host_side, "up"],
                     [*_in(where), "ip", "addr", "add", f"{peer_ip}/30", "dev", "eth0"],
                     [*_in(where), "ip", "link", "set", "eth0", "up"]):
            subprocess.run(argv, check=True, capture_output=True)
        yield
    finally:
        subprocess.run(["ip", "link", "del", host_side], capture_output=True)
        netns.remove(where)


def _in(where: str) -> list[str]:
    """The prefix that runs a command in the network namespace at where."""
    return ["nsenter", f"--net={where}"]


@pytest.fixture
def outside(tmp_path):
    """A network namespace standing for the world beyond the host: 198.51.100.2/30 behind a veth pair, with no
    route back to any container subnet, so only masqueraded traffic can be answered."""
    with _next_door(str(tmp_path / "outside"), "198.51.100.1", "198.51.100.2"):
        yield "198.51.100.2"


@pytest.mark.anyio
async def test_outbound_traffic_leaves_through_the_hosts_address(net, outside):
    code, out = await net.run(net.namespace(), "client-0", f"ping -c1 -W2 {outside} >/dev/null && echo answered")
    assert (code, out) == (0, "answered\n")


@pytest.fixture
def forward_accepting():
    """The host's FORWARD policy set to ACCEPT, as on a host without dockerd (which sets DROP), and put back
    afterwards whatever happens; concurrent test runs on the host take turns."""
    with open("/tmp/orchestr-test-forward-policy.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        policy = _policy()
        subprocess.run(["iptables", "-w", "-P", "FORWARD", "ACCEPT"], check=True)
        try:
            yield
        finally:
            subprocess.run(["iptables", "-w", "-P", "FORWARD", policy], check=True)


@pytest.fixture
def neighbour(tmp_path):
    """A network namespace standing for a machine next to the host, on a /30 of its own, on which add_route(subnet)
    routes a subnet via the host. Yields (namespace path, host's address, add_route)."""
    where = str(tmp_path / "neighbour")
    base = ipaddress.ip_address("203.0.113.0") + 4 * secrets.randbelow(64)  # a /30 of TEST-NET-3
    host_ip = str(base + 1)

    def add_route(subnet: str) -> None:
        subprocess.run([*_in(where), "ip", "route", "add", subnet, "via", host_ip], check=True, capture_output=True)

    with _next_door(where, host_ip, str(base + 2)):
        yield where, host_ip, add_route


def _get_from(where: str, address: str, port: int, timeout: float) -> bytes:
    """An HTTP GET of / at address:port made from the network namespace at where; the whole answer."""
    s = netns.inside(where, lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM), create=False)
    with s:
        s.settimeout(timeout)
        s.connect((address, port))
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        answer = b""
        while chunk := s.recv(4096):
            answer += chunk
        return answer


@pytest.mark.anyio
async def test_a_neighbour_routing_to_containers_reaches_published_ports_only(net, neighbour, forward_accepting):
    where, host_ip, add_route = neighbour
    ns = net.namespace()
    port = _free_port()
    web = await net.up(ns, "web-0", "sh", "-c", "echo served > /var/www/index.html; httpd -p 8080 -h /var/www; "
                       "exec httpd -f -p 80 -h /var/www", ports=(Port(80, port, "tcp"),))
    assert await _fetch(f"http://{web.ip}:8080/") == b"served\n"  # the unpublished port is open, to the host
    assert await _fetch(f"http://127.0.0.1:{port}/") == b"served\n"
    subnet = str(ipaddress.ip_network(f"{web.ip}/24", strict=False))
    await anyio.to_thread.run_sync(add_route, subnet)
    # the published port, through the host's address on the neighbour's link
    answer = await anyio.to_thread.run_sync(_get_from, where, host_ip, port, 10)
    assert answer.endswith(b"\r\n\r\nserved\n"), answer
    # the unpublished one, routed straight to the container: dropped, though FORWARD's policy accepts
    with pytest.raises(TimeoutError):
        await anyio.to_thread.run_sync(_get_from, where, web.ip, 8080, 3)


def test_turning_forwarding_on_sets_the_forward_policy_to_drop(tmp_path):
    """In network namespaces of the test's own (forwarding, sysctls and iptables are per namespace), each a
    host with forwarding off and FORWARD accepting everything, or one that forwards already."""
    from orchestr_native.network import firewall

    def host(forwarding: str) -> tuple[str, str]:
        subprocess.run(["ip", "link", "add", "orc-test", "type", "bridge"], check=True)
        Path("/proc/sys/net/ipv4/ip_forward").write_text(forwarding)
        assert _policy() == "ACCEPT"
        firewall.enable_forwarding("orc-test")
        return Path("/proc/sys/net/ipv4/ip_forward").read_text().strip(), _policy()

    for forwarding, policy in (("0", "DROP"), ("1", "ACCEPT")):
        where = str(tmp_path / f"host-{forwarding}")
        try:
            assert netns.inside(where, lambda: host(forwarding), create=True) == ("1", policy)
        finally:
            netns.remove(where)


def _policy() -> str:
    rules = subprocess.run(["iptables", "-w", "-S", "FORWARD"], capture_output=True, text=True, check=True)
    return rules.stdout.split()[2]  # "-P FORWARD DROP"


# -- published ports -----------------------------------------------------------------------


@pytest.mark.anyio
async def test_published_tcp_and_udp_ports_reach_the_container(net):
    ns = net.namespace()
    local, anywhere, udp = _free_port(), _free_port(), _free_port(socket.SOCK_DGRAM)
    web = await net.up(ns, "web-0", "sh", "-c", "echo published > /var/www/index.html; exec httpd -f -p 80 -h /var/www",
                       ports=(Port(80, local, "tcp", "127.0.0.1"), Port(80, anywhere, "tcp"),
                              Port(9000, udp, "udp")))
    assert await _fetch(f"http://127.0.0.1:{local}/") == b"published\n"
    assert await _fetch(f"http://127.0.0.1:{anywhere}/") == b"published\n"
    # from another container of the namespace, through the bridge's address on the host (0.0.0.0 ports only)
    code, out = await net.run(ns, "client-0", "gw=$(ip route | awk '/default/ {print $3}'); " +
                              WGET_RETRY.format(url=f"http://$gw:{anywhere}/"))
    assert (code, out) == (0, "published\n")
    # UDP: a socket in the container's network namespace answers what the host sends to 127.0.0.1
    server = _socket_in(web.pid, socket.SOCK_DGRAM)
    with server, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        server.bind(("0.0.0.0", 9000))
        server.settimeout(10)
        client.settimeout(10)
        client.sendto(b"ping", ("127.0.0.1", udp))
        data, peer = server.recvfrom(100)
        server.sendto(b"pong:" + data, peer)
        assert client.recvfrom(100) == (b"pong:ping", ("127.0.0.1", udp))


@pytest.mark.anyio
async def test_a_port_without_host_port_is_published_on_a_free_one_that_inspect_shows(net):
    ns = net.namespace()
    serve = "echo $HOSTNAME > /var/www/index.html; exec httpd -f -p 80 -h /var/www"
    replicas = [await net.up(ns, f"web-{i}", "sh", "-c", serve, ports=(Port(80, None, "tcp", "127.0.0.1"),))
                for i in range(2)]
    seen = []
    for c in replicas:
        [port] = c.ports
        assert (port.container_port, port.protocol, port.host_ip) == (80, "tcp", "127.0.0.1")
        assert await _fetch(f"http://127.0.0.1:{port.host_port}/") == f"{c.name}\n".encode()
        seen.append(port.host_port)
    assert len(set(seen)) == 2
    # picked once, kept: a restart publishes the same port
    await net.rt.stop(replicas[0].id, signal="SIGKILL")
    await net.rt.start(replicas[0].id)
    assert (await net.rt.inspect(replicas[0].id)).ports == replicas[0].ports
    assert await _fetch(f"http://127.0.0.1:{seen[0]}/") == b"web-0\n"


@pytest.mark.anyio
async def test_a_taken_host_port_is_refused_and_nothing_changes(net):
    ns = net.namespace()
    held = _free_port()
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", held))
        listener.listen()
        before = _leftovers(net.state, [ns], _ids(net.state))
        with pytest.raises(Conflict) as info:
            await net.rt.create(net.spec(ns, "web-0", ports=(Port(80, held, "tcp", "127.0.0.1"),)))
        assert str(info.value) == f"port 127.0.0.1:{held}/tcp is already in use"
        assert await net.rt.list(ns) == []
        assert _leftovers(net.state, [ns], _ids(net.state)) == before == []
    # a port another container publishes is taken too, although no socket holds it
    first = await net.rt.create(net.spec(ns, "web-0", ports=(Port(80, held, "udp"),)))
    with pytest.raises(Conflict, match=f"port 0.0.0.0:{held}/udp is already in use"):
        await net.rt.create(net.spec(net.namespace(), "web-0", ports=(Port(81, held, "udp"),)))
    assert [c.id for c in await net.rt.list()] == [first.id]


# -- isolation, addresses, restarts ---------------------------------------------------------


@pytest.mark.anyio
async def test_namespaces_are_isolated_from_each_other(net):
    a, b = net.namespace(), net.namespace()
    web = await net.up(a, "web-0", "httpd", "-f", "-p", "8080", "-h", "/var/www")
    code, out = await net.run(a, "near-0", f"ping -c1 -W2 {web.ip} >/dev/null && echo reached")
    assert (code, out) == (0, "reached\n")
    code, out = await net.run(b, "far-0", f"ping -c1 -W1 {web.ip} >/dev/null && echo reached; "
                              "ping -c1 -W1 web >/dev/null 2>&1 && echo resolved; ip -4 -o addr show eth0")
    assert "reached" not in out and "resolved" not in out
    far = ipaddress.ip_interface(out.split()[3])
    assert ipaddress.ip_address(web.ip) not in far.network


@pytest.mark.anyio
async def test_concurrent_creates_from_two_processes_get_distinct_addresses(net):
    ns = net.namespace()
    script = (
        "import anyio, sys; from pathlib import Path; from orchestr.config import Config; "
        "from orchestr.model import ContainerSpec, RestartPolicy; from orchestr.plugins import open_runtime\n"
        "async def main():\n"
        f"    rt = open_runtime('native', Config(state_dir=Path({str(net.state)!r})))\n"
        "    async def one(i):\n"
        f"        await rt.create(ContainerSpec(name=f'other-{{i}}', namespace={ns!r}, image={TEST_IMAGE!r}, "
        "command=('true',), restart_policy=RestartPolicy.NEVER))\n"
        "    async with anyio.create_task_group() as tg:\n"
        "        for i in range(25):\n"
        "            tg.start_soon(one, i)\n"
        "anyio.run(main)\n"
    )
    other = await anyio.open_process([sys.executable, "-c", script])
    async with anyio.create_task_group() as tg:
        for i in range(25):
            tg.start_soon(net.rt.create, net.spec(ns, f"mine-{i}", "true"))
    assert await other.wait() == 0
    addresses = [c.ip for c in await net.rt.list(ns)]
    assert len(addresses) == 50 and len(set(addresses)) == 50
    assert len({ipaddress.ip_network(f"{ip}/24", strict=False) for ip in addresses}) == 1


@pytest.mark.anyio
async def test_restarts_keep_the_address_and_the_network_namespace(net):
    ns = net.namespace()
    c = await net.up(ns, "flaky-0", "sh", "-c", "echo $(ip -4 -o addr show eth0 | awk '{print $4}') "
                     "$(readlink /proc/self/ns/net); sleep 0.2; exit 3", restart_policy=RestartPolicy.ALWAYS)

    async def lines() -> list[str]:
        return [line.data.decode() async for line in net.rt.logs(c.id)]

    with anyio.fail_after(20):
        while len(await lines()) < 3:
            await anyio.sleep(0.1)
    await net.rt.stop(c.id)
    await net.rt.start(c.id)
    with anyio.fail_after(20):
        while len(await lines()) < 4:
            await anyio.sleep(0.1)
    # every run, the supervisor's restarts and the explicit start alike, saw one address and one namespace
    runs = await lines()
    assert len(set(runs)) == 1 and runs[0].split()[0] == f"{c.ip}/24", runs
    inode = os.stat(netns.path(c.id)).st_ino
    assert runs[0].split()[1] == f"net:[{inode}]"
    assert (await net.rt.inspect(c.id)).ip == c.ip


@pytest.mark.anyio
async def test_start_rebuilds_what_a_reboot_takes_away(net):
    from orchestr_native.network import firewall, links

    ns = net.namespace()
    port = _free_port()
    client = await net.up(ns, "client-0")
    api = await net.up(ns, "api-0", "sh", "-c", "echo again > /var/www/index.html; exec httpd -f -p 80 -h /var/www",
                       ports=(Port(80, port, "tcp", "127.0.0.1"),))
    await net.rt.stop(api.id, signal="SIGKILL")  # httpd as pid 1 has no handler for SIGTERM
    # what a reboot takes: the bridge, the stopped container's namespace and veth, its DNAT rules
    bridge = Network(net.state / "native").bridge(ns)
    links.delete_link(bridge)
    netns.remove(netns.path(api.id))
    firewall.remove_ports(api.id)
    await net.rt.start(api.id)
    assert (await net.rt.inspect(api.id)).ip == api.ip
    assert await _fetch(f"http://127.0.0.1:{port}/") == b"again\n"
    # the running client's veth is back on the new bridge
    done = await net.rt.exec(client.id, ["sh", "-c", WGET_RETRY.format(url="http://api/")])
    assert (done.exit_code, done.stdout) == (0, b"again\n")


# -- crashes --------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_create_that_dies_half_way_is_swept_by_the_next_create_and_by_reattach(net, monkeypatch):
    ns = net.namespace()
    real = containers_module.records.write_json
    bridge = net.state / "native" / "network" / Network(net.state / "native").bridge(ns)

    def dying(path: str, data: dict) -> None:
        if path.endswith("config.json"):
            raise KeyboardInterrupt  # stands for a kill between the network set-up and the config
        real(path, data)

    for sweeper in ("create", "reattach"):
        before = set(os.listdir(netns.DIR))
        published = _free_port()
        monkeypatch.setattr(containers_module.records, "write_json", dying)
        with pytest.raises(KeyboardInterrupt):
            await net.rt.create(net.spec(ns, "web-0", ports=(Port(80, published, "tcp", "127.0.0.1"),)))
        monkeypatch.setattr(containers_module.records, "write_json", real)
        dead = set(os.listdir(netns.DIR)) - before
        assert len(dead) == 1 and len(list(bridge.glob("10.*"))) == 1
        left = _leftovers(net.state, [ns], dead)
        assert any(f"--dport {published}" in line for line in left) and f"orc{next(iter(dead))[:10]}" in left
        if sweeper == "create":
            survivor = await net.rt.create(net.spec(ns, "api-0"))
            assert [p.name for p in bridge.glob("10.*")] == [survivor.ip]
            await net.rt.delete(survivor.id)
        else:
            assert await net.rt.reattach() == []
        assert not list(bridge.glob("10.*"))  # no lease left; the bridge stays for the namespace's next container
        with anyio.move_on_after(10):
            while _leftovers(net.state, [], dead):
                await anyio.sleep(0.05)
        assert _leftovers(net.state, [], dead) == []


@pytest.mark.anyio
async def test_a_network_the_kernel_refuses_after_the_create_fails_the_start_and_the_next_start_makes_it(
        net, monkeypatch):
    # The namespace and veth are made while the create ends and the start begins; the init waits for them.
    ns = net.namespace()
    from orchestr_native.network import links
    made = links.connect

    def refused(*args, **kwargs):
        raise OSError(errno.EEXIST, "File exists")  # stands for the kernel refusing the veth pair

    monkeypatch.setattr(links, "connect", refused)
    c = await net.rt.create(net.spec(ns, "web-0"))
    with pytest.raises(RuntimeFailure, match="web-0: cannot set up its network: File exists"):
        await net.rt.start(c.id)
    assert (await net.rt.inspect(c.id)).state is State.EXITED  # the start failed: nothing runs
    assert _leftovers(net.state, [], {c.id}) == []  # undone: no namespace, veth, lease or rule of it
    monkeypatch.setattr(links, "connect", made)
    await net.rt.start(c.id)
    done = await net.rt.exec(c.id, ["ip", "-o", "-4", "addr", "show", "eth0"])
    assert f" inet {c.ip}/" in done.stdout.decode()


@pytest.mark.anyio
async def test_a_container_deleted_before_its_first_start_leaves_no_network(net):
    ns = net.namespace()
    for name in ("web-0", "web-1"):
        c = await net.rt.create(net.spec(ns, name))  # its namespace and veth may still be in the making
        await net.rt.delete(c.id)
        with anyio.move_on_after(10):
            while _leftovers(net.state, [], {c.id}):
                await anyio.sleep(0.05)
        assert _leftovers(net.state, [], {c.id}) == []


# -- pure parts -----------------------------------------------------------------------------


# -- the bridge's lifetime -------------------------------------------------------------------


def _rules_of(bridge: str) -> list[str]:
    out = subprocess.run(["iptables-save"], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if bridge in line]


@pytest.mark.anyio
async def test_a_namespaces_bridge_outlives_its_last_container_until_its_network_is_removed(net):
    ns = net.namespace()
    network = Network(net.state / "native")
    bridge = network.bridge(ns)
    first = await net.up(ns, "web-0")
    await net.rt.delete(first.id, force=True)
    # kept, as docker0 is: address, record and rules stay for the namespace's next container
    assert os.path.exists(f"/sys/class/net/{bridge}") and _rules_of(bridge)
    assert not list((network.dir / bridge).glob("10.*"))
    again = await net.up(ns, "web-0")
    assert ipaddress.ip_address(again.ip) in ipaddress.ip_network(f"{first.ip}/24", strict=False)
    await net.rt.remove_network(ns)  # a namespace with a container keeps its network
    assert os.path.exists(f"/sys/class/net/{bridge}")
    done = await net.rt.exec(again.id, ["ip", "-o", "-4", "addr", "show", "eth0"])
    assert f" inet {again.ip}/" in done.stdout.decode()
    await net.rt.delete(again.id, force=True)
    await net.rt.remove_network(ns)
    assert not os.path.exists(f"/sys/class/net/{bridge}") and not (network.dir / bridge).exists()
    assert _rules_of(bridge) == []
    await net.rt.remove_network(ns)  # nothing left to remove: no error


@pytest.mark.anyio
async def test_a_bridge_whose_state_dir_was_removed_goes_with_the_next_create_of_any_state_dir(net, tmp_path,
                                                                                                  busybox_archive):
    gone = tmp_path / "gone"
    other = open_runtime("native", Config(state_dir=gone))
    await other.import_image(busybox_archive)
    ns = net.namespace()
    c = await other.create(net.spec(ns, "web-0"))
    await other.delete(c.id)
    await other.close()
    bridge = Network(gone / "native").bridge(ns)
    assert os.path.exists(f"/sys/class/net/{bridge}")
    subprocess.run(["rm", "-rf", str(gone)], check=True)
    mine = await net.rt.create(net.spec(net.namespace(), "web-0"))  # any state dir's create sweeps it
    assert not os.path.exists(f"/sys/class/net/{bridge}") and _rules_of(bridge) == []
    await net.rt.delete(mine.id)


@pytest.mark.anyio
async def test_bridges_kept_for_empty_namespaces_give_way_when_the_pool_is_short(net, monkeypatch):
    pool = f"10.{200 + secrets.randbelow(50)}.{secrets.randbelow(256)}.0/24"  # one subnet in all
    monkeypatch.setenv(ipam.POOL_ENV, pool)
    network = Network(net.state / "native")
    first, second = net.namespace(), net.namespace()
    c = await net.up(first, "web-0")
    assert ipaddress.ip_address(c.ip) in ipaddress.ip_network(pool)
    with pytest.raises(Exception, match="no free /24 subnet left"):  # the first namespace still uses it
        await net.rt.create(net.spec(second, "web-0"))
    await net.rt.delete(c.id, force=True)
    assert os.path.exists(f"/sys/class/net/{network.bridge(first)}")  # kept while the pool has room
    c = await net.up(second, "web-0")
    assert ipaddress.ip_address(c.ip) in ipaddress.ip_network(pool)
    assert not os.path.exists(f"/sys/class/net/{network.bridge(first)}")


def test_subnets_avoid_host_routes_and_follow_the_environment(monkeypatch):
    monkeypatch.delenv(ipam.POOL_ENV, raising=False)
    assert str(ipam.pick_subnet([])) == "10.88.0.0/24"
    taken = [ipaddress.ip_network("10.88.0.0/23"), ipaddress.ip_network("172.17.0.0/16")]
    assert str(ipam.pick_subnet(taken)) == "10.88.2.0/24"
    assert str(ipam.pick_subnet([ipaddress.ip_network("10.88.0.0/16")])) == "10.89.0.0/24"
    monkeypatch.setenv(ipam.POOL_ENV, "192.168.77.0/25")
    assert str(ipam.pick_subnet([])) == "192.168.77.0/25"
    with pytest.raises(Exception, match="no free /24 subnet left in 192.168.77.0/25"):
        ipam.pick_subnet([ipaddress.ip_network("192.168.77.0/24")])


def test_hosts_and_resolv_conf(tmp_path):
    leases = {"10.88.0.3": {"name": "web-1", "service": "web", "replica": 1},
              "10.88.0.2": {"name": "web-0", "service": "web", "replica": 0},
              "10.88.0.4": {"name": "db-0", "service": "db", "replica": 0}}
    assert names.hosts("10.88.0.3", leases).splitlines()[2:] == [
        "10.88.0.3\tweb-1 web", "10.88.0.4\tdb-0 db", "10.88.0.2\tweb-0 web"]
    conf = tmp_path / "resolv.conf"
    conf.write_text("# generated\nnameserver 127.0.0.53\nnameserver 10.1.2.3\nnameserver ::1\nsearch corp\n")
    assert names.resolv_conf(str(conf)) == "nameserver 10.1.2.3\nsearch corp\n"
    target = tmp_path / "hosts"
    target.write_text("a much longer old content\n")
    inode = target.stat().st_ino
    names.write_in_place(str(target), "new\n")
    assert target.read_text() == "new\n" and target.stat().st_ino == inode
