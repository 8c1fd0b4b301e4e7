"""The `orchestr` command end to end on the containerd runtime, against the host's containerd, in a containerd
namespace of the session's own (so the leak checks look at what these tests made only)."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import ROOT, TEST_IMAGE, ctr
from orchestr.testing import host
from orchestr.testing import images as mkimage
from registry import free_port

ORCHESTR = str(Path(sys.executable).parent / "orchestr")
MiB = 1 << 20


def orc(*args: str, state_dir: Path, check: bool = False, timeout: float = 180,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    environ = dict(os.environ, ORCHESTR_STATE_DIR=str(state_dir), ORCHESTR_RUNTIME="containerd", **(env or {}))
    proc = subprocess.run([ORCHESTR, *args], capture_output=True, text=True, env=environ, timeout=timeout,
                          stdin=subprocess.DEVNULL)
    if check:
        assert proc.returncode == 0, f"orchestr {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def get_json(ns: str, state_dir: Path) -> dict[str, dict]:
    return {c["name"]: c for c in json.loads(orc("get", "-n", ns, "-o", "json", state_dir=state_dir,
                                                 check=True).stdout)}


def fetch(url: str) -> str:
    error: Exception | None = None
    for _ in range(100):  # the server may take a moment to bind
        try:
            with urllib.request.urlopen(url, timeout=2) as page:
                return page.read().decode()
        except OSError as e:
            error = e
            time.sleep(0.1)
    raise AssertionError(f"{url} did not answer: {error}")


def until(what: str, check, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"{what} did not happen within {seconds}s"
        time.sleep(0.1)


@pytest.fixture(scope="session")
def containerd_image(containerd_namespace, busybox_archive, tmp_path_factory) -> str:
    """TEST_IMAGE, imported into the session's containerd namespace through orchestr itself."""
    orc("images", "import", str(busybox_archive), state_dir=tmp_path_factory.mktemp("import"), check=True)
    return TEST_IMAGE


@pytest.fixture
def cd_ns(containerd_image, containerd_namespace, namespace, state_dir):
    """A namespace whose containers are deleted after the test; nothing of them may be left in containerd."""
    yield namespace
    orc("delete", "-n", namespace, "--all", state_dir=state_dir)
    ids = [i for i in ctr(containerd_namespace, "containers", "ls", "-q").split() if i.startswith(f"{namespace}_")]
    assert not ids, f"containers left: {ids}"


def service(path: Path, ns: str, name: str, command: list[str], **spec) -> Path:
    doc = {"apiVersion": "orchestr/v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
           "spec": {"runtime": "containerd", "image": TEST_IMAGE, "command": command, "network": "none",
                    "stopGracePeriod": "1s", **spec}}
    path.write_text(json.dumps(doc))
    return path


def test_apply_get_logs_exec_and_delete_leave_nothing(cd_ns, containerd_namespace, state_dir, tmp_path):
    spec = service(tmp_path / "web.yaml", cd_ns, "web", ["sh", "-c", "echo hello; exec sleep 3600"], replicas=2,
                   resources={"cpus": 0.5, "memory": "64Mi", "pids": 50})
    out = orc("apply", "-f", str(spec), state_dir=state_dir, check=True).stdout
    assert "create" in out
    assert "nothing to do" in orc("apply", "-f", str(spec), state_dir=state_dir, check=True).stdout.lower()
    got = get_json(cd_ns, state_dir)
    assert {c["state"] for c in got.values()} == {"running"} and set(got) == {"web-0", "web-1"}
    seen = host.limits(got["web-0"]["pid"])
    assert (seen.cpus, seen.memory, seen.pids) == (0.5, 64 * MiB, 50)
    until("web-0's log line", lambda: "hello" in orc("logs", "-n", cd_ns, "web-0", state_dir=state_dir).stdout)
    assert orc("exec", "-n", cd_ns, "web-0", "--", "sh", "-c", "exit 5", state_dir=state_dir).returncode == 5
    ids = [c["id"] for c in got.values()]
    orc("delete", "-f", str(spec), state_dir=state_dir, check=True)
    assert get_json(cd_ns, state_dir) == {}
    containers = ctr(containerd_namespace, "containers", "ls", "-q").split()
    tasks = ctr(containerd_namespace, "tasks", "ls")
    snapshots = ctr(containerd_namespace, "snapshots", "ls")
    for id in ids:
        assert id not in containers and id not in tasks and id not in snapshots
    assert not ctr(containerd_namespace, "leases", "ls", "-q").split()
    for c in got.values():
        assert not Path(f"/sys/fs/cgroup/memory/{containerd_namespace}/{c['id']}").exists()


def test_logs_keep_being_written_with_no_orchestr_process(cd_ns, state_dir, tmp_path):
    script = "i=0; while [ $i -lt 30 ]; do echo tick$i; i=$((i+1)); sleep 0.1; done; echo done; sleep 3600"
    spec = service(tmp_path / "ticker.yaml", cd_ns, "ticker", ["sh", "-c", script])
    orc("apply", "-f", str(spec), "--settle", "0", state_dir=state_dir, check=True)
    time.sleep(4)  # nothing of orchestr runs meanwhile: the shim's logger keeps writing
    lines = orc("logs", "-n", cd_ns, "ticker-0", state_dir=state_dir, check=True).stdout.splitlines()
    assert lines == [f"tick{i}" for i in range(30)] + ["done"]


@pytest.mark.parametrize(("policy", "code", "restarted"), [("Always", 0, True), ("OnFailure", 3, True),
                                                           ("OnFailure", 0, False), ("Never", 3, False)])
def test_restart_policy_holds_with_no_orchestr_process(cd_ns, state_dir, tmp_path, policy, code, restarted):
    spec = service(tmp_path / "job.yaml", cd_ns, "job", ["sh", "-c", f"trap 'exit {code}' USR1; echo up; "
                                                                      "sleep 3600 & wait"], restartPolicy=policy)
    orc("apply", "-f", str(spec), state_dir=state_dir, check=True)
    first = get_json(cd_ns, state_dir)["job-0"]
    if code == 0 and policy == "Always":
        os.kill(first["pid"], signal.SIGKILL)
    else:
        until("the trap", lambda: "up" in orc("logs", "-n", cd_ns, "job-0", state_dir=state_dir).stdout)
        os.kill(first["pid"], signal.SIGUSR1)
    if restarted:
        until("a restart", lambda: (lambda c: c["state"] == "running" and c["pid"] != first["pid"])(
            get_json(cd_ns, state_dir)["job-0"]))
        assert get_json(cd_ns, state_dir)["job-0"]["restarts"] == 1
    else:
        until("the exit", lambda: get_json(cd_ns, state_dir)["job-0"]["state"] == "exited")
        time.sleep(2)  # a restart would come within this (the first back-off is 0.1 s)
        after = get_json(cd_ns, state_dir)["job-0"]
        assert (after["state"], after["exitCode"], after["restarts"]) == ("exited", code, 0)


def test_a_container_orchestr_stopped_is_not_restarted_until_started(cd_ns, state_dir, tmp_path):
    """The stop leaves a mark its logger reads when the process ends: no restarter then; a start clears it."""
    spec = service(tmp_path / "web.yaml", cd_ns, "web", ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"],
                   restartPolicy="Always")
    orc("apply", "-f", str(spec), state_dir=state_dir, check=True)
    orc("stop", "-n", cd_ns, "web-0", state_dir=state_dir, check=True)
    time.sleep(2)  # a restart would come within this (the first back-off is 0.1 s)
    assert get_json(cd_ns, state_dir)["web-0"]["state"] == "exited"
    orc("start", "-n", cd_ns, "web-0", state_dir=state_dir, check=True)
    first = get_json(cd_ns, state_dir)["web-0"]
    os.kill(first["pid"], signal.SIGKILL)
    until("a restart", lambda: (lambda c: c["state"] == "running" and c["pid"] != first["pid"])(
        get_json(cd_ns, state_dir)["web-0"]))


def test_a_killed_apply_then_a_reapply_converges(cd_ns, state_dir, tmp_path):
    spec = service(tmp_path / "many.yaml", cd_ns, "many", ["sleep", "3600"], replicas=4)
    env = dict(os.environ, ORCHESTR_STATE_DIR=str(state_dir), ORCHESTR_RUNTIME="containerd")
    proc = subprocess.Popen([ORCHESTR, "apply", "-f", str(spec)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    time.sleep(0.8)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    orc("apply", "-f", str(spec), state_dir=state_dir, check=True)
    got = get_json(cd_ns, state_dir)
    assert set(got) == {f"many-{i}" for i in range(4)} and {c["state"] for c in got.values()} == {"running"}


def test_containerd_down_is_one_clear_line(containerd_image, state_dir, tmp_path, namespace):
    spec = service(tmp_path / "x.yaml", namespace, "x", ["true"])
    proc = orc("apply", "-f", str(spec), state_dir=state_dir,
               env={"ORCHESTR_CONTAINERD_ADDRESS": str(tmp_path / "no.sock")})
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert any(f"cannot reach containerd at {tmp_path / 'no.sock'}: there is no socket" in line for line in lines), \
        proc.stderr
    assert "Traceback" not in proc.stderr


def demo_spec(tmp_path: Path, namespace: str, port: int) -> Path:
    """specs/demo.yaml with `runtime: containerd`, in a namespace of the test's own and its edge on a free port."""
    text = (ROOT / "specs" / "demo.yaml").read_text()
    text = text.replace("namespace: demo", f"namespace: {namespace}").replace("hostPort: 18080", f"hostPort: {port}")
    text = text.replace("  image: busybox:latest", "  runtime: containerd\n  image: busybox:latest")
    path = tmp_path / "demo.yaml"
    path.write_text(text)
    return path


def network_traces(containerd_namespace: str, ids: list[str], subnet_prefix: str) -> list[str]:
    """What of these containers' networks the host still has: iptables rules naming their addresses, veths and
    bridges of orchestr's containerd networks, network namespaces, CNI address leases."""
    left = [line for line in subprocess.run(["iptables-save"], capture_output=True, text=True).stdout.splitlines()
            if subnet_prefix in line or any(id in line for id in ids)]
    from orchestr_containerd import cni

    left += [p for p in (cni.netns_path(containerd_namespace, id) for id in ids) if os.path.exists(p)]
    leases = Path(f"/run/orchestr-containerd/{containerd_namespace}/cni")
    left += [str(p) for p in leases.rglob("*") if p.is_file() and p.name.startswith(subnet_prefix)]
    return left


def test_the_demo_serves_names_ports_limits_logs_and_leaves_nothing(cd_ns, containerd_namespace, tmp_path,
                                                                      state_dir):
    archive = tmp_path / "busybox.tar"
    mkimage.busybox_image(archive, ["busybox:latest"])
    orc("images", "import", str(archive), state_dir=state_dir, check=True)
    port = free_port()
    spec = demo_spec(tmp_path, cd_ns, port)
    out = orc("apply", "-f", str(spec), state_dir=state_dir, check=True).stdout
    assert "5 done, 0 failed, 0 skipped" in out, out
    got = get_json(cd_ns, state_dir)
    assert sorted(got) == ["db-0", "edge-0", "web-0", "web-1", "worker-0"]
    assert {(c["runtime"], c["state"]) for c in got.values()} == {("containerd", "running")}
    assert all(c["ip"] and c["ip"].startswith("10.210.") for c in got.values())
    assert got["edge-0"]["ports"] == [{"hostIP": "127.0.0.1", "hostPort": port, "containerPort": 8080,
                                       "protocol": "tcp"}]
    assert orc("apply", "-f", str(spec), state_dir=state_dir, check=True).stdout.count("nothing to do") == 1

    assert "edge of namespace" in fetch(f"http://127.0.0.1:{port}/")
    served = orc("exec", "-n", cd_ns, "edge-0", "--", "wget", "-qO-", "http://web:8080/", state_dir=state_dir,
                 check=True).stdout
    assert re.search(r"served by web-[01]", served), served
    assert "Hello from orchestr" in orc("exec", "-n", cd_ns, "edge-0", "--", "wget", "-qO-", "http://web-1:8080/",
                                        state_dir=state_dir, check=True).stdout
    web = host.limits(got["web-0"]["pid"])
    assert (web.cpus, web.memory, web.pids) == (0.5, 32 * MiB, 50), web
    until("two worker jobs", lambda: "worker: job 2" in orc("logs", "-n", cd_ns, "worker-0",
                                                            state_dir=state_dir).stdout)

    ids = [c["id"] for c in got.values()]
    subnet_prefix = got["db-0"]["ip"].rsplit(".", 1)[0] + "."
    orc("delete", "-f", str(spec), state_dir=state_dir, check=True)
    assert get_json(cd_ns, state_dir) == {}
    assert network_traces(containerd_namespace, ids, subnet_prefix) == []
    from orchestr_containerd.cni import bridge_name

    bridge = bridge_name(containerd_namespace, cd_ns)
    assert subprocess.run(["ip", "link", "show", bridge], capture_output=True).returncode != 0
    assert not [line for line in subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
                .splitlines() if f"master {bridge}" in line]


def test_logs_rotate_and_follow_reads_every_file(cd_ns, state_dir, tmp_path):
    script = "i=0; while [ $i -lt 400 ]; do echo line-$i-abcdefghijklmnopqrstuvwxyz; i=$((i+1)); done"
    spec = service(tmp_path / "chatty.yaml", cd_ns, "chatty", ["sh", "-c", script], restartPolicy="Never")
    env = {"ORCHESTR_CONTAINERD_LOG_MAX_SIZE": "4096", "ORCHESTR_CONTAINERD_LOG_MAX_FILES": "50"}
    orc("apply", "-f", str(spec), state_dir=state_dir, check=True, env=env)
    until("chatty's exit", lambda: get_json(cd_ns, state_dir)["chatty-0"]["state"] == "exited")
    lines = orc("logs", "-n", cd_ns, "chatty-0", state_dir=state_dir, check=True).stdout.splitlines()
    assert lines == [f"line-{i}-abcdefghijklmnopqrstuvwxyz" for i in range(400)]
    followed = orc("logs", "-f", "-n", cd_ns, "chatty-0", "--tail", "3", state_dir=state_dir, check=True).stdout
    assert followed.splitlines() == [f"line-{i}-abcdefghijklmnopqrstuvwxyz" for i in range(397, 400)]
    log_dir = next((state_dir / "containerd" / "containers").glob(f"{cd_ns}_chatty-0")) / "log"
    assert len(list(log_dir.glob("container.log.*"))) > 1  # it did rotate


def test_a_one_off_run_in_the_foreground_needs_no_event_loop_and_leaves_nothing(cd_ns, containerd_namespace,
                                                                              state_dir, tmp_path):
    """`orchestr run --rm --network none` on containerd: create, start, output, wait and delete over blocking gRPC
    calls made without grpc (wire.py), so with neither grpc's core nor asyncio loaded, let alone an event loop; its
    output in order per stream, its exit code, and nothing left in containerd or the state dir."""
    code = ("import sys; from orchestr.cli import main; sys.argv = ['orchestr', *sys.argv[1:]]\n"
            "try:\n    main()\nexcept SystemExit as e:\n    code = e.code\n"
            "print(any(m in sys.modules for m in ('asyncio', 'grpc._cython.cygrpc')), code, file=sys.stderr)")
    environ = dict(os.environ, ORCHESTR_STATE_DIR=str(state_dir))
    leases = set(ctr(containerd_namespace, "leases", "ls", "-q").split())  # a killed apply's wait out their expiry
    for _ in range(2):  # the second run reads the image's config from the state dir's copy
        done = subprocess.run(
            [sys.executable, "-c", code, "run", "--rm", "--runtime", "containerd", "--network", "none", "--name",
             "once", "-n", cd_ns, TEST_IMAGE, "sh", "-c", "echo out1; echo err >&2; echo out2; exit 3"],
            capture_output=True, text=True, cwd=ROOT, timeout=120, env=environ, stdin=subprocess.DEVNULL)
        assert (done.stdout, done.stderr) == ("out1\nout2\n", "err\nFalse 3\n")
        assert not [i for i in ctr(containerd_namespace, "containers", "ls", "-q").split() if i.startswith(cd_ns)]
        assert f"{cd_ns}_once" not in ctr(containerd_namespace, "snapshots", "ls")
        assert set(ctr(containerd_namespace, "leases", "ls", "-q").split()) <= leases
        assert not (state_dir / "containerd" / "containers" / f"{cd_ns}_once").exists()


def test_a_one_off_run_that_is_kept_reads_back_as_exited(cd_ns, state_dir):
    done = orc("run", "--network", "none", "--name", "kept", "-n", cd_ns, TEST_IMAGE, "sh", "-c", "echo hi; exit 4",
               state_dir=state_dir)
    assert (done.returncode, done.stdout) == (4, "hi\n")
    got = get_json(cd_ns, state_dir)["kept"]
    assert (got["state"], got["exitCode"]) == ("exited", 4)
    assert orc("logs", "-n", cd_ns, "kept", state_dir=state_dir, check=True).stdout == "hi\n"


def test_a_removed_one_off_reads_its_output_through_fifos_with_no_logger(cd_ns, containerd_namespace, state_dir):
    """`run --rm` in the foreground: the task's output comes through FIFOs this process reads, as ctr's does, so
    no logger process starts (a removed container's log could not be read anyway); every line arrives in order
    per stream, a last line without a newline too, and the exit code; then nothing is left."""
    environ = dict(os.environ, ORCHESTR_STATE_DIR=str(state_dir), ORCHESTR_RUNTIME="containerd")
    script = "seq 1 20000; echo err >&2; head -c 40000 /dev/zero | tr '\\0' x; echo; printf tail; sleep 2; exit 5"
    proc = subprocess.Popen([ORCHESTR, "run", "--rm", "--network", "none", "--name", "fifo", "-n", cd_ns,
                             TEST_IMAGE, "sh", "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=environ, stdin=subprocess.DEVNULL)
    directory = state_dir / "containerd" / "containers" / f"{cd_ns}_fifo"
    until("the task's stdout FIFO", lambda: (directory / "stdout").exists())
    assert stat.S_ISFIFO((directory / "stdout").stat().st_mode) and stat.S_ISFIFO((directory / "stderr").stat().st_mode)
    until("the task running", lambda: re.search(rf"^{cd_ns}_fifo\s+\d+\s+RUNNING", ctr(containerd_namespace, "tasks",
                                                                                      "ls"), re.M))
    assert not (directory / "log").exists()  # no log, so no logger (which takes its lock before the task starts)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 5, err
    assert out == b"".join(b"%d\n" % i for i in range(1, 20001)) + b"x" * 40000 + b"\ntail"
    assert err == b"err\n"
    assert not directory.exists()
    assert not [i for i in ctr(containerd_namespace, "containers", "ls", "-q").split() if i.startswith(cd_ns)]
    assert f"{cd_ns}_fifo" not in ctr(containerd_namespace, "snapshots", "ls")
    assert f"{cd_ns}_fifo" not in ctr(containerd_namespace, "tasks", "ls")


def test_the_wire_calls_containerd_without_grpc(containerd_image, containerd_namespace):
    """wire.py, the one-off run's gRPC client: an answer, a status, a request larger than HTTP/2's first windows
    (its error's text coming back in CONTINUATION frames), and a socket that is not there."""
    from orchestr_containerd import wire
    from orchestr_containerd.proto import images_pb2

    socket, metadata = "/run/containerd/containerd.sock", [("containerd-namespace", containerd_namespace)]

    def get(name: str, path: str = socket) -> images_pb2.GetImageResponse:
        answer = wire.call(path, "/containerd.services.images.v1.Images/Get",
                           images_pb2.GetImageRequest(name=name).SerializeToString(), metadata, timeout=30)
        return images_pb2.GetImageResponse.FromString(answer[0])

    assert get(f"docker.io/{TEST_IMAGE}").image.target.digest.startswith("sha256:")
    with pytest.raises(wire.Status) as missing:
        get("docker.io/orchestr-test/none:" + "x" * 300_000)
    assert missing.value.name == "NOT_FOUND" and "x" * 300_000 in missing.value.details
    with pytest.raises(wire.Status) as absent:
        get(f"docker.io/{TEST_IMAGE}", path=str(Path(socket).with_name("none.sock")))
    assert absent.value.name == "UNAVAILABLE"
