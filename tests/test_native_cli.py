"""The `orchestr` command end to end on the native runtime, through a subprocess, on the real kernel.

Every test imports the busybox archive into a fresh state dir of its own, then drives the CLI; the fixture
checks before and after each test that nothing of it is left: mounts, cgroups, processes, container records.
"""

from __future__ import annotations

import fcntl
import glob
import json
import os
import pty
import select
import shutil
import signal
import sqlite3
import stat
import struct
import subprocess
import sys
import tempfile
import termios
import time
from collections.abc import Callable
from pathlib import Path

from orchestr.testing import images as mkimage
import pytest

from conftest import TEST_IMAGE
from orchestr_native.network import Network
from orchestr_native.supervisor.client import SupervisorClient

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the native runtime needs root")

ORCHESTR = str(Path(sys.executable).parent / "orchestr")
SLEEP = ["sleep", "3600"]
# Exits at once on SIGTERM (a plain sleep as pid 1 ignores it), for deletes without a spec's grace period.
TERMINABLE = "trap 'exit 3' TERM; sleep 3600 & wait"


def _env(state_dir: Path) -> dict[str, str]:
    return dict(os.environ, ORCHESTR_STATE_DIR=str(state_dir), ORCHESTR_RUNTIME="native")


def orc(*args: str, state_dir: Path, check: bool = False, timeout: float = 60) -> subprocess.CompletedProcess:
    proc = subprocess.run([ORCHESTR, *args], capture_output=True, text=True, env=_env(state_dir), timeout=timeout)
    if check:
        assert proc.returncode == 0, f"orchestr {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def service(name: str, ns: str, *, replicas: int = 1, command: list[str] = SLEEP, network: str = "none",
            extra: str = "") -> str:
    return (
        f"apiVersion: orchestr/v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}}}\n"
        f"spec:\n  image: {TEST_IMAGE}\n  command: {json.dumps(command)}\n  replicas: {replicas}\n"
        f"  network: {network}\n  stopGracePeriod: 1s\n{extra}"
    )


def write(path: Path, *docs: str) -> str:
    path.write_text("---\n".join(docs))
    return str(path)


def get_json(ns: str, state_dir: Path) -> list[dict]:
    return json.loads(orc("get", "-n", ns, "-o", "json", state_dir=state_dir, check=True).stdout)


def by_name(items: list[dict]) -> dict[str, dict]:
    return {c["name"]: c for c in items}


def ids(items: list[dict]) -> dict[str, str]:
    return {c["name"]: c["id"] for c in items}


def until(check: Callable[[], object], what: str, timeout: float = 30):
    """Polls check until it returns something true; fails naming what was awaited."""
    deadline = time.monotonic() + timeout
    while not (result := check()):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)
    return result


# -- what a test may leave behind ---------------------------------------------------------------

def _stat(pid: int) -> list[bytes] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_bytes().rpartition(b")")[2].split()
    except OSError:
        return None


def alive(pid: int) -> bool:
    fields = _stat(pid)
    return fields is not None and fields[0] not in (b"Z", b"X")


def parent(pid: int) -> int:
    fields = _stat(pid)
    assert fields is not None, f"process {pid} is gone"
    return int(fields[1])


def ignored_signals(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigIgn:")), 16)


def cmdline(pid: int | str) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()


def supervisor_pid(state_dir: Path) -> int | None:
    """The supervisor's worker: the parent of the containers it started."""
    reply = SupervisorClient(str(state_dir / "native")).ask({"op": "ping"})
    return reply["pid"] if reply else None


def keeper_pid(state_dir: Path) -> int | None:
    reply = SupervisorClient(str(state_dir / "native")).ask({"op": "ping"})
    return reply["keeper"] if reply else None


def records(state_dir: Path) -> list[str]:
    d = state_dir / "native" / "containers"
    return sorted(os.listdir(d)) if d.exists() else []


def _created(state_dir: Path) -> list[dict]:
    """The create events of every container this state dir ever made, deleted ones included."""
    events = state_dir / "native" / "events.jsonl"
    lines = events.read_text().splitlines() if events.exists() else []
    return [e for e in map(json.loads, lines) if e["action"] == "create"]


def _container_ids(state_dir: Path) -> set[str]:
    return {r for r in records(state_dir) if len(r) == 64} | {e["id"] for e in _created(state_dir)}


def cgroup_dirs(container_ids: set[str]) -> list[str]:
    found = glob.glob("/sys/fs/cgroup/*/orchestr/*") + glob.glob("/sys/fs/cgroup/orchestr/*")
    return sorted(p for p in found if os.path.basename(p) in container_ids)


def cgroup_procs(container_id: str) -> set[int]:
    """Every process in the container's cgroups, in whichever hierarchies the host has."""
    return {int(pid) for d in cgroup_dirs({container_id}) for pid in Path(d, "cgroup.procs").read_text().split()}


def leaks(state_dir: Path, bridges: bool = True) -> list[str]:
    """Mounts, cgroups, bridges (unless bridges is False: a namespace's outlives its containers until the
    namespace is deleted), processes and records the state dir's containers left; its supervisor is allowed."""
    marker = str(state_dir)
    container_ids = _container_ids(state_dir)
    # Root filesystems are mounted under the state dir, network namespaces kept by mounts named by container id;
    # other mounts belong to other state dirs' runs beside these.
    with open("/proc/self/mountinfo") as f:
        found = [f"mount: {line.strip()}" for line in f if marker in line or any(i in line for i in container_ids)]
    found += [f"cgroup: {p}" for p in cgroup_dirs(container_ids)]
    network = Network(state_dir / "native")
    if bridges:
        names = {network.bridge(e["namespace"]) for e in _created(state_dir)}
        found += [f"bridge: {b}" for b in sorted(names) if os.path.exists(f"/sys/class/net/{b}")]
    supervisor = f"host {state_dir / 'native'}"
    for pid in (p for p in os.listdir("/proc") if p.isdigit() and int(p) != os.getpid()):
        try:
            line, groups = cmdline(pid), Path(f"/proc/{pid}/cgroup").read_text()
        except OSError:
            continue
        in_cgroup = any(f"/orchestr/{i}" in groups for i in container_ids)
        if in_cgroup or (marker in line and not line.endswith(supervisor)):
            found.append(f"process: {pid} {line}")
    found += [f"record: {r}" for r in records(state_dir)]
    return found


@pytest.fixture
def ns(namespace, state_dir, busybox_archive):
    """A namespace on a fresh native state dir holding the test image; nothing may be left afterwards."""
    assert leaks(state_dir) == []
    out = orc("images", "import", str(busybox_archive), state_dir=state_dir, check=True).stdout
    assert f"imported {TEST_IMAGE}" in out
    yield namespace
    assert_nothing_left(namespace, state_dir)


def assert_nothing_left(namespace: str, state_dir: Path) -> None:
    """Nothing of the namespace's containers is left once they are deleted, and after `delete --all` not even
    the bridge the native runtime keeps for an empty namespace."""
    deadline = time.monotonic() + 10  # an ended process is gone from /proc only once reaped
    while (left := leaks(state_dir, bridges=False)) and time.monotonic() < deadline:
        time.sleep(0.05)
    orc("delete", "-n", namespace, "--all", state_dir=state_dir)  # the namespace's bridge goes with it
    assert left == []
    assert leaks(state_dir) == []


# -- reconcile ----------------------------------------------------------------------------------

def test_apply_reapply_change_scale_delete(ns, tmp_path, state_dir):
    spec = tmp_path / "app.yaml"
    db = service("db", ns)
    web = service("web", ns, replicas=3, extra="  dependsOn: [db]\n  env: {MODE: one}\n")
    write(spec, db, web)

    out = orc("apply", "-f", str(spec), state_dir=state_dir, check=True).stdout
    assert "4 done, 0 failed, 0 skipped" in out
    done = [line.split()[-1] for line in out.splitlines() if line.strip().startswith("done")]
    assert done[0] == f"{ns}/db-0"  # web waits for its dependency
    first = get_json(ns, state_dir)
    assert sorted(c["name"] for c in first) == ["db-0", "web-0", "web-1", "web-2"]
    assert all(c["state"] == "running" and c["runtime"] == "native" for c in first)
    supervisor = supervisor_pid(state_dir)
    for c in first:
        assert cmdline(c["pid"]) == "sleep 3600" and parent(c["pid"]) == supervisor
        assert ignored_signals(c["pid"]) == 0  # nothing of the supervisor's signal handling reaches the command
    assert len(records(state_dir)) == 4

    # unchanged: nothing to do, same containers
    out = orc("apply", "-f", str(spec), state_dir=state_dir, check=True).stdout
    assert "nothing to do" in out
    assert get_json(ns, state_dir) == first
    assert orc("diff", "-f", str(spec), state_dir=state_dir).returncode == 0

    # one service changed: only its containers are replaced
    write(spec, db, web.replace("MODE: one", "MODE: two"))
    assert orc("diff", "-f", str(spec), state_dir=state_dir).returncode == 1
    out = orc("apply", "-f", str(spec), state_dir=state_dir, check=True).stdout
    assert "6 done, 0 failed" in out and "db-0" not in out  # a rolling update: 3 creates, 3 deletes
    second = {f"{c['service']}-{c['replica']}": c for c in get_json(ns, state_dir)}
    assert second["db-0"] == by_name(first)["db-0"]
    for n in ("web-0", "web-1", "web-2"):
        assert second[n]["id"] != ids(first)[n] and second[n]["state"] == "running"
    assert all(not alive(c["pid"]) for c in first if c["service"] == "web")
    exec_env = orc("exec", "-n", ns, second["web-1"]["name"], "--", "sh", "-c", "echo $MODE", state_dir=state_dir,
                   check=True)
    assert exec_env.stdout == "two\n"
    assert len(records(state_dir)) == 4

    # scaling down removes the highest replicas
    write(spec, db, web.replace("MODE: one", "MODE: two").replace("replicas: 3", "replicas: 1"))
    out = orc("apply", "-f", str(spec), state_dir=state_dir, check=True).stdout
    assert "2 done" in out and "web-1" in out and "web-2" in out
    third = {f"{c['service']}-{c['replica']}": c["id"] for c in get_json(ns, state_dir)}
    assert third == {"db-0": second["db-0"]["id"], "web-0": second["web-0"]["id"]}
    assert sorted(records(state_dir)) == sorted(third.values())
    assert not alive(second["web-1"]["pid"]) and not alive(second["web-2"]["pid"])

    orc("delete", "-f", str(spec), state_dir=state_dir, check=True)
    assert get_json(ns, state_dir) == []
    assert records(state_dir) == []


def test_exec_streams_its_output_as_it_comes(ns, tmp_path, state_dir):
    spec = write(tmp_path / "app.yaml", service("web", ns))
    orc("apply", "-f", spec, state_dir=state_dir, check=True)
    script = "echo first; until [ -f /tmp/go ]; do sleep 0.05; done; echo second; echo done >&2; exit 4"
    proc = subprocess.Popen([ORCHESTR, "exec", "-n", ns, "web-0", "--", "sh", "-c", script], env=_env(state_dir),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        # the command waits for /tmp/go, made only once its first line has come through
        assert select.select([proc.stdout], [], [], 30)[0], "no output before the command ended"
        assert proc.stdout.readline() == b"first\n"
        orc("exec", "-n", ns, "web-0", "--", "touch", "/tmp/go", state_dir=state_dir, check=True)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
        proc.wait()
    assert (out, err, proc.returncode) == (b"second\n", b"done\n", 4)
    orc("delete", "-f", spec, state_dir=state_dir, check=True)


# -- supervision --------------------------------------------------------------------------------

def test_a_runtime_that_is_down_stands_in_the_way_of_its_own_namespaces_only(ns, tmp_path, state_dir):
    from orchestr.state import Store

    Store(state_dir).note_runtimes(["docker"], [f"{ns}-d"])  # docker once held containers of another namespace
    env = dict(_env(state_dir), DOCKER_HOST="unix:///nonexistent/docker.sock")

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([ORCHESTR, *args], capture_output=True, text=True, env=env, timeout=60)

    spec = write(tmp_path / "a.yaml", service("a", ns, command=["sh", "-c", TERMINABLE]))
    up = run("apply", "-f", spec)
    assert up.returncode == 0, up.stderr
    listed = run("get", "-A", "-o", "json")
    assert listed.returncode == 0 and [c["name"] for c in json.loads(listed.stdout)] == ["a-0"]
    assert listed.stderr.startswith("orchestr: warning: runtime docker:") and listed.stderr.count("\n") == 1
    other = run("delete", "-n", f"{ns}-d", "--all")
    assert other.returncode != 0 and other.stderr.count("\n") == 1 and "docker" in other.stderr.lower()
    assert run("delete", "-f", spec).returncode == 0


def test_a_killed_apply_is_finished_by_the_next(ns, tmp_path, state_dir):
    # web waits for db: killed when db is done, the apply has not finished web (its starts run at once)
    spec = write(tmp_path / "app.yaml", service("db", ns),
                 service("web", ns, replicas=6, extra="  dependsOn: [db]\n"))
    proc = subprocess.Popen([ORCHESTR, "apply", "-f", spec], env=_env(state_dir), stdout=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if line.strip().startswith("done"):
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    proc.stdout.close()
    # what a create killed before it wrote the container's config leaves behind
    (state_dir / "native" / "containers" / ("0" * 64) / "rootfs").mkdir(parents=True)

    out = orc("apply", "-f", spec, state_dir=state_dir, check=True).stdout
    assert " 0 failed" in out.splitlines()[-1]
    containers = get_json(ns, state_dir)
    assert sorted(c["name"] for c in containers) == ["db-0", *(f"web-{i}" for i in range(6))]
    assert {c["state"] for c in containers} == {"running"}
    assert all(alive(c["pid"]) for c in containers)
    assert sorted(records(state_dir)) == sorted(c["id"] for c in containers)  # no half-made container is left
    assert "nothing to do" in orc("apply", "-f", spec, state_dir=state_dir, check=True).stdout
    orc("delete", "-f", spec, state_dir=state_dir, check=True)
    assert records(state_dir) == []


def test_containers_outlive_orchestr_and_an_exit_without_it_is_recorded(ns, tmp_path, state_dir):
    spec = write(tmp_path / "app.yaml", service("long", ns),
                 service("short", ns, command=["sh", "-c", "sleep 1; exit 5"], extra="  restartPolicy: Never\n"))
    orc("apply", "--settle", "0", "-f", spec, state_dir=state_dir, check=True)  # short's exit is for later
    started = by_name(get_json(ns, state_dir))
    long, short = started["long-0"], started["short-0"]
    assert long["state"] == "running" and short["state"] == "running"

    # the containers are children of the supervisor, which outlives the orchestr process that started them
    supervisor = supervisor_pid(state_dir)
    assert supervisor is not None
    assert parent(long["pid"]) == supervisor and parent(short["pid"]) == supervisor
    assert cmdline(supervisor).endswith(f"host {state_dir / 'native'}")

    # short exits while no orchestr process runs: only the supervisor sees it
    until(lambda: not alive(short["pid"]), "short-0 to exit")
    assert alive(long["pid"])
    ended = until(lambda: (c := by_name(get_json(ns, state_dir))["short-0"])["state"] == "exited" and c,
                  "short-0's exit to be recorded")
    assert ended["exitCode"] == 5 and not ended["oomKilled"] and ended["finishedAt"]
    assert by_name(get_json(ns, state_dir))["long-0"] == long

    # restartPolicy Never: the exited container is left as it is
    assert "nothing to do" in orc("apply", "-f", spec, state_dir=state_dir, check=True).stdout
    orc("delete", "-f", spec, state_dir=state_dir, check=True)
    assert not alive(long["pid"])


def test_a_killed_supervisor_worker_changes_nothing(ns, tmp_path, state_dir):
    spec = write(tmp_path / "app.yaml", service("web", ns, replicas=2))
    orc("apply", "-f", spec, state_dir=state_dir, check=True)
    before = get_json(ns, state_dir)
    worker, keeper = supervisor_pid(state_dir), keeper_pid(state_dir)
    assert all(parent(c["pid"]) == worker for c in before) and parent(worker) == keeper
    assert Path(f"/proc/{keeper}/comm").read_text() == "orchestr-keeper\n"
    assert Path(f"/proc/{worker}/comm").read_text() == "orchestr-sup\n"

    os.kill(worker, signal.SIGKILL)
    until(lambda: not alive(worker), "the worker's death")
    # the containers run on, their parent now the keeper, and the next worker looks after them
    assert get_json(ns, state_dir) == before
    assert "nothing to do" in orc("apply", "-f", spec, state_dir=state_dir, check=True).stdout
    assert get_json(ns, state_dir) == before
    assert supervisor_pid(state_dir) not in (None, worker) and keeper_pid(state_dir) == keeper
    assert all(parent(c["pid"]) == keeper for c in before)
    assert orc("exec", "-n", ns, "web-0", "--", "echo", "hi", state_dir=state_dir, check=True).stdout == "hi\n"
    orc("delete", "-f", spec, state_dir=state_dir, check=True)
    assert not any(alive(c["pid"]) for c in before)


def test_a_killed_supervisor_is_cleaned_up_by_the_next_apply(ns, tmp_path, state_dir):
    spec = write(tmp_path / "app.yaml", service("web", ns, replicas=2))
    orc("apply", "-f", spec, state_dir=state_dir, check=True)
    before = by_name(get_json(ns, state_dir))
    supervisor = supervisor_pid(state_dir)
    assert supervisor is not None and all(parent(c["pid"]) == supervisor for c in before.values())

    # both of its processes, the keeper first, so that no new worker is started: what a reboot does
    keeper = keeper_pid(state_dir)
    os.kill(keeper, signal.SIGKILL)
    os.kill(supervisor, signal.SIGKILL)
    until(lambda: not alive(supervisor) and not alive(keeper), "the supervisor's death")
    # unsupervised, the containers count as exited; a stop ends what still runs of one of them
    assert {c["state"] for c in get_json(ns, state_dir)} == {"exited"}
    assert all(alive(c["pid"]) for c in before.values())
    orc("stop", "-n", ns, "web-1", state_dir=state_dir, check=True)
    assert not alive(before["web-1"]["pid"]) and cgroup_procs(before["web-1"]["id"]) == set()
    assert alive(before["web-0"]["pid"])

    out = orc("apply", "-f", spec, state_dir=state_dir, check=True).stdout
    assert "2 done, 0 failed" in out
    after = by_name(get_json(ns, state_dir))
    assert sorted(after) == ["web-0", "web-1"] and {c["state"] for c in after.values()} == {"running"}
    # what the dead supervisor left is ended: no process runs unsupervised beside the new ones
    assert not alive(before["web-0"]["pid"])
    new_supervisor = supervisor_pid(state_dir)
    assert new_supervisor not in (None, supervisor)
    for c in after.values():
        assert parent(c["pid"]) == new_supervisor and cgroup_procs(c["id"]) == {c["pid"]}
    assert sorted(records(state_dir)) == sorted(c["id"] for c in after.values())

    assert "nothing to do" in orc("apply", "-f", spec, state_dir=state_dir, check=True).stdout
    orc("delete", "-f", spec, state_dir=state_dir, check=True)
    assert not any(alive(c["pid"]) for c in after.values())


# -- one-off containers and verbs ---------------------------------------------------------------

def test_run_streams_output_and_exits_with_the_containers_code(ns, state_dir):
    name = f"{ns}-once"
    proc = orc("run", "--rm", "--network", "none", "--name", name, "-n", ns, TEST_IMAGE,
               "sh", "-c", "echo out; echo err >&2; exit 7", state_dir=state_dir)
    assert proc.returncode == 7, proc.stderr
    assert proc.stdout == "out\n" and proc.stderr == "err\n"
    assert get_json(ns, state_dir) == [] and records(state_dir) == []

    detached = orc("run", "-d", "--network", "none", "--name", name, "-n", ns, TEST_IMAGE, "sh", "-c", TERMINABLE,
                   state_dir=state_dir, check=True)
    [c] = get_json(ns, state_dir)
    assert c["id"] == detached.stdout.strip() and c["name"] == name and c["state"] == "running"
    assert records(state_dir) == [c["id"]]
    out = orc("delete", "-n", ns, "--all", state_dir=state_dir, check=True).stdout
    assert "1 done, 0 failed" in out
    assert get_json(ns, state_dir) == [] and not alive(c["pid"])


def test_a_foreground_run_loads_no_event_loop_and_an_interrupt_removes_it(ns, state_dir):
    # main() in a Python process that says afterwards whether asyncio was ever imported
    probe = ("import sys\nfrom orchestr.cli import main\ntry:\n    main()\nexcept SystemExit as e:\n"
             "    print('asyncio' in sys.modules, e.code)\n")
    proc = subprocess.run([sys.executable, "-c", probe, "run", "--rm", "--network", "none", "-n", ns, TEST_IMAGE,
                           "echo", "hi"], capture_output=True, text=True, env=_env(state_dir), timeout=60)
    assert (proc.stdout, proc.stderr) == ("hi\nFalse 0\n", "")

    name = f"{ns}-interrupted"
    run = subprocess.Popen([ORCHESTR, "run", "--rm", "--network", "none", "--name", name, "-n", ns, TEST_IMAGE,
                            *SLEEP], env=_env(state_dir), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    [c] = until(lambda: [c for c in get_json(ns, state_dir) if c["state"] == "running"], "the container to run")
    run.send_signal(signal.SIGINT)
    _, err = run.communicate(timeout=30)
    assert run.returncode == 130, err
    assert get_json(ns, state_dir) == [] and records(state_dir) == [] and not alive(c["pid"])


def test_run_interactive_gives_the_container_this_standard_input(ns, state_dir):
    argv = [ORCHESTR, "run", "--rm", "--network", "none", "-n", ns, TEST_IMAGE, "sh", "-c", "cat; echo done"]
    fed = subprocess.run([*argv[:2], "-i", *argv[2:]], input="to the container\n", capture_output=True,
                         text=True, env=_env(state_dir), timeout=60)
    assert (fed.returncode, fed.stdout, fed.stderr) == (0, "to the container\ndone\n", "")
    unfed = subprocess.run(argv, input="not for it\n", capture_output=True, text=True, env=_env(state_dir), timeout=60)
    assert (unfed.returncode, unfed.stdout) == (0, "done\n")  # without -i, stdin is /dev/null
    # the container reads a pipe the command fills, never the caller's own file: it cannot write to that
    source = Path(state_dir).parent / f"{ns}-stdin.txt"
    source.write_text("host data\n")
    with source.open() as stdin:
        probe = subprocess.run([ORCHESTR, "run", "--rm", "-i", "--network", "none", "-n", ns, TEST_IMAGE, "sh",
                                "-c", "cat; readlink /proc/self/fd/0; echo overwritten 2>/dev/null > /proc/self/fd/0"],
                               stdin=stdin, capture_output=True, text=True, env=_env(state_dir), timeout=60)
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.startswith("host data\npipe:[") and source.read_text() == "host data\n"
    detached = orc("run", "-d", "-i", "-n", ns, TEST_IMAGE, "sh", state_dir=state_dir)
    assert detached.returncode != 0 and "run -d takes no -i or -t" in detached.stderr
    assert detached.stderr.count("\n") == 1 and records(state_dir) == []


def _read_until(fd: int, marker: bytes, timeout: float = 30) -> bytes:
    out, deadline = b"", time.monotonic() + timeout
    while marker not in out:
        if time.monotonic() > deadline:
            pytest.fail(f"no {marker!r} from the terminal within {timeout}s; got {out!r}")
        if select.select([fd], [], [], 0.1)[0]:
            try:
                out += os.read(fd, 4096)
            except OSError:  # EIO: the far end is closed
                break
    return out


def test_run_with_a_terminal_relays_it_keys_size_and_exit_code(ns, state_dir):
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 33, 111, 0, 0))
    run = subprocess.Popen([ORCHESTR, "run", "--rm", "-it", "--network", "none", "-n", ns, TEST_IMAGE, "sh"],
                           stdin=slave, stdout=slave, stderr=slave, env=_env(state_dir), start_new_session=True)
    os.close(slave)
    try:
        _read_until(master, b"/ # ")  # the shell's prompt: the terminal is raw and relayed by now
        os.write(master, b"[ -t 0 ] && echo tty-$((6*7)); stty size\r")
        out = _read_until(master, b"33 111")
        assert b"tty-42" in out
        fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        run.send_signal(signal.SIGWINCH)  # what the terminal sends the foreground process

        def size_inside() -> bool:
            os.write(master, b"stty size\r")
            return b"40 120" in _read_until(master, b"/ # ")  # its output, up to the next prompt

        until(size_inside, "the new window size inside")
        os.write(master, b"exit 3\r")
        assert run.wait(timeout=30) == 3
    finally:
        os.close(master)
        if run.poll() is None:
            run.kill()
    assert records(state_dir) == []
    # input that ends reaches the terminal's end-of-file: `cat` there ends, and so does the run
    piped = subprocess.run([ORCHESTR, "run", "--rm", "-it", "--network", "none", "-n", ns, TEST_IMAGE, "cat"],
                           input="through the terminal\n", capture_output=True, text=True, env=_env(state_dir),
                           timeout=60)
    assert piped.returncode == 0 and "through the terminal" in piped.stdout, piped.stderr
    partial = subprocess.run([ORCHESTR, "run", "--rm", "-it", "--network", "none", "-n", ns, TEST_IMAGE, "cat"],
                             input="no newline", capture_output=True, text=True, env=_env(state_dir), timeout=60)
    assert partial.returncode == 0 and "no newline" in partial.stdout, partial.stderr
    assert records(state_dir) == []


def _freezer_state(pid: int) -> str:
    path = next(line.split(":", 2)[2] for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines()
                if line.split(":")[1] == "freezer")
    return Path(f"/sys/fs/cgroup/freezer{path}/freezer.state").read_text().strip()


def test_container_verbs(ns, tmp_path, state_dir):
    box = service("box", ns, command=["sh", "-c", f"echo hello; echo oops >&2; {TERMINABLE}"],
                  extra="  env: {MODE: spec}\n")
    spec = write(tmp_path / "app.yaml", box)
    orc("apply", "-f", spec, state_dir=state_dir, check=True)
    logs = until(lambda: (p := orc("logs", "-n", ns, "box-0", state_dir=state_dir, check=True)).stdout and p,
                 "box-0's output")
    assert logs.stdout == "hello\n" and logs.stderr == "oops\n"

    ex = orc("exec", "-n", ns, "-e", "FOO=bar", "box-0", "--", "sh", "-c", "echo $MODE $FOO; echo e >&2; exit 3",
             state_dir=state_dir)
    assert (ex.returncode, ex.stdout, ex.stderr) == (3, "spec bar\n", "e\n")

    [running] = get_json(ns, state_dir)
    orc("pause", "-n", ns, "box-0", state_dir=state_dir, check=True)
    assert get_json(ns, state_dir)[0]["state"] == "paused" and _freezer_state(running["pid"]) == "FROZEN"
    orc("unpause", "-n", ns, "box-0", state_dir=state_dir, check=True)
    assert get_json(ns, state_dir)[0]["state"] == "running" and _freezer_state(running["pid"]) == "THAWED"

    orc("stop", "-n", ns, "-t", "1", "box-0", state_dir=state_dir, check=True)
    [stopped] = get_json(ns, state_dir)
    assert stopped["state"] == "exited" and stopped["exitCode"] == 3 and stopped["pid"] is None  # its TERM trap ran
    assert not alive(running["pid"])
    not_running = orc("exec", "-n", ns, "box-0", "--", "true", state_dir=state_dir)
    assert not_running.returncode != 0 and not_running.stderr.count("\n") == 1
    assert "Traceback" not in not_running.stderr
    orc("start", "-n", ns, "box-0", state_dir=state_dir, check=True)
    [restarted] = get_json(ns, state_dir)
    assert restarted["state"] == "running" and restarted["id"] == running["id"] and restarted["pid"] != running["pid"]
    assert alive(restarted["pid"])

    missing = orc("logs", "-n", ns, "nope-0", state_dir=state_dir)
    assert missing.returncode != 0
    assert missing.stderr.count("\n") == 1 and "nope-0" in missing.stderr and "Traceback" not in missing.stderr
    orc("delete", "-n", ns, "--all", state_dir=state_dir, check=True)


def test_memory_limit_from_the_spec_oom_kills(ns, tmp_path, state_dir):
    hog = ["dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"]
    spec = write(tmp_path / "app.yaml", service("hog", ns, command=hog,
                                                extra="  restartPolicy: Never\n  resources: {memory: 16Mi}\n"))
    orc("apply", "--settle", "0", "-f", spec, state_dir=state_dir, check=True)  # unwatched: its end is read below
    c = until(lambda: (c := get_json(ns, state_dir)[0])["state"] == "exited" and c, "the hog to be killed")
    assert c["exitCode"] == 137 and c["oomKilled"] is True
    limits = [Path(d, name).read_text() for d in cgroup_dirs({c["id"]})
              for name in ("memory.limit_in_bytes", "memory.max") if Path(d, name).exists()]  # cgroup v1, v2
    assert [int(v) for v in limits] == [16 << 20]
    assert "exited (137, OOMKilled)" in orc("get", "-n", ns, state_dir=state_dir, check=True).stdout
    orc("delete", "-f", spec, state_dir=state_dir, check=True)


def test_bridge_network_gives_each_replica_an_address_and_leaves_nothing(ns, tmp_path, state_dir):
    once = orc("run", "--rm", "-n", ns, TEST_IMAGE, "ip", "-o", "-4", "addr", "show", "eth0", state_dir=state_dir)
    assert once.returncode == 0 and " inet " in once.stdout, once.stderr  # bridge is run's default network

    spec = write(tmp_path / "app.yaml", service("web", ns, replicas=2, network="bridge",
                                                extra="  ports: [{containerPort: 80, hostIP: 127.0.0.1}]\n"))
    orc("apply", "-f", spec, state_dir=state_dir, check=True)
    web = by_name(get_json(ns, state_dir))
    ips = [web["web-0"]["ip"], web["web-1"]["ip"]]
    assert all(ips) and ips[0] != ips[1]
    # each replica publishes port 80 on a host port picked for it, which get shows
    picked = [web[n]["ports"][0]["hostPort"] for n in ("web-0", "web-1")]
    assert len(set(picked)) == 2 and all(web[n]["ports"][0]["containerPort"] == 80 for n in web)
    wide = orc("get", "-n", ns, "-o", "wide", state_dir=state_dir, check=True).stdout
    assert "PORTS" in wide.splitlines()[0] and f"127.0.0.1:{picked[0]}->80/tcp" in wide
    shown = orc("exec", "-n", ns, "web-0", "--", "ip", "-o", "-4", "addr", "show", "eth0", state_dir=state_dir)
    assert f" inet {ips[0]}/" in shown.stdout
    ping = orc("exec", "-n", ns, "web-0", "--", "ping", "-c", "1", "-W", "5", ips[1], state_dir=state_dir)
    assert ping.returncode == 0, ping.stdout + ping.stderr
    # stats count each replica's own link: the ping went out of one and into the other
    sampled = by_name(json.loads(orc("stats", "-n", ns, "--no-stream", "-o", "json", state_dir=state_dir,
                                     check=True).stdout))
    assert sorted(sampled) == ["web-0", "web-1"]
    assert sampled["web-0"]["netTx"] > 0 and sampled["web-1"]["netRx"] > 0
    assert all(sampled[n]["runtime"] == "native" and sampled[n]["pids"] == 1 for n in sampled)
    assert all(sampled[n]["cpuPercent"] is not None and sampled[n]["memoryLimit"] is None for n in sampled)
    bridge = f"/sys/class/net/{Network(state_dir / 'native').bridge(ns)}"
    assert os.path.exists(bridge)
    orc("delete", "-f", spec, state_dir=state_dir, check=True)
    assert leaks(state_dir, bridges=False) == [] and os.path.exists(bridge)  # kept for the next container
    assert orc("delete", "-n", ns, "--all", state_dir=state_dir, check=True).stdout == "nothing to delete\n"
    assert not os.path.exists(bridge)


def _ignoring_parent() -> None:
    """What a careless parent leaves behind: SIGTERM ignored, and signal 32, which Python cannot touch."""
    import ctypes

    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    ignore = (ctypes.c_ulong * 4)(1, 0, 0, 0)  # SIG_IGN, through the raw rt_sigaction of x86_64
    ctypes.CDLL(None).syscall(13, 32, ignore, None, 8)


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="the raw rt_sigaction number here is x86_64's")
def test_no_ignored_signal_reaches_the_command(ns, state_dir):
    proc = subprocess.run(
        [ORCHESTR, "run", "-d", "-n", ns, "--network", "none", "--name", "sig", TEST_IMAGE, *SLEEP],
        capture_output=True, text=True, env=_env(state_dir), preexec_fn=_ignoring_parent, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    (container,) = get_json(ns, state_dir)
    supervisor = supervisor_pid(state_dir)
    assert ignored_signals(supervisor) & (1 << 31)  # the supervisor did inherit signal 32 ignored
    assert ignored_signals(container["pid"]) == 0
    orc("delete", "-n", ns, "--all", state_dir=state_dir, check=True)


# -- the state dir's modes ----------------------------------------------------------------------

SUID_IMAGE = "orchestr-test/suid:latest"
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"]
# what orchestr makes for itself under a state dir: its owner's only. The rest (layers' contents, containers'
# upper, work and root dirs, volumes, the /etc files containers see) keep the modes containers need.
PRIVATE_DIRS = ["", "spec-cache", "native", "native/images", "native/images/blobs", "native/images/blobs/sha256",
                "native/images/layers", "native/images/layers/*", "native/images/locks", "native/containers",
                "native/containers/*", "native/volumes", "native/network", "native/network/*"]
PRIVATE_FILES = ["state.db", "spec-cache/*.json", "native/events.jsonl", "native/supervisor.log",
                 "native/supervisor.lock", "native/containers.lock", "native/images/index.json",
                 "native/images/blobs/sha256/*", "native/images/layers/*/size", "native/images/layers/*/tar-split",
                 "native/containers/*/config.json", "native/containers/*/state.json",
                 "native/containers/*/container.log", "native/network/*/bridge.json", "native/network/*/10.*"]


class TestStateDirModes:
    """On a state dir whose parents anyone may enter, as /var/lib/orchestr's are (pytest's tmp is root's own,
    which would hide a loose state dir): a fresh one, and one an older orchestr left 0755 with a 0644 store."""

    @pytest.fixture(params=["fresh", "loose"])
    def state_dir(self, request, monkeypatch):
        parent = Path(tempfile.mkdtemp(prefix="orchestr-modes-"))
        parent.chmod(0o755)
        path = parent / "state"
        if request.param == "loose":
            for d in ("native/containers", "native/images/blobs/sha256", "native/images/layers", "native/volumes",
                      "spec-cache"):
                (path / d).mkdir(parents=True)
            sqlite3.connect(path / "state.db").close()
            for p in [path, *path.rglob("*")]:
                p.chmod(0o755 if p.is_dir() else 0o644)
        monkeypatch.setenv("ORCHESTR_STATE_DIR", str(path))
        yield path
        SupervisorClient(str(path / "native")).ask({"op": "quit-if-idle"})
        shutil.rmtree(parent)

    def test_nothing_under_it_is_open_to_other_users(self, ns, tmp_path, state_dir):
        # an image whose layer carries a setuid-root busybox; a container that makes one more in its upper dir,
        # with a secret in its env and a volume
        archive = tmp_path / "suid.tar"
        suid = mkimage.Layer().dir("bin").file("bin/suid", mkimage.BUSYBOX.read_bytes(), 0o4755)
        mkimage.write_docker_archive(archive, [mkimage.busybox_layer().bytes(), suid.bytes()], [SUID_IMAGE])
        orc("images", "import", str(archive), state_dir=state_dir, check=True)
        plant = "cp /bin/busybox /planted && chmod 4755 /planted && exec sleep 3600"
        doc = service("web", ns, network="bridge", command=["sh", "-c", plant],
                      extra="  env: {SECRET: hunter2}\n  volumes: [{type: volume, source: data, target: /data}]\n")
        orc("apply", "-f", write(tmp_path / "app.yaml", doc.replace(TEST_IMAGE, SUID_IMAGE)), state_dir=state_dir,
            check=True)
        [config] = state_dir.glob("native/containers/*/config.json")
        assert "hunter2" in config.read_text()
        binaries = until(lambda: (found := [*state_dir.glob("native/images/layers/*/diff/bin/suid"),
                                            *state_dir.glob("native/containers/*/upper/planted")]
                                  )[1:] and found, "the planted binary")
        assert all(b.stat().st_mode & stat.S_ISUID for b in binaries)

        for pattern, mode in [(p, 0o700) for p in PRIVATE_DIRS] + [(p, 0o600) for p in PRIVATE_FILES]:
            found = list(state_dir.glob(pattern)) if pattern else [state_dir]
            assert found, pattern
            assert {str(p.relative_to(state_dir)): stat.S_IMODE(p.stat().st_mode) for p in found} == \
                {str(p.relative_to(state_dir)): mode for p in found}

        # another user can neither list the state dir, nor reach anything under it, nor run what is there
        listing = subprocess.run([*NOBODY, "ls", str(state_dir)], capture_output=True, text=True)
        assert listing.returncode != 0 and "Permission denied" in listing.stderr
        below = [os.path.join(d, n) for d, dirs, files in os.walk(state_dir) for n in dirs + files]
        assert len(below) > 100
        reached = subprocess.run([*NOBODY, "stat", "--format=%n", "--", *below], capture_output=True, text=True)
        assert reached.stdout.splitlines() == []
        assert reached.stderr.count("Permission denied") == len(below)
        for binary in binaries:  # busybox as `id`: it would print 0, the setuid root's id
            with pytest.raises(PermissionError):
                subprocess.run(["id", "-u"], executable=binary, user=65534, group=65534, extra_groups=[])
        orc("delete", "-n", ns, "--all", state_dir=state_dir, check=True)


def test_replicas_beyond_the_namespaces_subnet_are_refused_before_anything_changes(ns, tmp_path, state_dir):
    env = dict(_env(state_dir), ORCHESTR_NATIVE_SUBNET_PREFIX="29")  # bridges made now get 8 addresses: 5 free

    def apply(*files: str) -> subprocess.CompletedProcess:
        return subprocess.run([ORCHESTR, "apply", *(a for f in files for a in ("-f", f))], capture_output=True,
                              text=True, env=env, timeout=60)

    first = write(tmp_path / "first.yaml", service("a", ns, replicas=3, network="bridge"),
                  service("quiet", ns, replicas=4, network="none"))  # off the bridge: takes no address
    up = apply(first)
    assert up.returncode == 0, up.stdout + up.stderr
    assert [c["ip"] is not None for c in get_json(ns, state_dir)].count(True) == 3

    # another file's service: the three of the first still hold their addresses
    second = write(tmp_path / "second.yaml", service("b", ns, replicas=3, network="bridge"))
    refused = apply(second)
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr == (f"orchestr: {second}:7: spec.replicas: namespace {ns} would have 6 containers on the "
                              "native runtime's bridge network, 3 of them already there and not in these files, which "
                              "has addresses for 5; lower replicas, or use network: none or host for some services\n")
    assert apply(first, write(tmp_path / "fits.yaml", service("b", ns, replicas=2, network="bridge"))).returncode == 0
    assert len(get_json(ns, state_dir)) == 9

    # the subnet a namespace has keeps counting, whatever a new one would get; no create was tried
    env.pop("ORCHESTR_NATIVE_SUBNET_PREFIX")
    many = write(tmp_path / "many.yaml", service("a", ns, replicas=100000, network="bridge"))
    refused = apply(many, second)
    assert refused.returncode == 2 and refused.stderr.startswith(f"orchestr: {many}:7: spec.replicas: namespace ")
    assert "would have 100003 containers" in refused.stderr and "addresses for 5;" in refused.stderr
    assert len(get_json(ns, state_dir)) == 9
    orc("delete", "-n", ns, "--all", state_dir=state_dir, check=True)
    # with the last of its containers the bridge went, and the next is a /24 again
    refused = apply(many)
    assert refused.returncode == 2 and "would have 100000 containers" in refused.stderr
    assert "addresses for 253;" in refused.stderr and get_json(ns, state_dir) == []


def test_apply_reports_containers_that_end_right_after_their_start(ns, tmp_path, state_dir):
    hog = ["dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"]
    spec = write(tmp_path / "app.yaml",
                 service("crash", ns, command=["sh", "-c", "exit 1"]),  # Always: a crash loop
                 service("hog", ns, command=hog, extra="  restartPolicy: Never\n  resources: {memory: 8Mi}\n"))
    # a long window: the watch ends once every container it started has ended, so no timing is relied on
    up = orc("apply", "--settle", "10m", "-f", spec, state_dir=state_dir)
    assert up.returncode == 1, up.stdout + up.stderr
    assert "0 done, 2 failed, 0 skipped" in up.stdout and "FAILED" not in up.stdout
    assert sorted(up.stderr.splitlines()) == [
        f"  FAILED   create {ns}/crash-0: crash-0 exited with 1 right after its start",
        f"  FAILED   create {ns}/hog-0: hog-0 was OOM-killed right after its start",
    ]
    # get shows how often the supervisor restarted the crashing one
    crash = until(lambda: (c := by_name(get_json(ns, state_dir))["crash-0"])["restarts"] >= 2 and c,
                  "crash-0 to be restarted twice")
    assert by_name(get_json(ns, state_dir))["hog-0"]["restarts"] == 0
    table = orc("get", "-n", ns, state_dir=state_dir, check=True).stdout.splitlines()
    assert table[0].split()[:5] == ["NAMESPACE", "NAME", "STATE", "HEALTH", "RESTARTS"]
    restarts = {line.split()[1]: line for line in table[1:]}
    assert " ".join(restarts["hog-0"].split()[2:6]) == "exited (137, OOMKilled) 0" and crash["restarts"] >= 2
    orc("delete", "-f", spec, state_dir=state_dir, check=True)

    # a container that keeps running is done once the window is over
    fine = write(tmp_path / "fine.yaml", service("fine", ns, command=["sh", "-c", TERMINABLE]))
    up = orc("apply", "--settle", "100ms", "-f", fine, state_dir=state_dir)
    assert (up.returncode, up.stderr) == (0, "") and "1 done, 0 failed" in up.stdout
    assert get_json(ns, state_dir)[0]["restarts"] == 0
    orc("delete", "-f", fine, state_dir=state_dir, check=True)


def _restart_events(state_dir: Path) -> list[dict]:
    lines = (state_dir / "native" / "events.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["action"] == "restart"]


def test_a_crash_loop_backs_off_exponentially_and_get_shows_the_next_restart(ns, tmp_path, state_dir, monkeypatch):
    monkeypatch.setenv("ORCHESTR_RESTART_BACKOFF", "500ms,2s,1m")  # kept in the container's config at create
    spec = write(tmp_path / "app.yaml", service("crash", ns, command=["sh", "-c", "exit 3"]))
    orc("apply", "--settle", "0", "-f", spec, state_dir=state_dir, check=True)
    # the supervisor's own restarts, with no orchestr command running: read from the delays it recorded
    until(lambda: len(_restart_events(state_dir)) >= 5, "five restarts by the supervisor")
    assert [(e["delay"], e["restarts"]) for e in _restart_events(state_dir)[:5]] == [
        (0, 1), (0.5, 2), (1, 3), (2, 4), (2, 5)]
    waiting = until(lambda: (c := get_json(ns, state_dir)[0])["state"] == "backoff" and c, "a look at its back-off")
    assert waiting["exitCode"] == 3 and waiting["restarts"] >= 2 and waiting["nextRestart"].endswith("Z")
    # apply leaves the restart to the supervisor: starting it now would undo the back-off
    assert "nothing to do" in orc("apply", "-f", spec, state_dir=state_dir).stdout
    orc("delete", "-f", spec, state_dir=state_dir, check=True)


# Traps the three signals a foreground run passes on, says so, then waits: its exit code tells that one came.
TRAPPING = "trap 'exit 3' TERM HUP INT; echo ready; sleep 3600 & wait"


def _ignoring_sigint() -> None:
    """What `sh -c 'cmd &'` does to a background job: SIGINT ignored, so only SIGTERM and SIGHUP reach it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def signalled_run(state_dir: Path, sig: int, *args: str, ready: str | None = "ready",
                  preexec: Callable[[], None] | None = None) -> tuple[int, str, str, int]:
    """`orchestr run ARGS` in the foreground, sent sig once its container has said ready (or, with ready None, once
    it runs); returns the exit code, the output, and the signals the command had ignored meanwhile."""
    run = subprocess.Popen([ORCHESTR, "run", *args], env=_env(state_dir), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, preexec_fn=preexec)
    try:
        if ready is not None:
            assert run.stdout.readline() == f"{ready}\n"
        else:
            until(lambda: run.poll() is not None or any(c["state"] == "running" for c in json.loads(
                orc("get", "-A", "-o", "json", state_dir=state_dir, check=True).stdout)), "the container to run")
            assert run.poll() is None, f"the run ended first ({run.returncode}): {run.communicate()}"
        ignored = ignored_signals(run.pid)
        run.send_signal(sig)
        out, err = run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            run.kill()
            print("the run, killed, had written:", run.communicate())  # shown if the test fails
    return run.returncode, out, err, ignored


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_a_signal_to_a_foreground_run_goes_to_its_container_which_is_removed(ns, state_dir, sig):
    code, out, err, _ = signalled_run(state_dir, sig, "--rm", "--network", "none", "-n", ns, TEST_IMAGE,
                                      "sh", "-c", TRAPPING)
    assert (code, out, err) == (3, "", "")  # the container's own exit, from its trap
    assert get_json(ns, state_dir) == [] and records(state_dir) == []


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_a_background_job_whose_sigint_is_ignored_passes_on_term_and_hup(ns, state_dir, sig):
    code, _, err, ignored = signalled_run(state_dir, sig, "--rm", "--network", "none", "-n", ns, TEST_IMAGE,
                                          "sh", "-c", TRAPPING, preexec=_ignoring_sigint)
    assert ignored & (1 << (signal.SIGINT - 1))  # SIGINT stayed ignored while it ran
    assert (code, err) == (3, "")
    assert get_json(ns, state_dir) == [] and records(state_dir) == []


def test_a_signal_the_containers_init_does_not_handle_ends_it_as_the_signal_would(ns, state_dir):
    # sleep, the init of its pid namespace, would drop SIGTERM: it is killed, and the run exits as if by SIGTERM
    name = f"{ns}-kept"
    code, _, err, _ = signalled_run(state_dir, signal.SIGTERM, "--network", "none", "--name", name, "-n", ns,
                                    TEST_IMAGE, *SLEEP, ready=None)
    assert (code, err) == (128 + signal.SIGTERM, "")
    [c] = get_json(ns, state_dir)  # no --rm: it is kept, ended
    assert (c["name"], c["state"]) == (name, "exited")
    assert cgroup_procs(c["id"]) == set()
    orc("delete", "-n", ns, "--all", state_dir=state_dir, check=True)


def test_sig_proxy_false_leaves_the_container_its_signals(ns, state_dir):
    name = f"{ns}-left"
    code, _, err, _ = signalled_run(state_dir, signal.SIGTERM, "--sig-proxy=false", "--network", "none", "--name",
                                    name, "-n", ns, TEST_IMAGE, "sh", "-c", TRAPPING)
    assert (code, err) == (128 + signal.SIGTERM, f"orchestr: SIGTERM: container {name} goes on running\n")
    [c] = get_json(ns, state_dir)
    assert c["state"] == "running" and alive(c["pid"])
    orc("delete", "-n", ns, "--all", state_dir=state_dir, check=True)
    # with --rm, nothing would remove it later: it is stopped and removed
    code, _, err, _ = signalled_run(state_dir, signal.SIGHUP, "--rm", "--sig-proxy=false", "--network", "none",
                                    "--name", name, "-n", ns, TEST_IMAGE, "sh", "-c", TRAPPING)
    assert (code, err) == (128 + signal.SIGHUP, f"orchestr: SIGHUP: container {name} was stopped and removed\n")
    assert get_json(ns, state_dir) == [] and records(state_dir) == []


def test_get_lists_native_containers_without_an_event_loop_and_falls_back_for_other_runtimes(ns, state_dir):
    import anyio

    from orchestr import Client

    orc("run", "-d", "--name", "one", "-n", ns, TEST_IMAGE, *SLEEP, state_dir=state_dir, check=True)
    code = ("import sys; from orchestr.cli import main; sys.argv = ['orchestr', *sys.argv[1:]]\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\nprint('asyncio' in sys.modules, file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", code, "get", "-n", ns, "-o", "json"], capture_output=True,
                          text=True, env=_env(state_dir), timeout=60)
    assert done.stderr == "False\n" and [c["name"] for c in json.loads(done.stdout)] == ["one"]

    async def both() -> tuple:
        async with Client(state_dir=state_dir, runtime="native") as oc:
            return oc.get_blocking(ns), await oc.get(ns), oc.get_blocking(ns, runtime="docker")

    blocking, looped, docker = anyio.run(both)
    assert [c.as_dict() for c in blocking] == [c.as_dict() for c in looped] and len(looped) == 1
    assert docker is None  # the docker runtime lists through its event loop only
    orc("delete", "-n", ns, "--all", state_dir=state_dir, check=True)
