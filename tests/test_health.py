"""Health checks and dependsOn conditions, on the native runtime and the Docker Engine.

An http check going unhealthy restarts its container through the controller; a dependent waits for a
database-like service that becomes ready after a while and for a one-shot job to finish; the controller's view
shows in get, its journal (what `orchestr events` follows) and the readiness it hands out. The state machine and
the image HEALTHCHECK's translation are checked on plain data. No test asserts a timing: waits are for states.
"""

from __future__ import annotations

import json
import subprocess
import urllib.request

import anyio
import pytest

from conftest import TEST_IMAGE
from orchestr.api import Client
from orchestr.controller import Controller
from orchestr.health import Result, Tracker, image_probes
from orchestr.model import Check, Health, Probes, State
from orchestr.spec import Service
from test_containerd_cli import cd_ns, containerd_image  # noqa: F401 - fixtures
from test_native_cli import ns  # noqa: F401 - a fixture

FAIL, PASS = Result(False, "no"), Result(True, "yes")


def test_a_healthcheck_is_ready_once_it_passes_and_restarts_only_after_it_was_ready():
    check = Check("tcp", port=1, retries=2, start_period=5)
    t = Tracker(Probes(readiness=check, liveness=check, combined=True), started=0)
    assert t.initial() is Health.STARTING
    assert t.record("readiness", FAIL, 1) is None and t.health is Health.STARTING  # in its start period
    assert t.record("readiness", FAIL, 6) is None and t.record("readiness", FAIL, 7) is None
    assert t.health is Health.UNHEALTHY  # never ready: unhealthy, not restarted
    t.record("readiness", PASS, 8)
    assert t.health is Health.HEALTHY and t.due() == ["readiness"]
    assert t.record("readiness", FAIL, 9) is None and t.health is Health.HEALTHY
    assert "failed 2 times: no" in t.record("readiness", FAIL, 10) and t.health is Health.UNHEALTHY


def test_probes_run_startup_first_then_readiness_moves_health_and_liveness_restarts():
    tcp, live = Check("tcp", port=1, retries=1), Check("exec", argv=("true",), retries=2)
    t = Tracker(Probes(readiness=tcp, liveness=live, startup=Check("tcp", port=2, retries=3)), started=0)
    assert t.due() == ["startup"]
    t.record("startup", PASS, 1)
    assert t.due() == ["readiness", "liveness"] and t.health is Health.STARTING
    t.record("readiness", PASS, 2)
    assert t.health is Health.HEALTHY
    assert t.record("readiness", FAIL, 3) is None and t.health is Health.UNHEALTHY  # no restart for readiness
    t.record("readiness", PASS, 4)
    assert t.health is Health.HEALTHY
    assert t.record("liveness", FAIL, 5) is None and "liveness probe failed 2" in t.record("liveness", FAIL, 6)
    only_live = Tracker(Probes(liveness=live), started=0)
    assert only_live.initial() is Health.HEALTHY  # nothing gates its readiness


def test_events_show_health_changes_with_their_reason():
    from orchestr.commands import _event_line

    line = _event_line({"time": "T", "source": "controller", "runtime": "native", "namespace": "shop",
                        "name": "web-0", "action": "health", "health": "unhealthy",
                        "reason": "http://10.88.0.2:8080/ok answered 404"})
    assert line == "T  controller(native)  shop/web-0  health  unhealthy (http://10.88.0.2:8080/ok answered 404)"


def test_an_images_healthcheck_becomes_a_healthcheck():
    config = {"Config": {"Healthcheck": {"Test": ["CMD-SHELL", "wget -q localhost"], "Interval": 5_000_000_000,
                                         "Retries": 4}}}
    p = image_probes(config)
    assert p.combined and p.readiness is p.liveness
    assert (p.readiness.argv, p.readiness.interval, p.readiness.timeout, p.readiness.retries) == (
        ("/bin/sh", "-c", "wget -q localhost"), 5.0, 30.0, 4)
    assert image_probes({"Config": {"Healthcheck": {"Test": ["NONE"]}}}) is None
    assert image_probes({"Config": {}}) is None


def _engine(request, runtime: str) -> tuple[str, str, str]:
    """(runtime, namespace, network): native and docker check containers on their bridge from the host,
    containerd one of network none from inside its network namespace."""
    if runtime == "native":
        return "native", request.getfixturevalue("ns"), "bridge"
    if runtime == "containerd":
        request.getfixturevalue("containerd_namespace")
        return "containerd", request.getfixturevalue("cd_ns"), "none"
    return "docker", request.getfixturevalue("docker_namespace"), "bridge"


@pytest.fixture(params=["native", "docker"])
def engine(request, state_dir):
    return _engine(request, request.param)


@pytest.fixture(params=["native", "docker", "containerd"])
def any_engine(request, state_dir):
    """engine's, and containerd (exec through its shim)."""
    return _engine(request, request.param)


async def _until(check, what: str, timeout: float = 60):
    with anyio.fail_after(timeout):
        while not (found := await check()):
            await anyio.sleep(0.05)
    return found


def _scrape(address: str) -> str:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as r:
        return r.read().decode()


def _orc(state_dir, *args: str) -> str:
    from test_native_cli import orc

    return orc(*args, state_dir=state_dir, check=True).stdout


@pytest.mark.anyio
async def test_an_http_check_going_unhealthy_restarts_the_container(any_engine, state_dir):
    runtime, ns, network = any_engine
    web = Service.build("web", namespace=ns, image=TEST_IMAGE, network=network, stop_grace_period="1s",
                        command=["sh", "-c", "mkdir -p /srv && echo ok > /srv/ok && exec httpd -f -p 8080 -h /srv"],
                        healthcheck={"http": {"port": 8080, "path": "/ok"}, "interval": "200ms", "timeout": "2s",
                                     "retries": 2})
    changes: list[tuple[int | None, Health, str]] = []
    async with Client(state_dir=state_dir, runtime=runtime) as oc:
        assert (await oc.apply([web])).ok
        async with anyio.create_task_group() as tg:
            ctl = Controller(oc, resync=3600, metrics_address="127.0.0.1:0",
                             on_health=lambda c, h, why: changes.append((c.pid, h, why)))
            await tg.start(ctl.run)
            first = (await _until(lambda: _healthy(oc, ns), "web-0 healthy"))
            assert ctl.readiness(first.id) is Health.HEALTHY
            metrics = await anyio.to_thread.run_sync(_scrape, ctl.metrics.address)
            assert f'orchestr_container_health{{health="healthy",namespace="{ns}",service="web"}} 1.0' in metrics
            shown = await anyio.to_thread.run_sync(_orc, state_dir, "get", "-n", ns, "-o", "json")
            assert json.loads(shown)[0]["health"] == "healthy"
            table = await anyio.to_thread.run_sync(_orc, state_dir, "get", "-n", ns)
            assert table.splitlines()[1].split()[2:4] == ["running", "healthy"]

            await oc.exec("web-0", ["rm", "/srv/ok"], namespace=ns)  # now it answers 404
            again = await _until(lambda: _healthy(oc, ns, other_than=first.pid), "web-0 restarted and healthy again")
            tg.cancel_scope.cancel()
        assert again.id == first.id and again.restarts >= 1
        health = [h for _, h, _ in changes]
        unhealthy = health.index(Health.UNHEALTHY)
        assert Health.HEALTHY in health[:unhealthy] and Health.HEALTHY in health[unhealthy:]
        assert "answered 404" in changes[unhealthy][2]
        journal = [json.loads(line) for line in (state_dir / "events.jsonl").read_text().splitlines()]
        seen = [(e["action"], e.get("health")) for e in journal if e.get("name") == "web-0"]
        assert ("health", "unhealthy") in seen and ("unhealthy", None) in seen and seen[-1] == ("health", "healthy")
        await oc.delete([web])


async def _healthy(oc: Client, ns: str, other_than: int | None = None):
    found = [c for c in await oc.get(ns) if c.name == "web-0"]
    c = found[0] if found else None
    if c is None or c.health is not Health.HEALTHY or c.state is not State.RUNNING:
        return None
    if other_than is not None and (c.pid is None or c.pid == other_than):
        return None
    return c


@pytest.mark.anyio
async def test_a_dependent_waits_for_a_healthy_database_and_a_completed_job(engine, state_dir, tmp_path):
    runtime, ns, network = engine
    shared = tmp_path / "shared"
    shared.mkdir()
    common = {"namespace": ns, "image": TEST_IMAGE, "network": network, "stop_grace_period": "1s",
              "volumes": [{"type": "bind", "source": str(shared), "target": "/shared"}]}
    # ready a while after it starts, as a database replaying its log
    db = Service.build("db", command=["sh", "-c", "sleep 2; touch /shared/ready; exec sleep 3600"],
                       healthcheck={"exec": ["test", "-f", "/shared/ready"], "interval": "200ms"}, **common)
    migrate = Service.build("migrate", command=["sh", "-c", "sleep 1; touch /shared/migrated"],
                            restart_policy="Never", **common)
    # exits 3 if it starts before both are there
    web = Service.build("web", restart_policy="Never", depends_on=[{"name": "db", "condition": "healthy"},
                                                                  {"name": "migrate", "condition": "completed"}],
                        command=["sh", "-c", "test -f /shared/ready && test -f /shared/migrated && exec sleep 3600; "
                                             "exit 3"], **common)
    async with Client(state_dir=state_dir, runtime=runtime) as oc:
        result = await oc.apply([db, migrate, web], settle=1.0)
        assert result.ok, [o.error for o in result.failed]
        states = {c.name: (c.state, c.exit_code) for c in await oc.get(ns)}
        assert states["web-0"][0] is State.RUNNING and states["migrate-0"] == (State.EXITED, 0)
        await oc.delete([db, migrate, web])

    if runtime == "native":  # a dependency that never gets there: which one, and why, and apply exits 1
        from orchestr.spec import dump
        from test_native_cli import orc

        never = Service.build("db", command=["sleep", "3600"], healthcheck={"exec": ["false"], "interval": "200ms"},
                              **common)
        waiter = Service.build("web", command=["sleep", "3600"], depends_on=[{"name": "db", "condition": "healthy"}],
                               **common)
        spec = tmp_path / "never.yaml"
        spec.write_text(dump([never, waiter]))
        up = orc("apply", "--wait-timeout", "1s", "-f", str(spec), state_dir=state_dir)
        assert up.returncode == 1, up.stdout + up.stderr
        assert f"FAILED   create {ns}/web-0: dependency db did not become healthy within 1s: false exited with 1" \
            in up.stderr
        orc("delete", "-f", str(spec), state_dir=state_dir, check=True)


@pytest.mark.anyio
async def test_an_images_own_healthcheck_is_honoured_unless_the_spec_disables_it(docker_namespace, state_dir,
                                                                                  tmp_path):
    ns = docker_namespace
    image = f"orchestr-test-healthcheck:{ns}"
    (tmp_path / "Dockerfile").write_text(f'FROM {TEST_IMAGE}\nHEALTHCHECK --interval=200ms CMD ["test", "-f", "/tmp/ok"]\n')
    subprocess.run(["docker", "build", "-q", "-t", image, str(tmp_path)], check=True, capture_output=True)
    try:
        own = Service.build("own", namespace=ns, image=image, command=["sleep", "3600"], stop_grace_period="1s")
        off = Service.build("off", namespace=ns, image=image, command=["sleep", "3600"], stop_grace_period="1s",
                            healthcheck={"disable": True})
        async with Client(state_dir=state_dir, runtime="docker") as oc:
            assert (await oc.apply([own, off])).ok
            found = {c.service: c for c in await oc.get(ns)}
            first = await oc.ready(found["own"], own)  # one round: /tmp/ok is not there yet
            assert (first.ready, first.reason) == (False, "test exited with 1")
            await oc.exec("own-0", ["touch", "/tmp/ok"], namespace=ns)
            later = await oc.ready(found["own"], own, timeout=60)
            assert later.ready and later.health is Health.HEALTHY and later.reason == "test exited with 0"
            unchecked = await oc.ready(found["off"], off)
            assert unchecked.ready and unchecked.reason == "off-0 has no readiness check"
            await oc.delete([own, off])
    finally:
        subprocess.run(["docker", "rmi", "-f", image], capture_output=True)
