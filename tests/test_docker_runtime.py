"""The Docker runtime against the real Docker Engine: every verb, limits, volumes, ports, images, errors."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import anyio
import pytest

from conftest import ROOT, docker_containers
from orchestr.config import Config
from orchestr.errors import Conflict, NotFound, RuntimeFailure, RuntimeUnavailable, TerminalFailure, Timeout
from orchestr.model import (
    EXEC_OUTPUT_LIMIT,
    L_NAMESPACE,
    L_REPLICA,
    L_SERVICE,
    L_SPEC_HASH,
    ContainerSpec,
    EventAction,
    ExecResult,
    Port,
    PullProgress,
    Resources,
    RestartPolicy,
    State,
    Volume,
)
from orchestr.testing import images as mkimage
from orchestr_docker.runtime import DockerRuntime

pytestmark = [pytest.mark.anyio, pytest.mark.docker]

MiB = 1 << 20
GUARD = 60  # seconds; only turns a hang into a failure


def engine(kind: str, ref: str) -> dict:
    """What the engine itself says about a container or volume (`docker inspect`)."""
    out = subprocess.run(
        ["docker", "inspect", "--type", kind, ref], check=True, capture_output=True, text=True
    ).stdout
    return json.loads(out)[0]


def engine_volumes(namespace: str) -> list[str]:
    return subprocess.run(
        ["docker", "volume", "ls", "-q", "--filter", f"label={L_NAMESPACE}={namespace}"],
        check=True, capture_output=True, text=True,
    ).stdout.split()


def spec(namespace: str, name: str, image: str, **fields) -> ContainerSpec:
    labels = {L_NAMESPACE: namespace, L_SERVICE: name.rsplit("-", 1)[0], L_REPLICA: "0", L_SPEC_HASH: "h1"}
    fields.setdefault("restart_policy", RestartPolicy.NEVER)
    return ContainerSpec(name=name, namespace=namespace, image=image, labels=labels, **fields)


def sh(script: str) -> dict:
    return {"command": ("sh", "-c", script)}


@pytest.fixture
async def rt(docker_namespace):
    runtime = DockerRuntime(Config())
    yield runtime
    await runtime.close()
    assert docker_containers(docker_namespace) == [], "the test left containers behind"
    assert engine_volumes(docker_namespace) == [], "the test left volumes behind"


@pytest.fixture
def ns(docker_namespace) -> str:
    return docker_namespace


async def run(rt: DockerRuntime, s: ContainerSpec) -> tuple[int, bytes, bytes]:
    """Create, start, wait for and delete a container; its exit code, stdout and stderr."""
    container = await rt.create(s)
    try:
        await rt.start(container.id)
        code = await rt.wait(container.id)
        out = {"stdout": b"", "stderr": b""}
        async for line in rt.logs(container.id):
            out[line.stream] += line.data
        return code, out["stdout"], out["stderr"]
    finally:
        await rt.delete(container.id, force=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- containers ---------------------------------------------------------------------------


async def test_lifecycle_create_start_pause_resume_stop_delete(rt, ns, docker_image):
    s = spec(
        ns, "web-0", docker_image, **sh('trap "" TERM; sleep 1000'), env={"A": "1"}, working_dir="/tmp",
        user="app", restart_policy=RestartPolicy.ALWAYS,
    )
    created = await rt.create(s)
    assert (created.name, created.namespace, created.runtime, created.image, created.state) == (
        "web-0", ns, "docker", docker_image, State.CREATED,
    )
    assert created.labels[L_SPEC_HASH] == "h1" and created.service == "web"
    assert created.started_at is None and created.exit_code is None

    seen = engine("container", created.id)
    assert seen["Name"] == f"/{ns}_web-0"
    assert seen["Config"]["Hostname"] == "web-0"
    assert seen["Config"]["Entrypoint"] == ["sh", "-c", 'trap "" TERM; sleep 1000']
    assert "A=1" in seen["Config"]["Env"]
    assert (seen["Config"]["WorkingDir"], seen["Config"]["User"]) == ("/tmp", "app")
    assert seen["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
    assert seen["Config"]["StopTimeout"] == 10  # the spec's grace period, for the engine's own stops

    assert [c.id for c in await rt.list(ns)] == [created.id]
    assert created.id in [c.id for c in await rt.list()]
    assert await rt.list(f"{ns}-other") == []

    await rt.start(created.id)
    running = await rt.inspect(created.id)
    assert running.state is State.RUNNING
    assert running.pid and running.ip and running.started_at
    (listed,) = await rt.list(ns)
    assert (listed.id, listed.name, listed.state, listed.image) == (created.id, "web-0", State.RUNNING, docker_image)

    await rt.pause(created.id)
    assert (await rt.inspect(created.id)).state is State.PAUSED
    assert (await rt.list(ns))[0].state is State.PAUSED
    await rt.resume(created.id)
    assert (await rt.inspect(created.id)).state is State.RUNNING

    # SIGTERM is ignored, so only the SIGKILL after the grace period ends it
    await rt.stop(created.id, timeout=1)
    stopped = await rt.inspect(created.id)
    assert (stopped.state, stopped.exit_code, stopped.pid) == (State.EXITED, 137, None)
    assert stopped.finished_at
    await rt.stop(created.id)  # already stopped: nothing to do

    await rt.delete(created.id)
    with pytest.raises(NotFound, match=f"container {created.id} not found"):
        await rt.inspect(created.id)
    assert await rt.list(ns) == []


async def test_stop_with_another_signal_waits_then_kills(rt, ns, docker_image):
    graceful = await rt.create(spec(ns, "graceful-0", docker_image, **sh('trap "exit 7" INT; while :; do sleep 0.1; done')))
    stubborn = await rt.create(spec(ns, "stubborn-0", docker_image, **sh('trap "" INT TERM; sleep 1000')))
    for c in (graceful, stubborn):
        await rt.start(c.id)
    await rt.pause(graceful.id)  # a paused container can be stopped too
    await rt.stop(graceful.id, signal="SIGINT", timeout=GUARD)
    await rt.stop(stubborn.id, signal="SIGINT", timeout=0.5)
    assert (await rt.inspect(graceful.id)).exit_code == 7
    assert (await rt.inspect(stubborn.id)).exit_code == 137
    await rt.stop(stubborn.id, signal="SIGINT")  # already stopped: nothing to do
    for c in (graceful, stubborn):
        await rt.delete(c.id)


async def test_delete_refuses_a_running_container_unless_forced(rt, ns, docker_image):
    c = await rt.create(spec(ns, "busy-0", docker_image, command=("sleep", "1000")))
    await rt.start(c.id)
    with pytest.raises(Conflict, match=c.id):
        await rt.delete(c.id)
    await rt.delete(c.id, force=True)
    assert docker_containers(ns) == []


async def test_exec_with_env_user_workdir_and_exit_code(rt, ns, docker_image):
    c = await rt.create(spec(ns, "shell-0", docker_image, command=("sleep", "1000"), env={"FROM_SPEC": "spec"}))
    await rt.start(c.id)
    result = await rt.exec(
        c.id, ["sh", "-c", 'echo "$FROM_SPEC $GREETING $(id -u) $(pwd)"; echo oops >&2; exit 5'],
        env={"GREETING": "hi"}, user="app", workdir="/home/app",
    )
    assert result == ExecResult(5, b"spec hi 1000 /home/app\n", b"oops\n")
    assert await rt.exec(c.id, ["id", "-un"]) == ExecResult(0, b"root\n", b"")
    await rt.stop(c.id, timeout=0)
    with pytest.raises(Conflict, match="not running"):
        await rt.exec(c.id, ["true"])
    await rt.delete(c.id)


async def test_exec_output_is_bounded_or_streamed(rt, ns, docker_image):
    c = await rt.create(spec(ns, "flood-0", docker_image, command=("sleep", "1000")))
    await rt.start(c.id)
    flood = f"head -c {EXEC_OUTPUT_LIMIT + 12345} /dev/zero; echo oops >&2"
    r = await rt.exec(c.id, ["sh", "-c", flood])
    assert (r.exit_code, len(r.stdout), r.stdout_dropped, r.stderr, r.stderr_dropped) == \
        (0, EXEC_OUTPUT_LIMIT, 12345, b"oops\n", 0)
    got = []
    r = await rt.exec(c.id, ["sh", "-c", "echo one; echo two >&2; exit 3"], output=got.append)
    assert r == ExecResult(3, b"", b"")
    assert sorted((x.stream, x.data) for x in got) == [("stderr", b"two\n"), ("stdout", b"one\n")]
    await rt.delete(c.id, force=True)


async def test_exec_past_its_timeout_is_killed_with_what_it_started(rt, ns, docker_image):
    c = await rt.create(spec(ns, "slow-0", docker_image, command=("sleep", "1000")))
    await rt.start(c.id)
    # a shell that waits on a child: killing the shell alone would leave the child running
    with pytest.raises(Timeout, match="deadline") as raised:
        await rt.exec(c.id, ["sh", "-c", "sleep 777; echo never"], timeout=0.5)
    assert (raised.value.runtime, raised.value.container) == ("docker", c.id)
    left = await rt.exec(c.id, ["ps", "-o", "args"])
    assert b"777" not in left.stdout, left.stdout
    assert await rt.exec(c.id, ["echo", "in time"], timeout=GUARD) == ExecResult(0, b"in time\n", b"")
    await rt.delete(c.id, force=True)


async def test_signal_reaches_the_container_which_keeps_running(rt, ns, docker_image):
    c = await rt.create(spec(ns, "hup-0", docker_image, **sh('trap "echo got HUP" HUP; while :; do sleep 0.1; done')))
    await rt.start(c.id)
    await rt.signal(c.id, "SIGHUP")
    with anyio.fail_after(GUARD):
        while b"got HUP\n" not in [line.data async for line in rt.logs(c.id)]:
            await anyio.sleep(0.05)
    assert (await rt.inspect(c.id)).state is State.RUNNING
    await rt.stop(c.id, timeout=0)
    with pytest.raises(Conflict, match="not running"):
        await rt.signal(c.id, "SIGHUP")
    await rt.delete(c.id)


async def test_stats_sample_cpu_memory_pids_network_and_io(rt, ns, docker_image):
    s = spec(ns, "busy-0", docker_image, **sh("x=$(head -c 4000000 /dev/zero | tr '\\0' a); sleep 1000 & wait"),
             resources=Resources(memory=64 * MiB, pids=50))
    c = await rt.create(s)
    with pytest.raises(Conflict, match="not running"):
        await rt.stats(c.id)
    await rt.start(c.id)
    sample = await rt.stats(c.id)
    assert sample.memory_limit == 64 * MiB
    assert sample.cpu_seconds is not None and sample.cpu_seconds >= 0
    assert 0 < sample.memory <= 64 * MiB
    assert sample.pids >= 2  # the shell and its sleep
    assert sample.net_rx is not None and sample.net_tx is not None  # the engine's bridge network
    assert sample.block_read is not None and sample.block_write is not None
    assert sample.time
    alone = await rt.create(spec(ns, "alone-0", docker_image, command=("sleep", "1000"), network="none"))
    await rt.start(alone.id)
    unlimited = await rt.stats(alone.id)
    assert unlimited.memory_limit is None and unlimited.net_rx is None
    for x in (c, alone):
        await rt.delete(x.id, force=True)


async def test_update_changes_limits_in_place(rt, ns, docker_image):
    c = await rt.create(spec(ns, "grow-0", docker_image, command=("sleep", "1000"),
                             resources=Resources(cpus=0.5, memory=32 * MiB, pids=20)))
    await rt.start(c.id)
    await rt.update(c.id, Resources(memory=64 * MiB, pids=40))
    host = engine("container", c.id)["HostConfig"]
    assert (host["NanoCpus"], host["Memory"], host["MemorySwap"], host["PidsLimit"]) == (
        500_000_000, 64 * MiB, 64 * MiB, 40)  # cpus was not given: it stays
    seen = await rt.exec(c.id, ["cat", "/sys/fs/cgroup/pids/pids.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"])
    assert seen.stdout.split() == [b"40", str(64 * MiB).encode()]
    await rt.delete(c.id, force=True)


async def test_logs_keep_stdout_and_stderr_apart(rt, ns, docker_image):
    c = await rt.create(spec(ns, "talk-0", docker_image, **sh("echo one; echo two >&2; echo three; printf partial")))
    await rt.start(c.id)
    assert await rt.wait(c.id) == 0
    lines = [line async for line in rt.logs(c.id)]
    assert [ln.data for ln in lines if ln.stream == "stdout"] == [b"one\n", b"three\n", b"partial"]
    assert [ln.data for ln in lines if ln.stream == "stderr"] == [b"two\n"]
    assert all(ln.time and ln.time.endswith("Z") for ln in lines)
    await rt.delete(c.id)


async def test_logs_of_a_tty_container_are_one_stream(rt, ns, docker_image):
    code, out, err = await run(rt, spec(ns, "tty-0", docker_image, **sh("echo a; echo b >&2"), tty=True))
    assert (code, out, err) == (0, b"a\r\nb\r\n", b"")


async def test_logs_tail_and_follow_until_exit(rt, ns, docker_image):
    # it writes 1, waits until told to go on, then writes 2 and 3 and exits
    script = "echo 1; while [ ! -e /tmp/go ]; do sleep 0.05; done; echo 2; echo 3"
    c = await rt.create(spec(ns, "count-0", docker_image, **sh(script)))
    await rt.start(c.id)
    got = []
    with anyio.fail_after(GUARD):
        async with contextlib.aclosing(rt.logs(c.id, follow=True)) as stream:
            async for line in stream:
                got.append(line.data)
                if line.data == b"1\n":  # the stream is live while the container still runs
                    assert (await rt.exec(c.id, ["touch", "/tmp/go"])).exit_code == 0
    assert got == [b"1\n", b"2\n", b"3\n"]
    assert (await rt.inspect(c.id)).state is State.EXITED
    assert [line.data async for line in rt.logs(c.id, tail=2)] == [b"2\n", b"3\n"]
    await rt.delete(c.id)


async def test_wait_returns_the_exit_code_even_after_the_exit(rt, ns, docker_image):
    c = await rt.create(spec(ns, "job-0", docker_image, **sh("exit 3")))
    await rt.start(c.id)
    assert await rt.wait(c.id) == 3
    assert await rt.wait(c.id) == 3
    assert (await rt.inspect(c.id)).exit_code == 3
    assert (await rt.list(ns))[0].exit_code == 3
    await rt.delete(c.id)


async def test_events_report_the_lifecycle_with_the_exit_code(rt, ns, docker_image):
    async with contextlib.aclosing(rt.events()) as events:
        c = await rt.create(spec(ns, "ev-0", docker_image, **sh("exit 4")))
        await rt.start(c.id)
        await rt.wait(c.id)
        await rt.delete(c.id)
        seen = []
        with anyio.fail_after(GUARD):
            async for event in events:
                if event.id == c.id:
                    seen.append(event)
                    if event.action == "destroy":
                        break
    assert [e.action for e in seen] == ["create", "start", "die", "destroy"]
    assert all(isinstance(e.action, EventAction) for e in seen)
    assert {(e.name, e.namespace, e.runtime) for e in seen} == {("ev-0", ns, "docker")}
    die = seen[2]
    assert (die.state, die.exit_code) == (State.EXITED, 4)
    assert all(e.time for e in seen)


async def test_reattach_finds_what_the_engine_keeps(rt, ns, docker_image):
    c = await rt.create(spec(ns, "kept-0", docker_image, command=("true",)))
    assert c.id in [found.id for found in await rt.reattach()]
    await rt.delete(c.id)


# -- limits ---------------------------------------------------------------------------------


async def test_memory_hog_is_oom_killed_at_its_limit(rt, ns, docker_image):
    hog = 'x=$(head -c 100000000 /dev/zero | tr "\\0" a); echo ${#x}'
    s = spec(ns, "hog-0", docker_image, **sh(hog), resources=Resources(cpus=0.5, memory=16 * MiB))
    c = await rt.create(s)
    host = engine("container", c.id)["HostConfig"]
    assert (host["NanoCpus"], host["Memory"], host["MemorySwap"]) == (500_000_000, 16 * MiB, 16 * MiB)
    await rt.start(c.id)
    assert await rt.wait(c.id) == 137
    killed = await rt.inspect(c.id)
    assert (killed.exit_code, killed.oom_killed) == (137, True)
    assert (await rt.list(ns))[0].oom_killed
    await rt.delete(c.id)


async def test_fork_bomb_stops_at_the_pids_limit(rt, ns, docker_image):
    bomb = (
        "ok=0; for i in $(seq 40); do if (sleep 1000 &) 2>/dev/null; then ok=$((ok+1)); fi; done; "
        "echo $ok $(cat /sys/fs/cgroup/pids/pids.max)"
    )
    s = spec(ns, "bomb-0", docker_image, **sh(bomb), resources=Resources(pids=20))
    c = await rt.create(s)
    assert engine("container", c.id)["HostConfig"]["PidsLimit"] == 20
    await rt.delete(c.id)
    code, out, _ = await run(rt, s)
    started, limit = out.split()
    assert (code, limit) == (0, b"20")
    assert 0 < int(started) < 20  # the shell itself counts against the limit too


# -- volumes, ports, networks ---------------------------------------------------------------


async def test_bind_mounts_read_only_and_writable(rt, ns, docker_image, tmp_path):
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro" / "f").write_text("from host\n")
    (tmp_path / "rw").mkdir()
    volumes = (
        Volume("bind", "/ro", str(tmp_path / "ro"), read_only=True),
        Volume("bind", "/rw", str(tmp_path / "rw")),
    )
    code, out, err = await run(rt, spec(ns, "bind-0", docker_image, **sh(
        "cat /ro/f; echo mine > /rw/g; echo x > /ro/g"), volumes=volumes))
    assert code != 0
    assert out == b"from host\n"
    assert b"Read-only file system" in err
    assert not (tmp_path / "ro" / "g").exists()
    assert (tmp_path / "rw" / "g").read_text() == "mine\n"


async def test_the_host_root_through_a_symlink_is_refused_read_write_unless_allowed(rt, ns, docker_image, tmp_path):
    link = tmp_path / "innocent"
    link.symlink_to("/")
    sentinel = tmp_path / "sentinel"
    sentinel.write_text("untouched\n")
    writes = sh(f"echo changed > /host{sentinel}")
    for source in (str(link), "/"):
        with pytest.raises(TerminalFailure, match="host's /.* read-write is refused") as raised:
            await rt.create(spec(ns, "root-0", docker_image, **writes, volumes=(Volume("bind", "/host", source),)))
        assert "\n" not in str(raised.value) and raised.value.runtime == "docker"
    assert docker_containers(ns) == []
    assert sentinel.read_text() == "untouched\n"
    # read-only, the host's / can be looked at; allowHostRoot lets it be written
    code, _, err = await run(rt, spec(ns, "root-1", docker_image, **writes,
                                      volumes=(Volume("bind", "/host", str(link), read_only=True),)))
    assert code != 0 and b"Read-only file system" in err and sentinel.read_text() == "untouched\n"
    code, _, err = await run(rt, spec(ns, "root-2", docker_image, **writes,
                                      volumes=(Volume("bind", "/host", str(link), allow_host_root=True),)))
    assert code == 0, err
    assert sentinel.read_text() == "changed\n"


async def test_named_volume_outlives_its_containers(rt, ns, docker_image):
    data = (Volume("volume", "/data", "data"),)
    assert (await run(rt, spec(ns, "writer-0", docker_image, **sh("echo kept > /data/f"), volumes=data)))[0] == 0
    volume = engine("volume", f"{ns}_data")
    assert volume["Labels"] == {L_NAMESPACE: ns}
    code, out, _ = await run(rt, spec(ns, "reader-0", docker_image, command=("cat", "/data/f"), volumes=data))
    assert (code, out) == (0, b"kept\n")
    assert engine_volumes(ns) == [f"{ns}_data"]  # deleting containers leaves named volumes
    subprocess.run(["docker", "volume", "rm", f"{ns}_data"], check=True, capture_output=True)


async def test_tmpfs_and_read_only_root(rt, ns, docker_image):
    s = spec(ns, "tmp-0", docker_image, **sh("grep ' /scratch ' /proc/mounts; echo x > /scratch/f && echo wrote; touch /f"),
             volumes=(Volume("tmpfs", "/scratch"),), read_only=True)
    code, out, err = await run(rt, s)
    assert code != 0
    assert out.startswith(b"tmpfs /scratch tmpfs rw")
    assert out.endswith(b"wrote\n")
    assert b"Read-only file system" in err


async def test_tmpfs_volumes_have_their_size_or_64mi(rt, ns, docker_image):
    # Without a size the engine leaves a tmpfs at the kernel's default: half the host's RAM, each.
    volumes = (Volume("tmpfs", "/small", size=MiB), Volume("tmpfs", "/default"))
    script = ("grep -E ' /(small|default) ' /proc/mounts | cut -d' ' -f2,4;"
              "dd if=/dev/zero of=/small/f bs=1k count=2048 2>&1 | grep -o 'No space left on device'")
    container = await rt.create(spec(ns, "tmpsize-0", docker_image, **sh(script), volumes=volumes))
    try:
        mounts = engine("container", container.id)["HostConfig"]["Mounts"]
        assert [(m["Target"], m["TmpfsOptions"]) for m in mounts] == [
            ("/small", {"SizeBytes": MiB}), ("/default", {"SizeBytes": 64 * MiB})]
        await rt.start(container.id)
        assert await rt.wait(container.id) == 0
        out = b"".join([line.data async for line in rt.logs(container.id)]).decode()
    finally:
        await rt.delete(container.id, force=True)
    lines = out.splitlines()
    assert lines[2:] == ["No space left on device"]
    assert sorted(lines[:2]) == ["/default rw,nosuid,nodev,noexec,relatime,size=65536k",  # mounted in either order
                                 "/small rw,nosuid,nodev,noexec,relatime,size=1024k"]


async def test_published_port_answers_on_loopback(rt, ns, docker_image):
    port = free_port()
    s = spec(ns, "httpd-0", docker_image, **sh("mkdir /www && echo hello > /www/index.html && httpd -f -p 8080 -h /www"),
             ports=(Port(8080, port, host_ip="127.0.0.1"), Port(8081, None, host_ip="127.0.0.1")))
    c = await rt.create(s)
    await rt.start(c.id)
    answer = b""
    with anyio.fail_after(GUARD):
        while b"hello" not in answer:  # until httpd listens
            with contextlib.suppress(OSError, anyio.EndOfStream, anyio.BrokenResourceError):
                async with await anyio.connect_tcp("127.0.0.1", port) as conn:
                    await conn.send(b"GET / HTTP/1.0\r\n\r\n")
                    answer = b""
                    while True:
                        answer += await conn.receive()
            await anyio.sleep(0.05)
    assert answer.startswith(b"HTTP/1.") and answer.endswith(b"hello\n")
    bound = engine("container", c.id)["NetworkSettings"]["Ports"]
    assert bound["8080/tcp"] == [{"HostIp": "127.0.0.1", "HostPort": str(port)}]
    assert bound["8081/tcp"][0]["HostPort"].isdigit()  # picked by the engine
    picked = int(bound["8081/tcp"][0]["HostPort"])
    published = (Port(8080, port, "tcp", "127.0.0.1"), Port(8081, picked, "tcp", "127.0.0.1"))
    assert (await rt.inspect(c.id)).ports == published
    assert [x.ports for x in await rt.list(ns)] == [published]
    await rt.delete(c.id, force=True)


async def test_network_none_has_only_loopback(rt, ns, docker_image):
    code, out, _ = await run(rt, spec(ns, "alone-0", docker_image, command=("ls", "/sys/class/net"), network="none"))
    assert (code, out.split()) == (0, [b"lo"])


async def test_init_runs_as_pid_1(rt, ns, docker_image):
    code, out, _ = await run(rt, spec(ns, "init-0", docker_image, command=("cat", "/proc/1/comm"), init=True))
    assert (code, out) == (0, b"docker-init\n")


# -- images ---------------------------------------------------------------------------------


def unique_archive(tmp_path: Path, ref: str, filler: int = 0, **config) -> tuple[Path, str]:
    """An archive tagged ref of the busybox layer and a layer of its own, so no engine has it yet; with its id.
    filler adds that many random bytes to the layer of its own."""
    path = tmp_path / f"{uuid.uuid4().hex}.tar"
    own = mkimage.Layer().file("etc/unique", uuid.uuid4().hex).file("etc/filler", os.urandom(filler)).bytes()
    image_id = mkimage.write_docker_archive(path, [mkimage.busybox_layer().bytes(), own], [ref], **config)
    return path, image_id


@pytest.fixture
def image_ref(docker_engine):
    ref = f"orchestr-test/import-{uuid.uuid4().hex[:10]}:v1"
    yield ref
    subprocess.run(["docker", "rmi", "-f", ref], capture_output=True)


async def test_import_list_inspect_history_remove(rt, ns, image_ref, tmp_path):
    archive, image_id = unique_archive(tmp_path, image_ref)
    reports: list[PullProgress] = []
    (image,) = await rt.import_image(archive, reports.append)
    assert (image.id, image.runtime) == (image_id, "docker")
    assert image.references == (image_ref,) and image.digest is None and image.size > 0
    assert any(r.status == "loading" and r.layer for r in reports)

    assert image_id in [i.id for i in await rt.images() if image_ref in i.references]
    assert (await rt.image_inspect(image_ref))["Id"] == image_id
    history = await rt.image_history(image_ref)
    assert [h.created_by for h in history] == ["orchestr mkimage layer 1", "orchestr mkimage layer 0"]  # newest first
    assert all(h.created == mkimage.CREATED and h.size > 0 and not h.empty_layer for h in history)
    assert history[0].id == image_id

    # an image a container was made from stays until forced
    c = await rt.create(spec(ns, "user-0", image_ref, command=("true",)))
    with pytest.raises(Conflict, match=image_ref):
        await rt.image_remove(image_ref)
    await rt.image_remove(image_ref, force=True)
    with pytest.raises(NotFound, match=f"image {image_ref} not found"):
        await rt.image_inspect(image_ref)
    await rt.delete(c.id)
    with contextlib.suppress(NotFound):  # what the forced removal left untagged
        await rt.image_remove(image_id)
    with pytest.raises(NotFound):
        await rt.image_inspect(image_id)


async def test_command_replaces_entrypoint_and_cmd_args_only_cmd(rt, ns, image_ref, tmp_path):
    archive, _ = unique_archive(tmp_path, image_ref, entrypoint=("echo", "entry"), cmd=("cmd",))
    await rt.import_image(archive)
    cases = [
        ({}, b"entry cmd\n"),
        ({"args": ("a", "b")}, b"entry a b\n"),
        ({"command": ("echo", "c")}, b"c\n"),
        ({"command": ("echo",), "args": ("c", "d")}, b"c d\n"),
    ]
    for i, (fields, expected) in enumerate(cases):
        assert await run(rt, spec(ns, f"argv-{i}", image_ref, **fields)) == (0, expected, b""), fields


async def test_prune_removes_dangling_images(rt, image_ref, tmp_path):
    first, first_id = unique_archive(tmp_path, image_ref)
    second, second_id = unique_archive(tmp_path, image_ref)
    await rt.import_image(first)
    await rt.import_image(second)  # takes the tag: the first is left dangling
    assert (await rt.image_inspect(first_id))["RepoTags"] == []
    assert first_id in await rt.image_prune()
    with pytest.raises(NotFound):
        await rt.image_inspect(first_id)
    assert (await rt.image_inspect(image_ref))["Id"] == second_id


async def test_image_errors_name_the_image(rt, tmp_path):
    missing = f"orchestr-test/missing-{uuid.uuid4().hex[:8]}:v1"
    for call in (rt.image_inspect, rt.image_history, rt.image_remove):
        with pytest.raises(NotFound, match=f"image {missing} not found"):
            await call(missing)
    with pytest.raises(NotFound, match="not-there.tar"):
        await rt.import_image(tmp_path / "not-there.tar")
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"not a tarball" * 100)
    with pytest.raises(RuntimeFailure, match="junk.tar"):
        await rt.import_image(junk)
    # nothing listens on port 1: the engine cannot reach that registry
    with pytest.raises((RuntimeFailure, NotFound), match="127.0.0.1:1/nothing:here") as raised:
        await rt.pull("127.0.0.1:1/nothing:here")
    assert "\n" not in str(raised.value)


@pytest.fixture
def registry(tmp_path):
    """Debian's docker-registry on a free loopback port, serving from a directory of this test."""
    port = free_port()
    config = tmp_path / "registry.yml"
    config.write_text(
        "version: 0.1\nlog:\n  level: error\n"
        f"storage:\n  filesystem:\n    rootdirectory: {tmp_path / 'registry'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    proc = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            if proc.poll() is not None:
                pytest.fail("docker-registry exited at start")
            time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait()


@pytest.mark.registry
async def test_pull_reports_progress_per_layer(rt, registry, tmp_path, docker_image):
    ref = f"{registry}/orchestr-test/pulled:v1"
    # An engine skips a layer only when it has pulled that blob before: a `docker load` of the same layer is not
    # enough. So an image of the busybox layer alone (with a config of its own, so the engine cannot skip it
    # whole) is pulled first from the same registry; its blob is then shared with the image under test, on a
    # fresh engine as on a used one.
    base_ref = f"{registry}/orchestr-test/base:v1"
    base_archive = tmp_path / "base.tar"
    base_id = mkimage.write_docker_archive(base_archive, [mkimage.busybox_layer().bytes()], [base_ref],
                                           cmd=("echo", uuid.uuid4().hex))
    # large enough that the engine reports its download under way, not only done
    archive, image_id = unique_archive(tmp_path, ref, filler=16 << 20)
    for path, name in ((base_archive, base_ref), (archive, ref)):
        subprocess.run(
            ["skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"docker-archive:{path}", f"docker://{name}"],
            check=True, capture_output=True,
        )
    try:
        await rt.ensure_image(base_ref)
        reports: list[PullProgress] = []
        image = await rt.ensure_image(ref, reports.append)
        assert image.id == image_id
        assert image.digest and image.digest.startswith("sha256:")
        assert set(image.references) == {ref, f"{registry}/orchestr-test/pulled@{image.digest}"}
        layers = [r for r in reports if r.layer]
        assert layers and all(r.ref == ref for r in reports)
        # the busybox layer is the test image's; only the image's own layer is fetched
        assert {r.status for r in layers} >= {"exists", "downloading", "done"}
        assert any(r.status == "downloading" and r.total for r in layers)

        again: list[PullProgress] = []
        assert (await rt.ensure_image(ref, again.append)).id == image_id
        assert again == []  # present: nothing fetched
        with pytest.raises(NotFound, match=f"{registry}/orchestr-test/pulled:nope"):
            await rt.pull(f"{registry}/orchestr-test/pulled:nope")
    finally:
        subprocess.run(["docker", "rmi", "-f", image_id, base_id], capture_output=True)


# -- errors and start-up --------------------------------------------------------------------


async def test_container_errors(rt, ns, docker_image):
    unknown = "0" * 64
    for call in (rt.inspect, rt.start, rt.stop, rt.delete, rt.pause, rt.resume, rt.wait, rt.stats):
        with pytest.raises(NotFound, match=f"container {unknown} not found") as raised:
            await call(unknown)
        assert (raised.value.runtime, raised.value.container, raised.value.retryable) == ("docker", unknown, False)
    with pytest.raises(NotFound):
        await rt.exec(unknown, ["true"])
    with pytest.raises(NotFound):
        [line async for line in rt.logs(unknown)]
    with pytest.raises(NotFound, match="image orchestr-test/absent:v0 not found"):
        await rt.create(spec(ns, "ghost-0", "orchestr-test/absent:v0"))
    s = spec(ns, "twin-0", docker_image, command=("true",))
    c = await rt.create(s)
    with pytest.raises(Conflict, match="already in use"):
        await rt.create(s)
    await rt.delete(c.id)


async def test_unreachable_engine_is_reported_on_first_use(monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    rt = DockerRuntime(Config())  # no I/O yet
    try:
        with pytest.raises(RuntimeUnavailable, match="unix:///nonexistent/docker.sock: .*; is dockerd running"):
            await rt.list()
    finally:
        await rt.close()


def test_loading_the_plugin_does_not_import_the_engine_client():
    code = "import sys, orchestr_docker; orchestr_docker._open; print('aiodocker' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=ROOT).stdout
    assert out.strip() == "False"


def test_a_one_off_run_with_its_output_and_removal_never_imports_aiohttp(docker_namespace, docker_image, tmp_path):
    """`orchestr run --rm --runtime docker`: create, start, logs, wait and delete over the light client's blocking
    calls, with no event loop."""
    code = ("import sys; from orchestr.cli import main; sys.argv = ['orchestr', *sys.argv[1:]]\n"
            "try:\n    main()\nexcept SystemExit as e:\n    code = e.code\n"
            "print('aiohttp' in sys.modules, 'asyncio' in sys.modules, code, file=sys.stderr)")
    argv = [sys.executable, "-c", code, "--state-dir", str(tmp_path / "state"), "run", "--rm", "--runtime", "docker",
            "-n", docker_namespace, docker_image, "sh", "-c", "echo out; echo err >&2; exit 3"]
    done = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.stdout == "out\n"
    assert done.stderr == "err\nFalse False 3\n"
    assert docker_containers(docker_namespace) == []  # removed


def one_off(namespace: str, state_dir: Path, image: str, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(Path(sys.executable).parent / "orchestr"), "--state-dir", str(state_dir), "run", "--rm", "--runtime",
         "docker", "-n", namespace, image, *argv], capture_output=True, text=True, cwd=ROOT, timeout=120,
        stdin=subprocess.DEVNULL)


@pytest.mark.registry
def test_a_one_off_run_with_a_command_pulls_an_image_the_engine_lacks_then_runs_it(docker_namespace, registry,
                                                                                  tmp_path):
    """The run in the foreground does not read the image before its create when a command is given: the create's
    answer that the engine lacks the image hands the run to the one that pulls."""
    ref = f"{registry}/orchestr-test/oneoff:{uuid.uuid4().hex[:10]}"
    archive, image_id = unique_archive(tmp_path, ref)
    subprocess.run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"docker-archive:{archive}",
                    f"docker://{ref}"], check=True, capture_output=True)
    try:
        done = one_off(docker_namespace, tmp_path / "state", ref, "sh", "-c", "cat /etc/unique; exit 4")
        assert (done.returncode, len(done.stdout.strip())) == (4, 32), done.stderr  # the pulled image's own file
        assert engine("image", ref)["Id"] == image_id
        assert docker_containers(docker_namespace) == []
    finally:
        subprocess.run(["docker", "rmi", "-f", image_id], capture_output=True)


def test_a_one_off_run_of_an_image_found_nowhere_or_misnamed_is_one_line_and_makes_nothing(docker_namespace, tmp_path):
    ref = f"127.0.0.1:{free_port()}/orchestr-test/absent:v0"  # nothing listens there
    for argv in (["true"], []):  # with a command the create finds the image missing, without one the inspect
        done = one_off(docker_namespace, tmp_path / "state", ref, *argv)
        assert done.returncode != 0 and done.stdout == ""
        assert done.stderr.count("\n") == 1 and ref in done.stderr and "Traceback" not in done.stderr
        assert docker_containers(docker_namespace) == []
    # a create the engine refuses has the image read after it: what is wrong with the image is said as ever
    bad = one_off(docker_namespace, tmp_path / "state", "Orchestr-Test/Upper:v0", "true")
    assert (bad.returncode, bad.stderr.count("\n")) == (1, 1) and "image Orchestr-Test/Upper:v0: " in bad.stderr


def test_a_one_off_run_asks_for_a_terminal_in_one_line_and_makes_nothing(docker_namespace, docker_image, tmp_path):
    for flag in ("-i", "-t"):
        done = subprocess.run(
            [str(Path(sys.executable).parent / "orchestr"), "--state-dir", str(tmp_path / "state"), "run", flag, "--rm",
             "--runtime", "docker", "-n", docker_namespace, docker_image, "true"],
            capture_output=True, text=True, cwd=ROOT, timeout=120, stdin=subprocess.DEVNULL)
        assert (done.returncode, done.stderr) == (1, "orchestr: run -i/-t needs a runtime that relays a terminal "
                                                      "(native does); docker does not\n")
        assert docker_containers(docker_namespace) == []
