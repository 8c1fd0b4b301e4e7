"""The library: one Client that plans, applies, reads and drives containers on any runtime.

The CLI is a thin layer over this; an anyio program uses it directly.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from dataclasses import field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import Config
from .containers import rfc3339
from .errors import Conflict, Interrupted, NotFound, OrchestrError, RuntimeUnavailable, located
from .model import (
    L_NAMESPACE,
    L_ONEOFF,
    L_REPLICA,
    L_SERVICE,
    Container,
    ContainerSpec,
    Deployment,
    Event,
    ExecResult,
    Health,
    LogLine,
    Probes,
    RestartPolicy,
    State,
    Stats,
)
from .plain import Mutable, record
from .plugins import default_runtime_name, open_runtime
from .runtime import (
    BridgeCapacity,
    NetworkRemover,
    ProgressCallback,
    Runtime,
    ServiceRunner,
    StatsSource,
    TerminalExecutor,
    require,
    supports,
)
from .state import Store

if TYPE_CHECKING:  # the planner and executor load only for the verbs that reconcile; anyio only for async verbs
    import anyio
    from anyio.abc import ObjectSendStream

    from . import endpoints, executor
    from .health import Readiness
    from .planner import Plan
    from .spec import Service

OutcomeCallback = Callable[["executor.Outcome"], None]
SETTLE = 0.25  # seconds apply watches a container it started for an end right after its start
WAIT_TIMEOUT = 300.0  # seconds apply waits for a dependency to become healthy or complete


@record
class ApplyResult(Mutable):
    """What an apply did: its plan, each action's outcome, the revision it recorded, the services it rolled back."""

    plan: Plan
    outcomes: list[executor.Outcome] = field(default_factory=list)
    revision: int | None = None
    rolled_back: list[str] = field(default_factory=list)  # one line per service rolled back, saying why

    @property
    def ok(self) -> bool:
        return all(o.ok for o in self.outcomes)

    @property
    def failed(self) -> list[executor.Outcome]:
        return [o for o in self.outcomes if not o.ok]


class Client:
    """Entry point of the library. Use as `async with Client() as oc:`; runtimes are opened on first use."""

    def __init__(self, *, state_dir: str | Path | None = None, runtime: str | None = None, concurrency: int = 8):
        base = Config()
        self.config = Config(
            state_dir=Path(state_dir) if state_dir else base.state_dir,
            default_runtime=runtime or base.default_runtime,
            concurrency=concurrency,
        )
        self.store = Store(self.config.state_dir)
        self._runtimes: dict[str, Runtime] = {}
        self._recovered: set[str] = set()  # runtimes whose reattach has run
        self.warnings: list[str] = []  # runtimes that could not be read by get()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        import anyio

        runtimes, self._runtimes = self._runtimes, {}
        for rt in runtimes.values():
            with anyio.CancelScope(shield=True):
                await rt.close()
        self.store.close()

    # -- runtimes -----------------------------------------------------------------------
    @property
    def default_runtime(self) -> str:
        return default_runtime_name(self.config)

    def runtime(self, name: str | None = None) -> Runtime:
        """The runtime called name (default: the configured default), opened once per client."""
        name = name or self.default_runtime
        if name not in self._runtimes:
            self._runtimes[name] = open_runtime(name, self.config)
        return self._runtimes[name]

    def _runtime_of(self, service: Service) -> str:
        return service.spec.runtime or self.default_runtime

    async def _recover(self, names: Iterable[str]) -> None:
        """Lets each runtime clean what a crash left (a dead supervisor's containers, half-made records)
        before anything is planned on it; once per client."""
        for name in sorted(set(names) - self._recovered):
            await self.runtime(name).reattach()
            self._recovered.add(name)

    async def _deployed(
        self, runtime_names: Iterable[str], namespaces: set[str] | None,
    ) -> tuple[set[str], list[Deployment]]:
        """The runtimes among runtime_names that run whole services, and the services they run in namespaces."""
        whole = {name for name in runtime_names if supports(self.runtime(name), "services")}
        found: list[Deployment] = []
        for name in sorted(whole):
            rt = self.runtime(name)
            assert isinstance(rt, ServiceRunner)
            found.extend(d for d in await rt.deployments() if namespaces is None or d.namespace in namespaces)
        return whole, found

    async def _actual(self, runtime_names: Iterable[str], namespaces: set[str] | None) -> list[Container]:
        import anyio

        found: list[Container] = []
        names = sorted(set(runtime_names))

        async def one(name: str) -> None:
            rt = self.runtime(name)
            if namespaces is not None and len(namespaces) == 1:
                found.extend(await rt.list(next(iter(namespaces))))
            else:
                found.extend(c for c in await rt.list() if namespaces is None or c.namespace in namespaces)

        async with anyio.create_task_group() as tg:
            for name in names:
                tg.start_soon(one, name)
        return found

    # -- reconcile ----------------------------------------------------------------------
    async def plan(
        self, services: Sequence[Service], *, prune: bool = False, runtime: str | None = None, check_capacity: bool = True,
    ) -> Plan:
        """What apply would do, without doing it. A plan that makes containers is refused (SpecError) when a
        namespace's bridge network has too few addresses for them, unless check_capacity is off."""
        return (await self._plan(services, prune=prune, runtime=runtime, check_capacity=check_capacity))[0]

    async def _plan(
        self, services: Sequence[Service], *, prune: bool = False, runtime: str | None = None, check_capacity: bool = True,
    ) -> tuple[Plan, list[Container]]:
        """plan(), and the containers it was made from."""
        from . import planner

        default = runtime or self.default_runtime
        self._check_supported(services, default)
        namespaces = {s.namespace for s in services}
        names = {s.spec.runtime or default for s in services} | set(self.store.runtimes_used(namespaces))
        actual = await self._actual(names, namespaces)
        whole, deployed = await self._deployed(names, namespaces)
        result = planner.plan(services, actual, default_runtime=default, prune=prune, deployed=deployed,
                              service_runtimes=whole, balancing=self._balancing(names))
        if check_capacity and any(a.kind in (planner.Kind.CREATE, planner.Kind.RECREATE) for a in result):
            capacity = await self._capacity(services, default)
            planner.check_capacity(services, actual, capacity, default_runtime=default, prune=prune)
        return result, actual

    async def _capacity(self, services: Sequence[Service], default: str) -> dict[tuple[str, str], int]:
        """(runtime, namespace) -> how many containers its bridge network has addresses for, from the runtimes
        that know (the bridge_capacity capability: native has it; Docker's default bridge is the host's)."""
        capacity = {}
        for name, namespace in sorted({(s.spec.runtime or default, s.namespace) for s in services
                                       if s.spec.network == "bridge"}):
            rt = self.runtime(name)
            if supports(rt, "bridge_capacity"):
                assert isinstance(rt, BridgeCapacity)
                with located(rt.name):
                    capacity[(name, namespace)] = await rt.bridge_capacity(namespace)
        return capacity

    async def apply(
        self,
        services: Sequence[Service],
        *,
        prune: bool = False,
        dry_run: bool = False,
        runtime: str | None = None,
        on_plan: Callable[[Plan], None] | None = None,
        on_event: OutcomeCallback | None = None,
        sources: Iterable[str] = (),
        settle: float = SETTLE,
        wait_timeout: float = WAIT_TIMEOUT,
        progress: ProgressCallback | None = None,
        on_rollback: Callable[[str], None] | None = None,
    ) -> ApplyResult:
        """Converge the runtimes to services: create, start, recreate, scale and (with prune) delete. A container
        started that ends with a failure within settle seconds (a crash at start, an OOM kill) fails its action,
        reported through on_event a second time. progress hears how the images the plan needs are
        pulled. A service that depends on another being healthy or completed
        waits for that up to wait_timeout seconds; its actions fail, saying why, if it does not get there.

        A service whose rolling update fails (a new replica not ready by its progressDeadline) is rolled back to
        the revision it had, as a revision of its own: on_rollback gets a line saying so, on_plan and on_event
        the rollback's plan and outcomes, and the result is not ok."""
        from . import executor, planner

        default = runtime or self.default_runtime
        self._check_supported(services, default)
        async with self.store.lock():
            if not dry_run:
                used = self.store.runtimes_used({s.namespace for s in services})
                await self._recover({s.spec.runtime or default for s in services} | set(used))
            plan, actual = await self._plan(services, prune=prune, runtime=default)
            if on_plan is not None:
                on_plan(plan)
            if dry_run:
                return ApplyResult(plan)
            namespaces = {s.namespace for s in services}
            names = {s.spec.runtime or default for s in services} | set(self.store.runtimes_used(namespaces))
            if not plan:
                await self._endpoints(actual, names).sync(namespaces)  # a replica that came back since, or went
                return ApplyResult(plan)
            for s in services:
                self.store.note_runtimes([s.spec.runtime or default], [s.namespace])
            rev = self.store.begin("apply", {s.namespace for s in services}, sources)
            by_key = {(s.namespace, s.name): s for s in services}
            pruned = {(a.namespace, a.service) for a in plan
                      if a.kind in (planner.Kind.DELETE, planner.Kind.UNDEPLOY)} - set(by_key)
            endpoints = self._endpoints(actual, names)
            outcomes = await executor.execute(
                plan, by_key, self._runtimes_for(plan), concurrency=self.config.concurrency, on_event=on_event,
                settle=settle, endpoints=endpoints, progress=progress,
                gate=_Conditions(self, by_key, default, wait_timeout).gate,
            )
            await endpoints.sync(namespaces)
            before = self.store.services()
            self.store.record_services(rev, {k: _document(s, default) for k, s in by_key.items()}, removed=pruned)
            result = ApplyResult(plan, outcomes, rev)
            self.store.finish(rev, "converged" if result.ok else "failed")
            failed = _failed_rollouts(plan, outcomes)
            back = {k: before[k] for k in sorted(failed) if k in before and before[k] != _document(by_key[k], default)}
            if back:
                await self._roll_back(back, failed, result, default, on_plan, on_event, on_rollback, sources)
            return result

    async def _roll_back(
        self, documents: dict[tuple[str, str], dict[str, Any]], why: dict[tuple[str, str], str], result: ApplyResult,
        default: str, on_plan: Callable[[Plan], None] | None, on_event: OutcomeCallback | None,
        on_rollback: Callable[[str], None] | None, sources: Iterable[str],
    ) -> None:
        """Applies the documents services had before a failed rolling update, as a revision of their own."""
        from . import executor
        from .spec.loader import Lines
        from .spec.models import validate

        services = [validate(doc, f"state store: {ns}/{name}", 0, Lines(), None)
                    for (ns, name), doc in documents.items()]
        namespaces = {s.namespace for s in services}
        rev = self.store.begin("rollback", namespaces, sources)
        for s in services:
            back_to = next((r.id for r, doc in reversed(self.store.service_history(s.namespace, s.name))
                            if doc == documents[(s.namespace, s.name)]), None)
            line = (f"rolling back {s.namespace}/{s.name} to revision {back_to}: "
                    f"{why[(s.namespace, s.name)]}")
            result.rolled_back.append(line)
            if on_rollback is not None:
                on_rollback(line)
        plan, actual = await self._plan(services, runtime=default, check_capacity=False)
        if on_plan is not None:
            on_plan(plan)
        names = {s.spec.runtime or default for s in services} | {c.runtime for c in actual}
        endpoints = self._endpoints(actual, names)
        outcomes = await executor.execute(
            plan, {(s.namespace, s.name): s for s in services}, self._runtimes_for(plan),
            concurrency=self.config.concurrency, on_event=on_event, endpoints=endpoints)
        await endpoints.sync(namespaces)
        self.store.record_services(rev, documents)
        self.store.finish(rev, "rolled back" if all(o.ok for o in outcomes) else "failed")
        result.outcomes += outcomes

    async def wait_running(self, services: Sequence[Service], *, timeout: float, runtime: str | None = None,
                           poll: float = 0.2) -> list[str]:
        """Waits, at most timeout seconds, until every replica of services runs (or is paused, when it should be);
        returns the services ("namespace/name") of which some replica still does not. apply starts the
        containers it makes, but a runtime that runs whole services (swarm) starts their replicas after apply has
        handed it the services, as `docker stack deploy` leaves them to the swarm."""
        import anyio

        default = runtime or self.default_runtime

        async def short() -> list[str]:
            up: dict[tuple[str, str], int] = {}
            for name in sorted({s.spec.runtime or default for s in services}):
                for c in await self._actual([name], {s.namespace for s in services}):
                    if c.state in (State.RUNNING, State.PAUSED):
                        up[(c.namespace, c.service)] = up.get((c.namespace, c.service), 0) + 1
            return [f"{s.namespace}/{s.name}" for s in services if up.get((s.namespace, s.name), 0) < s.spec.replicas]

        with anyio.move_on_after(timeout):
            while await short():
                await anyio.sleep(poll)
            return []
        return await short()

    async def delete(
        self,
        services: Sequence[Service] = (),
        *,
        namespace: str | None = None,
        on_event: OutcomeCallback | None = None,
        sources: Iterable[str] = (),
    ) -> ApplyResult:
        """Delete the containers of services, or every container of a namespace (one-off runs included)."""
        from . import executor, planner

        async with self.store.lock():
            namespaces = {namespace} if namespace else {s.namespace for s in services}
            # the runtimes that held these namespaces' containers; the default one for a service that names none
            # only where the store knows of no runtime (opening and reattaching a runtime costs a delete much)
            runtimes = set(self.store.runtimes_used(namespaces))
            runtimes |= {self._runtime_of(s) for s in services
                         if s.spec.runtime or not self.store.runtimes_used([s.namespace])}
            await self._recover(runtimes)
            actual = await self._actual(runtimes, namespaces)
            _, deployed = await self._deployed(runtimes, namespaces)
            if namespace:
                plan = planner.plan_delete_namespace(namespace, actual, deployed=deployed)
            else:
                plan = planner.plan_delete([(s.namespace, s.name) for s in services], actual, deployed=deployed)
            rev = self.store.begin("delete", namespaces, sources)
            by_key = {(s.namespace, s.name): s for s in services}
            endpoints = self._endpoints(actual, runtimes)
            outcomes = await executor.execute(
                plan, by_key, self._runtimes_for(plan), concurrency=self.config.concurrency, on_event=on_event,
                endpoints=endpoints,
            )
            await endpoints.sync(namespaces)
            removed = {(a.namespace, a.service) for a in plan} | set(by_key)
            if namespace:
                removed |= set(self.store.services(namespace))
                if all(o.ok for o in outcomes):  # its networks go with the namespace's last container
                    for name in sorted(runtimes | {self.default_runtime}):
                        if supports(rt := self.runtime(name), "remove_network"):
                            assert isinstance(rt, NetworkRemover)
                            await rt.remove_network(namespace)
            self.store.record_services(rev, {}, removed=removed)
            result = ApplyResult(plan, outcomes, rev)
            self.store.finish(rev, "converged" if result.ok else "failed")
            return result

    def _check_supported(self, services: Sequence[Service], default: str) -> None:
        """TerminalFailure, before anything changes, when a service asks for what its runtime cannot do."""
        from .executor import check_supported

        for s in services:
            check_supported(s, self.runtime(s.spec.runtime or default))

    def _balancing(self, names: Iterable[str]) -> set[str]:
        """Those of the runtimes names that balance service ports."""
        return {name for name in names if supports(self.runtime(name), "service_ports")}

    def _endpoints(self, actual: Sequence[Container], names: Iterable[str] = (),
                   healthy: Callable[[Container], bool] | None = None) -> endpoints.Endpoints:
        """The service ports of actual's containers, on those of names (and actual's runtimes) that balance them;
        healthy: whether a running container's readiness checks pass (default: what the running controller last
        found, as `get` shows it)."""
        from .endpoints import Endpoints

        if healthy is None and self.store.controller_status() is not None:
            found = self.store.health()
            healthy = lambda c: found.get((c.runtime, c.id), ("healthy",))[0] == "healthy"  # noqa: E731
        names = {c.runtime for c in actual} | set(names)
        return Endpoints({name: self.runtime(name) for name in sorted(names)}, actual, healthy)

    async def _resync_endpoints(self, namespace: str, leaving: Container | None = None) -> None:
        """The service ports of namespace as its containers stand now (leaving: taken out first)."""
        import anyio

        from .endpoints import DRAIN

        names = self.store.runtimes_used([namespace]) or [self.default_runtime]
        actual = await self._actual(names, {namespace})
        endpoints = self._endpoints(actual, names)
        if leaving is not None and await endpoints.leave(leaving.runtime, leaving.id):
            await anyio.sleep(DRAIN)
            return
        await endpoints.sync([namespace])

    def _runtimes_for(self, plan: Plan) -> dict[str, Runtime]:
        return {name: self.runtime(name) for a in plan for name in (a.runtime, a.old_runtime) if name}

    async def events(self, on_event: Callable[[dict[str, Any]], None], namespace: str | None = None) -> None:
        """Hands on_event what happens from this call on, until cancelled: each runtime's container events
        (created, started, died with its exit code, oom, restarts by policy with their back-off, ...) and the
        controller's journal (its reconcile passes with their plans, the restarts it delays), one dict each, as
        `orchestr events -o json` prints them. A runtime whose events fail is reported as an "error" event."""
        import anyio

        from .journal import Journal, touches

        names = sorted(set(self.store.runtimes_used(None if namespace is None else [namespace]))
                       | {self.default_runtime})
        streams = []
        for name in names:  # every stream subscribed before the first is read
            try:
                streams.append((name, self.runtime(name).events()))
            except OrchestrError as e:
                on_event({"time": rfc3339(), "action": "error", "runtime": name, "error": str(e)})
        journal = Journal(self.config.state_dir).follow()

        async def runtime_events(name: str, stream: AsyncIterator[Event]) -> None:
            try:
                async for event in stream:
                    if namespace is None or event.namespace == namespace:
                        on_event(event_dict(event))
            except OrchestrError as e:
                on_event({"time": rfc3339(), "action": "error", "runtime": name, "error": str(e)})

        async def controller_events() -> None:
            async for entry in journal:
                if namespace is None or touches(entry, namespace):
                    on_event({"source": "controller", **entry})

        async with anyio.create_task_group() as tg:
            for name, stream in streams:
                tg.start_soon(runtime_events, name, stream)
            tg.start_soon(controller_events)

    # -- reading ------------------------------------------------------------------------
    async def get(self, namespace: str | None = None, *, runtime: str | None = None) -> list[Container]:
        """Containers orchestr owns, from every runtime that holds some; unreachable runtimes go to .warnings."""
        import anyio

        found: list[Container] = []
        self.warnings = []
        used, names = self._to_list(namespace, runtime)
        for name in names:
            with self._unless_unreachable(name, used, runtime):
                found.extend(await self.runtime(name).list(namespace))
        # A runtime's list may leave out what only inspect knows (pids, start times): fill those in.
        async with anyio.create_task_group() as tg:
            for i, c in enumerate(found):
                if c.state in (State.RUNNING, State.PAUSED) and c.pid is None:
                    tg.start_soon(self._detail, found, i)
        return self._listed(found)

    def get_blocking(self, namespace: str | None = None, *, runtime: str | None = None) -> list[Container] | None:
        """get() called with no event loop running, when every runtime it asks can list without one (the
        blocking_list capability: native has it); None otherwise, and get() is for that. For `orchestr get`,
        which then spares loading an event loop, as much time as a listing of hundreds of containers."""
        used, names = self._to_list(namespace, runtime)
        runtimes = [self.runtime(name) for name in names]
        if not all(supports(rt, "blocking_list") for rt in runtimes):
            return None
        found: list[Container] = []
        self.warnings = []
        for name, rt in zip(names, runtimes, strict=True):
            with self._unless_unreachable(name, used, runtime):
                found.extend(rt.list_blocking(namespace))  # type: ignore[attr-defined]  # BlockingLister
        return self._listed(found)

    def _to_list(self, namespace: str | None, runtime: str | None) -> tuple[list[str], list[str]]:
        """The runtimes that have held containers of namespace, and those get() asks."""
        used = self.store.runtimes_used(None if namespace is None else [namespace])
        return used, [runtime] if runtime else sorted(set(used) | {self.default_runtime})

    @contextlib.contextmanager
    def _unless_unreachable(self, name: str, used: list[str], runtime: str | None) -> Iterator[None]:
        """A runtime that is down becomes a warning, unless it was asked for or is the only one to ask."""
        try:
            yield
        except RuntimeUnavailable as exc:
            if runtime or name == self.default_runtime and not used:
                raise
            self.warnings.append(f"runtime {name}: {exc}")

    def _listed(self, found: list[Container]) -> list[Container]:
        found.sort(key=lambda c: (c.namespace, c.service, c.replica, c.name))
        self._controller_restarts(found)
        return found

    def _controller_restarts(self, found: list[Container]) -> None:
        """Adds the running controller's restarts, and the back-off of those it waits to restart, to found."""
        if self.store.controller_status() is None:
            return
        restarts = self.store.backoff()
        health = self.store.health()
        for c in found:
            if (c.runtime, c.id) in health and c.state is State.RUNNING:
                c.health = Health(health[(c.runtime, c.id)][0])
            count, next_restart = restarts.get((c.runtime, c.id), (0, None))
            c.restarts = None if c.restarts is None and not count else (c.restarts or 0) + count
            if c.state is State.EXITED and c.next_restart is None:
                c.next_restart = next_restart

    async def _detail(self, found: list[Container], i: int) -> None:
        try:
            found[i] = await self.runtime(found[i].runtime).inspect(found[i].id)
        except NotFound:  # gone since it was listed
            pass

    async def find(self, name: str, namespace: str = "default") -> tuple[Runtime, Container]:
        """The container called name (e.g. web-0) in namespace, from whichever runtime holds it."""
        for c in await self.get(namespace):
            if c.name == name:
                return self.runtime(c.runtime), c
        raise NotFound(f"no container {name!r} in namespace {namespace!r} (see `orchestr get -n {namespace}`)",
                       container=f"{namespace}/{name}")

    @contextlib.asynccontextmanager
    async def _found(self, name: str, namespace: str) -> AsyncIterator[tuple[Runtime, Container]]:
        """find(), with every runtime error raised meanwhile saying which runtime and container."""
        rt, c = await self.find(name, namespace)
        with located(rt.name, c.id):
            yield rt, c

    async def logs(
        self, name: str, namespace: str = "default", *, follow: bool = False, tail: int | None = None
    ) -> AsyncIterator[LogLine]:
        async with self._found(name, namespace) as (rt, c):
            async for line in rt.logs(c.id, follow=follow, tail=tail):
                yield line

    async def service_logs(
        self, service: str, namespace: str = "default", *, follow: bool = False, tail: int | None = None
    ) -> AsyncIterator[tuple[str, LogLine]]:
        """The output of every replica of service, each line with its replica's name: one replica after another,
        or with follow, interleaved as it comes until every replica's stream ends."""
        import anyio

        replicas = [c for c in await self.get(namespace) if c.service == service and not c.oneoff]
        if not replicas:
            raise NotFound(f"no service {service!r} in namespace {namespace!r} (see `orchestr get -n {namespace}`)",
                           container=f"{namespace}/{service}")
        if not follow:
            for c in replicas:
                with located(c.runtime, c.id):
                    async for line in self.runtime(c.runtime).logs(c.id, tail=tail):
                        yield c.name, line
            return
        send, receive = anyio.create_memory_object_stream[tuple[str, LogLine]](256)

        async def relay(c: Container, out: ObjectSendStream[tuple[str, LogLine]]) -> None:
            async with out:
                with located(c.runtime, c.id):
                    async for line in self.runtime(c.runtime).logs(c.id, follow=True, tail=tail):
                        await out.send((c.name, line))

        async with anyio.create_task_group() as tg, receive:
            async with send:
                for c in replicas:
                    tg.start_soon(relay, c, send.clone())
            async for item in receive:
                yield item

    async def ready(self, container: Container, service: Service | None = None, *, timeout: float = 0.0) -> Readiness:
        """Whether container is ready: its startup and readiness checks (service's, else its image's HEALTHCHECK)
        pass, or it has none and runs. Checks run until it is ready or timeout seconds have passed (0: one round);
        the result says which health it has and, when not ready, why (the last check's result)."""
        from .health import probes_for, wait_ready

        rt = self.runtime(container.runtime)
        with located(rt.name, container.id):
            probes = await probes_for(rt, service, container)
            return await wait_ready(rt, container, probes, time.monotonic() + timeout)

    async def inspect(self, name: str, namespace: str = "default") -> Container:
        """The container called name in namespace, as its runtime describes it now."""
        async with self._found(name, namespace) as (rt, c):
            return await rt.inspect(c.id)

    async def exec(self, name: str, argv: Sequence[str], namespace: str = "default", **kw: Any) -> ExecResult:
        """Runs argv in the container; env, user, workdir, timeout (seconds: the command is killed then, and
        orchestr.Timeout raised), output (a callback that gets the output as it comes) and output_limit (bytes of
        each stream kept when there is no callback; the rest is dropped and counted) as the runtime's exec
        takes them."""
        async with self._found(name, namespace) as (rt, c):
            return await rt.exec(c.id, argv, **kw)

    async def exec_terminal(self, name: str, argv: Sequence[str], namespace: str = "default", *, stdin: int | None,
                            stdout: int, env: dict[str, str] | None = None, user: str | None = None,
                            workdir: str | None = None) -> int:
        """Runs argv in the container with a terminal of its own wired to the file descriptors stdin and stdout, as
        `docker exec -it` does (see TerminalExecutor); returns its exit code. A runtime that cannot is a
        TerminalFailure saying so."""
        async with self._found(name, namespace) as (rt, c):
            require(rt, "exec_tty", "exec with a terminal", c.id)
            assert isinstance(rt, TerminalExecutor)  # as require found
            return await rt.exec_terminal(c.id, argv, stdin=stdin, stdout=stdout, env=env, user=user,
                                          workdir=workdir)

    async def start(self, name: str, namespace: str = "default") -> None:
        """Starts the container, which then gets its service ports' new connections again."""
        async with self._found(name, namespace) as (rt, c):
            await rt.start(c.id)
        await self._resync_endpoints(namespace)

    async def stop(self, name: str, namespace: str = "default", *, timeout: float = 10.0) -> None:
        """Stops the container; its service ports send it no new connection from the start of the stop."""
        async with self._found(name, namespace) as (rt, c):
            await self._resync_endpoints(namespace, leaving=c)
            await rt.stop(c.id, timeout=timeout)
        await self._resync_endpoints(namespace)

    async def pause(self, name: str, namespace: str = "default") -> None:
        async with self._found(name, namespace) as (rt, c):
            require(rt, "pause", "pause containers", c.id)
            await self._resync_endpoints(namespace, leaving=c)
            await rt.pause(c.id)  # type: ignore[attr-defined]  # Pausable, as require found
        await self._resync_endpoints(namespace)

    async def unpause(self, name: str, namespace: str = "default") -> None:
        async with self._found(name, namespace) as (rt, c):
            require(rt, "pause", "pause containers", c.id)
            await rt.resume(c.id)  # type: ignore[attr-defined]
        await self._resync_endpoints(namespace)

    async def signal(self, name: str, signal: str, namespace: str = "default") -> None:
        """Sends signal (SIGHUP, HUP or a number) to the container's main process, which keeps running unless
        the signal ends it."""
        async with self._found(name, namespace) as (rt, c):
            require(rt, "signal", "signal containers", c.id)
            await rt.signal(c.id, signal)  # type: ignore[attr-defined]  # Signallable, as require found

    async def stats(self, namespace: str | None = "default", names: Sequence[str] = ()) -> list[Sample]:
        """One sample of every running or paused container of namespace (None: every namespace), or of the
        containers called names whatever their state. A container that is not running, or whose runtime reports
        no stats, has None for its stats."""
        import anyio

        containers = await self.get(namespace)
        if names:
            known = {c.name for c in containers}
            if missing := [n for n in names if n not in known]:
                where = "any namespace" if namespace is None else f"namespace {namespace!r}"
                raise NotFound(f"no container {missing[0]!r} in {where}", container=missing[0])
            containers = [c for c in containers if c.name in names]
        else:
            containers = [c for c in containers if c.state in (State.RUNNING, State.PAUSED)]
        samples: list[Sample] = [Sample(c) for c in containers]

        async def one(sample: Sample) -> None:
            rt = self.runtime(sample.container.runtime)
            if sample.container.state not in (State.RUNNING, State.PAUSED) or not supports(rt, "stats"):
                return
            assert isinstance(rt, StatsSource)
            try:
                with located(rt.name, sample.container.id):
                    sample.stats = await rt.stats(sample.container.id)
            except (NotFound, Conflict):  # gone or ended since it was listed
                return
            sample.taken = time.monotonic()

        async with anyio.create_task_group() as tg:
            for sample in samples:
                tg.start_soon(one, sample)
        return samples

    # -- one-off containers -------------------------------------------------------------
    async def run(
        self,
        image: str,
        command: Sequence[str] = (),
        *,
        name: str | None = None,
        namespace: str = "default",
        runtime: str | None = None,
        remove: bool = False,
        detach: bool = False,
        env: dict[str, str] | None = None,
        network: str | None = None,
        output: Callable[[LogLine], None] | None = None,
        progress: ProgressCallback | None = None,
        on_signal: str | None = None,
    ) -> tuple[Container, int | None]:
        """Run a one-off container, as `docker run`. Returns the container and, unless detach, its exit code.

        on_signal, in the main thread, takes over SIGTERM, SIGHUP and SIGINT while the container runs; those
        ignored when the run began (nohup, a shell's background job) stay ignored. "forward" passes each on to
        the container through the runtime's stop (killed if it has not ended its stop grace period later).
        "leave" stops waiting and raises Interrupted: the container goes on running, or with remove is stopped
        and removed. None, the default, leaves the signals as they are."""
        import anyio

        if on_signal not in (None, "forward", "leave"):
            raise ValueError(f"on_signal must be None, 'forward' or 'leave', not {on_signal!r}")
        rt_name = runtime or self.default_runtime
        rt = self.runtime(rt_name)
        spec = _oneoff(image, command, name, namespace, env, network)
        await rt.ensure_image(image, progress)
        self.store.note_runtimes([rt_name], [namespace])
        container = await rt.create(spec)
        caught: list[int] = []
        try:
            if detach:
                await rt.start(container.id)
                return await rt.inspect(container.id), None
            code = await _attend(rt, container.id, spec.stop_grace_period, output, on_signal, caught)
            if caught and on_signal == "leave":
                raise Interrupted.one_off(caught[0], spec.name, remove)
            return await rt.inspect(container.id), code
        finally:
            if remove and not detach:
                with anyio.CancelScope(shield=True):
                    if caught and on_signal == "leave":
                        await rt.stop(container.id, timeout=spec.stop_grace_period)
                    await rt.delete(container.id, force=True)

    def run_blocking(
        self,
        image: str,
        command: Sequence[str] = (),
        *,
        name: str | None = None,
        namespace: str = "default",
        runtime: str | None = None,
        remove: bool = False,
        env: dict[str, str] | None = None,
        network: str | None = None,
        output: Callable[[LogLine], None] | None = None,
        stdin: int | None = None,
        tty: bool = False,
        on_signal: str | None = None,
    ) -> tuple[Container, int] | None:
        """run() of a container in the foreground, called without an event loop, on a runtime that can do that
        (the blocking_run capability: native and docker have it). None, with no container made, when the runtime
        cannot (docker: with stdin or tty) or the image is not there yet; run() pulls it then. For programs (and the CLI) that run one container and
        want to spare loading an event loop for it.

        stdin, an open fd, makes the run interactive (as `docker run -i`); tty gives the container a terminal
        of its own, relayed to stdin and output (as `docker run -t`). on_signal is run()'s; a runtime's own
        run_blocking may end a container whose init has no handler for a forwarded signal at once (native does,
        and returns 128 + the signal then, as the signal would have ended it)."""
        rt_name = runtime or self.default_runtime
        rt = self.runtime(rt_name)
        if not supports(rt, "blocking_run"):
            return None
        self.store.note_runtimes([rt_name], [namespace])
        spec = replace(_oneoff(image, command, name, namespace, env, network),
                                   interactive=stdin is not None, tty=tty)
        ran: tuple[Container, int] | None = rt.run_blocking(  # type: ignore[attr-defined]  # BlockingRun, as supports found
            spec, output=output, remove=remove, stdin=stdin, on_signal=on_signal)
        return ran


class _Conditions:
    """apply's waits for dependsOn conditions: each (dependency, condition) is waited for once, by whichever
    dependent asks first, and every dependent gets its verdict."""

    def __init__(self, oc: Client, services: dict[tuple[str, str], Service], default: str, timeout: float):
        self.oc, self.services, self.default, self.timeout = oc, services, default, timeout
        self.waits: dict[tuple[str, str, str], tuple[anyio.Event, list[str | None]]] = {}

    async def gate(self, action: Any) -> str | None:
        import anyio

        service = self.services.get((action.namespace, action.service))
        for dep in getattr(service.spec, "depends_on", ()) if service is not None else ():
            condition = getattr(dep, "condition", "started")
            target = self.services.get((action.namespace, str(dep)))
            if condition == "started" or target is None:
                continue
            key = (action.namespace, str(dep), condition)
            if key in self.waits:
                done, verdict = self.waits[key]
                await done.wait()
            else:
                done, verdict = self.waits[key] = (anyio.Event(), [])
                try:
                    verdict.append(await self._wait(target, condition))
                except OrchestrError as e:
                    verdict.append(f"cannot be checked: {e}")
                finally:
                    if not verdict:
                        verdict.append("was not waited for")
                    done.set()
            if verdict[0]:
                return f"dependency {dep} {verdict[0]}"
        return None

    async def _wait(self, target: Service, condition: str) -> str | None:
        """None once every replica of target is healthy (or has completed), else why not."""
        import anyio

        from .health import probes_for, wait_ready

        rt = self.oc.runtime(target.spec.runtime or self.default)
        deadline = time.monotonic() + self.timeout
        within = f"within {self.timeout:g}s"
        while True:
            replicas = [c for c in await rt.list(target.namespace) if c.service == target.name and not c.oneoff
                        and c.replica < target.spec.replicas]
            if condition == "completed":
                failed = [c for c in replicas if c.state is State.EXITED and c.exit_code != 0]
                if failed and target.spec.restart_policy == RestartPolicy.NEVER:
                    return f"did not complete: {failed[0].name} exited with {failed[0].exit_code}"
                done = [c for c in replicas if c.state is State.EXITED and c.exit_code == 0]
                if len(done) >= target.spec.replicas:
                    return None
                if time.monotonic() > deadline:
                    late = next((c for c in replicas if c not in done), None)
                    how = f"{late.name} is {late.state}" + (f" ({late.exit_code})" if late.exit_code else "") \
                        if late else f"{target.name} has no container"
                    return f"did not complete {within}: {how}"
                await anyio.sleep(0.2)
                continue
            if not replicas:
                return None if target.spec.replicas == 0 else f"did not become healthy: {target.name} has no container"
            probes = await probes_for(rt, target, replicas[0])
            if probes is None:
                return ("cannot become healthy: it has no health check (healthcheck, probes or an image "
                        "HEALTHCHECK)")
            found: list[str] = []

            async def one(c: Container, probes: Probes = probes) -> None:
                verdict = await wait_ready(rt, c, probes, deadline)
                if not verdict.ready:
                    found.append(verdict.reason)

            async with anyio.create_task_group() as tg:
                for c in replicas:
                    tg.start_soon(one, c)
            return f"did not become healthy {within}: {found[0]}" if found else None


@record
class Sample(Mutable):
    """One container's stats (None when it has none to give) and when they were taken (time.monotonic())."""

    container: Container
    stats: Stats | None = None
    taken: float | None = None


def _oneoff(image: str, command: Sequence[str], name: str | None, namespace: str, env: dict[str, str] | None,
            network: str | None) -> ContainerSpec:
    name = name or f"run-{os.urandom(4).hex()}"
    return ContainerSpec(
        name=name,
        namespace=namespace,
        image=image,
        labels={L_NAMESPACE: namespace, L_SERVICE: name, L_REPLICA: "0", L_ONEOFF: "true"},
        command=tuple(command) or None,
        env=dict(env or {}),
        restart_policy=RestartPolicy.NEVER,
        network=network or "bridge",
    )


async def _stream_until_exit(rt: Runtime, id: str, output: Callable[[LogLine], None]) -> int:
    async for line in rt.logs(id, follow=True):
        output(line)
    return await rt.wait(id)


async def _attend(rt: Runtime, id: str, grace: float, output: Callable[[LogLine], None] | None,
                  on_signal: str | None, caught: list[int]) -> int | None:
    """Starts the container and waits for its end, streaming its output, with run()'s signal handling; the
    signals caught go to caught. None when one ended the wait ("leave")."""
    import anyio

    import signal  # here: `orchestr get` has no use for them
    import threading

    held = [s for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT) if signal.getsignal(s) is not signal.SIG_IGN]
    if on_signal is None or not held or threading.current_thread() is not threading.main_thread():
        receiver: contextlib.AbstractContextManager[AsyncIterator[signal.Signals] | None] = contextlib.nullcontext()
    else:
        receiver = anyio.open_signal_receiver(*held)
    started = anyio.Event()
    code = None
    with receiver as received:
        async with anyio.create_task_group() as tg:

            async def relay() -> None:
                assert received is not None
                async for sig in received:
                    caught.append(sig)
                    if on_signal == "leave":
                        tg.cancel_scope.cancel()
                        return
                    tg.start_soon(_pass_on, rt, id, sig, grace, started)

            if received is not None:
                tg.start_soon(relay)
            await rt.start(id)
            started.set()
            code = await (rt.wait(id) if output is None else _stream_until_exit(rt, id, output))
            tg.cancel_scope.cancel()
    return code


async def _pass_on(rt: Runtime, id: str, sig: int, grace: float, started: anyio.Event) -> None:
    """Stops the container with sig (once started), as the runtime's stop does: killed if grace passes first."""
    await started.wait()
    import signal

    with contextlib.suppress(OrchestrError):  # ended meanwhile
        await rt.stop(id, signal=signal.Signals(sig).name, timeout=grace)


def event_dict(event: Event) -> dict[str, Any]:
    """A runtime's event as `orchestr events -o json` prints it."""
    d: dict[str, Any] = {"time": event.time or rfc3339(), "source": "runtime", "runtime": event.runtime,
                         "namespace": event.namespace, "name": event.name, "id": event.id, "action": str(event.action)}
    if event.state is not None:
        d["state"] = str(event.state)
    for key, value in (("exitCode", event.exit_code), ("restarts", event.restarts), ("delay", event.delay)):
        if value is not None:
            d[key] = value
    return d


def _failed_rollouts(plan: Plan, outcomes: Sequence[executor.Outcome]) -> dict[tuple[str, str], str]:
    """The services whose rolling update did not finish, each with its first failure."""
    rolling = {(a.namespace, a.service) for a in plan if a.ready}
    failed: dict[tuple[str, str], str] = {}
    for o in outcomes:
        key = (o.action.namespace, o.action.service)
        if key in rolling and not o.ok and not o.skipped:
            failed.setdefault(key, o.error or "failed")
    return failed


def _document(service: Service, runtime: str) -> dict[str, Any]:
    """The applied document as plain JSON data, for the store's history and the controller, with the runtime it
    went to (the default of the apply, when it names none: the controller must use the same)."""
    dump = getattr(service, "model_dump", None)
    if dump is None:
        return {"name": service.name, "namespace": service.namespace}
    document: dict[str, Any] = dump(by_alias=True, mode="json", exclude_none=True)
    document["spec"].setdefault("runtime", runtime)
    return document


__all__ = ["ApplyResult", "Client", "OrchestrError"]
