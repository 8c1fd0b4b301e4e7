"""Service ports' endpoints: which replicas of a service get its new connections, kept current as replicas come,
go, stop and turn ready, on the runtimes that balance service ports (the ServicePorts verbs)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import anyio

from .errors import located
from .model import L_SERVICE_PORTS, Container, Port, State, decode_service_ports
from .runtime import Runtime, ServicePorts, supports

# Seconds a replica taken out of its service's ports goes on serving the connections it has before it is stopped:
# new connections go elsewhere from the moment it is taken out, those already made finish.
DRAIN = 1.0

Key = tuple[str, str, str]  # runtime, namespace, service


def service_ports(c: Container) -> tuple[Port, ...]:
    raw = c.labels.get(L_SERVICE_PORTS)
    return decode_service_ports(raw) if raw else ()


def ready(c: Container) -> bool:
    """Whether c may get new connections: running, with an address (and healthy: see Endpoints.healthy)."""
    return c.state is State.RUNNING and bool(c.ip)


class Endpoints:
    """The endpoints of every service port of the containers given, as a plan changes them."""

    def __init__(self, runtimes: Mapping[str, Runtime], actual: Iterable[Container],
                 healthy: Callable[[Container], bool] | None = None):
        self.runtimes = {name: rt for name, rt in runtimes.items() if supports(rt, "service_ports")}
        self.healthy = healthy  # whether a running container's readiness checks pass (the controller knows)
        self.vouched: set[tuple[str, str]] = set()  # found ready by a rolling update's wait, whatever healthy says
        self.containers: dict[tuple[str, str], Container] = {
            (c.runtime, c.id): c for c in actual if c.runtime in self.runtimes and L_SERVICE_PORTS in c.labels}
        self.out: set[tuple[str, str]] = set()  # taken out: being stopped or deleted
        self.locks: dict[Key, anyio.Lock] = {}

    def serves(self, runtime: str, id: str) -> bool:
        """Whether the container is one of its service's endpoints now."""
        c = self.containers.get((runtime, id))
        return c is not None and (runtime, id) not in self.out and self.ready(c)

    def ready(self, c: Container) -> bool:
        return ready(c) and (self.healthy is None or (c.runtime, c.id) in self.vouched or self.healthy(c))

    async def leave(self, runtime: str, id: str) -> bool:
        """Takes the container out of its service's endpoints; whether it was one (then it may have connections
        to finish: see DRAIN)."""
        c = self.containers.get((runtime, id))
        if c is None:
            return False
        serving = self.serves(runtime, id)
        self.out.add((runtime, id))
        await self._publish((runtime, c.namespace, c.service))
        return serving

    async def join(self, c: Container, checked: bool = False) -> None:
        """Makes a container just created or started (as its runtime reports it now) an endpoint when ready;
        checked: its readiness checks have just passed, whatever healthy says."""
        if c.runtime not in self.runtimes or L_SERVICE_PORTS not in c.labels:
            return
        if checked:
            self.vouched.add((c.runtime, c.id))
        self.containers[(c.runtime, c.id)] = c
        self.out.discard((c.runtime, c.id))
        await self._publish((c.runtime, c.namespace, c.service))

    def knows(self, runtime: str, id: str) -> bool:
        return (runtime, id) in self.containers

    async def sync(self, namespaces: Iterable[str] | None = None) -> None:
        """Publishes every service port as the containers stand, and removes those of services without containers
        in namespaces (None: those of the containers known)."""
        keys = {(r, c.namespace, c.service) for (r, _), c in self.containers.items()}
        wanted = set(namespaces) if namespaces is not None else {ns for _, ns, _ in keys}
        for name, rt in sorted(self.runtimes.items()):
            assert isinstance(rt, ServicePorts)
            for ns in sorted(wanted):
                with located(name):
                    keys |= {(name, ns, s) for s in await rt.published_services(ns)}
        for key in sorted(keys):
            await self._publish(key)

    async def _publish(self, key: Key) -> None:
        runtime, namespace, service = key
        lock = self.locks.setdefault(key, anyio.Lock())
        async with lock:  # each publish is computed and written in turn: the last one written is the newest
            mine = [(i, c) for i, c in self.containers.items()
                    if i[0] == runtime and c.namespace == namespace and c.service == service and i not in self.out]
            ports = sorted({p for _, c in mine for p in service_ports(c)}, key=lambda p: (p.host_port, p.protocol))
            endpoints = sorted({c.ip for i, c in mine if self.ready(c) and c.ip})
            rt = self.runtimes[runtime]
            assert isinstance(rt, ServicePorts)
            await rt.publish_service(namespace, service, ports, endpoints)
