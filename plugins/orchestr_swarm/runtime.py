"""The Docker Swarm runtime: whole services handed to the engine's swarm mode, which owns their replicas,
restarts and rolling updates; each replica's container is read, logged and exec'd as the docker runtime does.

The engine must be a swarm manager (`docker swarm init`). A namespace's services share an overlay network named
orchestr_<namespace>, made with its first service and removed with its last, where each service's name resolves
to its replicas. Published ports are bound on the nodes that run a replica, or, with
ORCHESTR_SWARM_ROUTING_MESH=1, go through the swarm's routing mesh (which needs the kernel's IPVS).
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING

import anyio

from orchestr.errors import RuntimeUnavailable, TerminalFailure, Timeout, located
from orchestr.model import L_NAMESPACE, Container, ContainerSpec, Deployment, Event, State
from orchestr.runtime import Capabilities, EventDelivery
from orchestr_docker import engine
from orchestr_docker.runtime import SWARM_SERVICE, DockerRuntime

from . import mapping

if TYPE_CHECKING:
    from orchestr.spec.models import Service

GONE_AFTER = 30.0  # seconds past the grace period that an undeploy waits for the service's containers to go


class SwarmRuntime(DockerRuntime):
    """orchestr's runtime on a Docker Engine in swarm mode (DOCKER_HOST, or the engine's default unix socket)."""

    name = "swarm"
    # The swarm restarts, scales and rolls out services itself and the engine pushes its containers' events. A
    # container of a service is the swarm's to replace: pausing or updating it in place would not last.
    capabilities = Capabilities(
        restarts=True, events=EventDelivery.PUSHED, limits=True, image_import=True, signal=True, stats=True,
        services=True, exec_tty=True,
    )

    def __init__(self, config) -> None:  # type: ignore[no-untyped-def]
        super().__init__(config)
        self.mesh = os.environ.get("ORCHESTR_SWARM_ROUTING_MESH", "") in ("1", "true", "yes")
        self._networks = anyio.Lock()  # a namespace's network is made and removed by one service verb at a time
        self._made: set[str] = set()  # namespaces whose network this runtime has found or made, and not removed

    # -- whole services -------------------------------------------------------------------

    async def deployments(self, namespace: str | None = None) -> list[Deployment]:
        label = L_NAMESPACE if namespace is None else f"{L_NAMESPACE}={namespace}"
        with self._errors("swarm services"):
            try:
                items = await self._get("services", {"filters": json.dumps({"label": [label]})})
            except engine.EngineError as e:
                if e.status == 503:  # the engine is not a swarm manager
                    raise RuntimeUnavailable(self._not_a_manager(e.message)) from e
                raise
        return [d for item in items if (d := mapping.deployment(item)) is not None]

    def _not_a_manager(self, message: str) -> str:
        return (f"the Docker Engine at {self.host} is not a swarm manager ({' '.join(message.split())}); "
                "run `docker swarm init --advertise-addr 127.0.0.1`")

    async def deploy(
        self, template: ContainerSpec, replicas: int, current: str | None = None, *, service: Service | None = None,
    ) -> str:
        spec = mapping.service_spec(template, replicas, self.mesh)
        what = f"service {template.namespace}/{template.name}"
        with located(self.name, template.name), self._errors(what):
            if current is not None:
                version = (await self._call("GET", f"services/{current}"))["Version"]["Index"]
                await self._call("POST", f"services/{current}/update", {"version": str(version)}, spec)
                return current
            async with self._networks:
                if template.network != "bridge":
                    return (await self._call("POST", "services/create", None, spec))["ID"]
                known = template.namespace in self._made
                await self._ensure_network(template.namespace)
                try:
                    created = await self._call("POST", "services/create", None, spec)
                except Exception as e:  # the engine's error, from either client
                    # found or made by an earlier deploy, the network has been removed since by another process
                    if not known or f"network {mapping.network_name(template.namespace)} not found" not in str(e):
                        raise
                    self._made.discard(template.namespace)
                    await self._ensure_network(template.namespace)
                    created = await self._call("POST", "services/create", None, spec)
        return created["ID"]

    async def _ensure_network(self, namespace: str) -> None:
        """Finds or makes the namespace's network, once per runtime: the services of one apply share it."""
        if namespace in self._made:
            return
        name = mapping.network_name(namespace)
        found = await self._get("networks", {"filters": json.dumps({"name": [name]})})
        if not any(n.get("Name") == name for n in found):
            await self._call("POST", "networks/create", None, mapping.network_body(namespace))
        self._made.add(namespace)

    async def undeploy(self, id: str, *, timeout: float = 10.0) -> None:
        with located(self.name, id), self._errors(f"service {id}", missing=f"service {id} not found"):
            try:
                service = await self._call("GET", f"services/{id}")
            except engine.EngineError as e:
                if e.status == 404:
                    return
                raise
            namespace = (service["Spec"].get("Labels") or {}).get(L_NAMESPACE, "")
            await self._call("DELETE", f"services/{id}")
            # the swarm removes the tasks after the call returns, and a task the node was about to start may still
            # make its container and volumes: the service is gone once its tasks and their containers are
            filters = json.dumps({"label": [f"{SWARM_SERVICE}={id}"]})
            with anyio.move_on_after(timeout + GONE_AFTER) as deadline:
                while any(t.get("ServiceID") == id for t in await self._get("tasks")) or \
                        await self._get("containers/json", {"all": "1", "filters": filters}):
                    await anyio.sleep(0.1)
            if deadline.cancelled_caught:
                raise Timeout(f"service {id} was removed, but its containers were still there "
                              f"{timeout + GONE_AFTER:g}s later")
            async with self._networks:
                if namespace and not await self.deployments(namespace):
                    await self._remove_network(namespace)

    async def _remove_network(self, namespace: str) -> None:
        self._made.discard(namespace)
        try:
            await self._call("DELETE", f"networks/{mapping.network_name(namespace)}")
        except engine.EngineError as e:
            # gone already (while the swarm removes a network, the engine answers 500 "not found"), or in use by a
            # service made meanwhile
            if e.status not in (404, 403, 409) and "not found" not in e.message:
                raise

    # -- its containers ---------------------------------------------------------------------

    async def list(self, namespace: str | None = None) -> list[Container]:
        # The swarm keeps the containers of a replica's earlier tasks (restarted, rolled out, scaled away) for a
        # while: each replica is its current task's container, the running one, else the newest; a stopped one
        # beyond the service's replicas is history.
        replicas = {(d.namespace, d.name): d.replicas for d in await self.deployments(namespace)}
        current: dict[tuple[str, str], Container] = {}
        for c in await super().list(namespace):
            if c.state is not State.RUNNING and c.replica >= replicas.get((c.namespace, c.service), 0):
                continue
            key = (c.namespace, c.name)
            if key not in current or _rank(c) > _rank(current[key]):
                current[key] = c
        return list(current.values())

    def _adopt(self, container: Container) -> Container | None:
        return mapping.task_container(container) if SWARM_SERVICE in container.labels else None

    def _adopt_event(self, event: Event, attributes: dict[str, str]) -> Event | None:
        return mapping.task_event(event, attributes) if SWARM_SERVICE in attributes else None

    async def create(self, spec: ContainerSpec) -> Container:
        raise TerminalFailure(f"container {spec.namespace}/{spec.name}: the swarm runtime runs whole services, "
                              "not single containers; use the docker runtime for one-off runs",
                              runtime=self.name, container=spec.name)


def _rank(c: Container) -> tuple[bool, str]:
    return c.state is State.RUNNING, c.created_at or ""


__all__ = ["SwarmRuntime"]
