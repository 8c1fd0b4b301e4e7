"""Plain data shared by the planner, the executor and every runtime: containers, images, events."""

from __future__ import annotations

import enum
from typing import Any
from dataclasses import field

from .plain import Frozen, Mutable, record

# Labels (or metadata) every runtime stores on the containers it makes for orchestr.
# The planner reads actual state back from them, so a lost state file loses nothing.
LABEL_PREFIX = "orchestr."
L_NAMESPACE = "orchestr.namespace"
L_SERVICE = "orchestr.service"
L_REPLICA = "orchestr.replica"
L_SPEC_HASH = "orchestr.spec-hash"
L_DEPENDS_ON = "orchestr.depends-on"  # comma-separated service names, so deletes can be ordered without the spec
L_ONEOFF = "orchestr.oneoff"  # set by `orchestr run`: never planned, never pruned
L_STOP_GRACE = "orchestr.stop-grace"  # seconds: deletes of services no longer declared still honour it
L_SERVICE_PORTS = "orchestr.service-ports"  # the service's balanced ports, PROTOCOL:HOSTIP:HOSTPORT:CONTAINERPORT,...

# The size of a tmpfs volume that gives none, as `docker run --tmpfs` has it. A tmpfs holds its files in memory
# that no OOM kill frees; left to the kernel, each one could take half the host's RAM.
TMPFS_SIZE = 64 << 20


class State(enum.StrEnum):
    CREATED = "created"
    RUNNING = "running"
    PAUSED = "paused"
    EXITED = "exited"


class RestartPolicy(enum.StrEnum):
    ALWAYS = "Always"
    ON_FAILURE = "OnFailure"
    NEVER = "Never"


@record
class Resources(Frozen):
    """Limits on what a container may use; None: unlimited."""

    cpus: float | None = None  # CPUs, e.g. 0.5
    memory: int | None = None  # bytes; also caps swap
    pids: int | None = None


@record
class Volume(Frozen):
    """A mount in a container: a host path, a named volume or a tmpfs."""

    type: str  # bind | volume | tmpfs
    target: str
    source: str | None = None  # host path (bind) or volume name (volume); None for tmpfs
    read_only: bool = False
    size: int | None = None  # bytes; tmpfs only (tmpfs_size is what runtimes use)
    allow_host_root: bool = False  # bind only: the host's / may be bound read-write

    @property
    def tmpfs_size(self) -> int:
        return self.size or TMPFS_SIZE


@record
class Port(Frozen):
    """A container port published on the host (or, mode ingress, balanced across a service's replicas)."""

    container_port: int
    host_port: int | None = None
    protocol: str = "tcp"  # tcp | udp
    host_ip: str = "0.0.0.0"
    # host: published by this container itself; ingress: a service port, one host port balancing across the
    # service's ready replicas, published by the runtime's publish_service (ServicePorts) instead
    mode: str = "host"


def serviced(port: Port) -> bool:
    """Whether port is a service's balanced port rather than the container's own binding."""
    return port.mode == "ingress" and port.host_port is not None


def encode_service_ports(ports: tuple[Port, ...]) -> str:
    return ",".join(f"{p.protocol}:{p.host_ip}:{p.host_port}:{p.container_port}" for p in ports if serviced(p))


def decode_service_ports(text: str) -> tuple[Port, ...]:
    """The ports of a L_SERVICE_PORTS label; a malformed entry is left out."""
    out = []
    for item in text.split(","):
        protocol, _, rest = item.partition(":")
        host_ip, _, rest = rest.rpartition(":")  # no IPv6 host addresses: the rules are IPv4
        host_ip, _, host_port = host_ip.rpartition(":")
        try:
            out.append(Port(int(rest), int(host_port), protocol, host_ip, "ingress"))
        except ValueError:
            continue
    return tuple(out)


@record
class Check(Frozen):
    """One health check: a command in the container (exit 0 passes), an HTTP GET or a TCP connect to its port."""

    kind: str  # exec | http | tcp
    argv: tuple[str, ...] = ()  # exec
    port: int = 0  # http, tcp
    path: str = "/"  # http
    status: tuple[int, int] = (200, 399)  # http: the statuses that pass, inclusive
    interval: float = 30.0  # seconds between two checks
    timeout: float = 30.0  # seconds one check may take
    retries: int = 3  # failures in a row that count
    start_period: float = 0.0  # seconds after a start during which failures do not count


@record
class Probes(Frozen):
    """What is checked of a service's containers. A healthcheck is one check used as readiness and, once it has
    passed, as liveness (`combined`); Kubernetes' split gives each its own, startup running before the others."""

    readiness: Check | None = None
    liveness: Check | None = None
    startup: Check | None = None
    combined: bool = False


class Health(enum.StrEnum):
    STARTING = "starting"  # not yet ready: its checks have not passed yet
    HEALTHY = "healthy"  # ready
    UNHEALTHY = "unhealthy"


@record
class ContainerSpec(Frozen):
    """Everything a runtime needs to create one container; resolved from a Service and a replica index."""

    name: str  # orchestr's name within the namespace, e.g. web-0
    namespace: str
    image: str
    labels: dict[str, str] = field(default_factory=dict)  # includes orchestr's ownership labels
    command: tuple[str, ...] | None = None  # replaces the image's entrypoint (see orchestr.containers.argv)
    args: tuple[str, ...] | None = None  # replaces the image's cmd
    env: dict[str, str] = field(default_factory=dict)
    working_dir: str | None = None
    user: str | None = None
    resources: Resources = Resources()
    restart_policy: RestartPolicy = RestartPolicy.ALWAYS
    stop_grace_period: float = 10.0  # seconds
    volumes: tuple[Volume, ...] = ()
    ports: tuple[Port, ...] = ()
    network: str = "bridge"  # bridge | host | none
    init: bool = False
    read_only: bool = False
    tty: bool = False
    interactive: bool = False  # keep stdin open (one-off runs)
    seccomp: str = "default"  # default: the runtime's system-call filter; unconfined: none


@record
class Deployment(Frozen):
    """A whole service as a runtime that runs services itself reports it (Capabilities.services): the runtime
    owns its replicas, their restarts and rolling updates; its containers are listed as any others."""

    id: str  # the runtime's id of the service
    name: str  # the service's name
    namespace: str
    runtime: str
    replicas: int
    labels: dict[str, str] = field(default_factory=dict)  # orchestr's, as on each of its containers

    @property
    def service(self) -> str:
        return self.name

    @property
    def spec_hash(self) -> str:
        return self.labels.get(L_SPEC_HASH, "")

    @property
    def depends_on(self) -> tuple[str, ...]:
        return tuple(s for s in self.labels.get(L_DEPENDS_ON, "").split(",") if s)

    @property
    def stop_grace(self) -> float | None:
        try:
            return float(self.labels[L_STOP_GRACE])
        except (KeyError, ValueError):
            return None


@record
class Container(Mutable):
    """A container as a runtime reports it."""

    id: str  # the runtime's own id
    name: str  # orchestr's name within the namespace, e.g. web-0
    namespace: str
    runtime: str
    image: str
    state: State
    labels: dict[str, str] = field(default_factory=dict)
    exit_code: int | None = None
    pid: int | None = None
    ip: str | None = None
    oom_killed: bool = False
    restarts: int | None = None  # by the runtime's restart policy, since its last start by orchestr; None: not known
    ports: tuple[Port, ...] = ()  # published: host_port as the runtime bound it (picked when the spec left it out)
    created_at: str | None = None  # RFC 3339
    started_at: str | None = None
    finished_at: str | None = None
    log_lines_dropped: int = 0  # output the runtime could not log (a full disk), when it counts that
    next_restart: str | None = None  # RFC 3339: exited, and to be restarted then, after a crash-loop back-off
    health: Health | None = None  # as the controller's checks found it; None: no checks, or no controller runs

    @property
    def backing_off(self) -> bool:
        """Exited, with a restart already scheduled (by its runtime's policy, or the controller's)."""
        return self.state is State.EXITED and self.next_restart is not None

    @property
    def service(self) -> str:
        return self.labels.get(L_SERVICE, self.name)

    @property
    def replica(self) -> int:
        try:
            return int(self.labels.get(L_REPLICA, "0"))
        except ValueError:
            return -1

    @property
    def spec_hash(self) -> str:
        return self.labels.get(L_SPEC_HASH, "")

    @property
    def depends_on(self) -> tuple[str, ...]:
        raw = self.labels.get(L_DEPENDS_ON, "")
        return tuple(s for s in raw.split(",") if s)

    @property
    def stop_grace(self) -> float | None:
        try:
            return float(self.labels[L_STOP_GRACE])
        except (KeyError, ValueError):
            return None

    @property
    def oneoff(self) -> bool:
        return self.labels.get(L_ONEOFF) == "true"

    def as_dict(self) -> dict[str, Any]:
        """The shape `orchestr get -o json` prints."""
        return {
            "name": self.name,
            "namespace": self.namespace,
            "service": self.service,
            "replica": self.replica,
            "runtime": self.runtime,
            "id": self.id,
            "image": self.image,
            "state": "backoff" if self.backing_off else str(self.state),
            "exitCode": self.exit_code,
            "oomKilled": self.oom_killed,
            "restarts": self.restarts,
            "nextRestart": self.next_restart,
            "health": None if self.health is None else str(self.health),
            "pid": self.pid,
            "ip": self.ip,
            "ports": [{"hostIP": p.host_ip, "hostPort": p.host_port, "containerPort": p.container_port,
                       "protocol": p.protocol} for p in self.ports],
            "specHash": self.spec_hash,
            "createdAt": self.created_at,
            "startedAt": self.started_at,
            "finishedAt": self.finished_at,
            "logLinesDropped": self.log_lines_dropped,
        }


EXEC_OUTPUT_LIMIT = 16 << 20  # bytes of each stream that exec keeps, by default, when it collects its output


@record
class ExecResult(Frozen):
    """How a command run in a container ended, and what it wrote."""

    exit_code: int
    stdout: bytes
    stderr: bytes
    stdout_dropped: int = 0  # bytes past the output limit, not kept
    stderr_dropped: int = 0

    @property
    def truncated(self) -> bool:
        """Whether output past the limit was dropped."""
        return bool(self.stdout_dropped or self.stderr_dropped)


@record
class LogLine(Frozen):
    """One line of a container's output."""

    stream: str  # stdout | stderr
    data: bytes  # one line, newline included when the container wrote one
    time: str | None = None  # RFC 3339, when the runtime records it


class EventAction(enum.StrEnum):
    CREATE = "create"
    START = "start"
    DIE = "die"  # the main process ended: exit_code says how
    OOM = "oom"  # the kernel's OOM killer ended a process of the container (a die follows when it was the main one)
    PAUSE = "pause"
    UNPAUSE = "unpause"
    STOP = "stop"  # a stop was asked for; die follows
    DESTROY = "destroy"
    RESTART = "restart"  # the restart policy will start an exited container again, in delay seconds (back-off)


@record
class Event(Frozen):
    """A state change reported by a runtime's event stream."""

    runtime: str
    id: str
    name: str
    namespace: str
    action: EventAction
    state: State | None = None
    exit_code: int | None = None
    time: str | None = None
    restarts: int | None = None  # RESTART: restarts by policy in a row, this one included
    delay: float | None = None  # RESTART: seconds until it (the crash-loop back-off)


@record
class Stats(Frozen):
    """One sample of a container's resource use; None where the runtime cannot tell."""

    cpu_seconds: float | None = None  # CPU time used since the container started, user and system
    memory: int | None = None  # bytes in use, page cache excluded where the runtime can tell
    memory_limit: int | None = None  # bytes; None when unlimited
    pids: int | None = None
    net_rx: int | None = None  # bytes received and sent by the container's own network namespace
    net_tx: int | None = None
    block_read: int | None = None  # bytes read from and written to block devices
    block_write: int | None = None
    time: str | None = None  # RFC 3339, when the sample was taken


@record
class Image(Frozen):
    """An image in a runtime's store: its id, references, size, creation time and manifest digest."""

    id: str  # the image id (config digest), sha256:...
    references: tuple[str, ...]  # name:tag and name@digest forms
    size: int  # bytes, as the runtime counts it
    created: str | None = None  # RFC 3339
    digest: str | None = None  # manifest digest, when known
    runtime: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "references": list(self.references),
            "digest": self.digest,
            "size": self.size,
            "created": self.created,
            "runtime": self.runtime,
        }


@record
class HistoryEntry(Frozen):
    """One step of how an image was made."""

    created_by: str
    size: int
    created: str | None = None
    id: str | None = None  # layer digest, when the entry made a layer
    comment: str | None = None
    empty_layer: bool = False


class PullStatus(enum.StrEnum):
    """Where a layer (or, for reports without one, the whole image) is in a pull or an import."""

    RESOLVING = "resolving"  # the whole image: its manifest is being fetched
    WAITING = "waiting"  # queued behind other layers
    DOWNLOADING = "downloading"  # bytes arriving from the registry: current of total
    VERIFYING = "verifying"
    DOWNLOADED = "downloaded"  # in the store, not unpacked yet
    LOADING = "loading"  # read from an archive being imported: current of total
    EXTRACTING = "extracting"  # being unpacked
    DONE = "done"  # a layer fetched and unpacked; for the whole image, the last report
    EXISTS = "exists"  # a layer that was already there


@record
class PullProgress(Frozen):
    """One progress report while an image is pulled or imported; layer is None for whole-image reports. Each
    runtime reports what its engine tells: every layer ends with DONE or EXISTS, and the image with DONE."""

    ref: str
    layer: str | None
    status: PullStatus
    current: int = 0  # bytes so far, where the runtime knows them
    total: int | None = None  # bytes in all, where known
