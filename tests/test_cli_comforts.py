"""The command line's comforts on the native runtime: inspect, -o yaml, logs of every replica of a service,
get -w, and colour in plans on a terminal (through a pty) that NO_COLOR and pipes turn off."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import time
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the native runtime needs root")


@pytest.fixture
def ns(namespace, state_dir, busybox_archive):
    from test_native_cli import assert_nothing_left, orc

    orc("images", "import", str(busybox_archive), state_dir=state_dir, check=True)
    yield namespace
    assert_nothing_left(namespace, state_dir)


def on_a_terminal(argv: list[str], env: dict[str, str], timeout: float = 60) -> tuple[int, bytes]:
    """Exit status and output of argv with a pty as its stdout and stderr."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, env=env)
    os.close(slave)
    out = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if select.select([master], [], [], 0.1)[0]:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: every writer is gone
                    break
                if not chunk:
                    break
                out += chunk
            elif proc.poll() is not None:
                break
        return proc.wait(timeout=30), out
    finally:
        os.close(master)


def test_inspect_yaml_and_logs_of_every_replica(ns, tmp_path, state_dir):
    from test_native_cli import ORCHESTR, _env, orc, service, write

    script = ["sh", "-c", "echo out from $HOSTNAME; echo err from $HOSTNAME >&2; exec sleep 3600"]
    spec = write(tmp_path / "app.yaml", service("web", ns, replicas=3, command=script),
                 service("db", ns, command=["sh", "-c", "echo db; exec sleep 3600"]))

    # colour on a terminal, none with NO_COLOR or through a pipe
    code, out = on_a_terminal([ORCHESTR, "apply", "-f", spec], _env(state_dir))
    assert code == 0 and b"\x1b[32mcreate   \x1b[0m" in out and b"\x1b[32mdone\x1b[0m" in out
    code, out = on_a_terminal([ORCHESTR, "apply", "--dry-run", "-f", spec], {**_env(state_dir), "NO_COLOR": "1"})
    assert code == 0 and b"\x1b[" not in out and b"nothing to do" in out
    write(tmp_path / "app.yaml", service("db", ns, command=["sh", "-c", "echo db; exec sleep 3600"]))
    code, out = on_a_terminal([ORCHESTR, "diff", "--prune", "-f", spec], _env(state_dir))
    assert code == 1 and out.count(b"\x1b[31mdelete   \x1b[0m") == 3
    code, out = on_a_terminal([ORCHESTR, "diff", "--prune", "-f", spec], {**_env(state_dir), "NO_COLOR": "1"})
    assert code == 1 and b"\x1b[" not in out and out.count(b"delete ") == 3
    piped = orc("diff", "--prune", "-f", spec, state_dir=state_dir)
    assert piped.returncode == 1 and "\x1b[" not in piped.stdout
    write(tmp_path / "app.yaml", service("web", ns, replicas=3, command=script),
          service("db", ns, command=["sh", "-c", "echo db; exec sleep 3600"]))

    as_json = json.loads(orc("inspect", "-n", ns, "web-1", state_dir=state_dir, check=True).stdout)
    as_yaml = yaml.safe_load(orc("inspect", "-n", ns, "web-1", "-o", "yaml", state_dir=state_dir, check=True).stdout)
    assert as_json == as_yaml
    assert (as_json["name"], as_json["service"], as_json["replica"], as_json["state"]) == ("web-1", "web", 1, "running")
    assert as_json["labels"]["orchestr.service"] == "web" and as_json["pid"] > 0
    missing = orc("inspect", "-n", ns, "web-9", state_dir=state_dir)
    assert missing.returncode == 1 and missing.stderr.startswith("orchestr: no container 'web-9'")
    listed = yaml.safe_load(orc("get", "-n", ns, "-o", "yaml", state_dir=state_dir, check=True).stdout)
    assert sorted(c["name"] for c in listed) == ["db-0", "web-0", "web-1", "web-2"]
    stats = yaml.safe_load(orc("stats", "-n", ns, "--no-stream", "-o", "yaml", state_dir=state_dir, check=True).stdout)
    assert sorted(s["name"] for s in stats) == ["db-0", "web-0", "web-1", "web-2"]

    def replica_logs() -> subprocess.CompletedProcess:
        return orc("logs", "-n", ns, "svc/web", state_dir=state_dir, check=True)

    from test_native_cli import until

    logs = until(lambda: (p := replica_logs()) and p.stdout.count("out from") == 3 and p, "every replica's output")
    assert sorted(logs.stdout.splitlines()) == [f"web-{i}  | out from web-{i}" for i in range(3)]
    assert sorted(logs.stderr.splitlines()) == [f"web-{i}  | err from web-{i}" for i in range(3)]
    follow = subprocess.Popen([ORCHESTR, "logs", "-n", ns, "-f", "svc/web"], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, env=_env(state_dir), text=True)
    try:
        seen = {follow.stdout.readline().strip() for _ in range(3)}
        assert seen == {f"web-{i}  | out from web-{i}" for i in range(3)}
        orc("exec", "-n", ns, "web-2", "--", "sh", "-c", "echo late > /proc/1/fd/1", state_dir=state_dir, check=True)
        assert follow.stdout.readline() == "web-2  | late\n"  # followed as it comes
    finally:
        follow.terminate()
        follow.wait(timeout=30)
    wrong = orc("logs", "-n", ns, "svc/nope", state_dir=state_dir)
    assert wrong.returncode == 1 and wrong.stderr == f"orchestr: no service 'nope' in namespace '{ns}' (see " \
                                                    f"`orchestr get -n {ns}`)\n"
    orc("delete", "-f", spec, state_dir=state_dir, check=True)


def test_get_watch_prints_again_as_states_change(ns, tmp_path, state_dir):
    from test_native_cli import ORCHESTR, _env, orc, service, write

    spec = write(tmp_path / "app.yaml", service("web", ns))
    events = subprocess.Popen([ORCHESTR, "events", "-n", ns, "-o", "yaml"], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, env=_env(state_dir))
    orc("apply", "-f", spec, state_dir=state_dir, check=True)
    watch = subprocess.Popen([ORCHESTR, "get", "-w", "-n", ns, "-o", "json"], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, env=_env(state_dir), text=True)
    try:
        def next_listing() -> list[dict]:
            text = ""
            while True:
                text += watch.stdout.readline()
                if text.rstrip().endswith("]") and text.count("[") == text.count("]"):
                    return json.loads(text)

        assert [(c["name"], c["state"]) for c in next_listing()] == [("web-0", "running")]
        orc("pause", "-n", ns, "web-0", state_dir=state_dir, check=True)
        assert [(c["name"], c["state"]) for c in next_listing()] == [("web-0", "paused")]
        orc("delete", "-f", spec, state_dir=state_dir, check=True)
        states = []
        while listing := next_listing():  # what it went through on its way out, then nothing
            states.append(listing[0]["state"])
        assert all(s in ("paused", "running", "exited") for s in states)
    finally:
        watch.terminate()
        watch.wait(timeout=30)
    # events -o yaml saw some of this (those after it subscribed), one YAML document each
    out = b""
    deadline = time.monotonic() + 30
    while b"name: web-0" not in out and time.monotonic() < deadline:
        if select.select([events.stdout], [], [], 0.5)[0]:
            out += os.read(events.stdout.fileno(), 65536)
    events.terminate()
    events.wait(timeout=30)
    documents = [d for d in yaml.safe_load_all(out.decode().rpartition("\n---")[0] or out.decode()) if d]
    assert documents and all(d["namespace"] == ns and d["name"] == "web-0" and d["action"] for d in documents)
