"""The cri runtime's pure parts: CRI messages from specs and back, the CRI log format, events from looks at pods,
resolver and hosts files, endpoints and errors. No CRI runtime is needed."""

from __future__ import annotations

import os
import time
from pathlib import Path

import anyio
import grpc
import pytest

from orchestr.errors import Conflict, NotFound, RuntimeFailure, RuntimeUnavailable, TerminalFailure, Timeout
from orchestr.model import (
    L_NAMESPACE,
    L_SERVICE,
    ContainerSpec,
    EventAction,
    Port,
    Resources,
    State,
    Volume,
)
from orchestr_cri import client, events, logs, mapping, network
from orchestr_cri.proto import cri_pb2 as pb

NS = "shop"


def spec(**fields) -> ContainerSpec:
    labels = {L_NAMESPACE: NS, L_SERVICE: "web", **fields.pop("labels", {})}
    return ContainerSpec(name="web-0", namespace=NS, image="busybox:latest", labels=labels, **fields)


# -- specs as CRI configs ----------------------------------------------------------------------------------------

def test_a_spec_becomes_a_pod_and_a_container_as_the_kubelet_names_them():
    s = spec(ports=(Port(8080, 18080, "tcp", "127.0.0.1"), Port(53, 5353, "udp", "0.0.0.0")),
             resources=Resources(cpus=0.5, memory=64 << 20, pids=10), env={"A": "1"}, working_dir="/srv",
             user="1000:100", read_only=True)
    pod = mapping.pod_config(s, uid="u", log_dir="/logs", ports=s.ports, dns=pb.DNSConfig(servers=["10.0.0.2"]),
                             cgroup_parent="/orchestr-cri/pod-u")
    assert (pod.metadata.name, pod.metadata.namespace, pod.metadata.uid, pod.metadata.attempt) == ("web-0", NS, "u", 0)
    assert (pod.hostname, pod.log_directory, list(pod.dns_config.servers)) == ("web-0", "/logs", ["10.0.0.2"])
    assert [(m.protocol, m.container_port, m.host_port, m.host_ip) for m in pod.port_mappings] == [
        (pb.TCP, 8080, 18080, "127.0.0.1"), (pb.UDP, 53, 5353, "")]
    assert dict(pod.labels) == s.labels and pod.linux.cgroup_parent == "/orchestr-cri/pod-u"
    assert pod.linux.security_context.namespace_options.pid == pb.CONTAINER
    c = mapping.container_config(s, ["httpd", "-f"], [], unified_pids=False)
    assert (c.metadata.name, c.metadata.attempt, c.log_path) == ("web", 0, "web/0.log")
    assert (list(c.command), list(c.args), c.working_dir) == (["httpd", "-f"], [], "/srv")
    assert [(e.key, e.value) for e in c.envs] == [("A", b"1")]
    res = c.linux.resources
    assert (res.cpu_period, res.cpu_quota, res.memory_limit_in_bytes, res.memory_swap_limit_in_bytes) == (
        100_000, 50_000, 64 << 20, 64 << 20)
    assert dict(res.unified) == {}  # pids go to the pod's cgroup on v1
    assert dict(mapping.container_config(s, None, [], unified_pids=True).linux.resources.unified) == {"pids.max": "10"}
    sc = c.linux.security_context
    assert (sc.run_as_user.value, sc.run_as_group.value, sc.readonly_rootfs, sc.no_new_privs) == (1000, 100, True, True)
    assert sc.seccomp.profile_type == pb.SecurityProfile.RuntimeDefault


def test_host_network_init_and_unconfined():
    s = spec(network="host", init=True, seccomp="unconfined", command=("true",), args=("x",))
    pod = mapping.pod_config(s, uid="u", log_dir="/l", ports=(), dns=pb.DNSConfig(servers=["1.1.1.1"]),
                             cgroup_parent="")
    ns = pod.linux.security_context.namespace_options
    assert (ns.network, ns.pid, pod.hostname, len(pod.dns_config.servers)) == (pb.NODE, pb.POD, "", 0)
    c = mapping.container_config(s, None, [], unified_pids=False)  # the runtime resolves command and args itself
    assert (list(c.command), list(c.args)) == (["true"], ["x"])
    assert c.linux.security_context.seccomp.profile_type == pb.SecurityProfile.Unconfined


@pytest.mark.parametrize(("user", "fields"), [
    ("app", {"run_as_username": "app"}), ("1000", {"run_as_user": 1000}), ("app:50", {"run_as_username": "app",
                                                                                    "run_as_group": 50})])
def test_users(user, fields):
    got = mapping.user(spec(user=user))
    assert {k: getattr(v, "value", v) for k, v in got.items()} == fields


def test_a_group_by_name_is_refused():
    with pytest.raises(TerminalFailure, match="CRI takes a group by its id only"):
        mapping.user(spec(user="app:staff"))


def test_what_a_pod_was_made_from_rides_in_its_annotation():
    s = spec(ports=(Port(80, 8080),))
    pod = mapping.pod_config(s, uid="u", log_dir="/l", ports=s.ports, dns=None, cgroup_parent="")
    made = mapping.Made(pod, mapping.container_config(s, ["sh"], [], unified_pids=False), "busybox:latest", 7)
    sandbox = made.sandbox_config(2)
    again = mapping.Made.of(sandbox.annotations)
    assert again is not None and (again.image, again.pids, again.pod.metadata.name) == ("busybox:latest", 7, "web-0")
    assert sandbox.metadata.attempt == 2 and mapping.A_CONFIG not in again.pod.annotations
    third = again.container_config(3)
    assert (third.metadata.attempt, third.log_path, list(third.command)) == (3, "web/3.log", ["sh"])
    assert mapping.ports_of(again.pod) == (Port(80, 8080, "tcp", "0.0.0.0"),)
    assert mapping.Made.of({}) is None and mapping.Made.of({mapping.A_CONFIG: "{"}) is None


def test_a_pod_as_orchestr_sees_it():
    sandbox = pb.PodSandboxStatus(id="p", metadata=pb.PodSandboxMetadata(name="web-0", namespace=NS),
                                  state=pb.SANDBOX_READY, created_at=1_700_000_000_000_000_000,
                                  labels={L_NAMESPACE: NS})
    exited = pb.ContainerStatus(id="c", state=pb.CONTAINER_EXITED, exit_code=137, reason="OOMKilled",
                                started_at=1_700_000_001_000_000_000, finished_at=1_700_000_002_000_000_000)
    c = mapping.container(sandbox, None, exited, ip="10.0.0.5")
    assert (c.id, c.name, c.state, c.exit_code, c.oom_killed, c.ip, c.restarts) == (
        "p", "web-0", State.EXITED, 137, True, "10.0.0.5", 0)
    assert (c.created_at, c.finished_at) == ("2023-11-14T22:13:20Z", "2023-11-14T22:13:22Z")
    running = mapping.container(sandbox, None, pb.ContainerStatus(state=pb.CONTAINER_RUNNING), pid=42)
    assert (running.state, running.pid) == (State.RUNNING, 42)
    sandbox.state = pb.SANDBOX_NOTREADY  # the runtime lost the sandbox: its container is gone with it
    lost = mapping.container(sandbox, None, pb.ContainerStatus(state=pb.CONTAINER_RUNNING), pid=42)
    assert (lost.state, lost.pid) == (State.EXITED, None)
    assert mapping.container(sandbox, None, None).exit_code == 255


def test_images_from_cri():
    item = pb.Image(id="sha256:aa", repo_tags=["docker.io/library/busybox:latest", "127.0.0.1:5000/x:1"],
                    repo_digests=["docker.io/library/busybox@sha256:bb"], size=10)
    image = mapping.image(item)
    assert image.references == ("busybox:latest", "127.0.0.1:5000/x:1", "busybox@sha256:bb")
    assert image.digest == "sha256:bb"
    info = {"info": '{"imageSpec": {"created": "2023-11-14T22:13:20Z", "config": {"Cmd": ["sh"]}, '
                    '"rootfs": {"diff_ids": ["sha256:l0", "sha256:l1"]}, "history": ['
                    '{"created_by": "layer 0"}, {"created_by": "env", "empty_layer": true}, {"created_by": "layer 1"}]}}'}
    details = mapping.inspect(item, info)
    assert details["RepoTags"] == ["busybox:latest", "127.0.0.1:5000/x:1"] and details["Config"]["Cmd"] == ["sh"]
    assert [(h.created_by, h.id, h.empty_layer) for h in mapping.history(info)] == [
        ("layer 1", "sha256:l1", False), ("env", None, True), ("layer 0", "sha256:l0", False)]
    assert mapping.history({}) == [] and mapping.inspect(item, {"info": "not json"})["Config"]["Cmd"] is None


# -- the CRI log format ------------------------------------------------------------------------------------------

def test_records_join_into_lines_per_stream():
    lines = logs.Lines()
    got = [lines.add(r) for r in [
        b"2024-01-01T00:00:00.1Z stdout P hel",
        b"2024-01-01T00:00:00.2Z stderr F oops",
        b"2024-01-01T00:00:00.3Z stdout F lo world",
        b"not a record",
        b"2024-01-01T00:00:00.4Z stdout F ",
        b"2024-01-01T00:00:00.5Z stdout P no newline at the end",
    ]]
    assert [(x.stream, x.data, x.time) for x in got if x] == [
        ("stderr", b"oops\n", "2024-01-01T00:00:00.2Z"), ("stdout", b"hello world\n", "2024-01-01T00:00:00.1Z"),
        ("stdout", b"\n", "2024-01-01T00:00:00.4Z")]
    assert [(x.stream, x.data) for x in lines.rest()] == [("stdout", b"no newline at the end")]


def test_a_line_that_never_ends_is_handed_on_in_pieces():
    lines = logs.Lines()
    part = b"x" * (logs.MAX_LINE // 2)
    got = [lines.add(b"2024-01-01T00:00:00Z stdout P " + part) for _ in range(5)]
    assert [len(x.data) for x in got if x] == [logs.MAX_LINE, logs.MAX_LINE]  # never more kept than that
    assert [len(x.data) for x in lines.rest()] == [len(part)]


def test_pod_directories_are_only_where_orchestr_names_them(tmp_path):
    from orchestr_cri import pods

    pod = pods.pod_dir(tmp_path, NS, "web-0", "u")
    assert pods.owned(pod)
    assert not pods.owned(Path("/etc")) and not pods.owned(tmp_path / "cri" / "pods" / "..")
    with pytest.raises(RuntimeFailure, match="is not in its pod's directory"):
        pods.mount_tmpfs(pod, (("/etc", 1 << 20),))
    assert not (Path("/etc") / "tmpfs").exists()


def _write(path: Path, *records: str) -> Path:
    path.write_text("".join(f"2024-01-01T00:00:00Z stdout F {r}\n" for r in records))
    return path


def test_files_are_read_oldest_first_across_attempts_and_rotations(tmp_path):
    d = tmp_path / "web"
    d.mkdir()
    _write(d / "0.log", "a2")
    _write(d / "0.log.20240101-000000.000001", "a0")
    _write(d / "0.log.20240101-000001.000000", "a1")
    current = _write(d / "1.log", "b1")
    _write(d / "1.log.20240102-000000.000000", "b0")
    (d / "notes.txt").write_text("x")
    assert [p.name for p in logs.files(current)] == [
        "0.log.20240101-000000.000001", "0.log.20240101-000001.000000", "0.log", "1.log.20240102-000000.000000",
        "1.log"]

    async def drain(**kw):
        async def ended() -> bool:
            return False
        return [x.data async for x in logs.read(current, alive=ended, **kw)]

    assert anyio.run(lambda: drain(tail=None, follow=False)) == [b"a0\n", b"a1\n", b"a2\n", b"b0\n", b"b1\n"]
    assert anyio.run(lambda: drain(tail=2, follow=False)) == [b"b0\n", b"b1\n"]
    assert anyio.run(lambda: drain(tail=0, follow=True)) == []
    logs.prune(current, 3)
    assert [p.name for p in logs.files(current)] == ["0.log", "1.log.20240102-000000.000000", "1.log"]


def test_rotation_renames_past_the_size_and_keeps_the_newest(tmp_path):
    current = _write(tmp_path / "0.log", "x" * 100)
    assert not logs.rotate(current, max_size=1000, max_files=2)
    assert logs.rotate(current, max_size=10, max_files=2)
    assert not current.exists() and len(logs.files(current)) == 1
    for n in range(3):
        _write(current, str(n))
        time.sleep(0.001)
        logs.rotate(current, max_size=1, max_files=2)
    assert len(list(tmp_path.iterdir())) == 1  # the current one is gone (renamed), one rotated file is kept


def test_follow_moves_to_the_file_that_replaces_a_rotated_one(tmp_path):
    current = _write(tmp_path / "0.log", "one")
    state = {"alive": True}

    async def alive() -> bool:
        return state["alive"]

    async def scenario() -> list[bytes]:
        seen = []
        async for line in logs.read(current, tail=None, follow=True, alive=alive):
            seen.append(line.data)
            if line.data == b"one\n":
                with current.open("a") as f:
                    f.write("2024-01-01T00:00:00Z stdout F two\n")
                os.rename(current, tmp_path / "0.log.20240101-000000.000000")  # rotated, as orchestr does
                _write(current, "three")  # and the runtime reopened it
            if line.data == b"three\n":
                with current.open("a") as f:
                    f.write("2024-01-01T00:00:00Z stdout P last\n")  # a record always ends in a newline
                state["alive"] = False
        return seen

    assert anyio.run(scenario) == [b"one\n", b"two\n", b"three\n", b"last"]


def test_log_limits_come_from_the_environment(monkeypatch):
    assert logs.limits() == (logs.MAX_SIZE, logs.MAX_FILES)
    monkeypatch.setenv(logs.SIZE_ENV, "1Mi")
    monkeypatch.setenv(logs.FILES_ENV, "2")
    assert logs.limits() == (1 << 20, 2)
    monkeypatch.setenv(logs.FILES_ENV, "1")
    with pytest.raises(TerminalFailure, match="ORCHESTR_CRI_LOG_MAX_FILES: expected a number of files, at least 2"):
        logs.limits()
    monkeypatch.setenv(logs.SIZE_ENV, "lots")
    with pytest.raises(TerminalFailure, match="ORCHESTR_CRI_LOG_MAX_SIZE: expected a quantity like 10Mi"):
        logs.limits()


# -- events ------------------------------------------------------------------------------------------------------

def view(state: State, container: str = "c0", exit_code: int | None = None) -> events.View:
    return events.View("p", "web-0", NS, state, container, exit_code)


@pytest.mark.parametrize(("before", "now", "actions"), [
    (None, view(State.CREATED, ""), ["create"]),
    (None, view(State.RUNNING), ["create", "start"]),
    (view(State.CREATED, ""), view(State.CREATED), []),
    (view(State.CREATED), view(State.EXITED, exit_code=3), ["start", "die"]),
    (view(State.RUNNING), view(State.EXITED, exit_code=3), ["die"]),
    (view(State.EXITED), view(State.RUNNING, "c1"), ["start"]),  # restarted: a new container in the pod
    (view(State.RUNNING), view(State.RUNNING, "c1"), ["die", "start"]),  # it ended and was restarted unseen
    (view(State.RUNNING), view(State.RUNNING), []),
])
def test_events_from_two_looks(before, now, actions):
    found = events.diff({"p": before} if before else {}, {"p": now})
    assert [e.action for e in found] == [EventAction(a) for a in actions]
    for e in found:
        assert (e.runtime, e.id, e.name, e.namespace) == ("cri", "p", "web-0", NS)
        assert e.exit_code == (now.exit_code if e.action is EventAction.DIE and now.state is State.EXITED else None)


def test_a_pod_gone_is_destroyed_and_only_orchestrs_pods_are_seen():
    assert [e.action for e in events.diff({"p": view(State.EXITED)}, {})] == [EventAction.DESTROY]
    pods = [pb.PodSandbox(id="p", metadata=pb.PodSandboxMetadata(name="web-0"), labels={L_NAMESPACE: NS}),
            pb.PodSandbox(id="k8s", labels={"io.kubernetes.pod.name": "x"})]
    containers = [pb.Container(id="c0", pod_sandbox_id="p", metadata=pb.ContainerMetadata(attempt=0),
                               state=pb.CONTAINER_EXITED),
                  pb.Container(id="c1", pod_sandbox_id="p", metadata=pb.ContainerMetadata(attempt=1),
                               state=pb.CONTAINER_RUNNING)]
    assert events.views(pods, containers) == {"p": events.View("p", "web-0", NS, State.RUNNING, "c1")}
    assert events.needs_exit_code(view(State.RUNNING), view(State.EXITED))
    assert not events.needs_exit_code(view(State.EXITED), view(State.EXITED))


# -- host-side bits ------------------------------------------------------------------------------------------------

def test_the_pods_resolver_is_the_hosts_without_loopback(tmp_path):
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("# comment\nnameserver 127.0.0.53\nnameserver 10.1.1.1\nnameserver ::1\n"
                      "search example.org corp\noptions ndots:2 edns0\n")
    dns = network.dns_config(resolv)
    assert (list(dns.servers), list(dns.searches), list(dns.options)) == (
        ["10.1.1.1"], ["example.org", "corp"], ["ndots:2", "edns0"])
    assert list(network.dns_config(tmp_path / "missing").servers) == []


def test_hosts_name_each_replica_and_its_service(tmp_path):
    text = network.hosts([("10.0.0.3", "web-1", "web"), ("10.0.0.2", "web-0", "web"), ("10.0.0.4", "one", "")])
    assert text.endswith("10.0.0.2\tweb-0 web\n10.0.0.3\tweb-1 web\n10.0.0.4\tone\n")
    path = tmp_path / "hosts"
    network.write_hosts(path, "long\n" * 10)
    inode = path.stat().st_ino
    network.write_hosts(path, text)  # in place: a bind mount of it sees the new text
    assert path.read_text() == text and path.stat().st_ino == inode


def test_the_pods_network_namespace_from_its_verbose_status():
    spec_ = '{"pid": 7, "runtimeSpec": {"linux": {"namespaces": [{"type": "pid"}, {"type": "network", "path": "/run/n"}]}}}'
    assert network.netns({"info": spec_}) == "/run/n"
    assert network.netns({"info": '{"pid": 7, "runtimeSpec": {"linux": {"namespaces": [{"type": "network"}]}}}'}) == \
        "/proc/7/ns/net"
    assert network.netns({"info": '{"runtimeSpec": {}}'}) is None and network.netns({}) is None


def test_ports_are_picked_and_clashes_refused():
    picked = network.pick_ports("web-0", [Port(80, None, "tcp", "127.0.0.1"), Port(53, None, "udp", "127.0.0.1")], [])
    assert all(p.host_port for p in picked)
    with pytest.raises(Conflict, match="host port 127.0.0.1:8080/tcp is already in use"):
        network.pick_ports("web-1", [Port(80, 8080, "tcp", "127.0.0.1")], [Port(80, 8080, "tcp", "0.0.0.0")])


# -- endpoints and errors ------------------------------------------------------------------------------------------

def test_endpoints(monkeypatch, tmp_path):
    monkeypatch.delenv("ORCHESTR_CRI_ENDPOINT", raising=False)
    monkeypatch.setattr(client, "CRICTL_CONFIG", tmp_path / "crictl.yaml")
    assert client.endpoint() == client.CONTAINERD
    (tmp_path / "crictl.yaml").write_text("runtime-endpoint: unix:///var/run/crio/crio.sock\n")
    assert client.endpoint() == client.CRIO
    monkeypatch.setenv("ORCHESTR_CRI_ENDPOINT", "/run/x.sock")
    assert client.target(client.endpoint()) == "unix:///run/x.sock"
    assert client.target("tcp://127.0.0.1:5000") == "127.0.0.1:5000"
    with pytest.raises(TerminalFailure, match="expected unix:///path/to/socket"):
        client.target("npipe:////./pipe/x")


class _Error(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str):
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


@pytest.mark.parametrize(("status", "details", "kind"), [
    (grpc.StatusCode.UNAVAILABLE, "connection refused", RuntimeUnavailable),
    (grpc.StatusCode.NOT_FOUND, "no such pod", NotFound),
    (grpc.StatusCode.DEADLINE_EXCEEDED, "slow", Timeout),
    (grpc.StatusCode.UNIMPLEMENTED, "no", TerminalFailure),
    (grpc.StatusCode.UNKNOWN, 'failed to reserve sandbox name "x": name "x" is reserved for "y"', Conflict),
    (grpc.StatusCode.INVALID_ARGUMENT, "bad", TerminalFailure),
    (grpc.StatusCode.UNKNOWN, "something\nelse", RuntimeFailure),
])
def test_grpc_errors_become_orchestrs(status, details, kind):
    error = client.Connection("unix:///x.sock").translate(_Error(status, details), "container web-0", "p1")
    assert type(error) is kind and (error.runtime, error.container) == ("cri", "p1")
    assert "\n" not in str(error)


# -- events a runtime streams ------------------------------------------------------------------------------------
# containerd 1.6 has no GetContainerEvents (1.7 and CRI-O 1.26 on have), so a runtime that streams is played by a
# fake here: it holds pods and containers, and each change it makes is announced on the stream.

class _Call:
    def __init__(self) -> None:
        self.send, self.receive = anyio.create_memory_object_stream[pb.ContainerEventResponse](10)

    async def read(self) -> pb.ContainerEventResponse:
        return await self.receive.receive()

    def cancel(self) -> None:
        self.receive.close()


class _StreamingRuntime:
    def __init__(self) -> None:
        self.pods: list[pb.PodSandbox] = []
        self.containers: list[pb.Container] = []
        self.exit_codes: dict[str, int] = {}
        self.call = _Call()

    def GetContainerEvents(self, request):  # noqa: N802 - the CRI method's name
        return self.call

    async def ListPodSandbox(self, request, timeout=None):  # noqa: N802
        return pb.ListPodSandboxResponse(items=self.pods)

    async def ListContainers(self, request, timeout=None):  # noqa: N802
        return pb.ListContainersResponse(containers=self.containers)

    async def ContainerStatus(self, request, timeout=None):  # noqa: N802
        return pb.ContainerStatusResponse(status=pb.ContainerStatus(
            id=request.container_id, state=pb.CONTAINER_EXITED, exit_code=self.exit_codes[request.container_id]))

    def sync(self):
        class Sync:
            def ListPodSandbox(self, request, timeout=None):  # noqa: N802
                return pb.ListPodSandboxResponse()

            def ListContainers(self, request, timeout=None):  # noqa: N802
                return pb.ListContainersResponse()

        class Channel:
            def close(self) -> None:
                pass

        return Channel(), Sync()

    async def change(self, kind: int, pod: str) -> None:
        await self.call.send.send(pb.ContainerEventResponse(container_id="c0", container_event_type=kind,
                                                            pod_sandbox_status=pb.PodSandboxStatus(id=pod)))


def test_a_streamed_event_makes_the_runtime_look_again(tmp_path):
    from orchestr.config import Config
    from orchestr_cri.runtime import CriRuntime

    fake = _StreamingRuntime()
    rt = CriRuntime(Config(state_dir=tmp_path), "unix:///fake.sock")
    rt.conn._runtime = fake
    rt.conn.sync_runtime = fake.sync

    async def scenario() -> list[tuple[EventAction, int | None]]:
        seen = []
        stream = rt.events()
        fake.pods.append(pb.PodSandbox(id="p", metadata=pb.PodSandboxMetadata(name="web-0"), labels={L_NAMESPACE: NS}))
        fake.containers.append(pb.Container(id="c0", pod_sandbox_id="p", state=pb.CONTAINER_RUNNING))
        await fake.change(pb.CONTAINER_STARTED_EVENT, "p")
        with anyio.fail_after(10):
            async for event in stream:
                seen.append((event.action, event.exit_code))
                if event.action is EventAction.START:
                    fake.containers[0].state = pb.CONTAINER_EXITED
                    fake.exit_codes["c0"] = 2
                    await fake.change(pb.CONTAINER_STOPPED_EVENT, "p")
                elif event.action is EventAction.DIE:
                    fake.pods.clear()
                    fake.containers.clear()
                    await fake.change(pb.CONTAINER_DELETED_EVENT, "p")
                elif event.action is EventAction.DESTROY:
                    break
        return seen

    assert anyio.run(scenario) == [(EventAction.CREATE, None), (EventAction.START, None), (EventAction.DIE, 2),
                                   (EventAction.DESTROY, None)]


class _EndedCall:
    """CRI-O without enable_pod_events: the stream ends at once, with no error."""

    async def read(self):
        return grpc.aio.EOF

    def cancel(self) -> None:
        pass


def test_a_stream_that_ends_at_once_leaves_polling(tmp_path):
    from orchestr.config import Config
    from orchestr_cri.runtime import CriRuntime

    fake = _StreamingRuntime()
    fake.call = _EndedCall()
    rt = CriRuntime(Config(state_dir=tmp_path), "unix:///fake.sock")
    rt.conn._runtime = fake
    rt.conn.sync_runtime = fake.sync

    async def scenario() -> list[EventAction]:
        stream = rt.events()
        fake.pods.append(pb.PodSandbox(id="p", metadata=pb.PodSandboxMetadata(name="web-0"), labels={L_NAMESPACE: NS}))
        with anyio.fail_after(10):
            async for event in stream:  # nobody announces the pod: a poll finds it
                return [event.action]
        return []

    assert anyio.run(scenario) == [EventAction.CREATE]


class _ExecRuntime:
    """A pod with a running container whose ExecSync answers as CRI-O does for a command killed at its deadline."""

    async def PodSandboxStatus(self, request, timeout=None):  # noqa: N802 - the CRI method's name
        return pb.PodSandboxStatusResponse(status=pb.PodSandboxStatus(
            id="p", state=pb.SANDBOX_READY, metadata=pb.PodSandboxMetadata(name="web-0"), labels={L_NAMESPACE: NS},
            annotations=mapping.Made(pb.PodSandboxConfig(), pb.ContainerConfig(), "busybox").sandbox_config().annotations))

    async def ListContainers(self, request, timeout=None):  # noqa: N802
        return pb.ListContainersResponse(containers=[pb.Container(id="c", pod_sandbox_id="p",
                                                                  state=pb.CONTAINER_RUNNING)])

    async def ContainerStatus(self, request, timeout=None):  # noqa: N802
        return pb.ContainerStatusResponse(status=pb.ContainerStatus(id="c", state=pb.CONTAINER_RUNNING))

    async def ExecSync(self, request, timeout=None):  # noqa: N802
        return pb.ExecSyncResponse(exit_code=-1, stderr=b"command timed out")


def test_an_exec_crio_killed_at_its_deadline_is_a_timeout(tmp_path):
    from orchestr.config import Config
    from orchestr_cri.runtime import CriRuntime

    rt = CriRuntime(Config(state_dir=tmp_path), "unix:///fake.sock")
    rt.conn._runtime = _ExecRuntime()
    with pytest.raises(Timeout, match="sleep ran past its 1s deadline"):
        anyio.run(lambda: rt.exec("p", ["sleep", "9"], timeout=1))
