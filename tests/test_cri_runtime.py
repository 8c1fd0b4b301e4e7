"""The cri runtime's own behaviour beyond the conformance kit, on the tests' CRI runtime (a second containerd):
network none, registry credentials, restarts in the pod, logs across rotations, a sandbox the runtime lost,
volumes, ports and its errors."""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
from dataclasses import replace
from pathlib import Path

import anyio
import pytest

from conftest import TEST_IMAGE
from cri import Cri
from orchestr.config import Config
from orchestr.errors import Conflict, NotFound, RuntimeFailure, RuntimeUnavailable, TerminalFailure
from orchestr.testing import images as mkimage
from orchestr.model import L_NAMESPACE, L_SERVICE, ContainerSpec, Port, Resources, State, Volume
from orchestr.testing import host
from orchestr_cri import cgroups, mapping
from orchestr_cri.proto import cri_pb2 as pb
from orchestr_cri.runtime import CriRuntime
from registry import docker_config, running_registry

pytestmark = pytest.mark.anyio
SLEEP = ("sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait")


@pytest.fixture
def cri(cri_runtime):
    client = Cri(cri_runtime)
    yield client
    client.close()


@pytest.fixture
async def rt(cri, cri_image, namespace, tmp_path):
    runtime = CriRuntime(Config(state_dir=tmp_path / "state"))
    yield runtime
    with anyio.CancelScope(shield=True):
        for c in await runtime.list(namespace):
            await runtime.delete(c.id, force=True)
        await runtime.close()
    assert cri.pods(namespace) == []


def spec(namespace: str, name: str, *command: str, **fields) -> ContainerSpec:
    labels = {L_NAMESPACE: namespace, L_SERVICE: name.rsplit("-", 1)[0], **fields.pop("labels", {})}
    return ContainerSpec(name=name, namespace=namespace, image=fields.pop("image", TEST_IMAGE), labels=labels,
                         command=command or SLEEP, stop_grace_period=1, **fields)


async def running(rt: CriRuntime, s: ContainerSpec):
    c = await rt.create(s)
    await rt.start(c.id)
    return await rt.inspect(c.id)


async def test_network_none_leaves_loopback_alone_up_and_no_rule_behind(rt, cri, namespace):
    c = await running(rt, spec(namespace, "alone-0", network="none"))
    links = (await rt.exec(c.id, ["ip", "-o", "link"])).stdout.decode().splitlines()
    up = [line.split(":")[1].strip() for line in links if ",UP" in line.split(">")[0]]
    assert up == ["lo"], links
    assert (await rt.exec(c.id, ["ip", "route"])).stdout == b""
    trace = cri.trace(c.id)
    await rt.delete(c.id, force=True)
    # its interface is still there at teardown, so CNI finds and removes the rules it made for the address
    assert cri.leftovers(trace) == []


async def test_pulls_with_registry_credentials_from_dockers_config(rt, tmp_path, monkeypatch):
    archive = tmp_path / "own.tar"
    mkimage.busybox_image(archive, ["own:1"], labels={"test": secrets.token_hex(8)})  # an image id of its own
    with running_registry(tmp_path / "registry", auth="htpasswd") as registry:
        ref = f"{registry.host}/cri/busybox:{secrets.token_hex(4)}"
        registry.push(archive, ref.split("/", 1)[1])
        monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "nobody"))
        with pytest.raises(RuntimeFailure) as anonymous:
            await rt.pull(ref)
        assert "401" in str(anonymous.value) or "unauthorized" in str(anonymous.value).lower(), anonymous.value
        monkeypatch.setenv("DOCKER_CONFIG", str(docker_config(tmp_path / "docker", registry.host, *registry.creds)))
        try:
            pulled = await rt.pull(ref)
            assert ref in pulled.references
            assert (await rt.ensure_image(ref)).id == pulled.id
            with pytest.raises(NotFound):
                await rt.pull(f"{registry.host}/cri/busybox:absent")
        finally:
            with contextlib.suppress(NotFound):
                await rt.image_remove(ref, force=True)
        with pytest.raises(NotFound):
            await rt.image_inspect(ref)


async def test_a_restart_is_a_new_container_in_the_same_pod(rt, cri, namespace):
    c = await running(rt, spec(namespace, "again-0", "sh", "-c", "echo run; exit 3"))
    assert await rt.wait(c.id) == 3
    await rt.start(c.id)
    assert await rt.wait(c.id) == 3
    again = await rt.inspect(c.id)
    assert (again.id, again.ip, again.state, again.exit_code) == (c.id, c.ip, State.EXITED, 3)
    assert [line.data async for line in rt.logs(c.id)] == [b"run\n", b"run\n"]  # both attempts' output
    mine = [x for x in cri.containers(namespace)]
    assert [(x.pod_sandbox_id, x.metadata.name, x.metadata.attempt) for x in mine] == [(c.id, "again", 1)]


async def test_follow_reads_every_line_across_rotations(rt, namespace, monkeypatch):
    monkeypatch.setenv("ORCHESTR_CRI_LOG_MAX_SIZE", "4Ki")
    # files kept: a follower this far behind (about 400 ms of this output) loses the pruned ones, as kubelet's does
    monkeypatch.setenv("ORCHESTR_CRI_LOG_MAX_FILES", "8")
    flag = f"/tmp/go-{secrets.token_hex(4)}"
    script = (f"echo start; while [ ! -e {flag} ]; do sleep 0.05; done; i=0; while [ $i -lt 2000 ]; do echo line $i; "
              "i=$((i + 1)); [ $((i % 50)) = 0 ] && sleep 0.02; done")
    c = await running(rt, spec(namespace, "chatty-0", "sh", "-c", script))
    seen: list[bytes] = []
    rotated = set()

    async def rotate_meanwhile() -> None:
        pod = await rt._pod(c.id)
        where = Path(mapping.Made.of(pod.status.annotations).pod.log_directory) / "chatty"
        while True:
            await rt.list(namespace)  # a listing rotates logs past their size
            rotated.update(p.name for p in where.iterdir() if ".log." in p.name)
            await anyio.sleep(0.02)

    async with anyio.create_task_group() as tg:
        tg.start_soon(rotate_meanwhile)
        with anyio.fail_after(120):
            async for line in rt.logs(c.id, follow=True):
                if not seen:
                    assert (await rt.exec(c.id, ["touch", flag])).exit_code == 0
                seen.append(line.data)
        tg.cancel_scope.cancel()
    assert len(rotated) > 2, rotated  # rotated several times, and old files were pruned
    assert seen == [b"start\n", *(f"line {i}\n".encode() for i in range(2000))]


async def test_a_sandbox_the_runtime_lost_is_made_again_on_start(rt, cri, namespace):
    s = spec(namespace, "lost-0", volumes=(Volume("tmpfs", "/scratch", size=1 << 20),), resources=Resources(pids=30))
    c = await running(rt, s)
    # as a reboot leaves it: the sandbox gone, and with it what the host held for the pod
    cri.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=c.id), timeout=60)
    made = mapping.Made.of((await rt._pod(c.id)).status.annotations)
    ((scratch, _),) = made.tmpfs
    subprocess.run(["umount", scratch], check=True)
    cgroups.remove(made.pod.metadata.uid)
    assert (await rt.inspect(c.id)).state is State.EXITED
    await rt.start(c.id)
    (remade,) = await rt.list(namespace)
    assert remade.state is State.RUNNING and remade.id != c.id
    assert [p.metadata.attempt for p in cri.pods(namespace)] == [1]
    assert (await rt.exec(remade.id, ["hostname"])).stdout == b"lost-0\n"
    assert (await rt.exec(remade.id, ["df", "-k", "/scratch"])).stdout.split()[-5] == b"1024"
    assert host.limits((await rt.inspect(remade.id)).pid).pids == 30


async def test_reattach_removes_what_a_cut_delete_left(rt, namespace, tmp_path):
    uid = mapping.pod_uid(namespace, "stale-0")
    where = tmp_path / "state" / "cri" / "pods" / f"{namespace}_stale-0_{uid}"
    where.mkdir(parents=True)
    (where / "etc-hosts").write_text("")
    cgroups.prepare(uid, 10)
    live = await running(rt, spec(namespace, "live-0"))
    assert uid in cgroups.pods()
    assert [c.id for c in await rt.reattach() if c.namespace == namespace] == [live.id]
    assert not where.exists() and uid not in cgroups.pods()
    assert (await rt.inspect(live.id)).state is State.RUNNING


async def test_volumes_tmpfs_sized_and_unmounted_named_kept(rt, namespace, tmp_path):
    volumes = (Volume("tmpfs", "/scratch", size=1 << 20), Volume("volume", "/data", source="keep"))
    s = spec(namespace, "vols-0", volumes=volumes)
    c = await running(rt, s)
    df = (await rt.exec(c.id, ["df", "-k", "/scratch"])).stdout.decode().splitlines()[-1].split()
    assert df[1] == "1024", df
    assert (await rt.exec(c.id, ["sh", "-c", "echo kept > /data/f"])).exit_code == 0
    mounts = Path("/proc/self/mountinfo").read_text()
    assert str(tmp_path / "state") in mounts
    await rt.delete(c.id, force=True)
    assert str(tmp_path / "state") not in Path("/proc/self/mountinfo").read_text()
    again = await running(rt, s)
    assert (await rt.exec(again.id, ["cat", "/data/f"])).stdout == b"kept\n"


async def test_published_ports_are_picked_kept_and_never_shared(rt, namespace):
    c = await running(rt, spec(namespace, "web-0", "httpd", "-f", "-p", "80", ports=(Port(80, None, "tcp", "127.0.0.1"),)))
    (port,) = c.ports
    assert port.host_port and port.host_ip == "127.0.0.1"
    with pytest.raises(Conflict):
        await rt.create(spec(namespace, "web-1", ports=(Port(80, port.host_port, "tcp", "127.0.0.1"),)))
    await rt.stop(c.id, timeout=5)
    await rt.start(c.id)
    assert (await rt.inspect(c.id)).ports == c.ports and (await rt.inspect(c.id)).ip == c.ip


async def test_what_cri_cannot_express_is_refused_in_one_line(rt, cri, namespace, tmp_path):
    with pytest.raises(TerminalFailure, match="CRI takes a group by its id only"):
        await rt.create(spec(namespace, "grouped-0", user="app:app"))
    with pytest.raises(TerminalFailure, match="a name is letters, digits"):
        await rt.create(spec(namespace, "../../escape"))
    assert not (tmp_path / "state" / "escape").exists() and not (tmp_path / "escape").exists()
    assert cri.pods(namespace) == []
    c = await running(rt, spec(namespace, "plain-0"))
    with pytest.raises(TerminalFailure, match="ExecSync takes a command alone"):
        await rt.exec(c.id, ["true"], user="1000")


async def test_an_unreachable_or_malformed_endpoint_is_one_line(tmp_path, monkeypatch):
    lost = CriRuntime(Config(state_dir=tmp_path), f"unix://{tmp_path}/nothing.sock")
    with pytest.raises(RuntimeUnavailable) as info:
        await lost.list()
    assert str(info.value).startswith(f"cannot reach the CRI runtime at unix://{tmp_path}/nothing.sock: there is no "
                                      f"socket {tmp_path}/nothing.sock; is it running?")
    assert "\n" not in str(info.value)
    await lost.close()
    monkeypatch.setenv("ORCHESTR_CRI_ENDPOINT", "http://example")
    with pytest.raises(TerminalFailure, match="expected unix:///path/to/socket"):
        await CriRuntime(Config(state_dir=tmp_path)).list()


def test_private_cri_containerds_starting_at_once_claim_different_subnets(tmp_path):
    """A bridge's route appears only with its first pod, so routes alone let two containerds starting together
    share a /24 (and one's clean-up remove the other's rules): each claims its subnet first, and releases it."""
    from conftest import _cri_containerd_module

    script = _cri_containerd_module()
    a, b, gone = tmp_path / "a", tmp_path / "b", tmp_path / "gone"
    for d in (a, b, gone):
        d.mkdir()
    first, second = script.free_subnet(a), script.free_subnet(b)
    stale = script.free_subnet(gone)
    try:
        assert len({first, second, stale}) == 3
        gone.rmdir()  # its owner went without releasing it: the next start takes it over
        assert script.free_subnet(b) == stale
        script.release_subnet(a, second)  # not a's: stays
        assert (script.CLAIMS / second.replace("/", "_")).read_text() == str(b)
    finally:
        for owner, subnet in ((a, first), (b, second), (b, stale)):
            script.release_subnet(owner, subnet)
    assert not any((script.CLAIMS / s.replace("/", "_")).exists() for s in (first, second, stale))
