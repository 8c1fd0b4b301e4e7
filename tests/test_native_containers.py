"""The native runtime's containers on the real kernel: isolation, limits, pause, exec, logs, supervision, leaks.

Images come from a small local store that unpacks the busybox layer of orchestr.testing.images; everything else is real:
overlayfs, namespaces, cgroup v1 (this host's), the supervisor processes.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from orchestr.config import Config
from orchestr.errors import Conflict, NotFound, RuntimeFailure, TerminalFailure, Timeout
from orchestr.model import (
    EXEC_OUTPUT_LIMIT, ContainerSpec, EventAction, ExecResult, Resources, RestartPolicy, State, Volume,
)
from orchestr.testing import images as mkimage

PLUGINS = Path(__file__).resolve().parent.parent / "plugins"
if str(PLUGINS) not in sys.path:
    sys.path.insert(0, str(PLUGINS))

from orchestr_native import cgroups  # noqa: E402
from orchestr_native import containers as containers_module  # noqa: E402
from orchestr_native import lifecycle  # noqa: E402
from orchestr_native.containers import Containers  # noqa: E402
from orchestr_native.supervisor.client import SupervisorClient  # noqa: E402

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the native runtime needs root")

IMAGE = "orchestr-test/busybox:latest"
ESCAPE_IMAGE = "orchestr-test/escape:latest"
CONFIGURED_IMAGE = "orchestr-test/configured:latest"  # busybox with Entrypoint, Cmd, Env, WorkingDir, User
FIFO_PASSWD_IMAGE = "orchestr-test/fifo-passwd:latest"  # busybox whose /etc/passwd is a FIFO
LINKED_IMAGES = {d: f"orchestr-test/{d}-link:latest" for d in ("proc", "sys", "dev")}  # /proc -> /newproc, ...
DEFAULT_CAPS = 0xA80425FB  # Docker's default set
CAP_SYS_ADMIN = 21
NEVER = RestartPolicy.NEVER


class LocalStore:
    """The three image-store calls the runtime makes, over layer directories unpacked from mkimage layers."""

    def __init__(self, layers: dict[str, list[Path]]):
        self.layers = layers

    def resolve(self, ref: str) -> str:
        return "sha256:" + ref.encode().hex().ljust(64, "0")[:64]

    def image_config(self, ref: str) -> dict:
        if ref == self.resolve(CONFIGURED_IMAGE):
            return {"config": {"Env": [mkimage.PATH_ENV, "FROM_IMAGE=1", "OVERRIDE=image"],
                               "Entrypoint": ["sh", "-c", 'echo $0 $* $FROM_IMAGE $OVERRIDE $(id -u) $(pwd)'],
                               "Cmd": ["default", "cmd"], "WorkingDir": "/srv/app", "User": "app"}}
        return {"config": {"Env": [mkimage.PATH_ENV], "Cmd": ["sh"], "WorkingDir": "", "User": ""}}

    def layer_paths(self, ref: str) -> list[Path]:
        name = next(r for r in self.layers if self.resolve(r) == ref or r == ref)
        return self.layers[name]


def _unpack(layer: mkimage.Layer, target: Path) -> Path:
    target.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(layer.bytes())) as tar:
        tar.extractall(target)
    return target


@pytest.fixture(scope="session")
def image_layers(tmp_path_factory) -> dict[str, list[Path]]:
    root = tmp_path_factory.mktemp("layers")
    base = _unpack(mkimage.busybox_layer(), root / "busybox")
    # a layer whose symlinks point out of the container root: mounts on them must stay inside
    hostile = mkimage.Layer().symlink("escape", "/../../../../../../../../tmp").symlink("rel", "../../../../../../..")
    # a layer whose /etc/passwd is a FIFO: reading it waits for ever for a writer
    fifo = tarfile.TarInfo("etc/passwd")
    fifo.type, fifo.mode = tarfile.FIFOTYPE, 0o644
    images = {IMAGE: [base], ESCAPE_IMAGE: [base, _unpack(hostile, root / "escape")], CONFIGURED_IMAGE: [base]}
    for d, ref in LINKED_IMAGES.items():
        # the kernel's file systems must never be mounted where an image points them
        images[ref] = [base, _unpack(mkimage.Layer().dir(f"new{d}").symlink(d, f"/new{d}"), root / f"{d}-link")]
    images[FIFO_PASSWD_IMAGE] = [base, _unpack(mkimage.Layer().raw(fifo), root / "fifo-passwd")]
    return images


def _mountinfo(marker: str) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line for line in f if marker in line]


def _cgroup_dirs(ids: set[str]) -> list[str]:
    return [p for p in glob.glob("/sys/fs/cgroup/*/orchestr/*") if os.path.basename(p) in ids]


def _processes(marker: str, ids: set[str]) -> list[str]:
    """Processes whose command line names the state dir, or that live in one of the containers' cgroups."""
    found = []
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            groups = Path(f"/proc/{pid}/cgroup").read_text()
        except OSError:
            continue
        if marker in cmdline or any(f"/orchestr/{i}" in groups for i in ids):
            found.append(f"{pid} {cmdline}")
    return found


def _created_ids(state_dir: Path) -> set[str]:
    events = state_dir / "native" / "events.jsonl"
    if not events.exists():
        return set()
    return {json.loads(line)["id"] for line in events.read_text().splitlines() if '"create"' in line}


def _leaks(state_dir: Path) -> list[str]:
    ids = _created_ids(state_dir)
    return _mountinfo(str(state_dir)) + _cgroup_dirs(ids) + _processes(str(state_dir), ids)


@pytest.fixture
async def native(anyio_backend, state_dir, image_layers):
    """Containers over a fresh state dir; afterwards every container is deleted and nothing may be left."""
    assert not _leaks(state_dir)
    runtime = Containers(Config(state_dir=state_dir), LocalStore(image_layers), log_max_size=4096, log_max_files=3)
    yield runtime
    for c in await runtime.list():
        await runtime.delete(c.id, force=True)
    # the supervisor outlives clients for its idle minute; the leak check wants it gone now
    SupervisorClient(str(state_dir / "native")).ask({"op": "quit-if-idle"})
    with anyio.move_on_after(10):
        while _leaks(state_dir):
            await anyio.sleep(0.05)
    assert _leaks(state_dir) == []


def spec(namespace: str, name: str = "c", *command: str, **kw) -> ContainerSpec:
    kw.setdefault("restart_policy", NEVER)
    kw.setdefault("network", "none")
    return ContainerSpec(name=name, namespace=namespace, image=kw.pop("image", IMAGE),
                         command=tuple(command) if command else None, **kw)


async def run(runtime: Containers, s: ContainerSpec) -> tuple[int, str, str]:
    """Creates and starts s, waits for it, returns (exit code, stdout, stderr)."""
    c = await runtime.create(s)
    await runtime.start(c.id)
    code = await runtime.wait(c.id)
    out, err = b"", b""
    async for line in runtime.logs(c.id):
        if line.stream == "stdout":
            out += line.data
        else:
            err += line.data
    return code, out.decode(), err.decode()


async def until(predicate, timeout: float = 10.0, what: str = "condition"):
    with anyio.move_on_after(timeout):
        while not (value := await predicate()):
            await anyio.sleep(0.05)
        return value
    pytest.fail(f"{what} not reached within {timeout}s")


# -- isolation ----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_container_is_isolated_in_its_own_namespaces(native, namespace):
    script = textwrap.dedent("""\
        echo pid=$$
        echo procs=$(ls /proc | grep -c '^[0-9]')
        echo hostname=$(hostname)
        for ns in mnt pid uts ipc net cgroup; do echo ns_$ns=$(readlink /proc/self/ns/$ns); done
        grep -E '^(CapInh|CapEff|CapBnd|CapPrm|NoNewPrivs)' /proc/self/status | tr -d '\\t' | sed 's/:/=/'
        echo ifaces=$(ls /sys/class/net | tr '\\n' ' ')
        mount -t tmpfs x /mnt 2>/dev/null; echo mount=$?
        echo mounts=$(awk '{print $5}' /proc/self/mountinfo | tr '\\n' ' ')
        echo keys=$(wc -c < /proc/keys)
        echo mknod=$(mknod /dev/sda b 8 0 && head -c1 /dev/sda >/dev/null 2>&1; echo $?)
        echo sysrq=$(echo h 2>/dev/null > /proc/sysrq-trigger; echo $?)
        """)
    code, out, err = await run(native, spec(namespace, "iso-0", "sh", "-c", script))
    assert code == 0, err
    got = dict(line.split("=", 1) for line in out.splitlines())
    assert got["pid"] == "1"
    assert int(got["procs"]) <= 4  # the shell, its subshell, ls and grep: nothing of the host
    assert got["hostname"] == "iso-0"
    for ns in ("mnt", "pid", "uts", "ipc", "net", "cgroup"):
        assert got[f"ns_{ns}"] != os.readlink(f"/proc/self/ns/{ns}"), ns
    assert int(got["CapEff"], 16) == DEFAULT_CAPS
    assert int(got["CapBnd"], 16) == DEFAULT_CAPS
    assert int(got["CapInh"], 16) == 0  # inheritable capabilities would pass to programs with file capabilities
    assert not int(got["CapEff"], 16) >> CAP_SYS_ADMIN & 1
    assert got["NoNewPrivs"] == "1"
    assert got["ifaces"].split() == ["lo"]
    assert got["mount"] != "0"
    mounts = got["mounts"].split()
    assert mounts[0] == "/" and "/work" not in mounts and "/sys/fs/cgroup" not in mounts
    assert {"/proc", "/sys", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/proc/sys", "/proc/keys", "/proc/acpi"} <= set(mounts)
    assert got["keys"] == "0"  # masked by /dev/null (this kernel has no /proc/kcore)
    assert got["mknod"] != "0"  # a device node made inside cannot be opened
    assert got["sysrq"] != "0"


@pytest.mark.anyio
async def test_the_seccomp_filter_refuses_what_capabilities_allow_unless_unconfined(native, namespace):
    # A user namespace needs no capability: only the filter stops `unshare -U`.
    script = "grep '^Seccomp:' /proc/self/status | tr -d '\t'; unshare -U true 2>/dev/null; echo unshare=$?"
    code, out, err = await run(native, spec(namespace, "filtered-0", "sh", "-c", script))
    assert (code, out) == (0, "Seccomp:2\nunshare=1\n"), err
    code, out, err = await run(native, spec(namespace, "free-0", "sh", "-c", script, seccomp="unconfined"))
    assert (code, out) == (0, "Seccomp:0\nunshare=0\n"), err

    # exec into a filtered container is filtered as well
    c = await native.create(spec(namespace, "filtered-1", "sleep", "60"))
    await native.start(c.id)
    done = await native.exec(c.id, ["sh", "-c", script])
    assert (done.exit_code, done.stdout) == (0, b"Seccomp:2\nunshare=1\n"), done.stderr
    await native.delete(c.id, force=True)


@pytest.mark.anyio
async def test_an_older_supervisor_cannot_take_a_standard_input_and_says_so(native, namespace, monkeypatch):
    c = await native.create(spec(namespace, "old-0", "cat"))
    config, _ = native.load(c.id)
    # what a supervisor from before -i and -t answers: it would have ignored the passed descriptor
    monkeypatch.setattr(native.supervisor, "request", lambda message, timeout=60.0, fds=(): {"pid": 1})
    with pytest.raises(RuntimeFailure, match="supervisor is older than orchestr"):
        lifecycle.start_run(native, config, stdin=0)
    assert lifecycle.start_run(native, config) is None  # a plain start asks nothing new of it


def test_the_seccomp_program_jumps_inside_itself_and_ends_in_returns():
    from orchestr_native.process import seccomp

    program = seccomp.program()
    for i, (code, jt, jf, _) in enumerate(program):
        if code in (seccomp.JEQ, seccomp.JGE, seccomp.JSET):
            assert i + 1 + max(jt, jf) < len(program)
    assert program[-1][0] == program[-2][0] == seccomp.RET
    refused = {k for code, _, _, k in program if code == seccomp.JEQ}
    assert set(seccomp.REFUSED_X86_64.values()) <= refused


@pytest.mark.anyio
async def test_loopback_works_in_network_none_and_host_network_is_shared(native, namespace):
    code, out, err = await run(native, spec(namespace, "lo-0", "sh", "-c", "ping -c1 -W2 127.0.0.1 >/dev/null && echo ok"))
    assert (code, out) == (0, "ok\n"), err
    code, out, _ = await run(native, spec(namespace, "host-0", "readlink", "/proc/self/ns/net", network="host"))
    assert out.strip() == os.readlink("/proc/self/ns/net")


@pytest.mark.anyio
async def test_unknown_network_is_refused_with_one_line(native, namespace):
    with pytest.raises(RuntimeFailure) as info:
        await native.create(spec(namespace, "br-0", "true", network="wifi"))
    assert str(info.value) == "container br-0: unknown network 'wifi'; use bridge, host or none"
    assert await native.list(namespace) == []


def test_non_root_is_refused_for_good(monkeypatch, state_dir, image_layers):
    monkeypatch.setattr(containers_module.os, "geteuid", lambda: 1000)
    with pytest.raises(TerminalFailure, match="needs root") as raised:
        Containers(Config(state_dir=state_dir), LocalStore(image_layers))
    assert not raised.value.retryable and raised.value.runtime == "native"


@pytest.mark.anyio
async def test_errors_of_the_runtime_say_native_and_the_container(state_dir):
    from orchestr_native.runtime import NativeRuntime

    rt = NativeRuntime(Config(state_dir=state_dir))
    unknown = "0" * 64
    for call in (rt.inspect, rt.start, rt.stop, rt.delete, rt.pause, rt.signal, rt.stats, rt.wait):
        args = (unknown, "HUP") if call == rt.signal else (unknown,)
        with pytest.raises(NotFound) as raised:
            await call(*args)
        assert (raised.value.runtime, raised.value.container, raised.value.retryable) == ("native", unknown, False)
    with pytest.raises(NotFound) as raised:
        [line async for line in rt.logs(unknown)]
    assert raised.value.container == unknown


@pytest.mark.anyio
async def test_image_config_gives_argv_env_workdir_and_user(native, namespace):
    _, out, err = await run(native, spec(namespace, "cfg-0", image=CONFIGURED_IMAGE, env={"OVERRIDE": "spec"}))
    assert out == "default cmd 1 spec 1000 /srv/app\n", err
    _, out, _ = await run(native, spec(namespace, "cfg-1", image=CONFIGURED_IMAGE, args=("given",), user="0:33",
                                       working_dir="/tmp"))
    assert out == "given 1 image 0 /tmp\n"
    _, out, _ = await run(native, spec(namespace, "cfg-2", "sh", "-c", "echo $HOSTNAME $HOME; id -g", image=CONFIGURED_IMAGE))
    assert out == "cfg-2 /home/app\n1000\n"
    # a command with args runs both, as on every runtime: the image's entrypoint and cmd are both replaced
    code, out, err = await run(native, spec(namespace, "cfg-3", "echo", "command", image=CONFIGURED_IMAGE,
                                            args=("and", "args")))
    assert (code, out) == (0, "command and args\n"), err


# -- filesystem ---------------------------------------------------------------------------


@pytest.mark.anyio
async def test_read_only_root_volumes_and_no_escape_through_symlinks(native, namespace, tmp_path, state_dir):
    host_dir = tmp_path / "bind"
    host_dir.mkdir()
    (host_dir / "in").write_text("from host\n")
    outside = Path("/tmp") / f"orchestr-escape-{namespace}"
    script = textwrap.dedent("""\
        touch /rootfile 2>/dev/null; echo root=$?
        cat /data/in; echo x > /data/out 2>/dev/null; echo bind_write=$?
        echo y > /scratch/f && echo tmpfs=ok
        echo z > /vol/f && echo vol=ok
        echo e > /escape/""" + outside.name + """/f && echo escape_write=ok
        ls /rel/ | head -3 | tr '\\n' ' '; echo
        """)
    volumes = (
        Volume("bind", "/data", str(host_dir), read_only=True),
        Volume("tmpfs", "/scratch"),
        Volume("volume", "/vol", "shared"),
        Volume("tmpfs", f"/escape/{outside.name}"),
        Volume("tmpfs", "/rel/inside"),
    )
    code, out, err = await run(native, spec(namespace, "fs-0", "sh", "-c", script, image=ESCAPE_IMAGE,
                                            read_only=True, volumes=volumes))
    assert code == 0, err
    assert "root=1" in out and "from host" in out and "bind_write=1" in out
    assert "tmpfs=ok" in out and "vol=ok" in out and "escape_write=ok" in out
    assert not (host_dir / "out").exists()
    assert not outside.exists(), "a mount through an absolute symlink left the container root"
    assert (state_dir / "native" / "volumes" / f"{namespace}_shared" / "f").read_text() == "z\n"
    # a relative symlink climbing past the root stays at the root: /rel/inside is the container's /inside
    assert not Path("/inside").exists()


@pytest.mark.anyio
async def test_volume_over_the_root_is_refused(native, namespace, tmp_path):
    for target in ("/", "/.", "//"):
        with pytest.raises(RuntimeFailure, match="over the container's root"):
            await native.create(spec(namespace, "root-0", "true", volumes=(Volume("bind", target, str(tmp_path)),)))
    with pytest.raises(RuntimeFailure, match="host's / read-write"):
        await native.create(spec(namespace, "root-1", "true", volumes=(Volume("bind", "/host", "/"),)))


@pytest.mark.anyio
async def test_the_host_root_through_a_symlink_is_refused_read_write_unless_allowed(native, namespace, tmp_path):
    link = tmp_path / "innocent"
    link.symlink_to("/")
    sentinel = tmp_path / "sentinel"
    sentinel.write_text("untouched\n")
    writes = ("sh", "-c", f"echo changed > /host{sentinel}")
    with pytest.raises(TerminalFailure, match=f"binding {link}, which is the host's /, read-write is refused"):
        await native.create(spec(namespace, "root-0", *writes, volumes=(Volume("bind", "/host", str(link)),)))
    assert await native.list(namespace) == [] and sentinel.read_text() == "untouched\n"
    code, _, err = await run(native, spec(namespace, "root-1", *writes,
                                          volumes=(Volume("bind", "/host", str(link), allow_host_root=True),)))
    assert code == 0, err
    assert sentinel.read_text() == "changed\n"


@pytest.mark.anyio
async def test_an_image_cannot_move_proc_sys_or_dev_with_a_symlink(native, namespace):
    # With /proc a symlink to /newproc, procfs used to be mounted at /newproc while the masks and read-only
    # binds looked for /proc/... through the link and skipped what they did not find: /proc/sys was writable.
    # Writing /proc/sys/kernel/hostname changes only the container's own UTS namespace, whatever happens.
    host = os.uname().nodename
    script = "echo probe > /proc/sys/kernel/hostname; cat /sys/firmware/* >/dev/null 2>&1; hostname"
    for d, ref in LINKED_IMAGES.items():
        c = await native.create(spec(namespace, f"{d}-link-0", "sh", "-c", script, image=ref))
        with pytest.raises(RuntimeFailure, match=f"the image's /{d} is not a directory"):
            await native.start(c.id)
        assert (await native.inspect(c.id)).state is State.EXITED
    assert os.uname().nodename == host


@contextlib.contextmanager
def _tmpfs(path: Path) -> Iterator[Path]:
    path.mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "orchestr-test", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


@pytest.mark.anyio
async def test_read_only_binds_are_read_only_all_the_way_down(native, namespace, tmp_path):
    # A read-only bind used to be read-only only at its top: mounts below its source stayed writable, and
    # for / bound read-only at /host that meant the host's /proc/sys, /sys, /dev (without nodev: raw disks).
    source = tmp_path / "src"
    source.mkdir()
    with _tmpfs(source / "sub") as sub:
        (sub / "f").write_text("host\n")
        script = textwrap.dedent("""\
            echo x > /data/sub/f 2>/dev/null; echo sub=$?
            echo probe > /host/proc/sys/kernel/hostname 2>/dev/null; echo hostname=$(hostname)
            head -c1 /host/dev/zero >/dev/null 2>&1; echo dev=$?
            awk '$5 ~ "^/(host|data)(/|$)" && $6 !~ /(^|,)ro(,|$)/ {print "writable", $5}' /proc/self/mountinfo
            awk '$5 ~ "^/(host|data)(/|$)" && $6 !~ /(^|,)nodev(,|$)/ {print "devices", $5}' /proc/self/mountinfo
            """)
        volumes = (Volume("bind", "/data", str(source), read_only=True), Volume("bind", "/host", "/", read_only=True))
        code, out, err = await run(native, spec(namespace, "ro-0", "sh", "-c", script, volumes=volumes))
        assert (sub / "f").read_text() == "host\n"
    assert code == 0, err
    assert out.splitlines()[:3] == ["sub=1", "hostname=ro-0", "dev=1"], out
    assert out.splitlines()[3:] == []


@pytest.mark.anyio
async def test_a_mount_made_on_the_host_later_is_not_writable_through_a_read_only_bind(native, namespace, tmp_path):
    # Below a shared mount of the host, a mount made later reaches every copy, with flags of its own: under a
    # read-only bind it would arrive writable. Binds are private copies, as Docker's are by default.
    talk = tmp_path / "talk"
    talk.mkdir()
    with _tmpfs(tmp_path / "src") as source:
        subprocess.run(["mount", "--make-shared", str(source)], check=True)
        (source / "later").mkdir()
        script = "until [ -e /talk/go ]; do sleep 0.05; done; echo x > /data/later/f 2>/dev/null; echo $? >/talk/result"
        volumes = (Volume("bind", "/data", str(source), read_only=True), Volume("bind", "/talk", str(talk)))
        c = await native.create(spec(namespace, "later-0", "sh", "-c", script, volumes=volumes))
        await native.start(c.id)
        with _tmpfs(source / "later") as later:
            (talk / "go").touch()
            assert await native.wait(c.id) == 0
            assert not (later / "f").exists()
    assert (talk / "result").read_text() == "1\n"


@pytest.mark.anyio
async def test_a_bind_source_swapped_for_a_symlink_to_root_after_create_is_refused(native, namespace, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    sentinel = tmp_path / "sentinel"
    sentinel.write_text("host\n")
    script = f"test -e /data{sentinel} && echo host-root-visible; echo ran"
    rw = await native.create(spec(namespace, "swap-0", "sh", "-c", script,
                                  volumes=(Volume("bind", "/data", str(data)),)))
    ro = await native.create(spec(namespace, "swap-1", "sh", "-c", script,
                                  volumes=(Volume("bind", "/data", str(data), read_only=True),)))
    data.rmdir()
    data.symlink_to("/")  # whoever owns the directory can do this between create and start
    with pytest.raises(RuntimeFailure, match="the host's / read-write"):
        await native.start(rw.id)
    await native.start(ro.id)  # read-only, the host's / is allowed, as at create
    assert await native.wait(ro.id) == 0
    assert [line.data async for line in native.logs(ro.id)] == [b"host-root-visible\n", b"ran\n"]
    assert sentinel.read_text() == "host\n"


@pytest.mark.anyio
async def test_allow_host_root_binds_the_hosts_root_read_write_when_asked(native, namespace, tmp_path):
    sentinel = tmp_path / "sentinel"
    sentinel.write_text("host\n")
    volumes = (Volume("bind", "/host", "/", allow_host_root=True),)
    code, out, err = await run(native, spec(namespace, "root-rw-0", "cat", f"/host{sentinel}", volumes=volumes))
    assert (code, out) == (0, "host\n"), err


@pytest.mark.anyio
async def test_python_inside_a_container_is_not_dumpable(native, namespace, tmp_path):
    # The host's python runs inside the container as init (init: true) and as the exec process until it execs
    # the command: its /proc/<pid>/exe (the host's interpreter) must stay out of the container's reach.
    code, out, err = await run(native, spec(namespace, "init-0", "sh", "-c",
                                            "readlink /proc/1/exe >/dev/null 2>&1 && echo visible || echo hidden",
                                            init=True))
    assert (code, out) == (0, "hidden\n"), err

    # The exec process is held in its execve by a lease on the command's file: by then it has the container's
    # capabilities and would be as reachable as any of the container's processes, were it dumpable.
    tools, talk = tmp_path / "tools", tmp_path / "talk"
    tools.mkdir()
    talk.mkdir()
    shutil.copy(mkimage.BUSYBOX, tools / "true")
    script = textwrap.dedent("""\
        until [ -e /talk/go ]; do sleep 0.05; done
        for s in /proc/[0-9]*/status; do
            p=${s%/status}; p=${p#/proc/}
            if [ "$p" != 1 ] && grep -q '^PPid:.0$' $s; then
                readlink /proc/$p/exe >/dev/null 2>&1 && echo visible > /talk/result || echo hidden > /talk/result
            fi
        done
        exec sleep 60
        """)
    volumes = (Volume("bind", "/tools", str(tools), read_only=True), Volume("bind", "/talk", str(talk)))
    c = await native.create(spec(namespace, "exec-dump-0", "sh", "-c", script, volumes=volumes))
    await native.start(c.id)
    previous = signal.signal(signal.SIGIO, signal.SIG_IGN)  # a lease break is announced with SIGIO
    fd = os.open(tools / "true", os.O_RDONLY)
    try:
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_WRLCK)
        async with anyio.create_task_group() as tg:
            done = {}

            async def exec_true() -> None:
                done["result"] = await native.exec(c.id, ["/tools/true"])

            tg.start_soon(exec_true)

            async def breaking() -> bool:
                return fcntl.fcntl(fd, fcntl.F_GETLEASE) != fcntl.F_WRLCK  # downgrading for a reader

            await until(breaking, what="the exec opening its command")
            (talk / "go").touch()

            async def answered() -> bool:
                return (talk / "result").exists() and (talk / "result").read_text().endswith("\n")

            await until(answered, what="the container looking at the exec process")
            fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
    finally:
        os.close(fd)
        signal.signal(signal.SIGIO, previous)
    assert done["result"].exit_code == 0, done["result"].stderr
    assert (talk / "result").read_text() == "hidden\n"
    r = await native.exec(c.id, ["grep", "^CapInh", "/proc/self/status"])
    assert r.stdout.split() == [b"CapInh:", b"0000000000000000"]


@pytest.mark.anyio
async def test_tmpfs_volumes_have_their_size_or_64mi(native, namespace):
    script = textwrap.dedent("""\
        awk '$5 == "/small" || $5 == "/default" {print $5, $NF}' /proc/self/mountinfo
        dd if=/dev/zero of=/small/f bs=1k count=2048 2>&1 | grep -o 'No space left on device'
        """)
    volumes = (Volume("tmpfs", "/small", size=1 << 20), Volume("tmpfs", "/default"))
    code, out, err = await run(native, spec(namespace, "tmpfs-0", "sh", "-c", script, volumes=volumes))
    assert code == 0, err
    assert out.splitlines() == ["/small rw,size=1024k", "/default rw,size=65536k",
                                "No space left on device"]


# -- limits -------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_memory_hog_is_oom_killed(native, namespace):
    hog = spec(namespace, "oom-0", "dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1",
               resources=Resources(memory=16 << 20))
    code, _, _ = await run(native, hog)
    (c,) = await native.list(namespace)
    assert code == 137
    assert c.state is State.EXITED and c.exit_code == 137 and c.oom_killed


@pytest.mark.anyio
async def test_fork_bomb_is_stopped_by_the_pids_limit(native, namespace):
    bomb = "i=0; while [ $i -lt 100 ]; do sleep 60 & i=$((i+1)); echo $i; done"
    code, out, err = await run(native, spec(namespace, "pids-0", "sh", "-c", bomb, resources=Resources(pids=16)))
    assert code == 2 and "can't fork" in err  # busybox sh gives up at the first fork the kernel refuses
    assert 10 <= int(out.split()[-1]) <= 15  # the shell itself and at most 15 children: 16 tasks


@pytest.mark.anyio
async def test_cpu_quota_holds_the_container_to_half_a_cpu(native, namespace):
    burn = "while :; do :; done & while :; do :; done"  # two busy loops would take both CPUs of this host
    c = await native.create(spec(namespace, "cpu-0", "sh", "-c", burn, resources=Resources(cpus=0.5)))
    await native.start(c.id)
    cgroup = cgroups.manager(c.id)
    cpu_dir = Path(f"/sys/fs/cgroup/cpu/orchestr/{c.id}")
    parent_shares = cpu_dir.parent / "cpu.shares"
    saved = parent_shares.read_text()
    # Other load on this 2-core host would win CPU time from the container and hide the quota: the highest
    # weight (for it and its parent, restored after) leaves the quota as the only thing that holds it back.
    (cpu_dir / "cpu.shares").write_text("262144")
    parent_shares.write_text("262144")
    try:
        await anyio.sleep(0.3)  # let both loops run
        throttled0 = _keyed(cpu_dir / "cpu.stat")["nr_throttled"]
        used0, wall0 = cgroup.cpu_usage_ns(), time.monotonic_ns()
        await anyio.sleep(3)
        used1, wall1 = cgroup.cpu_usage_ns(), time.monotonic_ns()
        throttled1 = _keyed(cpu_dir / "cpu.stat")["nr_throttled"]
    finally:
        parent_shares.write_text(saved)
    ratio = (used1 - used0) / (wall1 - wall0)  # CPU seconds per wall second, from the cgroup's own counter
    assert abs(ratio - 0.5) <= 0.075, f"the container used {ratio:.3f} CPUs under a 0.5 quota"
    assert throttled1 - throttled0 >= 20, "the quota should have throttled most of the ~30 periods"


def _keyed(path: Path) -> dict[str, int]:
    return {k: int(v) for k, v in (line.split() for line in path.read_text().splitlines())}


# -- lifecycle ----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_pause_freezes_and_resume_thaws(native, namespace):
    counter = "i=0; while :; do i=$((i+1)); echo $i > /tmp/count; sleep 0.05; done"
    seen = []

    async def collect():
        async for event in native.events():
            seen.append(event.action)

    async with anyio.create_task_group() as tg:
        tg.start_soon(collect)
        await anyio.sleep(0.2)
        c = await native.create(spec(namespace, "pause-0", "sh", "-c", counter))
        await native.start(c.id)
        count = Path(f"/proc/{(await native.inspect(c.id)).pid}/root/tmp/count")
        await until(lambda: anyio.to_thread.run_sync(lambda: count.exists() and int(count.read_text() or 0) > 2))
        await native.pause(c.id)
        assert (await native.inspect(c.id)).state is State.PAUSED
        assert Path(f"/sys/fs/cgroup/freezer/orchestr/{c.id}/freezer.state").read_text().strip() == "FROZEN"
        frozen_at = count.read_text()
        await anyio.sleep(0.5)
        assert count.read_text() == frozen_at
        with pytest.raises(Conflict):
            await native.exec(c.id, ["true"])
        with pytest.raises(Conflict):
            await native.pause(c.id)
        await native.resume(c.id)
        assert (await native.inspect(c.id)).state is State.RUNNING
        await until(lambda: anyio.to_thread.run_sync(lambda: count.read_text() != frozen_at), what="the counter moving")
        await native.stop(c.id, timeout=0.5)
        await native.delete(c.id)
        await anyio.sleep(0.3)
        tg.cancel_scope.cancel()
    assert seen == ["create", "start", "pause", "unpause", "stop", "die", "destroy"]


@pytest.mark.anyio
async def test_events_begin_at_the_call_not_at_the_first_iteration(native, namespace):
    seen = []
    async with contextlib.aclosing(native.events()) as events:  # subscribed here, before anything happens
        c = await native.create(spec(namespace, "ev-0", "sh", "-c", "exit 4"))
        await native.start(c.id)
        with anyio.fail_after(30):
            async for event in events:
                if event.id == c.id:
                    seen.append(event)
                    if event.action is EventAction.DIE:
                        break
    assert [e.action for e in seen] == [EventAction.CREATE, EventAction.START, EventAction.DIE]
    assert seen[-1].exit_code == 4 and all(isinstance(e.action, EventAction) for e in seen)
    await native.delete(c.id)


@pytest.mark.anyio
async def test_exit_codes_stop_signals_and_init(native, namespace):
    code, _, _ = await run(native, spec(namespace, "exit-0", "sh", "-c", "exit 3"))
    assert code == 3
    with pytest.raises(RuntimeFailure, match='"no-such-cmd": executable file not found'):
        c = await native.create(spec(namespace, "exit-1", "no-such-cmd"))
        await native.start(c.id)
    # pid 1 ignores SIGTERM without a handler: stop falls back to SIGKILL after the grace period
    plain = await native.create(spec(namespace, "exit-2", "sleep", "300"))
    await native.start(plain.id)
    await native.stop(plain.id, timeout=0.3)
    assert (await native.inspect(plain.id)).exit_code == 137
    # with init, SIGTERM reaches the command, and orphans are reaped
    script = "(sleep 0.1 &); (sleep 0.1 &); exec sleep 300"
    inited = await native.create(spec(namespace, "exit-3", "sh", "-c", script, init=True))
    await native.start(inited.id)
    await anyio.sleep(0.2)

    async def no_zombies():
        r = await native.exec(inited.id, ["ps", "-o", "stat,comm"])
        return r.exit_code == 0 and " Z" not in r.stdout.decode() and b"sleep" in r.stdout

    await until(no_zombies, what="orphans reaped by init")
    await native.stop(inited.id, timeout=30)
    assert (await native.inspect(inited.id)).exit_code == 143
    await native.stop(inited.id)  # stopping a stopped container is a no-op
    with pytest.raises(Conflict):
        await native.create(spec(namespace, "exit-3", "true"))


@pytest.mark.anyio
async def test_exec_runs_in_the_container_with_its_env_and_user(native, namespace):
    c = await native.create(spec(namespace, "exec-0", "sh", "-c", "echo made > /tmp/file; exec sleep 300",
                                 env={"GREETING": "hello"}))
    await native.start(c.id)
    await until(lambda: _exec_ok(native, c.id), what="the container writing /tmp/file")
    r = await native.exec(c.id, ["sh", "-c", "echo $GREETING $EXTRA; cat /tmp/file; id -u; pwd; ps -o pid,comm"],
                          env={"EXTRA": "there"}, user="app", workdir="/home/app")
    out = r.stdout.decode().splitlines()
    assert r.exit_code == 0, r.stderr
    assert out[:4] == ["hello there", "made", "1000", "/home/app"]
    assert any(line.split() == ["1", "sleep"] for line in out[4:])
    r = await native.exec(c.id, ["sh", "-c", "echo oops >&2; exit 7"])
    assert (r.exit_code, r.stdout, r.stderr) == (7, b"", b"oops\n")
    r = await native.exec(c.id, ["no-such-cmd"])
    assert r.exit_code == 127 and b"executable file not found" in r.stderr
    r = await native.exec(c.id, ["id"], user="nobody-here")
    assert r.exit_code != 0 and b"unable to find user nobody-here" in r.stderr


@pytest.mark.anyio
async def test_exec_output_is_bounded_or_streamed(native, namespace):
    c = await native.create(spec(namespace, "exec-1", "sleep", "300"))
    await native.start(c.id)
    # more than the default limit of each stream is dropped and counted, not kept
    flood = f"head -c {EXEC_OUTPUT_LIMIT + 12345} /dev/zero; echo oops >&2"
    r = await native.exec(c.id, ["sh", "-c", flood])
    assert (r.exit_code, len(r.stdout), r.stdout_dropped, r.stderr, r.stderr_dropped) == \
        (0, EXEC_OUTPUT_LIMIT, 12345, b"oops\n", 0)
    r = await native.exec(c.id, ["sh", "-c", "echo 0123456789; echo abc >&2"], output_limit=4)
    assert (r.stdout, r.stdout_dropped, r.stderr, r.stderr_dropped) == (b"0123", 7, b"abc\n", 0) and r.truncated
    # or handed on as it comes, and nothing kept
    got = []
    r = await native.exec(c.id, ["sh", "-c", "echo one; echo two >&2; exit 3"], output=got.append)
    assert r == ExecResult(3, b"", b"")
    assert sorted((x.stream, x.data) for x in got) == [("stderr", b"two\n"), ("stdout", b"one\n")]


@pytest.mark.anyio
async def test_exec_past_its_timeout_is_killed_with_what_it_started(native, namespace):
    c = await native.create(spec(namespace, "slow-0", "sleep", "300"))
    await native.start(c.id)
    with pytest.raises(Timeout, match="slow-0: sh ran past its 0.5s deadline and was killed") as raised:
        await native.exec(c.id, ["sh", "-c", "sleep 777; echo never"], timeout=0.5)
    assert raised.value.container == c.id and raised.value.retryable
    left = await native.exec(c.id, ["ps", "-o", "args"])
    assert b"777" not in left.stdout, left.stdout
    done = await native.exec(c.id, ["sh", "-c", "echo in time; exit 3"], timeout=60)
    assert (done.exit_code, done.stdout) == (3, b"in time\n")
    await native.delete(c.id, force=True)


@pytest.mark.anyio
async def test_signal_reaches_the_container_which_keeps_running(native, namespace):
    c = await native.create(spec(namespace, "hup-0", "sh", "-c",
                                 "trap 'echo got HUP' HUP; echo ready; while :; do sleep 0.1; done"))
    with pytest.raises(Conflict, match="created"):
        await native.signal(c.id, "HUP")
    await native.start(c.id)

    async def said(what: bytes) -> bool:
        return what in [line.data async for line in native.logs(c.id)]

    async def told() -> bool:
        return await said(b"got HUP\n")

    # a HUP before the shell has set its trap ends it: wait until it has
    await until(lambda: said(b"ready\n"), what="the trap set")
    await native.signal(c.id, "SIGHUP")
    await until(told, what="the trap's output")
    assert (await native.inspect(c.id)).state is State.RUNNING
    with pytest.raises(TerminalFailure, match="unknown signal 'SIGNOPE'"):
        await native.signal(c.id, "SIGNOPE")
    await native.pause(c.id)
    with pytest.raises(Conflict, match="paused"):
        await native.signal(c.id, "HUP")
    await native.delete(c.id, force=True)


@pytest.mark.anyio
async def test_stats_sample_the_containers_cgroup(native, namespace):
    s = spec(namespace, "stat-0", "sh", "-c", "x=$(head -c 3000000 /dev/zero | tr '\\0' a); sleep 300 & sleep 300 & wait",
             resources=Resources(memory=64 << 20, pids=50))
    c = await native.create(s)
    with pytest.raises(Conflict, match="created"):
        await native.stats(c.id)
    await native.start(c.id)

    async def three() -> bool:  # the shell and its two sleeps
        return (await native.stats(c.id)).pids == 3

    await until(three, what="three processes")
    first = await native.stats(c.id)
    assert first.memory_limit == 64 << 20 and 0 < first.memory <= 64 << 20
    assert first.cpu_seconds is not None and first.block_read is not None and first.block_write is not None
    assert first.net_rx is None and first.net_tx is None  # network none: no link of its own to count
    assert first.time
    await native.pause(c.id)  # a frozen cgroup is still counted
    paused = await native.stats(c.id)
    assert paused.pids == 3 and paused.cpu_seconds >= first.cpu_seconds
    await native.stop(c.id, timeout=0)
    with pytest.raises(Conflict, match="exited"):
        await native.stats(c.id)

    free = await native.create(spec(namespace, "stat-1", "sleep", "300"))
    await native.start(free.id)
    assert (await native.stats(free.id)).memory_limit is None
    for x in (c, free):
        await native.delete(x.id, force=True)


@pytest.mark.anyio
async def test_update_changes_limits_in_place_and_for_later_starts(native, namespace, state_dir):
    c = await native.create(spec(namespace, "grow-0", "sleep", "300",
                                 resources=Resources(cpus=0.5, memory=32 << 20, pids=20)))
    await native.start(c.id)
    memory = Path(f"/sys/fs/cgroup/memory/orchestr/{c.id}")
    # above the memory+swap limit the kernel holds: that one has to move first
    await native.update(c.id, Resources(memory=64 << 20))
    assert (memory / "memory.limit_in_bytes").read_text().strip() == str(64 << 20)
    if (memory / "memory.memsw.limit_in_bytes").exists():
        assert (memory / "memory.memsw.limit_in_bytes").read_text().strip() == str(64 << 20)
    assert (await native.stats(c.id)).memory_limit == 64 << 20
    await native.update(c.id, Resources(memory=16 << 20, pids=40))
    assert Path(f"/sys/fs/cgroup/pids/orchestr/{c.id}/pids.max").read_text().strip() == "40"
    assert (memory / "memory.limit_in_bytes").read_text().strip() == str(16 << 20)
    config = json.loads((state_dir / "native" / "containers" / c.id / "config.json").read_text())
    assert config["resources"] == {"cpus": 0.5, "memory": 16 << 20, "pids": 40}  # cpus was not given: it stays
    await native.delete(c.id, force=True)


@pytest.mark.anyio
async def test_a_limit_the_kernel_refuses_names_the_file_and_the_value(native, namespace, state_dir):
    c = await native.create(spec(namespace, "tight-0", "sleep", "300", resources=Resources(memory=32 << 20)))
    await native.start(c.id)
    record = state_dir / "native" / "containers" / c.id / "config.json"
    before = record.read_text()
    # below what the running container uses: the kernel cannot reclaim enough and answers EBUSY (on a host with
    # swap it may swap the rest out and refuse the memory+swap limit instead)
    with pytest.raises(RuntimeFailure) as busy:
        await native.update(c.id, Resources(memory=4096))
    memory = f"/sys/fs/cgroup/memory/orchestr/{c.id}/memory"
    assert re.fullmatch(f"container tight-0: cannot update its limits: cannot write 4096 to {re.escape(memory)}"
                        r"\.(memsw\.)?limit_in_bytes: Device or resource busy", str(busy.value)), busy.value
    with pytest.raises(RuntimeFailure) as invalid:  # pids.max takes "max" or a count
        await native.update(c.id, Resources(pids=-1))
    assert str(invalid.value) == ("container tight-0: cannot update its limits: cannot write -1 to "
                                  f"/sys/fs/cgroup/pids/orchestr/{c.id}/pids.max: Invalid argument")
    assert record.read_text() == before and (await native.inspect(c.id)).state is State.RUNNING
    await native.delete(c.id, force=True)


@pytest.mark.anyio
async def test_a_container_recorded_by_an_older_orchestr_starts_and_updates_with_its_limits(native, namespace,
                                                                                              state_dir):
    c = await native.create(spec(namespace, "older-0", "sleep", "300", resources=Resources(memory=32 << 20, pids=20)))
    record = state_dir / "native" / "containers" / c.id / "config.json"
    config = json.loads(record.read_text())
    config["limits"] = config.pop("resources")  # config.json as orchestr wrote it before limits were Resources
    record.write_text(json.dumps(config))
    native.cgroup(c.id).remove()  # as after a reboot: the start makes it again, from the record
    await native.start(c.id)
    assert (await native.inspect(c.id)).state is State.RUNNING
    assert Path(f"/sys/fs/cgroup/memory/orchestr/{c.id}/memory.limit_in_bytes").read_text().strip() == str(32 << 20)
    assert Path(f"/sys/fs/cgroup/pids/orchestr/{c.id}/pids.max").read_text().strip() == "20"
    await native.update(c.id, Resources(pids=30))
    config = json.loads(record.read_text())
    assert "limits" not in config and config["resources"] == {"cpus": None, "memory": 32 << 20, "pids": 30}
    await native.delete(c.id, force=True)


async def _exec_ok(runtime, id) -> bool:
    return (await runtime.exec(id, ["test", "-f", "/tmp/file"])).exit_code == 0


@pytest.mark.anyio
async def test_logs_rotate_and_stay_readable_after_exit(native, namespace, state_dir):
    script = "i=1; while [ $i -le 300 ]; do echo line $i; i=$((i+1)); done; echo to-stderr >&2"
    code, out, err = await run(native, spec(namespace, "logs-0", "sh", "-c", script))
    assert code == 0 and err == "to-stderr\n"
    (c,) = await native.list(namespace)
    files = sorted(p.name for p in (state_dir / "native" / "containers" / c.id).glob("container.log*"))
    assert files == ["container.log", "container.log.1", "container.log.2"]  # 4 KiB x 3, the rest rotated away
    lines = out.splitlines()
    assert 30 < len(lines) < 300 and lines[-1] == "line 300"
    first = int(lines[0].split()[1])
    assert lines == [f"line {i}" for i in range(first, 301)]
    last = [line async for line in native.logs(c.id, tail=2)]
    assert [(x.stream, x.data) for x in last] == [("stdout", b"line 300\n"), ("stderr", b"to-stderr\n")]
    assert all(x.time and x.time.endswith("Z") for x in last)


@pytest.mark.anyio
async def test_a_flood_is_logged_whole_and_in_order_though_its_reads_are_paced(namespace, state_dir, image_layers):
    # each full read of a stream (8 KiB) makes it wait a millisecond before the next: about 40 such pauses here
    roomy = Containers(Config(state_dir=state_dir), LocalStore(image_layers), log_max_size=1 << 23)
    c = await roomy.create(spec(namespace, "flood-0", "sh", "-c", "seq 1 60000; echo done >&2"))
    try:
        await roomy.start(c.id)
        with anyio.fail_after(60):
            assert await roomy.wait(c.id) == 0
        logged = [line async for line in roomy.logs(c.id)]
        assert [x.data for x in logged if x.stream == "stdout"] == [f"{i}\n".encode() for i in range(1, 60001)]
        assert [x.data for x in logged if x.stream == "stderr"] == [b"done\n"]
    finally:
        await roomy.delete(c.id, force=True)


@pytest.mark.anyio
async def test_logs_follow_streams_until_exit(native, namespace):
    c = await native.create(spec(namespace, "follow-0", "sh", "-c", "for i in 1 2 3 4 5; do echo $i; sleep 0.1; done"))
    await native.start(c.id)
    got = []
    with anyio.fail_after(20):
        async for line in native.logs(c.id, follow=True):
            got.append(line.data)
    assert got == [b"1\n", b"2\n", b"3\n", b"4\n", b"5\n"]


@pytest.mark.anyio
async def test_logs_follow_of_a_container_never_started_ends_with_nothing(native, namespace):
    c = await native.create(spec(namespace, "unstarted-0", "echo", "never"))
    with anyio.fail_after(20):
        assert [line async for line in native.logs(c.id, follow=True)] == []
    await native.delete(c.id)


@pytest.mark.anyio
async def test_restart_policy_always_restarts_until_stopped(native, namespace):
    c = await native.create(spec(namespace, "always-0", "sh", "-c", "echo run; exit 3", restart_policy=RestartPolicy.ALWAYS))
    await native.start(c.id)

    async def three_runs():
        return len([x async for x in native.logs(c.id)]) >= 3

    await until(three_runs, what="three runs")
    await native.stop(c.id, timeout=1)
    runs = len([x async for x in native.logs(c.id)])
    await anyio.sleep(1)  # longer than the backoff at this point: a restart would show up
    after = await native.inspect(c.id)
    assert after.state is State.EXITED and after.exit_code in (3, 137)
    assert len([x async for x in native.logs(c.id)]) == runs


# -- supervision --------------------------------------------------------------------------

_ORPHAN = """
import asyncio, sys
sys.path[:0] = [{plugins!r}, {scripts!r}]
from pathlib import Path
from orchestr.config import Config
from orchestr.model import ContainerSpec, RestartPolicy
from orchestr_native.containers import Containers

class Store:
    def resolve(self, ref): return "sha256:" + "1" * 64
    def image_config(self, ref): return {{"config": {{"Env": ["PATH=/bin"], "Cmd": ["sh"]}}}}
    def layer_paths(self, ref): return [Path({layer!r})]

async def main():
    runtime = Containers(Config(state_dir=Path({state!r})), Store())
    ids = []
    for name, cmd in (("long", ("sleep", "300")), ("short", ("sh", "-c", "sleep 1; exit 7"))):
        c = await runtime.create(ContainerSpec(name=name, namespace={ns!r}, image="x", command=cmd,
                                               network="none", restart_policy=RestartPolicy.NEVER))
        await runtime.start(c.id)
        ids.append(c.id)
    print(*ids, flush=True)
    await asyncio.sleep(300)

asyncio.run(main())
"""


@pytest.mark.anyio
async def test_containers_outlive_a_killed_orchestr_and_their_exit_is_recorded(native, namespace, state_dir, image_layers):
    script = _ORPHAN.format(plugins=str(PLUGINS), scripts=str(PLUGINS.parent / "scripts"), layer=str(image_layers[IMAGE][0]),
                            state=str(state_dir), ns=namespace)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        long_id, short_id = proc.stdout.readline().split()
    finally:
        proc.kill()
        proc.wait()
    long_c = await native.inspect(long_id)
    assert long_c.state is State.RUNNING and Path(f"/proc/{long_c.pid}").exists()
    # the short one exits after its starter is gone: only its monitor is there to record it
    with anyio.fail_after(20):
        while (await native.inspect(short_id)).state is not State.EXITED:
            await anyio.sleep(0.1)
    short_c = await native.inspect(short_id)
    assert short_c.exit_code == 7 and short_c.finished_at
    assert (await native.inspect(long_id)).state is State.RUNNING
    assert [c.id for c in await native.reattach()] == [long_id]


@pytest.mark.anyio
async def test_reattach_ends_containers_whose_supervisor_died(native, namespace, state_dir):
    c = await native.create(spec(namespace, "stale-0", "sleep", "300"))
    await native.start(c.id)
    # both of its processes: as after a reboot, nothing is left to take the container over
    pids = native.supervisor_pids()
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    for pid in pids:
        await until(lambda: _gone(pid), what="the supervisor's death")
    assert await native.reattach() == []
    after = await native.inspect(c.id)
    assert after.state is State.EXITED and after.exit_code == 255
    assert cgroups.manager(c.id).procs() == []


async def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_bytes().rpartition(b")")[2].split()[0] == b"Z"
    except FileNotFoundError:
        return True


def _pss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    raise AssertionError(f"no Pss in smaps_rollup of {pid}")


@pytest.mark.anyio
async def test_supervision_costs_at_most_2mb_pss_per_container(native, namespace, state_dir):
    for i in range(10):
        c = await native.create(spec(namespace, f"pss-{i}", "sleep", "300"))
        await native.start(c.id)
    await anyio.sleep(0.5)
    pids = native.supervisor_pids()
    assert len(pids) == 2  # the keeper and its worker
    # the leak check of the fixture sees what runs now: the supervisor, the containers and their cgroups
    ids = _created_ids(state_dir)
    running = _processes(str(state_dir), ids)
    assert all(any(line.startswith(f"{pid} ") for line in running) for pid in pids) and len(running) >= 12
    assert len(_cgroup_dirs(ids)) == 10 * 6  # cpu, cpuacct, memory, pids, freezer, blkio
    per_container = sum(_pss_kb(pid) for pid in pids) / 10
    print(f"supervision PSS per running container (10 running): {per_container:.0f} kB")
    assert per_container <= 2048


# -- supervision under attack: a hostile image or container, a full disk, a crash ---------

COUNT = "i=0; while [ $i -lt {n} ]; do i=$((i+1)); echo $i; sleep 0.02; done; exit {code}"


async def _stdout(runtime: Containers, id: str) -> list[bytes]:
    return [x.data async for x in runtime.logs(id) if x.stream == "stdout"]


def _numbers(n: int) -> list[bytes]:
    return [f"{i}\n".encode() for i in range(1, n + 1)]


@pytest.mark.anyio
async def test_a_fifo_for_etc_passwd_fails_its_start_and_holds_up_no_one(native, namespace):
    counter = await native.create(spec(namespace, "count-0", "sh", "-c", COUNT.format(n=50, code=4)))
    await native.start(counter.id)
    # made a FIFO by the container itself, in its upper layer, before its restart
    restarting = await native.create(spec(namespace, "fifo-0", "sh", "-c", "rm /etc/passwd; mkfifo /etc/passwd; exit 1",
                                          restart_policy=RestartPolicy.ALWAYS))
    await native.start(restarting.id)
    # made a FIFO by the image
    hostile = await native.create(spec(namespace, "fifo-1", "true", image=FIFO_PASSWD_IMAGE))
    with anyio.fail_after(30), pytest.raises(RuntimeFailure) as info:
        await native.start(hostile.id)
    assert "/etc/passwd" in str(info.value) and "\n" not in str(info.value)
    assert (await native.inspect(hostile.id)).state is State.EXITED

    # the supervisor went on meanwhile: the other container's output is all logged, its exit recorded
    with anyio.fail_after(30):
        assert await native.wait(counter.id) == 4
    assert await _stdout(native, counter.id) == _numbers(50)

    async def restart_refused():
        return [x.data async for x in native.logs(restarting.id) if b"/etc/passwd" in x.data]

    refusals = await until(restart_refused, what="the restart to be refused")
    assert refusals[0].count(b"\n") == 1
    await native.stop(restarting.id, timeout=1)


@pytest.mark.anyio
async def test_exec_into_a_container_whose_etc_passwd_became_a_fifo_fails_with_one_line(native, namespace):
    c = await native.create(spec(namespace, "fifo-2", "sleep", "300"))
    await native.start(c.id)
    made = await native.exec(c.id, ["sh", "-c", "rm /etc/passwd && mkfifo /etc/passwd"])
    assert made.exit_code == 0, made.stderr
    with anyio.fail_after(30):
        done = await native.exec(c.id, ["true"])
    assert done.exit_code == 126 and done.stderr.count(b"\n") == 1 and b"/etc/passwd" in done.stderr, done


@pytest.mark.anyio
async def test_a_start_that_hangs_before_exec_is_given_up_and_holds_up_no_one(native, namespace, state_dir,
                                                                              image_layers):
    impatient = Containers(Config(state_dir=state_dir), LocalStore(image_layers), start_timeout=2.0)
    hung = await impatient.create(spec(namespace, "hung-0", "true"))
    cgroup = cgroups.manager(hung.id)
    cgroup.freeze()  # the container's first process freezes as it joins its cgroup, before it can exec
    errors = []

    async def start_hung():
        try:
            await impatient.start(hung.id)
        except RuntimeFailure as e:
            errors.append(str(e))

    async with anyio.create_task_group() as tg:
        tg.start_soon(start_hung)
        await until(lambda: anyio.to_thread.run_sync(cgroup.procs), what="the hung start's process")
        # while that start hangs, another container starts, and its output and exit are recorded
        counter = await native.create(spec(namespace, "count-1", "sh", "-c", COUNT.format(n=20, code=4)))
        with anyio.fail_after(30):
            await native.start(counter.id)
            assert await native.wait(counter.id) == 4
        assert await _stdout(native, counter.id) == _numbers(20)
    assert errors == ["container hung-0: its first process did not start within 2s"]
    assert cgroup.procs() == [] and not cgroup.frozen()
    assert (await native.inspect(hung.id)).state is State.EXITED


@pytest.mark.anyio
async def test_a_full_disk_drops_log_lines_and_ends_no_container(native, namespace, state_dir, image_layers):
    containers = state_dir / "native" / "containers"
    containers.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "orchestr-test-full", str(containers)], check=True)
    roomy = Containers(Config(state_dir=state_dir), LocalStore(image_layers), log_max_size=1 << 20)  # no rotation
    try:
        count = "i=0; while [ ! -f /stop ]; do i=$((i+1)); echo $i; echo $i > /run/count; sleep 0.01; done; exit 5"
        counter = await roomy.create(spec(namespace, "count-2", "sh", "-c", count, volumes=(Volume("tmpfs", "/run"),)))
        fill = "until [ -f /go ]; do sleep 0.01; done; dd if=/dev/zero of=/fill bs=64k; exec sleep 300"
        filler = await roomy.create(spec(namespace, "fill-0", "sh", "-c", fill))
        wait = "until [ -f /stop ]; do sleep 0.01; done; exit 6"
        late = await roomy.create(spec(namespace, "late-0", "sh", "-c", wait))
        await roomy.start(counter.id)
        counted = Path(f"/proc/{(await roomy.inspect(counter.id)).pid}/root/run/count")
        await roomy.start(filler.id)
        assert (await roomy.exec(filler.id, ["touch", "/go"])).exit_code == 0
        await until(lambda: anyio.to_thread.run_sync(lambda: os.statvfs(containers).f_bavail == 0), what="a full disk")

        # the counter goes on while its lines cannot be logged, and a start whose records cannot be written works
        full_at = int(counted.read_text())
        await until(lambda: anyio.to_thread.run_sync(lambda: int(counted.read_text() or 0) > full_at + 200),
                    timeout=30, what="the counter going on")
        await roomy.start(late.id)
        assert cgroups.manager(late.id).procs()  # it runs, though no record says so yet

        # space comes back: the lines dropped meanwhile are counted in the state and said so in the log
        freed = await roomy.exec(filler.id, ["rm", "/fill"])
        assert freed.exit_code == 0, freed.stderr
        await until(lambda: _dropped(roomy, counter.id), what="the dropped lines to be reported")

        async def late_recorded():
            return (await roomy.inspect(late.id)).state is State.RUNNING

        await until(late_recorded, what="the late start to be recorded")
        for c, code in ((counter, 5), (late, 6)):
            assert (await roomy.exec(c.id, ["touch", "/stop"])).exit_code == 0
            with anyio.fail_after(30):
                assert await roomy.wait(c.id) == code
        lines = [x async for x in roomy.logs(counter.id)]
        numbers = [int(x.data) for x in lines if x.stream == "stdout"]
        notices = [x for x in lines if x.stream == "stderr"]
        dropped = (await roomy.inspect(counter.id)).log_lines_dropped
        assert numbers == sorted(numbers) and numbers[0] == 1 and dropped > 0
        assert numbers[-1] - len(numbers) == dropped  # every line is either in the log or counted
        assert [x.data for x in notices] == [f"orchestr: {dropped} lines of output were dropped: "
                                             "No space left on device\n".encode()]
        assert (await roomy.inspect(filler.id)).state is State.RUNNING
    finally:
        subprocess.run(["mount", "-o", "remount,size=64m", str(containers)], check=True)  # room to record the ends
        try:
            for c in await roomy.list():
                await roomy.delete(c.id, force=True)
        finally:
            subprocess.run(["umount", "-l", str(containers)], check=True)


async def _dropped(runtime: Containers, id: str) -> int:
    return (await runtime.inspect(id)).log_lines_dropped


RESUMABLE = (
    "[ -f /done ] && exit 0; i=0; while [ $i -lt 20 ]; do i=$((i+1)); echo $i; sleep 0.02; done; "
    "until [ -f /go ]; do sleep 0.02; done; while [ $i -lt 40 ]; do i=$((i+1)); echo $i; sleep 0.02; done; "
    "touch /done; exit 3"
)


@pytest.mark.anyio
async def test_a_killed_supervisor_worker_costs_nothing(native, namespace, state_dir):
    c = await native.create(spec(namespace, "count-3", "sh", "-c", RESUMABLE, restart_policy=RestartPolicy.ON_FAILURE))
    await native.start(c.id)
    before = await native.inspect(c.id)
    keeper, worker = native.supervisor_pids()

    async def counted(n):
        return len(await _stdout(native, c.id)) >= n

    await until(lambda: counted(5), what="the count to begin")
    os.kill(worker, signal.SIGKILL)
    await until(lambda: _gone(worker), what="the worker's death")
    # the keeper starts another worker, which takes the running container over
    await until(lambda: anyio.to_thread.run_sync(lambda: native.supervisor_pids()[1] != worker),
                what="a new worker")
    assert native.supervisor_pids()[0] == keeper
    assert [x.id for x in await native.reattach()] == [c.id]
    await native.start(c.id)  # a start of a running container leaves it alone
    now = await native.inspect(c.id)
    assert now.state is State.RUNNING and now.pid == before.pid and now.started_at == before.started_at
    go = await native.exec(c.id, ["touch", "/go"])
    assert go.exit_code == 0, go.stderr

    # it counts on; its exit with 3 is recorded and restarts it by policy; the second run ends with 0
    async def ended():
        after = await native.inspect(c.id)
        return after.state is State.EXITED and after.exit_code == 0

    await until(ended, timeout=30, what="both runs to end")
    assert await _stdout(native, c.id) == _numbers(40)
    notes = [x.data async for x in native.logs(c.id) if x.stream == "stderr"]
    assert len(notes) == 1 and notes[0].startswith(b"orchestr: supervision resumed after a crash")
    events = [json.loads(line) for line in (state_dir / "native" / "events.jsonl").read_text().splitlines()]
    assert [(e["action"], e.get("exit_code")) for e in events if e["id"] == c.id and e["action"] in ("start", "die")] \
        == [("start", None), ("die", 3), ("start", None), ("die", 0)]


@pytest.mark.anyio
async def test_a_start_under_way_when_the_worker_dies_fails_and_leaves_nothing_behind(native, namespace):
    c = await native.create(spec(namespace, "torn-0", "sh", "-c", "echo hi; exit 5"))
    cgroup = cgroups.manager(c.id)
    cgroup.freeze()  # holds the start before its exec, however long the worker takes to die
    errors = []

    async def start():
        try:
            await native.start(c.id)
        except RuntimeFailure as e:
            errors.append(str(e))

    async with anyio.create_task_group() as tg:
        tg.start_soon(start)
        await until(lambda: anyio.to_thread.run_sync(cgroup.procs), what="the start's process")
        worker = native.supervisor_pids()[-1]
        os.kill(worker, signal.SIGKILL)
    assert len(errors) == 1 and "the supervisor closed the connection" in errors[0]
    # the next worker ended what the start had begun; a new start works
    await until(lambda: anyio.to_thread.run_sync(lambda: not cgroup.procs()), what="the torn start to be ended")
    assert (await native.inspect(c.id)).state is State.CREATED and native.supervisor_pids()[-1] != worker
    await native.start(c.id)
    assert await native.wait(c.id) == 5 and await _stdout(native, c.id) == [b"hi\n"]


@pytest.mark.anyio
async def test_a_killed_keeper_leaves_its_worker_in_charge(native, namespace, state_dir):
    c = await native.create(spec(namespace, "alone-0", "sh", "-c", "until [ -f /stop ]; do sleep 0.02; done; exit 6"))
    await native.start(c.id)
    keeper, worker = native.supervisor_pids()
    os.kill(keeper, signal.SIGKILL)
    await until(lambda: _gone(keeper), what="the keeper's death")

    async def recorded():
        return native.load(c.id)[1]["supervisor"]["pid"] == worker

    await until(recorded, what="the worker to record itself as the supervisor")
    assert (await native.inspect(c.id)).state is State.RUNNING
    assert (await native.exec(c.id, ["touch", "/stop"])).exit_code == 0
    with anyio.fail_after(30):
        assert await native.wait(c.id) == 6
