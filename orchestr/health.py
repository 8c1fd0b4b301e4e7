"""Health checks: running one against a container through its runtime, and what a run of them makes of it.

A check is an exec through the runtime's exec (with its timeout), or an HTTP GET or TCP connect from the host to the
container's address; a container without one is reached on its own loopback, from inside its network namespace.
`Tracker` is the pure state machine (starting, healthy, unhealthy, and when to restart); `Prober` runs a
container's checks on their intervals; `wait_ready` is what apply and rolling updates wait with.
"""

from __future__ import annotations

import ctypes
import os
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio

from .errors import OrchestrError, Timeout
from .model import Check, Container, Health, Probes, State

if TYPE_CHECKING:
    from .runtime import Runtime

DETAIL = 200  # characters of a check's output kept to say why it failed
_CLONE_NEWNET = 0x40000000


@dataclass(frozen=True, slots=True)
class Result:
    ok: bool
    detail: str  # one line: what the check found


@dataclass(frozen=True, slots=True)
class Readiness:
    """What wait_ready found: whether the container became ready, and if not why."""

    ready: bool
    health: Health
    reason: str


# -- the image's own HEALTHCHECK --------------------------------------------------------------------------------------
def image_probes(config: dict[str, Any]) -> Probes | None:
    """The HEALTHCHECK of an image's config (as `docker image inspect` shows it) as a healthcheck; None without one."""
    hc = (config.get("Config") or config.get("config") or {}).get("Healthcheck") or {}
    test = hc.get("Test") or []
    if not test or test[0] == "NONE":
        return None
    if test[0] == "CMD-SHELL":
        argv: tuple[str, ...] = ("/bin/sh", "-c", " ".join(test[1:]))
    elif test[0] == "CMD":
        argv = tuple(test[1:])
    else:
        return None
    if not argv:
        return None

    def seconds(key: str, default: float) -> float:
        value = hc.get(key) or 0
        return value / 1e9 if value > 0 else default

    check = Check("exec", argv=argv, interval=seconds("Interval", 30.0), timeout=seconds("Timeout", 30.0),
                  retries=int(hc.get("Retries") or 3), start_period=seconds("StartPeriod", 0.0))
    return Probes(readiness=check, liveness=check, combined=True)


async def probes_for(rt: Runtime, service: Any | None, container: Container,
                     cache: dict[tuple[str, str], Probes | None] | None = None) -> Probes | None:
    """The checks of a container of service: the spec's, else its image's HEALTHCHECK; None when there are none."""
    probes = service.probes() if hasattr(service, "probes") else None
    if probes is not None:
        return probes if (probes.readiness or probes.liveness or probes.startup) else None
    key = (rt.name, container.image)
    if cache is not None and key in cache:
        return cache[key]
    try:
        found = image_probes(await rt.image_inspect(container.image))
    except OrchestrError:
        found = None
    if cache is not None:
        cache[key] = found
    return found


# -- one check --------------------------------------------------------------------------------------------------------
async def run_check(rt: Runtime, container: Container, check: Check) -> Result:
    """Runs check once against container; never raises for what the container does (a refusal, a timeout)."""
    if check.kind == "exec":
        try:
            result = await rt.exec(container.id, check.argv, timeout=check.timeout, output_limit=DETAIL)
        except Timeout:
            return Result(False, f"{check.argv[0]} timed out after {check.timeout:g}s")
        except OrchestrError as e:
            return Result(False, f"{check.argv[0]}: {_line(str(e))}")
        if result.exit_code == 0:
            return Result(True, f"{check.argv[0]} exited with 0")
        said = _line((result.stderr or result.stdout).decode(errors="replace"))
        return Result(False, f"{check.argv[0]} exited with {result.exit_code}" + (f": {said}" if said else ""))
    address = container.ip
    netns = None
    if not address:  # network none or host: the container's own loopback, from inside its network namespace
        if container.pid:
            address, netns = "127.0.0.1", container.pid
        else:
            return Result(False, "the container has no address to check")
    return await anyio.to_thread.run_sync(_socket_check, check, address, netns)


def _socket_check(check: Check, address: str, netns: int | None) -> Result:
    """A TCP connect, and with http a GET, blocking (in a worker thread: setns changes the calling thread only)."""
    where = f"{address}:{check.port}"
    try:
        sock = _socket(netns) if netns else socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    except OSError as e:
        return Result(False, f"cannot enter the container's network namespace: {e.strerror or e}")
    with sock:
        sock.settimeout(check.timeout)
        deadline = time.monotonic() + check.timeout
        try:
            sock.connect((address, check.port))
            if check.kind == "tcp":
                return Result(True, f"{where} accepted a connection")
            request = (f"GET {check.path} HTTP/1.0\r\nHost: {where}\r\nUser-Agent: orchestr-health\r\n"
                       "Connection: close\r\n\r\n")
            sock.sendall(request.encode())
            data = b""
            while b"\r\n" not in data and len(data) < 1024:
                sock.settimeout(max(0.001, deadline - time.monotonic()))
                chunk = sock.recv(1024)
                if not chunk:
                    break
                data += chunk
        except TimeoutError:
            return Result(False, f"{where} timed out after {check.timeout:g}s")
        except OSError as e:
            return Result(False, f"{where}: {e.strerror or e}")
    url = f"http://{where}{check.path}"
    parts = data.split(b"\r\n", 1)[0].split()
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        return Result(False, f"{url} gave no HTTP answer")
    status = int(parts[1])
    low, high = check.status
    return Result(low <= status <= high, f"{url} answered {status}")


def _socket(pid: int) -> socket.socket:
    """A TCP socket made in the network namespace of process pid (a socket stays in the namespace it was made in)."""
    libc = ctypes.CDLL(None, use_errno=True)
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        target = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            if libc.setns(target, _CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise OSError(err, os.strerror(err))
            try:
                return socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            finally:
                if libc.setns(own, _CLONE_NEWNET) != 0:  # a worker thread must not stay in the container's
                    os._exit(70)
        finally:
            os.close(target)
    finally:
        os.close(own)


def _age(container: Container) -> float:
    """Seconds since the container started, from its started_at; 0 when that is not known."""
    from datetime import UTC, datetime

    try:
        at = (container.started_at or "").replace("Z", "+00:00")
        if "." in at:  # fromisoformat takes at most microseconds
            head, _, tail = at.partition(".")
            digits = "".join(ch for ch in tail if ch.isdigit())
            at = f"{head}.{digits[:6]}{tail[len(digits):]}"
        started = datetime.fromisoformat(at)
        if started.tzinfo is None:
            started = started.replace(tzinfo=UTC)
        return max(0.0, (datetime.now(UTC) - started).total_seconds())
    except ValueError:
        return 0.0


def _line(text: str) -> str:
    text = " ".join(text.split())
    return text[:DETAIL]


# -- what the results make of a container -----------------------------------------------------------------------------
@dataclass(slots=True)
class _Count:
    failures: int = 0
    passed: bool = False


class Tracker:
    """A container's health from its checks' results; pure: results and times in, changes out."""

    def __init__(self, probes: Probes, started: float):
        self.probes = probes
        self.started = started
        self.health = Health.STARTING
        self.reason = "not checked yet"
        self.counts = {"startup": _Count(), "readiness": _Count(), "liveness": _Count()}
        self.ever_ready = False

    def due(self) -> list[str]:
        """Which checks run now: the startup check until it has passed, then readiness and liveness."""
        p = self.probes
        if p.startup is not None and not self.counts["startup"].passed:
            return ["startup"]
        if p.combined:
            return ["readiness"]
        return [k for k in ("readiness", "liveness") if getattr(p, k) is not None]

    def check(self, kind: str) -> Check:
        check = getattr(self.probes, kind)
        assert check is not None
        return check

    def record(self, kind: str, result: Result, now: float) -> str | None:
        """Takes one result of check kind at time now (monotonic); returns why to restart the container, if so."""
        check = self.check(kind)
        count = self.counts[kind]
        if result.ok:
            count.failures, count.passed = 0, True
            if kind == "startup" and self.probes.readiness is None:
                self._set(Health.HEALTHY, result.detail)
            elif kind == "readiness":
                self._set(Health.HEALTHY, result.detail)
                self.ever_ready = True
            return None
        if now - self.started < check.start_period and not count.passed:  # as Docker: once passed, failures count
            self.reason = result.detail
            return None
        count.failures += 1
        self.reason = result.detail
        if count.failures < check.retries:
            return None
        if kind == "readiness":
            self._set(Health.UNHEALTHY, result.detail)
            if self.probes.combined and self.ever_ready:
                return f"healthcheck failed {count.failures} times: {result.detail}"
        elif kind == "startup":
            self._set(Health.UNHEALTHY, result.detail)
            return f"startup probe failed {count.failures} times: {result.detail}"
        elif kind == "liveness":
            return f"liveness probe failed {count.failures} times: {result.detail}"
        return None

    def _set(self, health: Health, reason: str) -> None:
        self.health, self.reason = health, reason

    def initial(self) -> Health:
        """A container with only a liveness check is ready as soon as it runs (as Kubernetes has it)."""
        if self.probes.readiness is None and self.probes.startup is None:
            self.health = Health.HEALTHY
            self.reason = "no readiness check"
        return self.health


# -- running them -----------------------------------------------------------------------------------------------------
OnChange = Callable[[Container, Health, str], None]
OnRestart = Callable[[Container, str], Awaitable[None]]


class Prober:
    """Runs one container's checks on their intervals until cancelled, reporting each change of its health, and
    asking on_restart to restart it when a liveness check says so (then it ends: the restarted container gets a new
    Prober)."""

    def __init__(self, rt: Runtime, container: Container, probes: Probes, on_change: OnChange,
                 on_restart: OnRestart):
        self.rt, self.container, self.probes = rt, container, probes
        self.on_change, self.on_restart = on_change, on_restart
        self.tracker = Tracker(probes, time.monotonic() - _age(container))
        self.scope = anyio.CancelScope()

    @property
    def health(self) -> Health:
        return self.tracker.health

    async def run(self) -> None:
        with self.scope:
            tracker = self.tracker
            if self.container.ip is None and self.container.pid is None:  # a list may leave those to inspect
                try:
                    self.container = await self.rt.inspect(self.container.id)
                except OrchestrError:
                    return
            self.on_change(self.container, tracker.initial(), tracker.reason)
            due: dict[str, float] = {}
            while True:
                now = time.monotonic()
                kinds = tracker.due()
                for kind in kinds:
                    due.setdefault(kind, now)
                kind = min(kinds, key=lambda k: due[k])
                await anyio.sleep(max(0.0, due[kind] - now))
                before = tracker.health
                result = await run_check(self.rt, self.container, tracker.check(kind))
                if not result.ok and tracker.check(kind).kind != "exec":
                    try:  # restarted by its runtime meanwhile, at another address or pid: check that one
                        now_is = await self.rt.inspect(self.container.id)
                    except OrchestrError:
                        return
                    if now_is.state is not State.RUNNING:
                        return  # the controller's next pass sees why
                    if (now_is.ip, now_is.pid) != (self.container.ip, self.container.pid):
                        self.container = now_is
                        result = await run_check(self.rt, self.container, tracker.check(kind))
                restart = tracker.record(kind, result, time.monotonic())
                due[kind] = time.monotonic() + tracker.check(kind).interval
                if kind == "startup" and tracker.counts["startup"].passed:
                    due.clear()
                if tracker.health is not before:
                    self.on_change(self.container, tracker.health, tracker.reason)
                if restart:
                    await self.on_restart(self.container, restart)
                    return

    def cancel(self) -> None:
        self.scope.cancel()


async def wait_ready(rt: Runtime, container: Container, probes: Probes | None, deadline: float) -> Readiness:
    """Runs the container's startup and readiness checks until it is ready, or until time.monotonic() passes
    deadline (then the last result says why not). A container without a readiness or startup check is ready once
    it runs. The container is inspected between checks: one that exits is not ready."""
    if probes is None or (probes.readiness is None and probes.startup is None):
        return Readiness(container.state is State.RUNNING, Health.HEALTHY if container.state is State.RUNNING
                         else Health.UNHEALTHY, f"{container.name} has no readiness check")
    tracker = Tracker(probes, time.monotonic())
    if container.ip is None and container.pid is None:  # a list may leave those to inspect
        try:
            container = await rt.inspect(container.id)
        except OrchestrError as e:
            return Readiness(False, Health.UNHEALTHY, _line(str(e)))
    checked = False
    while True:
        kind = "startup" if "startup" in tracker.due() else "readiness"
        if kind == "readiness" and probes.readiness is None:
            return Readiness(True, Health.HEALTHY, tracker.reason)
        check = tracker.check(kind)
        left = deadline - time.monotonic()
        if left <= 0 and checked:
            return Readiness(False, tracker.health, tracker.reason)
        checked = True
        with anyio.move_on_after(max(left, check.timeout)):  # a first round, whatever the deadline
            result = await run_check(rt, container, check)
            tracker.record(kind, result, time.monotonic())
        if kind == "readiness" and tracker.health is Health.HEALTHY:
            return Readiness(True, Health.HEALTHY, tracker.reason)
        try:
            now = await rt.inspect(container.id)
        except OrchestrError as e:
            return Readiness(False, Health.UNHEALTHY, _line(str(e)))
        if now.state is not State.RUNNING:
            how = f"exited with {now.exit_code}" if now.state is State.EXITED else str(now.state)
            return Readiness(False, Health.UNHEALTHY, f"{container.name} {how}")
        container = now
        if kind == "startup" and tracker.counts["startup"].passed:
            continue
        await anyio.sleep(max(0.0, min(check.interval, deadline - time.monotonic())))


async def ready(rt: Runtime, container: Container, probes: Probes | None, timeout: float) -> Readiness:
    """wait_ready with a timeout in seconds: whether container is ready (or becomes so within timeout), and why
    not. For callers that must know a replica can serve before going on (a rolling update, a dependent)."""
    return await wait_ready(rt, container, probes, time.monotonic() + timeout)
