"""Service ports end to end, through the CLI, on the native runtime and a real Docker Engine: one host port that
balances new connections across a service's ready replicas, through the kernel's iptables (loopback only)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conftest import TEST_IMAGE, docker_containers
from test_native_cli import orc, write

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="iptables and the native runtime need root")

SERVE = "echo $HOSTNAME > /var/www/index.html; exec httpd -f -p 8080 -h /var/www"


@pytest.fixture(params=["native", "docker"])
def engine(request, namespace, state_dir, busybox_archive):
    """The runtime under test, with the test image; the namespace is deleted whatever happens."""
    if request.param == "docker":
        request.getfixturevalue("docker_namespace")
    else:
        orc("images", "import", str(busybox_archive), state_dir=state_dir, check=True)
    yield request.param
    orc("delete", "-n", namespace, "--all", state_dir=state_dir)
    if request.param == "docker":
        assert docker_containers(namespace) == []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def web(ns: str, runtime: str, port: int, *, replicas: int = 3, command: str = SERVE, extra: str = "") -> str:
    return (
        f"apiVersion: orchestr/v1\nkind: Service\nmetadata: {{name: web, namespace: {ns}}}\n"
        f"spec:\n  runtime: {runtime}\n  image: {TEST_IMAGE}\n  command: [sh, -c, {command!r}]\n"
        f"  replicas: {replicas}\n  stopGracePeriod: 1s\n"
        f"  ports: [{{containerPort: 8080, hostPort: {port}, hostIP: 127.0.0.1}}]\n{extra}"
    )


def fetch(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
        return response.read().decode().strip()


def first_fetch(port: int) -> str:
    """The first answer, asked again while the servers start, for at most twenty seconds."""
    deadline = time.monotonic() + 20
    while True:
        try:
            return fetch(port)
        except (ConnectionError, urllib.error.URLError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def answer(port: int) -> str:
    """fetch(), or "gone" when the server has no page to give."""
    try:
        return fetch(port)
    except urllib.error.HTTPError as e:
        if e.code != 404:
            raise
        return "gone"


def rules_of(port: int) -> list[str]:
    """orchestr's iptables rules for the host port."""
    out = subprocess.run(["iptables-save"], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if f"--dport {port} " in line and "orchestr" in line]


def test_replicas_share_one_host_port_and_a_stopped_one_gets_no_new_connections(engine, namespace, state_dir,
                                                                                tmp_path):
    port = free_port()
    spec = write(tmp_path / "web.yaml", web(namespace, engine, port))
    orc("apply", "-f", spec, state_dir=state_dir, check=True)
    first_fetch(port)
    seen = [fetch(port) for _ in range(40)]
    assert set(seen) == {"web-0", "web-1", "web-2"}  # 3 replicas each missed 40 times: about 2e-7
    assert len(rules_of(port)) == 1  # one dispatch rule, not one per replica

    orc("stop", "-n", namespace, "web-1", state_dir=state_dir, check=True)
    seen = [fetch(port) for _ in range(40)]  # every one answered: none went to the stopped replica
    assert set(seen) == {"web-0", "web-2"}
    orc("start", "-n", namespace, "web-1", state_dir=state_dir, check=True)
    deadline = time.monotonic() + 20
    while "web-1" not in {fetch(port) for _ in range(20)}:
        assert time.monotonic() < deadline, "the started replica got no connection"

    orc("delete", "-f", spec, state_dir=state_dir, check=True)
    assert rules_of(port) == []
    assert not os.path.lexists(f"/run/orchestr/ports/tcp-{port}")
    with pytest.raises((ConnectionError, urllib.error.URLError)):
        fetch(port)


def test_a_host_port_in_mode_host_is_the_one_replicas_own(namespace, state_dir, tmp_path, busybox_archive):
    port = free_port()
    orc("images", "import", str(busybox_archive), state_dir=state_dir, check=True)
    doc = web(namespace, "native", port, replicas=1).replace("hostIP: 127.0.0.1}", "hostIP: 127.0.0.1, mode: host}")
    spec = write(tmp_path / "web.yaml", doc)
    try:
        orc("apply", "-f", spec, state_dir=state_dir, check=True)
        assert first_fetch(port) == "web-0"
        (c,) = json.loads(orc("get", "-n", namespace, "-o", "json", state_dir=state_dir, check=True).stdout)
        assert c["ports"][0]["hostPort"] == port  # the container's own binding, as `get` shows it
        assert not any("ORCHESTR-SERVICES" in line for line in rules_of(port))
    finally:
        orc("delete", "-n", namespace, "--all", state_dir=state_dir)
    assert rules_of(port) == []


def test_a_replica_that_turns_unready_gets_no_new_connections(namespace, state_dir, tmp_path, busybox_archive):
    from test_controller import controller

    port = free_port()
    orc("images", "import", str(busybox_archive), state_dir=state_dir, check=True)
    probe = "  probes: {readiness: {http: {port: 8080, path: /index.html}, interval: 1s, timeout: 1s, retries: 1}}\n"
    spec = write(tmp_path / "web.yaml", web(namespace, "native", port, extra=probe))
    try:
        orc("apply", "-f", spec, state_dir=state_dir, check=True)
        with controller(state_dir, tmp_path):
            first_fetch(port)
            deadline = time.monotonic() + 30
            while {fetch(port) for _ in range(30)} != {"web-0", "web-1", "web-2"}:
                assert time.monotonic() < deadline, "not every replica became ready"
            # web-1's readiness check fails from now on (its page is gone): the controller takes it out
            orc("exec", "-n", namespace, "web-1", "--", "mv", "/var/www/index.html", "/var/www/away",
                state_dir=state_dir, check=True)
            deadline = time.monotonic() + 30
            while "gone" in {answer(port) for _ in range(30)}:  # web-1 answers 404 now
                assert time.monotonic() < deadline, "the unready replica still gets connections"
            assert {fetch(port) for _ in range(40)} == {"web-0", "web-2"}  # and every request is answered
            orc("exec", "-n", namespace, "web-1", "--", "mv", "/var/www/away", "/var/www/index.html",
                state_dir=state_dir, check=True)
            deadline = time.monotonic() + 30
            while "web-1" not in {fetch(port) for _ in range(30)}:
                assert time.monotonic() < deadline, "the replica ready again got no connection"
    finally:
        orc("delete", "-n", namespace, "--all", state_dir=state_dir)
    assert rules_of(port) == []


def test_a_service_port_on_every_address_answers_on_the_hosts_other_addresses(namespace, state_dir, tmp_path,
                                                                             busybox_archive):
    from orchestr_native.network import Network

    port = free_port()
    orc("images", "import", str(busybox_archive), state_dir=state_dir, check=True)
    spec = write(tmp_path / "web.yaml", web(namespace, "native", port, replicas=2).replace("hostIP: 127.0.0.1", ""))
    try:
        orc("apply", "-f", spec, state_dir=state_dir, check=True)
        # an address of this host that is not loopback: the namespace's own bridge's (traffic stays on the host)
        bridge = Network(state_dir / "native").bridge(namespace)
        out = subprocess.run(["ip", "-4", "-o", "addr", "show", "dev", bridge], capture_output=True, text=True,
                             check=True).stdout
        address = out.split("inet ")[1].split("/")[0]
        first_fetch(port)
        with urllib.request.urlopen(f"http://{address}:{port}/", timeout=5) as response:
            assert response.read().decode().strip() in ("web-0", "web-1")
    finally:
        orc("delete", "-n", namespace, "--all", state_dir=state_dir)
    assert rules_of(port) == []
