"""The executor against the real Docker Engine: dependency order, the concurrency bound, partial failure,
recreating one service, deleting dependents first, and converge-then-replan."""

from __future__ import annotations

import dataclasses
import itertools
import subprocess
from dataclasses import dataclass, field

import anyio
import pytest

from conftest import docker_containers
from orchestr.config import Config
from orchestr.errors import RuntimeFailure, TerminalFailure
from orchestr.executor import Outcome, execute
from orchestr.model import Container, ContainerSpec, State
from orchestr.planner import Kind, Plan, plan, plan_delete_namespace
from orchestr.plugins import open_runtime
from orchestr.runtime import Capabilities
from orchestr.spec import Service

pytestmark = [pytest.mark.anyio, pytest.mark.docker]

GUARD = 60  # seconds; only turns a hang into a failure
MISSING_IMAGE = "127.0.0.1:9/orchestr-test/missing:latest"  # a refused loopback registry: fails fast, offline
# A shell as PID 1 ignores SIGTERM unless it traps it; trapping makes every stop immediate.
SLEEPER = ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]
VERBS = {"ensure_image", "create", "start", "stop", "delete", "pause", "resume"}


@dataclass
class Call:
    verb: str
    target: str  # the container's orchestr name, or the image for ensure_image
    began: int
    ended: int = -1
    timeout: float | None = None  # what stop was given


@dataclass
class Recorder:
    """A Runtime that forwards to a real one and records every verb: the order calls begin and end in,
    and how many were in flight at once."""

    inner: object
    calls: list[Call] = field(default_factory=list)
    names: dict[str, str] = field(default_factory=dict)  # container id -> name
    in_flight: int = 0
    max_in_flight: int = 0
    caps: Capabilities | None = None  # what the runtime declares, when the test says otherwise
    _clock: itertools.count = field(default_factory=itertools.count)

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def capabilities(self) -> Capabilities:
        return self.caps or self.inner.capabilities

    def __getattr__(self, verb: str):
        method = getattr(self.inner, verb)
        if verb not in VERBS:
            return method

        async def recorded(target, *args, **kwargs):
            shown = target.name if isinstance(target, ContainerSpec) else self.names.get(target, target)
            call = Call(verb, shown, next(self._clock), timeout=kwargs.get("timeout"))
            self.calls.append(call)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                result = await method(target, *args, **kwargs)
            finally:
                self.in_flight -= 1
                call.ended = next(self._clock)
            if isinstance(result, Container):
                self.names[result.id] = result.name
            return result

        return recorded

    async def list(self, namespace: str) -> list[Container]:
        found = await self.inner.list(namespace)
        self.names.update((c.id, c.name) for c in found)
        return found

    def call(self, verb: str, target: str) -> Call:
        (found,) = [c for c in self.calls if c.verb == verb and c.target == target]
        return found


@pytest.fixture
async def runtime(docker_namespace, tmp_path):
    rt = open_runtime("docker", Config(state_dir=tmp_path / "state"))
    yield Recorder(rt)
    await rt.close()


def service(ns: str, image: str, name: str, **spec) -> Service:
    spec.setdefault("command", SLEEPER)
    return Service.build(name, namespace=ns, image=image, stop_grace_period="1s", **spec)


async def converge(rt: Recorder, ns: str, services: list[Service], **kwargs) -> tuple[Plan, list[Outcome]]:
    """Plan against what the engine reports, then execute; every outcome is also checked to have
    been reported through on_event exactly once."""
    p = plan(services, await rt.list(ns), default_runtime="docker", **kwargs.pop("plan", {}))
    reported: list[Outcome] = []
    with anyio.fail_after(GUARD):
        outcomes = await execute(
            p, {(s.namespace, s.name): s for s in services}, {"docker": rt}, on_event=reported.append, **kwargs
        )
    assert [o.action for o in outcomes] == list(p.actions)
    assert sorted(map(id, reported)) == sorted(map(id, outcomes))
    return p, outcomes


async def replan(rt: Recorder, ns: str, services: list[Service]) -> Plan:
    return plan(services, await rt.list(ns), default_runtime="docker")


async def states(rt: Recorder, ns: str) -> dict[str, State]:
    return {c.name: c.state for c in await rt.list(ns)}


async def delete_all(rt: Recorder, ns: str) -> None:
    p = plan_delete_namespace(ns, await rt.list(ns))
    with anyio.fail_after(GUARD):
        outcomes = await execute(p, {}, {"docker": rt})
    assert all(o.ok for o in outcomes), [o.error for o in outcomes]
    assert docker_containers(ns) == []


async def test_dependencies_are_running_before_dependents_are_created(runtime, docker_namespace, docker_image):
    ns = docker_namespace
    services = [
        service(ns, docker_image, "web", replicas=2, depends_on=["api"]),
        service(ns, docker_image, "api", depends_on=["db", "cache"]),
        service(ns, docker_image, "db"),
        service(ns, docker_image, "cache"),
    ]
    started: list[str] = []
    p, outcomes = await converge(runtime, ns, services, on_start=lambda a: started.append(a.name))

    assert all(o.ok for o in outcomes), [o.error for o in outcomes]
    assert sorted(started) == sorted(a.name for a in p)
    for dependency, dependent in [("db-0", "api-0"), ("cache-0", "api-0"), ("api-0", "web-0"), ("api-0", "web-1")]:
        assert runtime.call("start", dependency).ended < runtime.call("create", dependent).began
    assert await states(runtime, ns) == dict.fromkeys(["web-0", "web-1", "api-0", "db-0", "cache-0"], State.RUNNING)
    assert {o.container_id for o in outcomes} == {c.id for c in await runtime.list(ns)}
    # The image is looked up once for the whole plan, not once per container.
    assert [c.target for c in runtime.calls if c.verb == "ensure_image"] == [docker_image]

    assert await replan(runtime, ns, services) == Plan()
    await delete_all(runtime, ns)
    assert runtime.call("delete", "web-0").ended < runtime.call("stop", "api-0").began
    assert runtime.call("delete", "api-0").ended < runtime.call("stop", "db-0").began


@pytest.mark.parametrize("concurrency", [1, 3])
async def test_no_more_actions_run_at_once_than_the_concurrency(runtime, docker_namespace, docker_image, concurrency):
    ns = docker_namespace
    services = [service(ns, docker_image, f"s{i}") for i in range(6)]
    _, outcomes = await converge(runtime, ns, services, concurrency=concurrency)
    assert all(o.ok for o in outcomes), [o.error for o in outcomes]
    assert runtime.max_in_flight <= concurrency
    if concurrency > 1:
        assert runtime.max_in_flight > 1, "independent actions ran one at a time"
    await delete_all(runtime, ns)


async def test_a_failed_service_skips_its_dependents_and_nothing_else(runtime, docker_namespace, docker_image):
    ns = docker_namespace
    services = [
        service(ns, MISSING_IMAGE, "broken"),
        service(ns, docker_image, "needs-broken", depends_on=["broken"]),
        service(ns, docker_image, "needs-needs", depends_on=["needs-broken"]),
        service(ns, docker_image, "alone", replicas=2),
    ]
    _, outcomes = await converge(runtime, ns, services)
    by_name = {o.action.name: o for o in outcomes}

    broken = by_name["broken-0"]
    assert (broken.ok, broken.skipped) == (False, False)
    assert broken.error.startswith("create broken-0: ") and MISSING_IMAGE in broken.error
    assert "\n" not in broken.error
    # what failed is kept as raised, saying where
    assert isinstance(broken.exception, RuntimeFailure) and MISSING_IMAGE in str(broken.exception)
    assert (broken.exception.runtime, broken.exception.container) == ("docker", "broken-0")
    assert [(o.ok, o.skipped, o.error) for o in (by_name["needs-broken-0"], by_name["needs-needs-0"])] == [
        (False, True, "create broken-0 failed"),
        (False, True, "create needs-broken-0 was skipped"),
    ]
    assert by_name["alone-0"].ok and by_name["alone-1"].ok
    assert await states(runtime, ns) == {"alone-0": State.RUNNING, "alone-1": State.RUNNING}
    assert not any(c.target.startswith("needs-") for c in runtime.calls)

    # Fixing the image brings up exactly what was missing.
    fixed = [service(ns, docker_image, "broken"), *services[1:]]
    p, outcomes = await converge(runtime, ns, fixed)
    assert sorted(a.name for a in p) == ["broken-0", "needs-broken-0", "needs-needs-0"]
    assert all(o.ok for o in outcomes), [o.error for o in outcomes]
    assert await replan(runtime, ns, fixed) == Plan()
    await delete_all(runtime, ns)


async def test_recreating_one_changed_service_leaves_the_others_alone(runtime, docker_namespace, docker_image):
    ns = docker_namespace
    services = [
        service(ns, docker_image, "db"),
        service(ns, docker_image, "web", replicas=2, depends_on=["db"]),
        service(ns, docker_image, "worker"),
    ]
    await converge(runtime, ns, services)
    before = {c.name: c.id for c in await runtime.list(ns)}

    web = service(ns, docker_image, "web", replicas=2, depends_on=["db"], env={"V": "2"})
    changed = [services[0], web, services[2]]
    p, outcomes = await converge(runtime, ns, changed)
    new = [f"web-0-{web.spec_hash[:5]}", f"web-1-{web.spec_hash[:5]}"]  # rolled out beside the old ones
    assert sorted((a.kind, a.name) for a in p) == [(Kind.CREATE, new[0]), (Kind.CREATE, new[1]),
                                                   (Kind.DELETE, "web-0"), (Kind.DELETE, "web-1")]
    assert all(o.ok for o in outcomes), [o.error for o in outcomes]

    after = {c.name: c.id for c in await runtime.list(ns)}
    assert set(after) == {"db-0", "worker-0", *new}
    assert {n: after[n] for n in ("db-0", "worker-0")} == {n: before[n] for n in ("db-0", "worker-0")}
    assert {o.container_id for o in outcomes if o.action.kind is Kind.CREATE} == {after[n] for n in new}
    assert await replan(runtime, ns, changed) == Plan()
    await delete_all(runtime, ns)


async def test_drifted_state_converges_and_replans_empty(runtime, docker_namespace, docker_image):
    ns = docker_namespace
    services = [service(ns, docker_image, "web", replicas=3), service(ns, docker_image, "idle"),
                service(ns, docker_image, "gone")]
    await converge(runtime, ns, services)
    ids = {c.name: c.id for c in await runtime.list(ns)}
    subprocess.run(["docker", "stop", "-t", "1", ids["web-0"]], check=True, capture_output=True)
    subprocess.run(["docker", "pause", ids["web-1"]], check=True, capture_output=True)

    desired = [service(ns, docker_image, "web", replicas=2), service(ns, docker_image, "idle", paused=True)]
    p, outcomes = await converge(runtime, ns, desired, plan={"prune": True})
    assert {(a.kind, a.name) for a in p} == {
        (Kind.START, "web-0"), (Kind.UNPAUSE, "web-1"), (Kind.DELETE, "web-2"), (Kind.PAUSE, "idle-0"),
        (Kind.DELETE, "gone-0"),
    }
    assert all(o.ok for o in outcomes), [o.error for o in outcomes]
    assert await states(runtime, ns) == {"web-0": State.RUNNING, "web-1": State.RUNNING, "idle-0": State.PAUSED}
    assert await replan(runtime, ns, desired) == Plan()

    # A paused service is created paused.
    more = [*desired, service(ns, docker_image, "frozen", paused=True)]
    await converge(runtime, ns, more)
    assert (await states(runtime, ns))["frozen-0"] == State.PAUSED
    assert await replan(runtime, ns, more) == Plan()
    await delete_all(runtime, ns)


async def test_deleting_undeclared_services_keeps_their_grace_period(runtime, docker_namespace, docker_image):
    """Without the spec (delete -n NS --all, prune), the grace period comes from the container itself."""
    ns = docker_namespace
    await converge(runtime, ns, [Service.build("slow", namespace=ns, image=docker_image, stop_grace_period="3s",
                                               command=SLEEPER)])
    runtime.calls.clear()
    await delete_all(runtime, ns)
    assert runtime.call("stop", "slow-0").timeout == 3.0


async def test_paused_on_a_runtime_that_cannot_pause_fails_in_one_line_before_anything_changes(
        runtime, docker_namespace, docker_image):
    ns = docker_namespace
    runtime.caps = dataclasses.replace(runtime.inner.capabilities, pause=False)
    frozen = service(ns, docker_image, "frozen", paused=True)
    _, outcomes = await converge(runtime, ns, [frozen])
    (outcome,) = outcomes
    assert not outcome.ok and isinstance(outcome.exception, TerminalFailure)
    assert outcome.error == "create frozen-0: <built>: spec.paused: the docker runtime cannot pause containers"
    assert runtime.calls == []  # no image looked up, nothing created
    assert docker_containers(ns) == []

    # a running container asked to pause later fails the same way, and keeps running
    await converge(runtime, ns, [service(ns, docker_image, "frozen")])
    p, outcomes = await converge(runtime, ns, [frozen])
    assert [(a.kind, o.ok) for a, o in zip(p, outcomes)] == [(Kind.PAUSE, False)]
    assert outcomes[0].error == "pause frozen-0: the docker runtime cannot pause containers"
    assert await states(runtime, ns) == {"frozen-0": State.RUNNING}
    await delete_all(runtime, ns)


async def test_a_container_that_ends_with_a_failure_after_its_start_fails_its_action(
        runtime, docker_namespace, docker_image):
    ns = docker_namespace
    # old: killed by its delete after a second (137), an end the watch must not count: this plan made it happen
    await converge(runtime, ns, [service(ns, docker_image, "old", command=["sleep", "3600"])])
    crash = service(ns, docker_image, "crash", command=["sh", "-c", "exit 2"], restart_policy="Never")
    p = plan([crash], await runtime.list(ns), default_runtime="docker", prune=True)
    assert sorted((a.kind, a.name) for a in p) == [(Kind.CREATE, "crash-0"), (Kind.DELETE, "old-0")]
    reported: list[Outcome] = []
    with anyio.fail_after(GUARD):  # the window is longer: the watch ends once every container started has ended
        outcomes = await execute(p, {(ns, "crash"): crash}, {"docker": runtime}, on_event=reported.append,
                                 settle=GUARD * 2)
    by_name = {o.action.name: o for o in outcomes}
    assert by_name["old-0"].ok
    failed = by_name["crash-0"]
    assert (failed.ok, failed.skipped, failed.error) == (False, False, "crash-0 exited with 2 right after its start")
    assert failed.container_id == (await runtime.list(ns))[0].id
    # reported twice: done when it started, failed when it ended
    assert [(o.action.name, o.ok) for o in reported if o.action.name == "crash-0"] == [("crash-0", True),
                                                                                      ("crash-0", False)]
    await delete_all(runtime, ns)
