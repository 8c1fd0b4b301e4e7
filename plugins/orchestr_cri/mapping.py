"""Translates between orchestr's model and CRI v1 messages; pure functions, no I/O.

A replica is a pod sandbox with one container, as the kubelet runs a one-container pod: the pod's metadata is
the replica's name and namespace (uid fixed by them, attempt counting sandboxes made for it), the container's
is the service's name with the attempt counting its restarts. orchestr's id for a replica is its sandbox's id,
which stays while the container inside is restarted (CRI containers never start twice: a restart is a new
container, as the kubelet does it). What CRI cannot keep for orchestr rides in one sandbox annotation: the
configs the pod and its container were made from, so that a restart (or a sandbox the runtime lost) is made
from them again.
"""

from __future__ import annotations

import base64
import json
import math
import uuid
from dataclasses import dataclass
from typing import Any

from orchestr.containers import rfc3339
from orchestr.errors import TerminalFailure
from orchestr.model import (
    L_NAMESPACE,
    L_SERVICE,
    Container,
    ContainerSpec,
    HistoryEntry,
    Image,
    Port,
    State,
    Stats,
)

from .proto import cri_pb2 as pb

RUNTIME = "cri"
A_CONFIG = "orchestr.cri/config"  # sandbox annotation: what the pod and its container were made from
CPU_PERIOD = 100_000  # microseconds, the kernel's default CFS period
_UID_SPACE = uuid.UUID("0b6f1f0e-5f9a-4c39-9a43-6f7263686573")

_STATES = {
    pb.CONTAINER_CREATED: State.CREATED,
    pb.CONTAINER_RUNNING: State.RUNNING,
    pb.CONTAINER_EXITED: State.EXITED,
    pb.CONTAINER_UNKNOWN: State.EXITED,
}
_PROTOCOLS = {"tcp": pb.TCP, "udp": pb.UDP, "sctp": pb.SCTP}


def pod_uid(namespace: str, name: str) -> str:
    """The pod's metadata uid: fixed by the replica, so the runtime itself refuses a second pod of one name."""
    return str(uuid.uuid5(_UID_SPACE, f"{namespace}/{name}"))


def container_name(spec: ContainerSpec) -> str:
    """The container's name inside its pod: the service's, as a pod's container is named in its pod spec."""
    return spec.labels.get(L_SERVICE) or spec.name


def log_path(name: str, attempt: int) -> str:
    """Where the runtime writes attempt's output, relative to the pod's log directory (the kubelet's layout)."""
    return f"{name}/{attempt}.log"


def _nanos(ns: int) -> str | None:
    return rfc3339(ns) if ns > 0 else None


@dataclass(frozen=True, slots=True)
class Made:
    """What a pod was made from, kept in its A_CONFIG annotation."""

    pod: pb.PodSandboxConfig  # without its annotations
    container: pb.ContainerConfig  # attempt 0's
    image: str  # as the spec names it
    pids: int | None = None  # the pids limit, which the container's config cannot carry on cgroup v1
    tmpfs: tuple[tuple[str, int], ...] = ()  # (host path, size) of the tmpfs volumes orchestr mounts for it

    def annotation(self) -> str:
        return json.dumps({
            "pod": base64.b64encode(self.pod.SerializeToString()).decode(),
            "container": base64.b64encode(self.container.SerializeToString()).decode(),
            "image": self.image,
            "pids": self.pids,
            "tmpfs": [list(t) for t in self.tmpfs],
        }, separators=(",", ":"))

    @classmethod
    def of(cls, annotations: Any) -> Made | None:
        """Made from a sandbox's annotations; None when they hold none (a pod orchestr did not make)."""
        try:
            raw = json.loads(annotations[A_CONFIG])
            pod, container = pb.PodSandboxConfig(), pb.ContainerConfig()
            pod.ParseFromString(base64.b64decode(raw["pod"]))
            container.ParseFromString(base64.b64decode(raw["container"]))
            pids = raw.get("pids")
            tmpfs = tuple((str(path), int(size)) for path, size in raw.get("tmpfs") or ())
            return cls(pod, container, str(raw["image"]), int(pids) if pids is not None else None, tmpfs)
        except (KeyError, ValueError, TypeError):
            return None

    def sandbox_config(self, attempt: int = 0) -> pb.PodSandboxConfig:
        """The pod's config as the runtime is given it, this annotation included."""
        config = pb.PodSandboxConfig()
        config.CopyFrom(self.pod)
        config.metadata.attempt = attempt
        config.annotations[A_CONFIG] = self.annotation()
        return config

    def container_config(self, attempt: int) -> pb.ContainerConfig:
        config = pb.ContainerConfig()
        config.CopyFrom(self.container)
        config.metadata.attempt = attempt
        config.log_path = log_path(config.metadata.name, attempt)
        return config


def namespaces(network: str, init: bool) -> pb.NamespaceOption:
    """bridge and none: the pod's network namespace (CNI's; none has its interfaces set down), host: the
    node's. The container's own pid namespace, as the kubelet gives; init shares the pod's, whose first process
    (the sandbox's) is pid 1 and reaps zombies, as in a pod with shareProcessNamespace."""
    return pb.NamespaceOption(network=pb.NODE if network == "host" else pb.POD,
                              pid=pb.POD if init else pb.CONTAINER, ipc=pb.POD)


def resources(cpus: float | None, memory: int | None, pids: int | None, *, unified_pids: bool) -> pb.LinuxContainerResources:
    """The container's limits: a CFS quota over the default period, memory with swap capped at the same value.
    CRI has no pids limit of a container's own: cgroup v2 takes it through unified (pids.max); on v1 orchestr
    sets it on the pod's cgroup (see cgroups.py), and nothing here carries it."""
    res = pb.LinuxContainerResources()
    if cpus is not None:
        res.cpu_period = CPU_PERIOD
        res.cpu_quota = max(1000, round(cpus * CPU_PERIOD))
    if memory is not None:
        res.memory_limit_in_bytes = memory
        res.memory_swap_limit_in_bytes = memory
    if pids is not None and unified_pids:
        res.unified["pids.max"] = str(pids)
    return res


def user(spec: ContainerSpec) -> dict[str, Any]:
    """The security context's user fields for spec.user: name, uid, uid:gid or name:gid. CRI takes a group by
    its id only (the runtime looks names up in the image's /etc/passwd, never in /etc/group)."""
    if not spec.user:
        return {}
    name, _, group = spec.user.partition(":")
    fields: dict[str, Any] = {}
    if name.isdigit():
        fields["run_as_user"] = pb.Int64Value(value=int(name))
    elif name:
        fields["run_as_username"] = name
    if group:
        if not group.isdigit():
            raise TerminalFailure(f"container {spec.name}: user {spec.user!r}: CRI takes a group by its id only; "
                                  "give the gid (e.g. 1000:1000)", runtime=RUNTIME, container=spec.name)
        fields["run_as_group"] = pb.Int64Value(value=int(group))
    return fields


def pod_config(spec: ContainerSpec, *, uid: str, log_dir: str, ports: tuple[Port, ...], dns: pb.DNSConfig | None,
               cgroup_parent: str) -> pb.PodSandboxConfig:
    """The sandbox's config for spec (its annotations are added by Made); ports are the published ones with
    their host ports picked."""
    config = pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name=spec.name, uid=uid, namespace=spec.namespace, attempt=0),
        log_directory=log_dir,
        labels=dict(spec.labels),
        linux=pb.LinuxPodSandboxConfig(
            cgroup_parent=cgroup_parent,
            security_context=pb.LinuxSandboxSecurityContext(
                namespace_options=namespaces(spec.network, spec.init),
                seccomp=pb.SecurityProfile(profile_type=pb.SecurityProfile.RuntimeDefault),
            ),
        ),
    )
    if spec.network != "host":
        config.hostname = spec.name
        if dns is not None:
            config.dns_config.CopyFrom(dns)
    if spec.network == "bridge":
        for p in ports:
            config.port_mappings.append(pb.PortMapping(
                protocol=_PROTOCOLS[p.protocol], container_port=p.container_port, host_port=p.host_port or 0,
                host_ip="" if p.host_ip == "0.0.0.0" else p.host_ip))
    return config


def container_config(spec: ContainerSpec, argv: list[str] | None, mounts: list[pb.Mount], *,
                     unified_pids: bool) -> pb.ContainerConfig:
    """Attempt 0's config. argv is the command line orchestr resolved from the image (None when the runtime
    did not describe the image: then command and args go as they are, and the runtime resolves them the same
    way); mounts are the volumes' and /etc/hosts."""
    name = container_name(spec)
    res = spec.resources
    security = pb.LinuxContainerSecurityContext(
        namespace_options=namespaces(spec.network, spec.init),
        readonly_rootfs=spec.read_only,
        no_new_privs=True,
        seccomp=pb.SecurityProfile(profile_type=pb.SecurityProfile.Unconfined if spec.seccomp == "unconfined"
                                   else pb.SecurityProfile.RuntimeDefault),
        **user(spec),
    )
    config = pb.ContainerConfig(
        metadata=pb.ContainerMetadata(name=name, attempt=0),
        image=pb.ImageSpec(image=spec.image, user_specified_image=spec.image),
        working_dir=spec.working_dir or "",
        envs=[pb.KeyValue(key=k, value=v.encode()) for k, v in spec.env.items()],
        mounts=mounts,
        labels=dict(spec.labels),
        log_path=log_path(name, 0),
        stdin=spec.interactive,
        tty=spec.tty,
        linux=pb.LinuxContainerConfig(
            resources=resources(res.cpus, res.memory, res.pids, unified_pids=unified_pids),
            security_context=security,
        ),
    )
    if argv is not None:
        config.command.extend(argv)
    else:
        config.command.extend(spec.command or ())
        config.args.extend(spec.args or ())
    return config


def ports_of(pod: pb.PodSandboxConfig) -> tuple[Port, ...]:
    names = {v: k for k, v in _PROTOCOLS.items()}
    return tuple(Port(m.container_port, m.host_port, names.get(m.protocol, "tcp"), m.host_ip or "0.0.0.0")
                 for m in pod.port_mappings)


def container(sandbox: pb.PodSandbox | pb.PodSandboxStatus, made: Made | None,
              status: pb.ContainerStatus | pb.Container | None, *, pid: int | None = None,
              ip: str | None = None) -> Container:
    """orchestr's view of a pod: its sandbox and the latest of its containers (a ContainerStatus, or a listing's
    Container, which carries no exit code or times). A pod whose sandbox is gone (the runtime restarted) or that
    has no container yet shows as exited or created."""
    labels = dict(sandbox.labels)
    ready = sandbox.state == pb.SANDBOX_READY
    if status is None:
        state = State.CREATED if ready else State.EXITED
    else:
        state = _STATES.get(status.state, State.EXITED)
        if state is not State.EXITED and not ready:
            state = State.EXITED  # the sandbox went away under it
    detailed = isinstance(status, pb.ContainerStatus)
    exited = state is State.EXITED
    exit_code = None
    if exited:
        exit_code = status.exit_code if detailed else None
        if status is None or (detailed and status.finished_at == 0):
            exit_code = 255  # never ran to an end the runtime saw: its exit is lost
    return Container(
        id=sandbox.id,
        name=sandbox.metadata.name,
        namespace=labels.get(L_NAMESPACE, sandbox.metadata.namespace),
        runtime=RUNTIME,
        image=made.image if made else (status.image.image if status is not None else ""),
        state=state,
        labels=labels,
        exit_code=exit_code,
        pid=pid if state is State.RUNNING else None,
        ip=ip or None,
        oom_killed=detailed and status.reason == "OOMKilled",
        restarts=0,  # the runtime restarts nothing: orchestr does, and each restart is a start of its own
        ports=ports_of(made.pod) if made else (),
        created_at=_nanos(sandbox.created_at),
        started_at=_nanos(status.started_at) if detailed else None,
        finished_at=_nanos(status.finished_at) if detailed and exited else None,
    )


def latest(containers: list[pb.Container]) -> pb.Container | None:
    """The pod's current container: the highest attempt (the newest when two share one)."""
    return max(containers, key=lambda c: (c.metadata.attempt, c.created_at), default=None)


# -- images ------------------------------------------------------------------------------------------------------

def familiar(ref: str) -> str:
    """The short form Docker prints: docker.io/library/busybox:latest is busybox:latest."""
    for prefix in ("docker.io/library/", "docker.io/"):
        if ref.startswith(prefix):
            return ref[len(prefix):]
    return ref


def image(item: pb.Image, created: str | None = None) -> Image:
    digests = list(item.repo_digests)
    return Image(
        id=item.id,
        references=tuple(familiar(r) for r in [*item.repo_tags, *digests]),
        size=item.size,
        created=created,
        digest=next((d.partition("@")[2] for d in digests if "@sha256:" in d), None),
        runtime=RUNTIME,
    )


def image_spec(info: dict[str, str]) -> dict[str, Any]:
    """The OCI image config from an ImageStatus's verbose info ({} when the runtime gives none)."""
    try:
        spec = json.loads(info.get("info") or "{}").get("imageSpec") or {}
    except ValueError:
        return {}
    return spec if isinstance(spec, dict) else {}


def inspect(item: pb.Image, info: dict[str, str]) -> dict[str, Any]:
    """The image shaped like `docker image inspect`, from ImageStatus and its verbose info."""
    spec = image_spec(info)
    config = spec.get("config") or {}
    return {
        "Id": item.id,
        "RepoTags": [familiar(r) for r in item.repo_tags],
        "RepoDigests": [familiar(r) for r in item.repo_digests],
        "Size": item.size,
        "Created": spec.get("created"),
        "Architecture": spec.get("architecture"),
        "Os": spec.get("os"),
        "Config": {
            "Entrypoint": config.get("Entrypoint"),
            "Cmd": config.get("Cmd"),
            "Env": config.get("Env") or [],
            "WorkingDir": config.get("WorkingDir") or "",
            "User": config.get("User") or "",
            "Labels": config.get("Labels") or {},
            "StopSignal": config.get("StopSignal"),
        },
        "RootFS": {"Type": "layers", "Layers": list((spec.get("rootfs") or {}).get("diff_ids") or [])},
    }


def history(info: dict[str, str]) -> list[HistoryEntry]:
    """History entries, newest first, with each layer-making step given its layer's diff id."""
    spec = image_spec(info)
    layers = list((spec.get("rootfs") or {}).get("diff_ids") or [])
    entries = []
    for step in spec.get("history") or []:
        empty = bool(step.get("empty_layer"))
        layer = None if empty or not layers else layers.pop(0)
        entries.append(HistoryEntry(created_by=step.get("created_by") or "", size=0, created=step.get("created"),
                                    id=layer, comment=step.get("comment") or None, empty_layer=empty))
    return entries[::-1]


# -- stats -------------------------------------------------------------------------------------------------------

def _value(field: Any, name: str) -> int | None:
    return getattr(field, name).value if field.HasField(name) else None


def stats(container: pb.ContainerStats, pod: pb.PodSandboxStats | None, *, memory_limit: int | None,
          pids: int | None) -> Stats:
    """Stats from ContainerStats, with the pod's network use (the container is alone in the pod's network
    namespace) where the runtime reports pod stats. CRI reports no block I/O."""
    cpu = _value(container.cpu, "usage_core_nano_seconds") if container.HasField("cpu") else None
    memory = _value(container.memory, "working_set_bytes") if container.HasField("memory") else None
    net = pod.linux.network if pod is not None and pod.linux.HasField("network") else None
    interfaces = list(net.interfaces) or ([net.default_interface] if net.HasField("default_interface") else []) \
        if net is not None else None
    stamp = container.cpu.timestamp if container.HasField("cpu") else 0
    return Stats(
        cpu_seconds=cpu / 1e9 if cpu is not None else None,
        memory=memory,
        memory_limit=memory_limit,
        pids=pids,
        net_rx=sum(_value(i, "rx_bytes") or 0 for i in interfaces) if interfaces else None,
        net_tx=sum(_value(i, "tx_bytes") or 0 for i in interfaces) if interfaces else None,
        time=_nanos(stamp),
    )


def stop_timeout(seconds: float) -> int:
    """StopContainer's timeout is whole seconds; 0 would kill at once, so a grace period rounds up."""
    return math.ceil(seconds) if seconds > 0 else 0
