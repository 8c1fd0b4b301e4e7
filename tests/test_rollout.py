"""Rolling updates end to end, through the CLI, on the native runtime and a real Docker Engine: replicas behind one
service port are replaced a few at a time while a client keeps fetching through it (loopback only)."""

from __future__ import annotations

import threading
import urllib.error

from test_native_cli import orc, write
from test_service_ports import engine, fetch, first_fetch, free_port, rules_of, web  # noqa: F401 - the fixture

SERVE = "echo $HOSTNAME $V > /var/www/index.html; exec httpd -f -p 8080 -h /var/www"
UPDATE = "  update: {maxSurge: 1, maxUnavailable: 0, minReadySeconds: 1s, progressDeadline: 5s}\n"


class Client(threading.Thread):
    """Fetches through the service port, one new connection after another, until stopped; counts what fails."""

    def __init__(self, port: int):
        super().__init__(daemon=True)
        self.port, self.done, self.failed = port, threading.Event(), []
        self.answers: list[str] = []

    def run(self) -> None:
        while not self.done.is_set():
            try:
                self.answers.append(fetch(self.port))
            except (ConnectionError, urllib.error.URLError, TimeoutError) as e:
                self.failed.append(repr(e))

    def stop(self) -> None:
        self.done.set()
        self.join(30)


def versions(answers: list[str]) -> set[str]:
    return {a.split()[-1] for a in answers if a.split()}


def test_a_rolling_update_drops_nothing_and_a_bad_one_rolls_back(engine, namespace, state_dir, tmp_path):
    port = free_port()
    spec = tmp_path / "web.yaml"

    def apply(version: str, command: str = SERVE, check: str = "/index.html"):
        health = f"  healthcheck: {{http: {{port: 8080, path: {check}}}, interval: 1s, timeout: 1s}}\n"
        write(spec, web(namespace, engine, port, command=command, extra=f"  env: {{V: '{version}'}}\n" + UPDATE
                        + health))
        return orc("apply", "-f", str(spec), state_dir=state_dir, timeout=120)

    assert apply("v1").returncode == 0
    first_fetch(port)

    client = Client(port)
    client.start()
    good = apply("v2")
    client.stop()
    assert good.returncode == 0, good.stdout + good.stderr
    assert client.failed == []
    assert len(client.answers) > 20 and versions(client.answers) == {"v1", "v2"}
    assert versions([fetch(port) for _ in range(20)]) == {"v2"}
    assert orc("rollout", "status", "-n", namespace, "web", state_dir=state_dir).returncode == 0

    client = Client(port)
    client.start()
    bad = apply("v3", check="/missing")  # its new replica serves, but its readiness check never passes
    client.stop()
    assert bad.returncode == 1
    assert f"rolling back {namespace}/web to revision" in bad.stderr and "404" in bad.stderr
    assert client.failed == []  # the old replicas kept serving
    assert versions(client.answers) == {"v2"}
    history = orc("rollout", "history", "-n", namespace, "web", state_dir=state_dir, check=True).stdout.splitlines()
    assert [line.split()[2] for line in history[1:]] == ["apply", "apply", "apply", "rollback"]
    assert history[-1].split()[-1] == "*"  # the rollback's spec, v2's, is the current one
    assert orc("rollout", "status", "-n", namespace, "web", state_dir=state_dir).returncode == 0

    orc("delete", "-f", str(spec), state_dir=state_dir, check=True)
    assert rules_of(port) == []
