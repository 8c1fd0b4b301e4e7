"""The executor: carries out a Plan against runtimes, concurrently, each action once its prerequisites succeeded."""

from __future__ import annotations

import copy
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import anyio

from .errors import NotFound, OrchestrError, RuntimeFailure, TerminalFailure, context
from .endpoints import DRAIN, Endpoints
from .model import L_REPLICA, L_SERVICE_PORTS, Container, Event, EventAction, Image, State
from .planner import UP_KINDS, Action, Kind, Plan
from .runtime import ProgressCallback, Runtime, ServiceRunner, require, supports

if TYPE_CHECKING:
    from .spec import Service

DEFAULT_GRACE = 10.0  # seconds, for containers that do not say theirs
_STARTS = frozenset({Kind.CREATE, Kind.RECREATE, Kind.START, Kind.UNPAUSE})  # actions that leave a container running


@dataclass(frozen=True, slots=True)
class Outcome:
    action: Action
    ok: bool
    skipped: bool = False  # not attempted because a prerequisite failed or was skipped
    error: str | None = None  # one line: what failed, or for a skipped action which prerequisite
    container_id: str | None = None  # the container the action left behind (the new one for CREATE/RECREATE)
    exception: Exception | None = None  # what failed, as raised (a RuntimeFailure says runtime, container, retryable)


async def execute(
    plan: Plan,
    services: Mapping[tuple[str, str], Service],
    runtimes: Mapping[str, Runtime],
    *,
    concurrency: int = 8,
    on_event: Callable[[Outcome], None] | None = None,
    on_start: Callable[[Action], None] | None = None,
    settle: float = 0.0,
    endpoints: Endpoints | None = None,
    gate: Callable[[Action], Awaitable[str | None]] | None = None,
    progress: ProgressCallback | None = None,
) -> list[Outcome]:
    """Run every action of plan; return one Outcome per action, in plan order.

    `services` maps (namespace, name) to the declared Service (CREATE and RECREATE need it; other
    actions take the stop grace period from it when present). `runtimes` maps each runtime name the
    plan uses to an open Runtime. A failed action fails nobody else but the actions waiting on it,
    which are skipped. Cancellation propagates.

    With settle, the containers the plan started are watched, through their runtimes' events, until settle
    seconds after the last start (or until each has failed): the outcome of one that ends with a failure
    meanwhile (a non-zero exit, an OOM kill) becomes a failed one, reported through on_event a second time.

    With endpoints, a container that serves a service port is taken out of it before it is stopped or deleted
    (and given endpoints.DRAIN to finish its connections), and one started is put in once ready.

    gate, when given, is awaited before each action that brings a service up, once its prerequisites succeeded: a
    line it returns (a dependency that did not become healthy) fails the action instead.

    progress hears how the images the plan needs are pulled (see Runtime.pull), one pull per runtime and image.
    """
    starts = settle > 0 and any(a.kind in _STARTS for a in plan.actions)
    watch = _Watch(runtimes.values()) if starts else None
    run = _Run(services, runtimes, endpoints, progress)
    limiter = anyio.CapacityLimiter(max(1, concurrency))
    actions = plan.actions
    done = [anyio.Event() for _ in actions]
    outcomes: list[Outcome | None] = [None] * len(actions)

    async def one(index: int) -> None:
        action = actions[index]
        for before in action.after:
            await done[before].wait()
            prior = outcomes[before]
            assert prior is not None
            if not prior.ok:
                verb = "was skipped" if prior.skipped else "failed"
                outcome = Outcome(action, False, True, f"{prior.action.kind} {prior.action.name} {verb}")
                break
        else:
            held = await gate(action) if gate is not None and action.kind in UP_KINDS else None
            if held:
                outcome = Outcome(action, False, error=held)
            else:
                async with limiter:
                    if on_start is not None:
                        on_start(action)
                    outcome = await run.act(action)
        outcomes[index] = outcome
        done[index].set()
        if watch is not None and outcome.ok and action.kind in _STARTS and outcome.container_id:
            watch.started(outcome.container_id)
        if on_event is not None:
            on_event(outcome)

    async with anyio.create_task_group() as listening:
        if watch is not None:
            watch.listen(listening)
        async with anyio.create_task_group() as tg:
            for index in range(len(actions)):
                tg.start_soon(one, index)
        if watch is not None:
            await watch.settled(settle)
        listening.cancel_scope.cancel()
    if watch is not None:
        for index, outcome in enumerate(outcomes):
            assert outcome is not None
            how = watch.ended.get(outcome.container_id or "") if outcome.ok and outcome.action.kind in _STARTS else None
            if how is not None:
                error = f"{outcome.action.name} {how} right after its start"
                failure = RuntimeFailure(error, runtime=outcome.action.runtime, container=outcome.container_id)
                outcomes[index] = failed = replace(outcome, ok=False, error=error, exception=failure)
                if on_event is not None:
                    on_event(failed)
    return outcomes  # type: ignore[return-value]  # every slot is filled once the group exits


class _Watch:
    """The runtimes' events while a plan runs: which of the containers it started ended with a failure, and how."""

    def __init__(self, runtimes) -> None:  # type: ignore[no-untyped-def]
        self.streams: list[AsyncIterator[Event]] = []
        for rt in runtimes:
            try:
                self.streams.append(rt.events())  # subscribed here, before anything starts
            except Exception:  # noqa: BLE001 - a runtime without events is not watched
                pass
        self.watched: set[str] = set()
        self.ended: dict[str, str] = {}  # container id -> how it ended: "exited with 1", "was OOM-killed"
        self.last_start = time.monotonic()
        self.news = anyio.Event()

    def listen(self, tg: anyio.abc.TaskGroup) -> None:
        for stream in self.streams:
            tg.start_soon(self._read, stream)

    def started(self, container_id: str) -> None:
        self.watched.add(container_id)
        self.last_start = time.monotonic()

    async def _read(self, stream: AsyncIterator[Event]) -> None:
        oom: set[str] = set()
        try:
            async for event in stream:
                if event.action == EventAction.OOM:
                    oom.add(event.id)
                elif event.action == EventAction.DIE and event.id not in self.ended:
                    if event.id in oom:
                        self.ended[event.id] = "was OOM-killed"
                    elif event.exit_code:
                        self.ended[event.id] = f"exited with {event.exit_code}"
                    else:
                        continue
                    self.news.set()
                    self.news = anyio.Event()
        except Exception:  # noqa: BLE001 - watching is a courtesy: a runtime whose events fail reports no ends
            return

    async def settled(self, settle: float) -> None:
        """Returns settle seconds after the last start, or once every container started has ended."""
        while not self.watched <= set(self.ended):
            left = self.last_start + settle - time.monotonic()
            if left <= 0:
                return
            with anyio.move_on_after(left):
                await self.news.wait()


class _Run:
    """State shared by the actions of one execute call: the services, runtimes and image pulls."""

    def __init__(self, services: Mapping[tuple[str, str], Service], runtimes: Mapping[str, Runtime],
                 endpoints: Endpoints | None = None, progress: ProgressCallback | None = None):
        self.services = services
        self.runtimes = runtimes
        self.endpoints = endpoints
        self.progress = progress
        self.images: dict[tuple[str, str], _Once] = {}

    async def act(self, action: Action) -> Outcome:
        try:
            container_id = await self._act(action)
        except Exception as exc:  # noqa: BLE001 - every failure becomes this action's outcome
            if isinstance(exc, RuntimeFailure):
                context(exc, runtime=action.runtime, container=action.container_id or action.name)
            return Outcome(action, False, error=f"{action.kind} {action.name}: {_one_line(exc)}", exception=exc)
        return Outcome(action, True, container_id=container_id)

    async def _act(self, action: Action) -> str | None:
        kind, cid = action.kind, action.container_id
        if kind in (Kind.CREATE, Kind.RECREATE):
            return await self._create(action)
        if kind is Kind.DEPLOY:
            return await self._deploy(action)
        assert cid is not None
        rt = self._runtime(action.runtime)
        if kind is Kind.UNDEPLOY:
            require(rt, "services", "run whole services", cid)
            assert isinstance(rt, ServiceRunner)
            await rt.undeploy(cid, timeout=await self._grace_of(action, rt, cid))
            return None
        if kind == Kind.DELETE:
            await self._leave(action.runtime, cid)
            await _remove(rt, cid, await self._grace_of(action, rt, cid))
            return None
        if kind == Kind.START:
            await rt.start(cid)
        elif kind == Kind.STOP:
            await self._leave(action.runtime, cid)
            await rt.stop(cid, timeout=await self._grace_of(action, rt, cid))
        elif kind == Kind.PAUSE:
            require(rt, "pause", "pause containers", cid)
            await self._leave(action.runtime, cid)
            await rt.pause(cid)  # type: ignore[attr-defined]  # Pausable, as require found
        elif kind == Kind.UNPAUSE:
            require(rt, "pause", "pause containers", cid)
            await rt.resume(cid)  # type: ignore[attr-defined]
        else:
            raise OrchestrError(f"unknown action kind {kind!r}")
        if self.endpoints is not None and self.endpoints.knows(action.runtime, cid):
            await self.endpoints.join(await rt.inspect(cid))
        return cid

    async def _leave(self, runtime: str, cid: str) -> None:
        """Out of its service's ports, with time to finish its connections, before it stops serving."""
        if self.endpoints is not None and await self.endpoints.leave(runtime, cid):
            await anyio.sleep(DRAIN)

    async def _create(self, action: Action) -> str:
        service = self.services.get((action.namespace, action.service))
        if service is None:
            raise OrchestrError(f"service {action.namespace}/{action.service} was not given to the executor")
        spec = service.container_spec(action.replica)
        if action.name != spec.name:  # a rolling update's new replica beside the old one
            spec = replace(spec, name=action.name)
        rt = self._runtime(action.runtime)
        check_supported(service, rt)
        # Fetch the image before touching the old container, so a bad image leaves it running.
        await self._ensure_image(rt, spec.image)
        if action.kind == Kind.RECREATE:
            assert action.container_id is not None
            old = self._runtime(action.old_runtime or action.runtime)
            await self._leave(action.old_runtime or action.runtime, action.container_id)
            await _remove(old, action.container_id, await self._grace_of(action, old, action.container_id))
        container = await rt.create(spec)
        await rt.start(container.id)
        if service.spec.paused:
            await rt.pause(container.id)  # type: ignore[attr-defined]  # Pausable, as check_supported found
            return container.id
        now = await _ready(rt, service, container.id) if action.ready else None
        if self.endpoints is not None and L_SERVICE_PORTS in spec.labels:
            await self.endpoints.join(now or await rt.inspect(container.id), checked=now is not None)
        return container.id

    async def _deploy(self, action: Action) -> str:
        service = self.services.get((action.namespace, action.service))
        if service is None:
            raise OrchestrError(f"service {action.namespace}/{action.service} was not given to the executor")
        rt = self._runtime(action.runtime)
        require(rt, "services", "run whole services", action.name)
        assert isinstance(rt, ServiceRunner)
        check_supported(service, rt)
        spec = service.container_spec(0)
        labels = {k: v for k, v in spec.labels.items() if k != L_REPLICA}  # the runtime numbers its replicas
        template = replace(spec, name=service.name, labels=labels)
        return await rt.deploy(template, service.spec.replicas, action.container_id, service=service)

    async def _ensure_image(self, rt: Runtime, ref: str) -> Image:
        key = (rt.name, ref)
        once = self.images.get(key)
        if once is None:
            once = self.images[key] = _Once()
            return await once.run(rt.ensure_image(ref, self.progress))
        return await once.result()

    def _runtime(self, name: str) -> Runtime:
        try:
            return self.runtimes[name]
        except KeyError:
            raise OrchestrError(f"runtime {name} is not open for this plan") from None

    async def _grace_of(self, action: Action, rt: Runtime, cid: str) -> float:
        """The stop grace period: the declared service's, else the one its container was made with."""
        service = self.services.get((action.namespace, action.service))
        if service is not None:
            return float(service.spec.stop_grace_period)
        if action.kind is Kind.UNDEPLOY:
            deployed = [d for d in await rt.deployments(action.namespace) if d.id == cid]  # type: ignore[attr-defined]
            grace = deployed[0].stop_grace if deployed else None
            return DEFAULT_GRACE if grace is None else grace
        try:
            grace = (await rt.inspect(cid)).stop_grace
        except NotFound:
            grace = None
        return DEFAULT_GRACE if grace is None else grace


class _Once:
    """One awaited result shared by every caller: the first runs it, the rest wait for its value or error."""

    def __init__(self) -> None:
        self._done = anyio.Event()
        self._value: Image | None = None
        self._error: BaseException | None = None
        self._copy: Exception | None = None

    async def run(self, work: Awaitable[Image]) -> Image:
        try:
            self._value = await work
            return self._value
        except BaseException as exc:
            self._error = exc
            self._copy = _pristine(exc)  # before the first action fills in where it happened
            raise
        finally:
            self._done.set()

    async def result(self) -> Image:
        await self._done.wait()
        if self._copy is not None:
            raise _pristine(self._copy) or self._copy  # the same kind of error, where each action says itself
        if self._error is not None:
            raise OrchestrError(_one_line(self._error)) from self._error
        assert self._value is not None
        return self._value


def _pristine(exc: BaseException) -> Exception | None:
    """A copy of exc for another action to raise, or None when it cannot be had (a cancellation)."""
    if not isinstance(exc, Exception):
        return None
    try:
        return copy.copy(exc)
    except Exception:  # noqa: BLE001 - an exception type whose arguments do not rebuild it
        return None


def check_supported(service: Service, rt: Runtime) -> None:
    """TerminalFailure, in one line naming the file, line and field, when service asks for what rt cannot do."""
    spec = service.spec
    resources = getattr(spec, "resources", None)  # a cached service (speccache) has none: it was checked
    needs = [("spec.paused", "pause", "pause containers", spec.paused),
             ("spec.resources", "limits", "enforce resource limits",
              resources is not None and any(v is not None for v in (resources.cpus, resources.memory, resources.pids)))]
    balanced = [i for i, p in enumerate(getattr(spec, "ports", ()))  # a cached service has none: it was checked
                if p.host_port is not None and p.mode == "ingress"]
    if balanced and spec.replicas > 1 and not (supports(rt, "service_ports") or supports(rt, "services")):
        field = f"spec.ports[{balanced[0]}].hostPort"
        raise TerminalFailure(f"{_where(service, field)}: {field}: the {rt.name} runtime cannot balance a host port "
                              f"across {spec.replicas} replicas; publish it from one replica (replicas: 1) or leave "
                              "hostPort out", runtime=rt.name, container=f"{service.namespace}/{service.name}")
    for field, capability, what, asked in needs:
        if asked and not supports(rt, capability):
            shown = service.error(field, "").path if hasattr(service, "error") else field  # a compose file's key
            raise TerminalFailure(f"{_where(service, field)}: {shown}: the {rt.name} runtime cannot {what}",
                                  runtime=rt.name, container=f"{service.namespace}/{service.name}")


def _where(service: Service, field: str) -> str:
    """file:line of field in service's spec file, as far as it is known."""
    file, line = getattr(service, "source", None) or (f"{service.namespace}/{service.name}", None)
    line = getattr(service, "_lines", {}).get(field, line)
    return f"{file}:{line}" if line else file


READY_POLL = 0.2  # seconds between two looks at a new replica of a rolling update


async def _ready(rt: Runtime, service: Service, cid: str) -> Container:
    """Returns the container once it is ready (its readiness checks passed, when it has some: orchestr.health) and
    has stayed running for the service's minReadySeconds; RuntimeFailure when it is not by its progressDeadline,
    saying what it was doing."""
    from .health import probes_for, wait_ready

    update = service.spec.update
    deadline = time.monotonic() + update.progress_deadline
    c = await rt.inspect(cid)
    probes = await probes_for(rt, service, c)
    if probes is not None and (probes.readiness is not None or probes.startup is not None):
        verdict = await wait_ready(rt, c, probes, deadline)
        if not verdict.ready:
            raise RuntimeFailure(f"{c.name} did not become ready within {update.progress_deadline:g}s "
                                 f"(progressDeadline): {verdict.reason}", container=cid)
    since: float | None = None  # when it was last seen turning ready
    run: tuple[str | None, int | None] | None = None  # which run of it that was: a restart by its policy is another
    while True:
        c = await rt.inspect(cid)
        now = time.monotonic()
        if c.state is State.RUNNING and (c.started_at, c.restarts) == run:
            if now - since >= update.min_ready_seconds:  # type: ignore[operator]  # set with run
                return c
        elif c.state is State.RUNNING:
            since, run = now, (c.started_at, c.restarts)  # seen once: it must still be this run next time
        else:
            since = run = None
        if now >= deadline:
            how = f"{c.state}" + (f" (exit code {c.exit_code})" if c.exit_code is not None else "")
            raise RuntimeFailure(f"{c.name} did not become ready within {update.progress_deadline:g}s "
                                 f"(progressDeadline): it is {how}", container=cid)
        await anyio.sleep(min(READY_POLL, max(0.0, deadline - now)))


async def _remove(rt: Runtime, cid: str, grace: float) -> None:
    """Stop within the grace period, then remove; a container already gone counts as removed."""
    try:
        await rt.stop(cid, timeout=grace)
        await rt.delete(cid, force=True)
    except NotFound:
        pass


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
