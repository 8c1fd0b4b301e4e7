"""The `orchestr` command end to end on the cri runtime, against the tests' own CRI runtime (containerd's CRI
plugin in a second containerd, which the session starts)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import ROOT, TEST_IMAGE
from cri import Cri
from orchestr.testing import host
from orchestr.testing import images as mkimage
from registry import free_port

ORCHESTR = str(Path(sys.executable).parent / "orchestr")
MiB = 1 << 20


def orc(*args: str, state_dir: Path, check: bool = False, timeout: float = 180) -> subprocess.CompletedProcess:
    env = dict(os.environ, ORCHESTR_STATE_DIR=str(state_dir), ORCHESTR_RUNTIME="cri")
    proc = subprocess.run([ORCHESTR, *args], capture_output=True, text=True, env=env, timeout=timeout,
                          stdin=subprocess.DEVNULL)
    if check:
        assert proc.returncode == 0, f"orchestr {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def get_json(ns: str, state_dir: Path) -> dict[str, dict]:
    return {c["name"]: c for c in json.loads(orc("get", "-n", ns, "-o", "json", state_dir=state_dir, check=True).stdout)}


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


@pytest.fixture
def cri(cri_runtime):
    client = Cri(cri_runtime)
    yield client
    client.close()


@pytest.fixture
def cri_ns(cri, cri_image, namespace, state_dir):
    """A namespace whose pods are deleted after the test, whatever it left."""
    yield namespace
    orc("delete", "-n", namespace, "--all", state_dir=state_dir)
    assert cri.pods(namespace) == []


def demo_spec(tmp_path: Path, namespace: str, port: int) -> Path:
    """specs/demo.yaml with `runtime: cri`, in a namespace of the test's own and with its edge on a free port."""
    text = (ROOT / "specs" / "demo.yaml").read_text()
    text = text.replace("namespace: demo", f"namespace: {namespace}").replace("hostPort: 18080", f"hostPort: {port}")
    text = re.sub(r"^spec:\n", "spec:\n  runtime: cri\n", text, flags=re.M)
    path = tmp_path / "demo.yaml"
    path.write_text(text)
    return path


def test_the_demo_on_cri_serves_limits_logs_execs_and_leaves_nothing(cri, cri_ns, tmp_path, state_dir):
    archive = tmp_path / "busybox.tar"
    mkimage.busybox_image(archive, ["busybox:latest"])
    orc("images", "import", "--runtime", "cri", str(archive), state_dir=state_dir, check=True)
    port = free_port()
    spec = demo_spec(tmp_path, cri_ns, port)

    out = orc("apply", "-f", str(spec), state_dir=state_dir, check=True).stdout
    assert "5 done, 0 failed, 0 skipped" in out, out
    got = get_json(cri_ns, state_dir)
    assert sorted(got) == ["db-0", "edge-0", "web-0", "web-1", "worker-0"]
    assert {(c["runtime"], c["state"]) for c in got.values()} == {("cri", "running")}
    assert all(c["ip"] for c in got.values())
    assert got["edge-0"]["ports"] == [{"hostIP": "127.0.0.1", "hostPort": port, "containerPort": 8080,
                                       "protocol": "tcp"}]
    assert orc("apply", "-f", str(spec), state_dir=state_dir, check=True).stdout.count("nothing to do") == 1

    # the published port answers on 127.0.0.1, and service names reach the other replicas
    assert "edge of namespace" in fetch(f"http://127.0.0.1:{port}/")
    served = orc("exec", "-n", cri_ns, "edge-0", "--", "wget", "-qO-", "http://web:8080/", state_dir=state_dir,
                 check=True).stdout
    assert re.search(r"served by web-[01]", served), served
    assert "Hello from orchestr" in orc("exec", "-n", cri_ns, "edge-0", "--", "wget", "-qO-", "http://web-1:8080/",
                                        state_dir=state_dir, check=True).stdout
    code = orc("exec", "-n", cri_ns, "web-0", "--", "sh", "-c", "cat /www/index.html; exit 4", state_dir=state_dir)
    assert code.returncode == 4 and "served by web-0" in code.stdout

    # limits in the containers' cgroups: cpus and memory from the container's config, pids from orchestr
    web = host.limits(got["web-0"]["pid"])
    assert (web.cpus, web.memory, web.pids) == (0.5, 32 * MiB, 50), web
    db = host.limits(got["db-0"]["pid"])
    assert (db.cpus, db.memory, db.pids) == (None, 16 * MiB, 20), db

    # logs, from the CRI log files
    deadline = time.monotonic() + 30
    while "worker: job 2" not in (worker := orc("logs", "-n", cri_ns, "worker-0", state_dir=state_dir).stdout):
        assert time.monotonic() < deadline, worker
        time.sleep(0.2)
    assert worker.startswith("worker: job 1 every 3s\n")
    tail = orc("logs", "-n", cri_ns, "worker-0", "--tail", "1", "-t", state_dir=state_dir, check=True).stdout
    assert re.fullmatch(r"\S+Z worker: job \d+ every 3s\n", tail), tail

    traces = [cri.trace(c["id"]) for c in got.values()]
    out = orc("delete", "-f", str(spec), state_dir=state_dir, check=True).stdout
    assert out.count("delete ") >= 5, out
    assert cri.pods(cri_ns) == [] and cri.containers(cri_ns) == []
    left = [thing for trace in traces for thing in cri.leftovers(trace)]
    assert not left, left
    assert cri.veths() == []
    assert not list((state_dir / "cri" / "pods").iterdir())
