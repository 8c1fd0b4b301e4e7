"""The controller: keeps every service that apply stored converged, as long as it runs.

A pass is what apply does, level-based: read the desired services from the state store and the actual containers
from every runtime in use, plan the difference (orchestr.planner), carry it out (orchestr.executor). Passes run
when a runtime reports a change (each runtime's events are subscribed to before its containers are listed, so
nothing is missed in between), every `resync` seconds (a change no event told of is repaired then), and when a
crash-looping container's back-off ends.

Apply and the controller share one lock, the store's: each pass holds it, as each apply does, so their actions
never interleave. Apply hands nothing to the controller: it works the same with or without one, and its plan,
outcomes and exit code stay its own. One controller runs per state dir; a second one refuses in one line.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from . import executor, planner
from .backoff import Backoff, from_env
from .containers import rfc3339
from .errors import OrchestrError, RuntimeFailure, SpecError
from .health import Prober, probes_for
from .journal import Journal
from .model import Container, Deployment, Event, EventAction, Health, Probes, State
from .state import CONTROLLER_LOCK, CONTROLLER_STATUS

if TYPE_CHECKING:
    from .api import Client
    from .metrics import Metrics
    from .spec import Service

RESYNC = 30.0  # seconds between two passes that no event asked for
SETTLE_EVENTS = 0.02  # seconds a pass waits after the event that woke it, so that a burst makes one pass
LOCK, STATUS = CONTROLLER_LOCK, CONTROLLER_STATUS
# Events after which the actual state may differ from the desired one.
_WAKING = frozenset({EventAction.DIE, EventAction.DESTROY, EventAction.PAUSE, EventAction.UNPAUSE})

LogCallback = Callable[[dict], None]


class ControllerRunning(OrchestrError):
    """Another controller already runs for this state dir."""


@dataclass(slots=True)
class Report:
    """One reconcile pass: why it ran, what it planned and how each action went."""

    trigger: str
    plan: planner.Plan = planner.Plan()
    outcomes: list[executor.Outcome] = field(default_factory=list)
    deferred: list[planner.Action] = field(default_factory=list)  # restarts waiting out their back-off
    duration: float = 0.0
    error: str | None = None  # the pass could not finish: the runtime or store error

    def as_dict(self) -> dict:
        def action(a: planner.Action, result: str, error: str | None = None) -> dict:
            return {"kind": str(a.kind), "namespace": a.namespace, "name": a.name, "runtime": a.runtime,
                    "reason": a.reason, "outcome": result, **({"error": error} if error else {})}

        actions = []
        outcomes = self.outcomes or [None] * len(self.plan)  # none: the pass ended before carrying it out
        for a, o in zip(self.plan, outcomes, strict=True):
            result = "planned" if o is None else "ok" if o.ok else "skipped" if o.skipped else "failed"
            actions.append(action(a, result, o.error if o else None))
        actions += [action(a, "deferred") for a in self.deferred]
        return {"action": "reconcile", "trigger": self.trigger, "duration": round(self.duration, 6),
                "plan": actions, **({"error": self.error} if self.error else {})}


@dataclass(slots=True)
class _Loop:
    """A container the controller restarts while it keeps exiting."""

    runtime: str
    restarts: int = 0  # in a row, since it last ran steadily
    total: int = 0  # every restart the controller made
    due: float = 0.0  # time.monotonic() of the next restart
    due_at: str | None = None  # the same, RFC 3339
    waiting: bool = False  # an exit seen and its restart scheduled; False once restarted
    started: float = 0.0


class Controller:
    """The reconcile loop of one Client, for a program to run in its own task group and cancel:
    `await tg.start(Controller(client).run)` returns once the first pass is done.

    resync: seconds between passes no event asked for. backoff: the crash-loop back-off of the restarts the
    controller makes (default: ORCHESTR_RESTART_BACKOFF's). files: spec files and directories to watch and apply.
    metrics_address (HOST:PORT): where to serve /metrics and /healthz. on_log gets each structured log entry, on_report
    each pass's Report, on_health each change of a container's health (with the check's result). run() raises
    ControllerRunning when another controller holds the state dir."""

    def __init__(
        self,
        client: Client,
        *,
        resync: float = RESYNC,
        backoff: Backoff | None = None,
        files: Sequence[str | Path] = (),
        metrics_address: str | None = None,
        on_log: LogCallback | None = None,
        on_report: Callable[[Report], None] | None = None,
        on_health: Callable[[Container, Health, str], None] | None = None,
    ):
        if not resync > 0:
            raise OrchestrError(f"resync: expected a duration above 0, got {resync:g}s")
        missing = [str(f) for f in files if not os.path.exists(f)]
        if missing:
            raise OrchestrError(f"{missing[0]}: no such file or directory to watch")
        self.oc = client
        self.resync = resync
        self.backoff = backoff or from_env()
        self.files = [str(f) for f in files]
        self.metrics_address = metrics_address
        self.metrics: Metrics | None = None
        self.on_log = on_log
        self.on_report = on_report
        self.on_health = on_health
        self._probers: dict[str, tuple[str | None, Prober]] = {}  # container id -> (its start, the checks' runner)
        self._health: dict[str, tuple[str, Health, str]] = {}  # container id -> (runtime, health, reason)
        self._image_probes: dict[tuple[str, str], Probes | None] = {}
        self.journal = Journal(client.config.state_dir)
        self.last: Report | None = None
        self.last_at = 0.0  # time.monotonic() of the last finished pass
        self._loops: dict[str, _Loop] = {}  # container id -> its crash loop
        self._watched: set[str] = set()
        self._wake: anyio.Event | None = None  # made in run(): an Event needs the event loop
        self._why: str | None = None
        self.started_at = _now()
        self.status_file: Path | None = None  # while run() holds the state dir
        self._tg: anyio.abc.TaskGroup | None = None

    # -- the loop -----------------------------------------------------------------------
    async def run(self, *, task_status: anyio.abc.TaskStatus[None] | None = None) -> None:
        """Reconciles until cancelled; task_status (as tg.start gives it) is told once the first pass is done.
        Containers keep running when it ends."""
        self._wake = anyio.Event()
        with self._instance():
            try:
                if self.metrics_address:
                    from .metrics import Metrics

                    self.metrics = Metrics()
                    self.metrics.serve(self.metrics_address, self.health)
                    self._write_status()
                async with anyio.create_task_group() as tg:
                    self._tg = tg
                    if self.files:
                        from .watch import SpecWatcher

                        tg.start_soon(SpecWatcher(self.oc, self.files, self._log).run, self._wake_up)
                    await self.reconcile("start")
                    self._log("info", "controller started", stateDir=str(self.oc.config.state_dir),
                              resync=self.resync, pid=os.getpid())
                    if task_status is not None:
                        task_status.started()
                    while True:
                        await self._sleep()
                        await self.reconcile(self._take_reason())
            finally:
                if self.metrics is not None:
                    self.metrics.close()
                self.oc.store.set_backoff([])  # nobody restarts these once the controller is gone
                self._health.clear()
                self.oc.store.set_health([])  # nor checks them
                self._log("info", "controller stopped")

    def health(self) -> tuple[bool, str]:
        """For /healthz: whether passes run and the last one finished, and a line saying so."""
        if self.last is None:
            return False, "starting: the first pass has not finished"
        age = time.monotonic() - self.last_at
        if age > 2 * self.resync + 60:
            return False, f"no pass finished for {age:.0f}s"
        if self.last.error:
            return False, f"the last pass failed: {self.last.error}"
        return True, f"ok: last pass {age:.1f}s ago ({self.last.trigger}), {len(self.last.plan)} actions"

    async def _sleep(self) -> None:
        now = time.monotonic()
        until = self.last_at + self.resync
        waiting = [loop.due for loop in self._loops.values() if loop.waiting]
        if waiting:
            until = min(until, min(waiting))
        assert self._wake is not None
        with anyio.move_on_after(max(0.0, until - now)):
            await self._wake.wait()
            await anyio.sleep(SETTLE_EVENTS)

    def _take_reason(self) -> str:
        why, self._why = self._why, None
        self._wake = anyio.Event()
        if why:
            return why
        now = time.monotonic()
        return "backoff" if any(loop.waiting and loop.due <= now for loop in self._loops.values()) else "resync"

    def _wake_up(self, why: str) -> None:
        self._why = self._why or why
        if self._wake is not None:
            self._wake.set()

    @contextlib.contextmanager
    def _instance(self):
        """The state dir's controller lock, with the status file `controller status` reads."""
        state_dir = Path(self.oc.config.state_dir)
        from .config import private_dir

        private_dir(state_dir)
        fd = os.open(state_dir / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                other = read_status(state_dir)
                pid = f" (pid {other['pid']})" if other and other.get("pid") else ""
                raise ControllerRunning(f"a controller already runs for state dir {state_dir}{pid}") from None
            self.status_file = state_dir / STATUS
            self._write_status()
            try:
                yield
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.status_file)
        finally:
            os.close(fd)

    def _write_status(self) -> None:
        assert self.status_file is not None
        status = {"pid": os.getpid(), "startedAt": self.started_at, "resync": self.resync, "files": self.files,
                  "metricsAddress": self.metrics.address if self.metrics else None}
        if self.last is not None:
            status.update(lastPass=_now(), lastTrigger=self.last.trigger, lastActions=len(self.last.plan),
                          lastError=self.last.error)
        tmp = self.status_file.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(status))
        os.replace(tmp, self.status_file)

    # -- one pass -----------------------------------------------------------------------
    async def reconcile(self, trigger: str = "manual") -> Report:
        """One pass: plan every stored service against what its runtime reports, and carry the plan out."""
        report = Report(trigger)
        began = time.monotonic()
        try:
            async with self.oc.store.lock():
                await self._pass(report)
        except (OrchestrError, OSError) as e:
            report.error = str(e) or type(e).__name__
            if isinstance(e, RuntimeFailure) and self.metrics:
                self.metrics.runtime_error(e.runtime or "unknown")
        report.duration = time.monotonic() - began
        self.last, self.last_at = report, time.monotonic()
        self._finish(report)
        return report

    async def _pass(self, report: Report) -> None:
        oc = self.oc
        services = self._desired()
        default = oc.default_runtime
        names = set(oc.store.runtimes_used(None)) | {s.spec.runtime or default for s in services}
        self._subscribe(names)  # before listing: whatever changes from here on wakes another pass
        actual: list[Container] = []
        deployed: list[Deployment] = []  # whole services, of runtimes that run them (the swarm)
        whole: set[str] = set()
        down: set[str] = set()
        for name in sorted(names):
            try:
                await oc._recover([name])
                actual += await oc.runtime(name).list()
                found, services_of = await oc._deployed([name], None)
                whole |= found
                deployed += services_of
            except RuntimeFailure as e:  # that runtime's services wait; the others go on
                down.add(name)
                report.error = f"runtime {name}: {e}"
                if self.metrics:
                    self.metrics.runtime_error(name)
        if self.metrics:
            self.metrics.containers_seen(actual, self._loops)
        services = [s for s in services if (s.spec.runtime or default) not in down]
        await self._check(services, [c for c in actual if c.runtime not in down])
        plan = planner.plan(services, actual, default_runtime=default, deployed=deployed, service_runtimes=whole,
                            balancing=oc._balancing(names - down))
        report.plan, report.deferred = self._gate(plan, actual)
        endpoints = oc._endpoints([c for c in actual if c.runtime not in down], names - down,
                                  lambda c: self.readiness(c.id) in (None, Health.HEALTHY))
        if report.plan:
            by_key = {(s.namespace, s.name): s for s in services}
            report.outcomes = await executor.execute(
                report.plan, by_key, oc._runtimes_for(report.plan), concurrency=oc.config.concurrency,
                endpoints=endpoints)
            self._started(report.outcomes)
            if self._tg is not None and any(o.ok and o.action.kind in planner.UP_KINDS for o in report.outcomes):
                self._wake_up("started")  # a pass that finds them running, to check their health
        # replicas that stopped, came back or went behind orchestr's back get (or lose) their service ports' traffic
        await endpoints.sync()
        oc.store.set_backoff([(loop.runtime, id, loop.total, loop.due_at) for id, loop in self._loops.items()
                              if loop.waiting or loop.total])

    def _desired(self) -> list[Service]:
        """The services apply stored, as documents validated again; one the store holds wrong is logged."""
        from .spec.loader import Lines
        from .spec.models import validate

        services = []
        for (ns, name), doc in sorted(self.oc.store.services().items()):
            try:
                services.append(validate(doc, f"state store: {ns}/{name}", 0, Lines(), None))
            except SpecError as e:
                self._log("error", "stored service is not valid", error=str(e))
        return services

    def _gate(self, plan: planner.Plan, actual: Iterable[Container]) -> tuple[planner.Plan, list[planner.Action]]:
        """The plan without the restarts of crash-looping containers whose back-off has not ended yet (the first
        restart is at once, then backoff.first seconds, doubling); those are returned apart."""
        now = time.monotonic()
        by_id = {c.id: c for c in actual}
        for id, loop in list(self._loops.items()):
            c = by_id.get(id)
            if c is None or (c.state is State.RUNNING and not loop.waiting and now - loop.started >= self.backoff.reset):
                del self._loops[id]  # gone, or steady again: its next exit starts a new count
        keep: list[int] = []
        deferred: list[planner.Action] = []
        for i, a in enumerate(plan):
            c = by_id.get(a.container_id or "")
            if a.kind is planner.Kind.START and c is not None and c.state is State.EXITED:
                loop = self._loops.setdefault(c.id, _Loop(c.runtime))
                if not loop.waiting:  # an exit not seen before
                    loop.restarts += 1
                    delay = self.backoff.delay(loop.restarts)
                    loop.due, loop.due_at, loop.waiting = now + delay, _now(delay), True
                    if delay:
                        self.journal.write({"action": "restart", "runtime": c.runtime, "namespace": c.namespace,
                                            "name": c.name, "id": c.id, "restarts": loop.restarts, "delay": delay,
                                            "exitCode": c.exit_code})
                if loop.due > now:
                    deferred.append(a)
                    continue
            keep.append(i)
        return _subset(plan, keep), deferred

    def _started(self, outcomes: list[executor.Outcome]) -> None:
        now = time.monotonic()
        for o in outcomes:
            loop = self._loops.get(o.action.container_id or "")
            if loop is None or o.action.kind is not planner.Kind.START or not loop.waiting:
                continue
            if o.ok:
                loop.waiting, loop.started, loop.due_at = False, now, None
                loop.total += 1
                if self.metrics:
                    self.metrics.restarted()
            else:  # the restart failed (or waited on one that did): tried again after the next delay, not at once
                loop.restarts += 1
                delay = max(self.backoff.delay(loop.restarts), 1.0)
                loop.due, loop.due_at = now + delay, _now(delay)

    def _finish(self, report: Report) -> None:
        if self.metrics:
            self.metrics.pass_done(report.trigger, report.error, report.duration, report.as_dict()["plan"])
        if report.plan or report.deferred or report.error or report.trigger == "start":
            self.journal.write(report.as_dict())
        level = "error" if report.error or any(not o.ok for o in report.outcomes) else "info"
        if report.plan or report.error:
            self._log(level, "reconciled", **report.as_dict())
        if self.status_file is not None:
            with contextlib.suppress(OSError):
                self._write_status()
        if self.on_report is not None:
            self.on_report(report)

    # -- health checks ------------------------------------------------------------------
    def readiness(self, container_id: str) -> Health | None:
        """The health of a container as this controller's checks found it: HEALTHY means ready. None: it has no
        checks (it is ready once it runs), or it is not running."""
        found = self._health.get(container_id)
        return found[1] if found else None

    async def _check(self, services: Sequence[Service], actual: Sequence[Container]) -> None:
        """Keeps one Prober running for each running container of a declared service that has checks."""
        if self._tg is None:  # a pass on its own, outside run(): nobody to run checks
            return
        by_key = {(s.namespace, s.name): s for s in services}
        running = set()
        for c in actual:
            service = by_key.get((c.namespace, c.service))
            if service is None or c.oneoff or c.state is not State.RUNNING:
                continue
            running.add(c.id)
            known = self._probers.get(c.id)
            if known is not None and known[0] == c.started_at:
                continue
            if known is not None:
                known[1].cancel()
            try:
                probes = await probes_for(self.oc.runtime(c.runtime), service, c, self._image_probes)
            except RuntimeFailure:
                probes = None
            if probes is None:
                self._probers.pop(c.id, None)
                continue
            prober = Prober(self.oc.runtime(c.runtime), c, probes, self._health_changed, self._restart_unhealthy)
            self._probers[c.id] = (c.started_at, prober)
            self._tg.start_soon(self._probe, prober)
        for id in list(self._probers):
            if id not in running:
                self._probers.pop(id)[1].cancel()
        gone = [id for id in self._health if id not in self._probers]
        for id in gone:
            del self._health[id]
        if gone:
            self._save_health()

    async def _probe(self, prober: Prober) -> None:
        try:
            await prober.run()
        finally:
            if self._probers.get(prober.container.id, (None, None))[1] is prober:
                del self._probers[prober.container.id]

    def _health_changed(self, c: Container, health: Health, reason: str) -> None:
        was = self._health.get(c.id)
        self._health[c.id] = (c.runtime, health, reason)
        self._save_health()
        if was is not None and was[1] is health:
            return
        self.journal.write({"action": "health", "runtime": c.runtime, "namespace": c.namespace, "name": c.name,
                            "id": c.id, "health": str(health), "reason": reason})
        self._log("warning" if health is Health.UNHEALTHY else "info", "health changed", namespace=c.namespace,
                  name=c.name, health=str(health), reason=reason)
        if self.on_health is not None:
            self.on_health(c, health, reason)
        if self._tg is not None:
            self._wake_up("health")  # a pass that gives its service ports' connections to it, or takes them away

    def _save_health(self) -> None:
        self.oc.store.set_health((rt, id, str(h), why) for id, (rt, h, why) in self._health.items())
        if self.metrics:
            self.metrics.health_seen(self._probers)

    async def _restart_unhealthy(self, c: Container, reason: str) -> None:
        """Stops a container its liveness check failed; the pass that follows starts it, after its back-off."""
        self.journal.write({"action": "unhealthy", "runtime": c.runtime, "namespace": c.namespace, "name": c.name,
                            "id": c.id, "reason": reason})
        self._log("warning", "restarting unhealthy container", namespace=c.namespace, name=c.name, reason=reason)
        if self.metrics:
            self.metrics.liveness_restart()
        try:
            async with self.oc.store.lock():
                await self.oc.runtime(c.runtime).stop(c.id, timeout=c.stop_grace or 10.0)
        except RuntimeFailure as e:
            self._log("error", "cannot stop unhealthy container", namespace=c.namespace, name=c.name, error=str(e))
        self._wake_up(f"unhealthy {c.namespace}/{c.name}")

    # -- events -------------------------------------------------------------------------
    def _subscribe(self, names: Iterable[str]) -> None:
        if self._tg is None:  # a pass on its own, outside run(): nobody to hand events to
            return
        for name in sorted(set(names) - self._watched):
            try:
                stream = self.oc.runtime(name).events()  # subscribed from this call on
            except RuntimeFailure as e:
                self._log("error", "cannot watch runtime events", runtime=name, error=str(e))
                continue
            self._watched.add(name)
            self._tg.start_soon(self._watch, name, stream)

    async def _watch(self, name: str, stream) -> None:
        """Wakes a pass on each change the runtime reports; a stream that fails is subscribed to again."""
        pause = 1.0
        while True:
            try:
                async for event in stream:
                    pause = 1.0
                    self._on_event(event)
            except (RuntimeFailure, OSError) as e:
                self._log("error", "runtime events failed", runtime=name, error=str(e))
                if self.metrics:
                    self.metrics.runtime_error(name)
            await anyio.sleep(pause)
            pause = min(pause * 2, 30.0)
            try:
                stream = self.oc.runtime(name).events()
            except RuntimeFailure:
                continue
            self._wake_up("events resumed")  # what happened meanwhile is found by listing

    def _on_event(self, event: Event) -> None:
        if event.action is EventAction.RESTART and self.metrics:
            self.metrics.restarted()
        if event.action in _WAKING:
            self._wake_up(f"{event.action} {event.namespace}/{event.name}")

    def _log(self, level: str, msg: str, **fields) -> None:
        if self.on_log is not None:
            self.on_log({"time": _now(), "level": level, "msg": msg, **fields})


def _subset(plan: planner.Plan, keep: list[int]) -> planner.Plan:
    """plan with only the actions at keep, and those waiting on an action left out left out too."""
    from dataclasses import replace

    if len(keep) == len(plan):
        return plan
    index: dict[int, int] = {}
    actions = []
    for i in keep:
        a = plan.actions[i]
        if not all(j in index for j in a.after):
            continue
        index[i] = len(actions)
        actions.append(replace(a, after=tuple(index[j] for j in a.after)))
    return planner.Plan(tuple(actions))


def read_status(state_dir: str | Path) -> dict | None:
    """What the last controller of state_dir wrote about itself (it may have ended since: see
    Store.controller_status); None when there is nothing."""
    try:
        return json.loads((Path(state_dir) / STATUS).read_text())
    except (FileNotFoundError, ValueError):
        return None


def _now(later: float = 0.0) -> str:
    return rfc3339(time.time_ns() + int(later * 1e9))
