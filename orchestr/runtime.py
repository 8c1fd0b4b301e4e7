"""The runtime seam: the verbs every runtime plugin implements, the optional ones, and what a runtime declares.

A runtime is a `ContainerRuntime` and an `ImageStore`. What it can do beyond the required verbs it says in its
`capabilities` (as Nomad's drivers do), and each optional verb it declares is one of the small protocols below,
checked with `supports()` instead of probing attributes. The conformance kit (`orchestr.testing`) checks both.
"""

from __future__ import annotations

import builtins
import enum
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from .errors import TerminalFailure
from .model import (
    EXEC_OUTPUT_LIMIT,
    Container,
    ContainerSpec,
    Deployment,
    Event,
    ExecResult,
    HistoryEntry,
    Image,
    LogLine,
    Port,
    PullProgress,
    Resources,
    Stats,
)
from .plain import Frozen, record

if TYPE_CHECKING:
    from .spec.models import Service

ProgressCallback = Callable[[PullProgress], None]


class EventDelivery(enum.StrEnum):
    PUSHED = "pushed"  # the engine sends each change as it happens
    POLLED = "polled"  # the runtime compares snapshots: a change shows up within its poll interval


@record
class Capabilities(Frozen):
    """What a runtime can do beyond the required verbs; each flag that names an optional verb promises it."""

    restarts: bool = False  # applies restartPolicy itself, also while no orchestr process runs
    events: EventDelivery = EventDelivery.POLLED
    limits: bool = False  # enforces spec.resources (cpus, memory, pids) in a cgroup of the container's own
    image_import: bool = False  # import_image takes `docker save` and OCI-layout archives
    pause: bool = False  # Pausable: pause and resume
    signal: bool = False  # Signallable: a signal without stopping
    stats: bool = False  # StatsSource
    exec_tty: bool = False  # TerminalExecutor: exec with a terminal of its own (a one-off run's is BlockingRunner's)
    blocking_run: bool = False  # BlockingRunner: run a container with no event loop
    run_tty: bool = False  # BlockingRunner relays a one-off run's standard input and terminal (run -i/-t)
    blocking_list: bool = False  # BlockingLister: list containers with no event loop
    image_export: bool = False  # ImageExporter
    update: bool = False  # ResourceUpdater: limits changed on a created or running container
    bridge_capacity: bool = False  # BridgeCapacity: a namespace's bridge network has addresses for so many
    remove_network: bool = False  # NetworkRemover: a namespace's network outlives its containers until removed
    exec_options: bool = True  # exec honours env, user and workdir (CRI's ExecSync takes a command alone)
    services: bool = False  # ServiceRunner: runs whole services, owning their replicas, rolling updates and restarts
    service_ports: bool = False  # ServicePorts: a host port balancing across a service's ready replicas


@runtime_checkable
class ContainerRuntime(Protocol):
    """The container verbs every runtime has.

    Every verb is async and works on the runtime's own container id. Only containers carrying orchestr's
    ownership labels (see orchestr.model) are ever listed or touched. Errors are orchestr.errors types, all
    RuntimeFailure: NotFound, Conflict, RuntimeUnavailable (retryable), Timeout, TerminalFailure.
    """

    name: str
    capabilities: Capabilities

    async def create(self, spec: ContainerSpec) -> Container:
        """Create (not start) a container; the image must already be present (see ensure_image)."""

    async def start(self, id: str) -> None:
        """Start a created or exited container."""

    async def stop(self, id: str, *, signal: str = "SIGTERM", timeout: float = 10.0) -> None:
        """Send signal, wait up to timeout seconds, then SIGKILL. Stopping a stopped container is a no-op."""

    async def delete(self, id: str, *, force: bool = False) -> None:
        """Remove a container and everything it owns; a running one is a Conflict unless force stops it."""

    async def inspect(self, id: str) -> Container:
        """The container's current state."""

    async def list(self, namespace: str | None = None) -> list[Container]:
        """Every orchestr-owned container, optionally of one namespace."""

    def logs(self, id: str, *, follow: bool = False, tail: int | None = None) -> AsyncIterator[LogLine]:
        """The container's output, oldest first; follow keeps streaming until it exits."""

    async def exec(
        self, id: str, argv: Sequence[str], *, env: dict[str, str] | None = None, user: str | None = None,
        workdir: str | None = None, timeout: float | None = None, output: Callable[[LogLine], None] | None = None,
        output_limit: int = EXEC_OUTPUT_LIMIT,
    ) -> ExecResult:
        """Run a command in a running container. Past timeout seconds the command is killed and Timeout raised.
        With output, its output goes there as it comes (in chunks, not lines), and the result's stdout and
        stderr stay empty; without, each stream is kept up to output_limit bytes, and what is past that is
        dropped and counted in the result (ExecResult.truncated; ExecOutput does this for any runtime)."""

    async def wait(self, id: str) -> int:
        """Wait until the container exits; return its exit code."""

    def events(self) -> AsyncIterator[Event]:
        """State changes of orchestr-owned containers, until cancelled. Not async itself: the stream includes
        every change after this call returns, even before its first iteration, so a caller subscribes, then
        lists, and misses nothing in between."""

    async def reattach(self) -> builtins.list[Container]:
        """Find containers left by an earlier process (or a crash), clean what is stale, return the live ones."""

    async def close(self) -> None:
        """Release connections; containers keep running."""


@runtime_checkable
class ImageStore(Protocol):
    """The image verbs every runtime has."""

    async def ensure_image(self, ref: str, progress: ProgressCallback | None = None) -> Image:
        """Return the local image, pulling it first when absent."""

    async def pull(self, ref: str, progress: ProgressCallback | None = None) -> Image:
        """Fetch an image from its registry, reporting progress."""

    async def import_image(self, path: Path, progress: ProgressCallback | None = None) -> list[Image]:
        """Load a docker-archive (`docker save`) or OCI image-layout tarball."""

    async def images(self) -> list[Image]:
        """Every local image."""

    async def image_inspect(self, ref: str) -> dict[str, Any]:
        """The image's config and layers, shaped like `docker image inspect`."""

    async def image_history(self, ref: str) -> list[HistoryEntry]:
        """One entry per history step, newest first, as `docker history`."""

    async def image_remove(self, ref: str, *, force: bool = False) -> None:
        """Remove an image; refused (Conflict) while a container uses it unless force."""

    async def image_prune(self) -> list[str]:
        """Remove unused images; return what was removed."""


@runtime_checkable
class Runtime(ContainerRuntime, ImageStore, Protocol):
    """A container runtime as orchestr drives it: the container verbs and the image store."""


# -- optional verbs: each declared in Capabilities -------------------------------------------------


@runtime_checkable
class Pausable(Protocol):
    async def pause(self, id: str) -> None:
        """Freeze every process of the container."""

    async def resume(self, id: str) -> None:
        """Thaw a paused container."""


@runtime_checkable
class Signallable(Protocol):
    async def signal(self, id: str, signal: str) -> None:
        """Send signal (a name such as SIGHUP, or a number) to the container's main process; it keeps running
        unless the signal ends it. A container that is not running is a Conflict."""


@runtime_checkable
class StatsSource(Protocol):
    async def stats(self, id: str) -> Stats:
        """One sample of the container's resource use; fields the runtime cannot know are None. A container
        that is not running (or paused) is a Conflict."""


@runtime_checkable
class BlockingRunner(Protocol):
    def run_blocking(
        self, spec: ContainerSpec, *, output: Callable[[LogLine], None] | None = None, remove: bool = False,
        stdin: int | None = None, on_signal: str | None = None,
    ) -> tuple[Container, int] | None:
        """Create, start and wait for a container with no event loop running, handing output each line; None,
        with nothing changed, when it cannot run this one so (the caller then uses the async verbs). With
        spec.interactive, stdin (an fd) is the container's standard input; with spec.tty the container gets a
        terminal of its own, relayed to stdin and output. on_signal, "forward" or "leave", takes over SIGTERM,
        SIGHUP and SIGINT meanwhile, as Client.run says."""


@runtime_checkable
class TerminalExecutor(Protocol):
    async def exec_terminal(
        self, id: str, argv: Sequence[str], *, stdin: int | None, stdout: int, env: dict[str, str] | None = None,
        user: str | None = None, workdir: str | None = None,
    ) -> int:
        """Run argv in the running container with a terminal of its own, as `docker exec -it` does: what comes on
        the file descriptor stdin (None: nothing) is typed into it, what it shows is written to stdout, and its
        window size follows stdin's (see orchestr.terminal). Returns the command's exit code once it exits."""


@runtime_checkable
class BlockingLister(Protocol):
    def list_blocking(self, namespace: str | None = None) -> list[Container]:
        """list(), called with no event loop running: for `orchestr get`, which then spares loading one."""


@runtime_checkable
class ImageExporter(Protocol):
    async def export_image(self, ref: str, path: Path) -> None:
        """Write the image as an OCI image-layout tarball, named by ref when ref has a tag."""


@runtime_checkable
class ResourceUpdater(Protocol):
    async def update(self, id: str, resources: Resources) -> None:
        """Apply new limits to a created or running container in place, and keep them across its restarts.
        A limit that is None stays as it is: engines cannot lift a CPU or memory limit in place."""


@runtime_checkable
class BridgeCapacity(Protocol):
    async def bridge_capacity(self, namespace: str) -> int:
        """How many containers the namespace's bridge network has addresses for, in all; apply refuses more."""


@runtime_checkable
class NetworkRemover(Protocol):
    async def remove_network(self, namespace: str) -> None:
        """Remove what the namespace's network keeps on the host once its last container is gone (a bridge,
        its rules); a namespace that still has containers keeps it. Called by a delete of the whole namespace."""


@runtime_checkable
class ServiceRunner(Protocol):
    """A runtime that runs a service as a whole (a cluster engine's service): the planner hands it services, not
    containers, and it keeps their replicas running, restarts them and rolls updates out itself. Its containers
    are still listed, inspected, logged and exec'd one by one through the container verbs."""

    async def deployments(self, namespace: str | None = None) -> list[Deployment]:
        """Every orchestr service the runtime runs, optionally of one namespace."""

    async def deploy(
        self, template: ContainerSpec, replicas: int, current: str | None = None, *, service: Service | None = None,
    ) -> str:
        """Runs replicas containers like template (named as the service, labelled as each replica's container but
        for the replica label): creates the service when current is None, else updates the service current in
        place, a rolling update when the template changed. Returns the service's id. service is the declared
        Service the template comes from, for a runtime that translates the whole declaration (health checks,
        update strategy, dependencies) rather than one container."""

    async def undeploy(self, id: str, *, timeout: float = 10.0) -> None:
        """Removes the service: each container stopped within timeout seconds; returns once none is left."""


@runtime_checkable
class ServicePorts(Protocol):
    """A runtime that publishes a service port: one host port whose new connections are balanced across the
    service's ready replicas (ports of mode ingress with a host port, which its create leaves alone)."""

    async def publish_service(
        self, namespace: str, service: str, ports: Sequence[Port], endpoints: Sequence[str],
    ) -> None:
        """Makes the service's ports (none: removes them) send new connections to endpoints, the addresses of its
        ready replicas, each to the port's container port. Conflict when a host port is taken."""

    async def published_services(self, namespace: str) -> builtins.list[str]:
        """The services of namespace that have ports published."""


OPTIONAL = {"pause": Pausable, "signal": Signallable, "stats": StatsSource, "blocking_run": BlockingRunner,
            "run_tty": BlockingRunner, "blocking_list": BlockingLister, "exec_tty": TerminalExecutor,
            "image_export": ImageExporter, "update": ResourceUpdater, "bridge_capacity": BridgeCapacity,
            "remove_network": NetworkRemover, "services": ServiceRunner,
            "service_ports": ServicePorts}


def supports(runtime: object, capability: str) -> bool:
    """Whether runtime declares capability (a Capabilities field) and, for an optional verb, implements it."""
    caps = getattr(runtime, "capabilities", None)
    if not isinstance(caps, Capabilities) or not getattr(caps, capability):
        return False
    protocol = OPTIONAL.get(capability)
    return protocol is None or isinstance(runtime, protocol)


def require(runtime: Runtime, capability: str, what: str, container: str | None = None) -> None:
    """TerminalFailure, in one line, unless runtime supports capability; what says what was asked for
    ("pause containers")."""
    if not supports(runtime, capability):
        raise TerminalFailure(f"the {runtime.name} runtime cannot {what}", runtime=runtime.name, container=container)


class ExecOutput:
    """What exec does with a command's output, for any runtime: hands it to output as it comes, or keeps up to
    limit bytes of each stream and counts the rest, so that a command's output never fills memory."""

    def __init__(self, output: Callable[[LogLine], None] | None, limit: int = EXEC_OUTPUT_LIMIT):
        self.output, self.limit = output, max(0, limit)
        self.kept = {"stdout": bytearray(), "stderr": bytearray()}
        self.dropped = {"stdout": 0, "stderr": 0}

    def add(self, stream: str, data: bytes) -> None:
        if self.output is not None:
            self.output(LogLine(stream=stream, data=data))
            return
        kept = self.kept[stream]
        room = max(0, self.limit - len(kept))
        kept += data[:room]
        self.dropped[stream] += max(0, len(data) - room)

    def result(self, exit_code: int) -> ExecResult:
        return ExecResult(exit_code, bytes(self.kept["stdout"]), bytes(self.kept["stderr"]),
                          self.dropped["stdout"], self.dropped["stderr"])
