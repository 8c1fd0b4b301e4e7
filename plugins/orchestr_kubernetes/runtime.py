"""The Kubernetes runtime: whole services applied to a cluster's API server as the objects `orchestr export
--format kubernetes` writes, with server-side apply; the cluster owns their replicas, restarts and rolling
updates, and each replica's pod is read and logged through the API.

The cluster comes from the service account when orchestr runs in a pod, else from KUBECONFIG, else from
~/.kube/config (its current context). An orchestr namespace is the Kubernetes namespace of that name, created
(labelled as orchestr's) when missing and never deleted.
"""

from __future__ import annotations

import builtins
import contextlib
from collections.abc import AsyncIterator, Callable, Collection, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, cast

import anyio
import httpx2
from lightkube import AsyncClient, KubeConfig
from lightkube.core.exceptions import ApiError, ConfigError
from lightkube.resources.apps_v1 import Deployment as K8sDeployment
from lightkube.resources.apps_v1 import StatefulSet
from lightkube.resources.batch_v1 import Job
from lightkube.resources.core_v1 import Namespace, PersistentVolumeClaim, Pod
from lightkube.resources.core_v1 import Service as K8sService
from lightkube.resources.networking_v1 import NetworkPolicy
from lightkube.operators import not_exists
from lightkube.types import CascadeType, PatchType

from orchestr.errors import (
    Conflict, NotFound, RuntimeFailure, RuntimeUnavailable, TerminalFailure, Timeout, located,
)
from orchestr.export.kubernetes import MANAGED_BY
from orchestr.model import (
    EXEC_OUTPUT_LIMIT, L_NAMESPACE, L_SERVICE, Container, ContainerSpec, Deployment, Event, EventAction,
    ExecResult, HistoryEntry, Image, LogLine, State,
)
from orchestr.runtime import Capabilities, EventDelivery, ProgressCallback

from . import mapping

if TYPE_CHECKING:
    from orchestr.config import Config
    from orchestr.spec.models import Service

FIELD_MANAGER = "orchestr"
GONE_AFTER = 30.0  # seconds past the grace period that an undeploy waits for the service's pods to go
POLL = 2.0  # seconds between two looks at the pods, for wait and events
ALL = "*"  # lightkube's every namespace
RESOURCES: dict[str, Any] = {
    "Namespace": Namespace, "NetworkPolicy": NetworkPolicy, "PersistentVolumeClaim": PersistentVolumeClaim,
    "Service": K8sService, "Deployment": K8sDeployment, "StatefulSet": StatefulSet, "Job": Job, "Pod": Pod,
}


class KubernetesRuntime:
    """orchestr's runtime on a Kubernetes cluster, through its API server."""

    name = "kubernetes"
    # The cluster restarts, scales and rolls out services itself; orchestr looks at pods to see changes. Nodes
    # pull images themselves, so the image verbs have nothing here to work on.
    capabilities = Capabilities(restarts=True, events=EventDelivery.POLLED, limits=True, services=True,
                                remove_network=True)

    def __init__(self, config: Config | None = None, *, transport: httpx2.AsyncBaseTransport | None = None):
        self._transport = transport  # the HTTP client's transport hook: tests see the requests there
        self._client: AsyncClient | None = None
        self.server = "?"

    # -- the API server -------------------------------------------------------------------

    def _api(self) -> AsyncClient:
        if self._client is None:
            try:
                config = KubeConfig.from_env()
                current = config.get()
                if current is None:
                    raise ConfigError("no current context")
                self.server = current.cluster.server
                self._client = AsyncClient(config, field_manager=FIELD_MANAGER, transport=self._transport)
            except (ConfigError, OSError, AssertionError, KeyError, ValueError) as e:
                raise TerminalFailure(_no_config(e), runtime=self.name) from None
        return self._client

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        """Turns what the API client raises into orchestr's errors, each one line saying what was asked of which
        API server."""
        try:
            yield
        except ApiError as e:
            code = e.status.code or e.response.status_code
            message = " ".join((e.status.message or e.status.reason or "").split())
            if code in (401, 403):
                raise TerminalFailure(f"the Kubernetes API server at {self.server} refused to {what} "
                                      f"({code}: {message})", runtime=self.name) from None
            if code == 404:
                raise NotFound(f"{what}: not found ({message})", runtime=self.name) from None
            if code == 409:
                raise Conflict(f"{what}: {message}", runtime=self.name) from None
            if code == 422:
                raise TerminalFailure(f"{what}: the API server refused it: {message}", runtime=self.name) from None
            raise RuntimeFailure(f"{what}: the API server answered {code}: {message}", runtime=self.name) from None
        except httpx2.TransportError as e:
            reason = " ".join(str(e).split()) or type(e).__name__
            raise RuntimeUnavailable(f"the Kubernetes API server at {self.server} cannot be reached to {what} "
                                     f"({reason})", runtime=self.name) from None

    async def _list(self, kind: str, namespace: str | None, labels: dict[str, Any]) -> list[dict[str, Any]]:
        return [obj.to_dict() async for obj in self._api().list(RESOURCES[kind], namespace=namespace or ALL, labels=labels)]

    # -- whole services -------------------------------------------------------------------

    async def deployments(self, namespace: str | None = None) -> list[Deployment]:
        labels = {L_NAMESPACE: namespace or None, L_SERVICE: None}  # export's workloads carry both; None: any value
        found = []
        with self._errors("list orchestr's workloads"):
            for kind in mapping.WORKLOADS:
                found += await self._list(kind, namespace, labels)
        return [d for obj in found if (d := mapping.deployment(obj)) is not None]

    async def deploy(
        self, template: ContainerSpec, replicas: int, current: str | None = None, *, service: Service | None = None,
    ) -> str:
        if service is None:
            raise TerminalFailure(f"service {template.namespace}/{template.name}: the kubernetes runtime applies a "
                                  "declared service, not a container template", runtime=self.name)
        namespace = service.namespace
        applied = mapping.objects(service, template)
        with located(self.name, service.name):
            await self._ensure_namespace(namespace)
            for obj in applied:
                await self._apply(obj, service)
            # what an earlier apply made for this service and this one did not (a Deployment become a
            # StatefulSet, ports no longer published) goes
            keep = {(obj["kind"], obj["metadata"]["name"]) for obj in applied}
            await self._remove(namespace, service.name, keep)
        return mapping.service_id(namespace, service.name)

    async def _apply(self, obj: dict[str, Any], service: Service) -> None:
        kind, name, namespace = obj["kind"], obj["metadata"]["name"], obj["metadata"]["namespace"]
        resource = RESOURCES[kind]
        with self._errors(f"apply {kind} {namespace}/{name}"):
            try:
                # force: orchestr's spec is the truth for the fields it declares; a field someone else set since
                # (kubectl scale, kubectl edit) is taken back, as apply converges every other runtime
                await self._api().patch(resource, name, obj, namespace=namespace, patch_type=PatchType.APPLY,
                                        field_manager=FIELD_MANAGER, force=True)
                return
            except ApiError as e:
                if kind != "Job" or e.status.code != 422:
                    raise
            # a Job's pod template cannot change: the changed Job replaces the old one once its pods are gone, as a
            # changed spec replaces containers on the other runtimes
            await self._api().delete(resource, name, namespace=namespace, cascade=CascadeType.FOREGROUND)
            with anyio.move_on_after(service.spec.stop_grace_period + GONE_AFTER) as deadline:
                while True:
                    try:
                        await self._api().get(resource, name, namespace=namespace)
                    except ApiError as e:
                        if e.status.code == 404:
                            break
                        raise
                    await anyio.sleep(0.5)
            if deadline.cancelled_caught:
                raise Timeout(f"Job {namespace}/{name} was deleted to be replaced, but was still there "
                              f"{service.spec.stop_grace_period + GONE_AFTER:g}s later", runtime=self.name)
            await self._api().patch(resource, name, obj, namespace=namespace, patch_type=PatchType.APPLY,
                                    field_manager=FIELD_MANAGER, force=True)

    async def _ensure_namespace(self, namespace: str) -> None:
        with self._errors(f"read namespace {namespace}"):
            try:
                await self._api().get(Namespace, namespace)
                return
            except ApiError as e:
                if e.status.code != 404:
                    raise
        with self._errors(f"create namespace {namespace}"):
            try:
                await self._api().create(cast(Namespace, Namespace.from_dict(mapping.namespace_body(namespace))))
            except ApiError as e:
                if e.status.code != 409:  # made meanwhile
                    raise

    async def _remove(self, namespace: str, service: str, keep: Collection[tuple[str, str]] = ()) -> None:
        """Deletes the objects of service that export labels as its own (never another's, nor anything not
        carrying both of orchestr's labels), but those in keep; dependents (pods) go in the background."""
        labels = mapping.service_labels(namespace, service)
        for kind in mapping.OWNED:
            with self._errors(f"list the {kind} objects of service {namespace}/{service}"):
                found = await self._list(kind, namespace, labels)
            for obj in found:
                name = obj["metadata"]["name"]
                if (kind, name) in keep:
                    continue
                with self._errors(f"delete {kind} {namespace}/{name}"):
                    try:
                        await self._api().delete(RESOURCES[kind], name, namespace=namespace,
                                                 cascade=CascadeType.BACKGROUND)
                    except ApiError as e:
                        if e.status.code != 404:
                            raise

    async def undeploy(self, id: str, *, timeout: float = 10.0) -> None:
        namespace, service = mapping.split_id(id)
        with located(self.name, id):
            await self._remove(namespace, service)
            labels = mapping.service_labels(namespace, service)
            with anyio.move_on_after(timeout + GONE_AFTER) as deadline:
                while True:
                    with self._errors(f"list the pods of service {id}"):
                        if not await self._list("Pod", namespace, labels):
                            break
                    await anyio.sleep(0.5)
            if deadline.cancelled_caught:
                raise Timeout(f"service {id} was removed, but its pods were still there "
                              f"{timeout + GONE_AFTER:g}s later", runtime=self.name)

    async def remove_network(self, namespace: str) -> None:
        """Deletes the namespace's own NetworkPolicy (orchestr's pods take connections from their namespace only)
        once no service of orchestr is left there: the namespace-wide objects export labels as orchestr's but as
        no service's. The namespace itself, and the claims of named volumes (their data), stay."""
        if await self.deployments(namespace):
            return
        labels = {MANAGED_BY: "orchestr", L_SERVICE: not_exists()}
        with self._errors(f"list orchestr's NetworkPolicies of namespace {namespace}"):
            found = await self._list("NetworkPolicy", namespace, labels)
        for obj in found:
            name = obj["metadata"]["name"]
            with self._errors(f"delete NetworkPolicy {namespace}/{name}"):
                try:
                    await self._api().delete(NetworkPolicy, name, namespace=namespace)
                except ApiError as e:
                    if e.status.code != 404:
                        raise

    # -- its containers (pods) ------------------------------------------------------------------

    async def list(self, namespace: str | None = None) -> builtins.list[Container]:
        labels = {L_NAMESPACE: namespace or None, L_SERVICE: None}
        with self._errors("list orchestr's pods"):
            return mapping.containers(await self._list("Pod", namespace, labels))

    async def inspect(self, id: str) -> Container:
        namespace, _ = mapping.split_id(id)
        for c in await self.list(namespace):
            if c.id == id:
                return c
        raise NotFound(f"pod {id} not found", runtime=self.name, container=id)

    async def logs(self, id: str, *, follow: bool = False, tail: int | None = None) -> AsyncIterator[LogLine]:
        c = await self.inspect(id)
        namespace, pod = mapping.split_id(id)
        with self._errors(f"read the logs of pod {id}"):
            # the API merges the container's stdout and stderr
            async for line in self._api().log(pod, namespace=namespace, container=c.service, follow=follow,
                                              tail_lines=tail):
                yield LogLine(stream="stdout", data=line.encode())

    async def wait(self, id: str) -> int:
        while True:
            c = await self.inspect(id)
            if c.state is State.EXITED and c.exit_code is not None:
                return c.exit_code
            await anyio.sleep(POLL)

    async def events(self) -> AsyncIterator[Event]:
        # polled: the pods are listed every POLL seconds and compared with the last look, the first at the first
        # iteration; a change undone within one poll is not seen
        before = {c.id: c for c in await self.list()}
        while True:
            await anyio.sleep(POLL)
            now = {c.id: c for c in await self.list()}
            for c in now.values():
                old = before.get(c.id)
                if old is None:
                    yield _event(c, EventAction.CREATE)
                if c.state is not (old.state if old else State.CREATED) or (old and c.restarts != old.restarts):
                    action = {State.RUNNING: EventAction.START, State.EXITED: EventAction.DIE}.get(c.state)
                    if action is not None:
                        yield _event(c, action)
            for id in before.keys() - now.keys():
                yield _event(before[id], EventAction.DESTROY)
            before = now

    async def reattach(self) -> builtins.list[Container]:
        return await self.list()

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    # -- what the cluster does itself, or what this runtime does not do -----------------------------

    def _refuse(self, what: str, container: str | None = None) -> NoReturn:
        raise TerminalFailure(f"the kubernetes runtime cannot {what}", runtime=self.name, container=container)

    async def create(self, spec: ContainerSpec) -> Container:
        self._refuse("create single containers: it runs whole services; use another runtime for one-off runs",
                     spec.name)

    async def start(self, id: str) -> None:
        self._refuse("start a pod: the cluster starts them", id)

    async def stop(self, id: str, *, signal: str = "SIGTERM", timeout: float = 10.0) -> None:
        self._refuse("stop a pod: the cluster would start another; delete or scale its service", id)

    async def delete(self, id: str, *, force: bool = False) -> None:
        self._refuse("delete a pod: the cluster would start another; delete or scale its service", id)

    async def exec(
        self, id: str, argv: Sequence[str], *, env: dict[str, str] | None = None, user: str | None = None,
        workdir: str | None = None, timeout: float | None = None, output: Callable[[LogLine], None] | None = None,
        output_limit: int = EXEC_OUTPUT_LIMIT,
    ) -> ExecResult:
        self._refuse("exec in a pod (use kubectl exec)", id)

    async def ensure_image(self, ref: str, progress: ProgressCallback | None = None) -> Image:
        self._refuse("pull images: the cluster's nodes pull them")

    async def pull(self, ref: str, progress: ProgressCallback | None = None) -> Image:
        self._refuse("pull images: the cluster's nodes pull them")

    async def import_image(self, path: Path, progress: ProgressCallback | None = None) -> builtins.list[Image]:
        self._refuse("import images: push them to a registry the cluster's nodes pull from")

    async def images(self) -> builtins.list[Image]:
        self._refuse("list images: they are on the cluster's nodes")

    async def image_inspect(self, ref: str) -> dict[str, Any]:
        self._refuse("inspect images: they are on the cluster's nodes")

    async def image_history(self, ref: str) -> builtins.list[HistoryEntry]:
        self._refuse("show an image's history: images are on the cluster's nodes")

    async def image_remove(self, ref: str, *, force: bool = False) -> None:
        self._refuse("remove images: they are on the cluster's nodes")

    async def image_prune(self) -> builtins.list[str]:
        self._refuse("prune images: the cluster's nodes collect them")


def _event(c: Container, action: EventAction) -> Event:
    return Event(runtime=c.runtime, id=c.id, name=c.name, namespace=c.namespace, action=action, state=c.state,
                 exit_code=c.exit_code, restarts=c.restarts)


def _no_config(error: BaseException) -> str:
    reason = " ".join(str(error).split()) or type(error).__name__
    return f"no Kubernetes cluster configured ({reason}): set KUBECONFIG, or write ~/.kube/config"


__all__ = ["KubernetesRuntime"]
