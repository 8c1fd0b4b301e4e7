"""The `orchestr` command end to end, through a subprocess, against the real Docker Engine."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, TEST_IMAGE, docker_containers

ORCHESTR = str(Path(sys.executable).parent / "orchestr")


def orc(*args: str, state_dir: Path, check: bool | None = None, input: str | None = None, timeout: float = 120):
    env = dict(os.environ, ORCHESTR_STATE_DIR=str(state_dir), ORCHESTR_RUNTIME="docker")
    proc = subprocess.run([ORCHESTR, *args], capture_output=True, text=True, env=env, input=input, timeout=timeout)
    if check:
        assert proc.returncode == 0, f"orchestr {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def service(name: str, ns: str, *, replicas: int = 1, command: str = "sleep 3600", extra: str = "") -> str:
    return (
        f"apiVersion: orchestr/v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}}}\n"
        f"spec:\n  image: {TEST_IMAGE}\n  command: [sh, -c, {json.dumps(command)}]\n"
        f"  replicas: {replicas}\n  stopGracePeriod: 1s\n{extra}"
    )


def write(path: Path, *docs: str) -> str:
    path.write_text("---\n".join(docs))
    return str(path)


def get_json(ns: str, state_dir: Path) -> list[dict]:
    proc = orc("get", "-n", ns, "-o", "json", state_dir=state_dir, check=True)
    return json.loads(proc.stdout)


def by_replica(items: list[dict]) -> dict[str, str]:
    """Container ids by <service>-<replica>, whatever a rolling update named them."""
    return {f"{c['service']}-{c['replica']}": c["id"] for c in items}


def ids(items: list[dict]) -> dict[str, str]:
    return {c["name"]: c["id"] for c in items}


@pytest.fixture
def ns(docker_namespace):
    return docker_namespace


def test_apply_reapply_change_scale_delete(ns, tmp_path, state_dir):
    spec = tmp_path / "app.yaml"
    db = service("db", ns)
    web = service("web", ns, replicas=3, extra="  dependsOn: [db]\n  env: {MODE: one}\n")
    write(spec, db, web)

    out = orc("apply", "-f", str(spec), state_dir=state_dir, check=True).stdout
    assert "4 done, 0 failed, 0 skipped" in out
    first = get_json(ns, state_dir)
    assert sorted(c["name"] for c in first) == ["db-0", "web-0", "web-1", "web-2"]
    assert all(c["state"] == "running" and c["runtime"] == "docker" for c in first)
    expected_keys = {"name", "namespace", "service", "replica", "runtime", "id", "image", "state", "exitCode",
                     "pid", "ip", "specHash"}
    assert expected_keys <= set(first[0])
    assert {c["service"] for c in first} == {"db", "web"}

    # unchanged: zero actions, same containers
    out = orc("apply", "-f", str(spec), state_dir=state_dir, check=True).stdout
    assert "nothing to do" in out
    assert ids(get_json(ns, state_dir)) == ids(first)
    assert orc("diff", "-f", str(spec), state_dir=state_dir).returncode == 0

    # one service changed: only its containers are replaced
    write(spec, db, web.replace("MODE: one", "MODE: two"))
    assert orc("diff", "-f", str(spec), state_dir=state_dir).returncode == 1
    out = orc("apply", "-f", str(spec), state_dir=state_dir, check=True).stdout
    assert "6 done" in out  # rolled out: each replica's new container made beside its old one, which then goes
    second = by_replica(get_json(ns, state_dir))
    assert second["db-0"] == ids(first)["db-0"]
    assert all(second[n] != ids(first)[n] for n in ("web-0", "web-1", "web-2"))

    # scaling down removes the highest indexes
    write(spec, db, web.replace("MODE: one", "MODE: two").replace("replicas: 3", "replicas: 1"))
    orc("apply", "-f", str(spec), state_dir=state_dir, check=True)
    third = by_replica(get_json(ns, state_dir))
    assert sorted(third) == ["db-0", "web-0"]
    assert third["web-0"] == second["web-0"]

    orc("delete", "-f", str(spec), state_dir=state_dir, check=True)
    assert get_json(ns, state_dir) == []
    assert docker_containers(ns) == []


def test_lost_state_and_containers_removed_behind_our_back(ns, tmp_path, state_dir):
    spec = write(tmp_path / "app.yaml", service("web", ns, replicas=2))
    orc("apply", "-f", spec, state_dir=state_dir, check=True)
    before = ids(get_json(ns, state_dir))

    # the state dir is lost: the runtime's labels still say what is there
    other_state = state_dir.parent / "other-state"
    out = orc("apply", "-f", spec, state_dir=other_state, check=True).stdout
    assert "nothing to do" in out

    # a container removed behind orchestr's back is noticed and replaced
    subprocess.run(["docker", "rm", "-f", before["web-1"]], check=True, capture_output=True)
    out = orc("apply", "-f", spec, state_dir=state_dir, check=True).stdout
    assert "create" in out and "web-1" in out
    after = ids(get_json(ns, state_dir))
    assert after["web-0"] == before["web-0"] and after["web-1"] != before["web-1"]

    # a container stopped behind its back is started again (restartPolicy Always)
    subprocess.run(["docker", "stop", "-t", "0", after["web-0"]], check=True, capture_output=True)
    assert "start" in orc("apply", "-f", spec, state_dir=state_dir, check=True).stdout
    assert {c["state"] for c in get_json(ns, state_dir)} == {"running"}
    orc("delete", "-n", ns, "--all", state_dir=state_dir, check=True)
    assert docker_containers(ns) == []


def test_prune_deletes_services_the_files_no_longer_declare(ns, tmp_path, state_dir):
    spec = tmp_path / "app.yaml"
    write(spec, service("a", ns), service("b", ns))
    orc("apply", "-f", str(spec), state_dir=state_dir, check=True)
    write(spec, service("a", ns))
    assert "nothing to do" in orc("apply", "-f", str(spec), state_dir=state_dir, check=True).stdout
    assert len(get_json(ns, state_dir)) == 2
    out = orc("apply", "-f", str(spec), "--prune", state_dir=state_dir, check=True).stdout
    assert "delete" in out and "b-0" in out
    assert [c["name"] for c in get_json(ns, state_dir)] == ["a-0"]
    orc("delete", "-n", ns, "--all", state_dir=state_dir, check=True)


def test_container_verbs(ns, tmp_path, state_dir):
    spec = write(tmp_path / "app.yaml", service("box", ns, command="echo hello; echo oops >&2; exec sleep 3600"))
    orc("apply", "-f", spec, state_dir=state_dir, check=True)
    logs = orc("logs", "-n", ns, "box-0", state_dir=state_dir, check=True)
    assert logs.stdout == "hello\n" and logs.stderr == "oops\n"

    ex = orc("exec", "-n", ns, "box-0", "--", "sh", "-c", "echo $FOO; exit 3", state_dir=state_dir)
    assert ex.returncode == 3 and ex.stdout == "\n"

    orc("pause", "-n", ns, "box-0", state_dir=state_dir, check=True)
    assert get_json(ns, state_dir)[0]["state"] == "paused"
    orc("unpause", "-n", ns, "box-0", state_dir=state_dir, check=True)
    orc("stop", "-n", ns, "-t", "1", "box-0", state_dir=state_dir, check=True)
    stopped = get_json(ns, state_dir)[0]
    assert stopped["state"] == "exited" and stopped["exitCode"] is not None
    orc("start", "-n", ns, "box-0", state_dir=state_dir, check=True)
    assert get_json(ns, state_dir)[0]["state"] == "running"

    missing = orc("logs", "-n", ns, "nope-0", state_dir=state_dir)
    assert missing.returncode != 0
    assert missing.stderr.count("\n") == 1 and "nope-0" in missing.stderr and "Traceback" not in missing.stderr
    orc("delete", "-n", ns, "--all", state_dir=state_dir, check=True)


def test_stats_samples_running_containers_as_top_does(ns, tmp_path, state_dir):
    spin = service("spin", ns, command="while :; do :; done", extra="  resources: {cpus: 0.2, memory: 64Mi}\n")
    idle = service("idle", ns, command="exit 0", extra="  restartPolicy: Never\n")
    orc("apply", "-f", write(tmp_path / "app.yaml", spin, idle), state_dir=state_dir, check=True)
    subprocess.run(["docker", "wait", f"{ns}_idle-0"], check=True, capture_output=True, timeout=60)

    table = orc("stats", "-n", ns, "--no-stream", state_dir=state_dir, check=True).stdout.splitlines()
    assert table[0].split() == ["NAMESPACE", "NAME", "CPU", "%", "MEM", "USAGE", "/", "LIMIT", "MEM", "%", "NET",
                                "I/O", "BLOCK", "I/O", "PIDS"]
    assert [row.split()[1] for row in table[1:]] == ["spin-0"]  # only what runs
    assert " / 64.0MiB " in table[1]

    (spinning,) = json.loads(orc("stats", "-n", ns, "spin-0", "--no-stream", "-o", "json", state_dir=state_dir,
                                 check=True).stdout)
    assert (spinning["name"], spinning["runtime"], spinning["memoryLimit"]) == ("spin-0", "docker", 64 << 20)
    assert spinning["cpuPercent"] > 0  # a busy loop used some CPU between the two samples
    assert spinning["pids"] >= 1 and 0 < spinning["memory"] <= 64 << 20
    assert spinning["netRx"] is not None and spinning["blockRead"] is not None

    named = orc("stats", "-n", ns, "idle-0", "--no-stream", state_dir=state_dir, check=True).stdout.splitlines()
    assert named[1].split()[1:] == ["idle-0", "--", "--", "--", "--", "--", "--"]  # exited: nothing to sample
    missing = orc("stats", "-n", ns, "nope-0", "--no-stream", state_dir=state_dir)
    assert missing.returncode != 0 and missing.stderr == "orchestr: no container 'nope-0' in namespace " \
        f"'{ns}'\n"
    orc("delete", "-n", ns, "--all", state_dir=state_dir, check=True)


def test_run_streams_output_and_exits_with_the_containers_code(ns, state_dir):
    name = f"{ns}-once"
    proc = orc("run", "--rm", "--name", name, "-n", ns, TEST_IMAGE, "sh", "-c", "echo out; echo err >&2; exit 7",
               state_dir=state_dir)
    assert proc.returncode == 7
    assert proc.stdout == "out\n" and "err\n" in proc.stderr
    assert docker_containers(ns) == []

    detached = orc("run", "-d", "--name", name, "-n", ns, TEST_IMAGE, "sleep", "60", state_dir=state_dir, check=True)
    assert detached.stdout.strip() in docker_containers(ns)
    # one-off containers are listed but never planned or pruned
    assert [c["name"] for c in get_json(ns, state_dir)] == [name]
    orc("delete", "-n", ns, "--all", state_dir=state_dir, check=True)
    assert docker_containers(ns) == []


def test_concurrent_applies_are_serialised(ns, tmp_path, state_dir):
    spec = write(tmp_path / "app.yaml", service("web", ns, replicas=3))
    env = dict(os.environ, ORCHESTR_STATE_DIR=str(state_dir), ORCHESTR_RUNTIME="docker")
    procs = [subprocess.Popen([ORCHESTR, "apply", "-f", spec], env=env, stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    # one did the work, the other found it done: never interleaved into duplicates
    assert sorted("nothing to do" in out for out in outs) == [False, True]
    assert sorted(c["name"] for c in get_json(ns, state_dir)) == ["web-0", "web-1", "web-2"]
    assert len(docker_containers(ns)) == 3
    orc("delete", "-n", ns, "--all", state_dir=state_dir, check=True)


def test_a_killed_apply_is_finished_by_the_next(ns, tmp_path, state_dir):
    spec = write(tmp_path / "app.yaml", service("web", ns, replicas=6))
    env = dict(os.environ, ORCHESTR_STATE_DIR=str(state_dir), ORCHESTR_RUNTIME="docker")
    proc = subprocess.Popen([ORCHESTR, "apply", "-f", spec], env=env, stdout=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if line.strip().startswith("done"):
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    out = orc("apply", "-f", spec, state_dir=state_dir, check=True).stdout
    assert "failed" not in out.splitlines()[-1] or " 0 failed" in out
    names = sorted(c["name"] for c in get_json(ns, state_dir))
    assert names == [f"web-{i}" for i in range(6)]
    assert {c["state"] for c in get_json(ns, state_dir)} == {"running"}
    assert "nothing to do" in orc("apply", "-f", spec, state_dir=state_dir, check=True).stdout
    orc("delete", "-n", ns, "--all", state_dir=state_dir, check=True)
    assert docker_containers(ns) == []


BAD_SPECS = {
    "unknown field": ("spec:\n  image: x\n  imagee: y\n", "spec.imagee"),
    "missing image": ("spec:\n  replicas: 1\n", "spec"),
    "bad quantity": ("spec:\n  image: x\n  resources: {memory: lots}\n", "spec.resources.memory"),
    "negative replicas": ("spec:\n  image: x\n  replicas: -1\n", "spec.replicas"),
    "bad restart policy": ("spec:\n  image: x\n  restartPolicy: Sometimes\n", "spec.restartPolicy"),
    "bad port": ("spec:\n  image: x\n  ports: [{containerPort: 70000}]\n", "spec.ports[0].containerPort"),
    "bad duration": ("spec:\n  image: x\n  stopGracePeriod: soon\n", "spec.stopGracePeriod"),
    "unknown dependency": ("spec:\n  image: x\n  dependsOn: [ghost]\n", "spec.dependsOn"),
    "host root": ("spec:\n  image: x\n  volumes: [{type: bind, source: /, target: /host}]\n", "spec.volumes[0]"),
    "bad network": ("spec:\n  image: x\n  network: wifi\n", "spec.network"),
}


@pytest.mark.parametrize("case", sorted(BAD_SPECS))
def test_malformed_specs_get_one_line_and_change_nothing(case, ns, tmp_path, state_dir):
    body, field = BAD_SPECS[case]
    good = service("good", ns)
    bad = f"apiVersion: orchestr/v1\nkind: Service\nmetadata: {{name: bad, namespace: {ns}}}\n{body}"
    spec = write(tmp_path / "mixed.yaml", good, bad)
    for cmd in ("apply", "diff"):
        proc = orc(cmd, "-f", spec, state_dir=state_dir)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.count("\n") == 1, proc.stderr
        assert "Traceback" not in proc.stderr
        assert proc.stderr.startswith(f"orchestr: {spec}:") and f": {field}" in proc.stderr
    assert docker_containers(ns) == []


def test_a_bad_file_among_good_ones_changes_nothing(ns, tmp_path, state_dir):
    good = write(tmp_path / "good.yaml", service("good", ns))
    bad = write(tmp_path / "bad.yaml", "apiVersion: orchestr/v1\nkind: Service\nmetadata: {name: Bad_Name}\n"
                                      "spec: {image: x}\n")
    proc = orc("apply", "-f", good, "-f", bad, state_dir=state_dir)
    assert proc.returncode == 2 and proc.stderr.startswith(f"orchestr: {bad}:3: metadata.name")
    assert docker_containers(ns) == []


def test_debug_shows_the_traceback(state_dir, tmp_path):
    missing = str(tmp_path / "missing.yaml")
    plain = orc("apply", "-f", missing, state_dir=state_dir)
    assert plain.returncode == 2 and "Traceback" not in plain.stderr and missing in plain.stderr
    debug = orc("--debug", "apply", "-f", missing, state_dir=state_dir)
    assert debug.returncode == 2 and "Traceback" in debug.stderr


def test_unknown_runtime_is_one_line(state_dir, tmp_path, namespace):
    spec = write(tmp_path / "a.yaml", service("a", namespace))
    proc = orc("apply", "-f", spec, "--runtime", "nope", state_dir=state_dir)
    assert proc.returncode != 0 and proc.stderr.count("\n") == 1 and "unknown runtime 'nope'" in proc.stderr


def test_images_commands(docker_engine, tmp_path, state_dir):
    from orchestr.testing import images as mkimage

    ref = f"orchestr-test/cli-{os.getpid()}:v1"
    archive = tmp_path / "img.tar"
    mkimage.busybox_image(archive, [ref])
    out = orc("images", "import", str(archive), "--runtime", "docker", state_dir=state_dir, check=True).stdout
    assert ref in out
    listed = json.loads(orc("images", "ls", "-o", "json", state_dir=state_dir, check=True).stdout)
    assert any(ref in i["references"] for i in listed)
    inspect = json.loads(orc("images", "inspect", ref, state_dir=state_dir, check=True).stdout)
    assert inspect[0]["RootFS"]["Layers"]
    assert "mkimage layer 0" in orc("images", "history", ref, state_dir=state_dir, check=True).stdout
    orc("images", "rm", ref, state_dir=state_dir, check=True)
    gone = orc("images", "inspect", ref, state_dir=state_dir)
    assert gone.returncode != 0 and ref in gone.stderr and gone.stderr.count("\n") == 1


def test_plugins_lists_docker_with_its_package(state_dir):
    out = orc("plugins", state_dir=state_dir, check=True).stdout
    row = next(line for line in out.splitlines() if line.startswith("docker "))
    assert "orchestr_docker" in row and "orchestr 0.1.0" in row


def test_help_is_light():
    """`--help` must not import the heavy clients: checked by what is imported, not by time."""
    code = "import sys, orchestr.cli; print(sorted(m for m in ('aiodocker', 'aiohttp', 'pydantic', 'yaml', 'pluggy') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    assert subprocess.run([ORCHESTR, "--help"], capture_output=True).returncode == 0


def test_readme_library_example_runs(docker_namespace, tmp_path, state_dir):
    """The README's library example, run as it is (with this test's namespace and image)."""
    readme = (ROOT / "README.md").read_text()
    start = readme.index("```python\n", readme.index("## Library")) + len("```python\n")
    code = readme[start: readme.index("```", start)]
    code = code.replace('NAMESPACE = "demo"', f'NAMESPACE = "{docker_namespace}"').replace("busybox:latest", TEST_IMAGE)
    script = tmp_path / "example.py"
    script.write_text(code)
    env = dict(os.environ, ORCHESTR_STATE_DIR=str(state_dir), ORCHESTR_RUNTIME="docker")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "hello-0 running" in proc.stdout
    assert docker_containers(docker_namespace) == []


def test_empty_tables_print_their_header(state_dir):
    listed = orc("images", "ls", "--runtime", "native", state_dir=state_dir, check=True)
    assert listed.stdout.split() == ["REFERENCE", "IMAGE", "ID", "CREATED", "SIZE"] and listed.stderr == ""


def test_apply_reports_a_crash_loop_and_get_shows_its_restarts(ns, tmp_path, state_dir):
    spec = write(tmp_path / "app.yaml", service("crash", ns, command="echo starting; exit 3"))  # Always
    # a long window: the watch ends once every container it started has ended, so no timing is relied on
    up = orc("apply", "--settle", "10m", "-f", spec, state_dir=state_dir)
    assert up.returncode == 1, up.stdout + up.stderr
    assert "0 done, 1 failed, 0 skipped" in up.stdout and "FAILED" not in up.stdout
    assert up.stderr == f"  FAILED   create {ns}/crash-0: crash-0 exited with 3 right after its start\n"

    def restarted() -> dict | None:
        [c] = get_json(ns, state_dir)
        return c if c["restarts"] else None

    deadline = time.monotonic() + 60
    while (c := restarted()) is None:
        assert time.monotonic() < deadline, "the engine did not restart crash-0"
        time.sleep(0.2)
    engine = subprocess.run(["docker", "inspect", "-f", "{{.RestartCount}}", c["id"]], capture_output=True,
                            text=True, check=True).stdout
    assert c["restarts"] <= int(engine)  # the engine's own count, read a moment later
    header = orc("get", "-n", ns, state_dir=state_dir, check=True).stdout.splitlines()[0]
    assert header.split()[:5] == ["NAMESPACE", "NAME", "STATE", "HEALTH", "RESTARTS"]
    orc("delete", "-f", spec, state_dir=state_dir, check=True)
    assert docker_containers(ns) == []


def test_an_empty_file_and_an_endless_one_are_bad_input(tmp_path, state_dir, namespace):
    empty = write(tmp_path / "empty.yaml", "# nothing yet\n")
    for cmd in ("apply", "diff", "delete"):
        proc = orc(cmd, "-f", empty, state_dir=state_dir)
        assert (proc.returncode, proc.stdout) == (2, ""), proc.stdout
        assert proc.stderr == f"orchestr: {empty}: the file holds no documents; expected at least one Service\n"
    endless = orc("apply", "-f", "/dev/zero", state_dir=state_dir, timeout=60)  # read only up to the limit
    assert (endless.returncode, endless.stdout) == (2, "")
    assert endless.stderr == "orchestr: /dev/zero: the file is too large: a spec file may hold at most 8Mi\n"


def test_an_action_that_fails_is_reported_on_stderr(ns, tmp_path, state_dir):
    spec = write(tmp_path / "app.yaml", service("good", ns),
                 service("broken", ns).replace(TEST_IMAGE, "127.0.0.1:9/orchestr-test/missing:latest"))
    proc = orc("apply", "-f", spec, state_dir=state_dir)
    assert proc.returncode == 1
    assert "1 done, 1 failed, 0 skipped" in proc.stdout and "FAILED" not in proc.stdout
    [line] = proc.stderr.splitlines()
    assert line.startswith(f"  FAILED   create {ns}/broken-0: create broken-0: ") and "127.0.0.1:9" in line
    orc("delete", "-n", ns, "--all", state_dir=state_dir, check=True)


# Traps the three signals a foreground run passes on, says so, then waits: its exit code tells that one came.
TRAPPING = "trap 'exit 3' TERM HUP INT; echo ready; sleep 3600 & wait"


def _ignoring_sigint() -> None:
    """What `sh -c 'cmd &'` does to a background job: SIGINT ignored, so only SIGTERM and SIGHUP reach it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def signalled_run(state_dir: Path, sig: int, *args: str, preexec=None) -> tuple[int, str, bool]:
    """`orchestr run ARGS` on the docker runtime, sent sig once its container has said ready; returns the exit code,
    stderr and whether SIGINT was ignored by the command meanwhile."""
    env = dict(os.environ, ORCHESTR_STATE_DIR=str(state_dir), ORCHESTR_RUNTIME="docker")
    run = subprocess.Popen([ORCHESTR, "run", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, preexec_fn=preexec)
    try:
        assert run.stdout.readline() == "ready\n"
        status = Path(f"/proc/{run.pid}/status").read_text()
        ignored = int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigIgn:")), 16)
        run.send_signal(sig)
        _, err = run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    return run.returncode, err, bool(ignored & (1 << (signal.SIGINT - 1)))


@pytest.mark.parametrize("sig, sigint_ignored", [
    (signal.SIGTERM, False), (signal.SIGHUP, False), (signal.SIGINT, False), (signal.SIGTERM, True),
    (signal.SIGHUP, True),
])
def test_a_signal_to_a_foreground_run_goes_to_its_container_which_is_removed(ns, state_dir, sig, sigint_ignored):
    code, err, ignored = signalled_run(state_dir, sig, "--rm", "-n", ns, TEST_IMAGE, "sh", "-c", TRAPPING,
                                       preexec=_ignoring_sigint if sigint_ignored else None)
    assert ignored == sigint_ignored  # an ignored SIGINT stays so
    assert (code, err) == (3, "")  # the container's own exit, from its trap
    assert docker_containers(ns) == []


def test_sig_proxy_false_stops_and_removes_a_run_with_rm(ns, state_dir):
    name = f"{ns}-left"
    code, err, _ = signalled_run(state_dir, signal.SIGTERM, "--rm", "--sig-proxy=false", "--name", name, "-n", ns,
                                 TEST_IMAGE, "sh", "-c", TRAPPING)
    assert (code, err) == (128 + signal.SIGTERM, f"orchestr: SIGTERM: container {name} was stopped and removed\n")
    assert docker_containers(ns) == []
