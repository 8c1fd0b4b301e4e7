"""Translates between orchestr's model and the Docker Engine API's JSON; pure functions, no I/O."""

from __future__ import annotations

import math
import re
from typing import Any

from orchestr.containers import rfc3339, volume_key
from orchestr.model import (
    L_NAMESPACE,
    Container,
    ContainerSpec,
    Event,
    EventAction,
    HistoryEntry,
    Image,
    Port,
    PullProgress,
    PullStatus,
    Resources,
    RestartPolicy,
    State,
    Stats,
    Volume,
    serviced,
)

RUNTIME = "docker"
ZERO_TIME = "0001-01-01T00:00:00Z"  # what the engine reports for "never"

_STATES = {
    "created": State.CREATED,
    "running": State.RUNNING,
    "restarting": State.RUNNING,
    "paused": State.PAUSED,
    "exited": State.EXITED,
    "dead": State.EXITED,
    "removing": State.EXITED,
}

# Always is "unless-stopped", so that a stopped container stays stopped when the engine restarts.
_RESTART = {
    RestartPolicy.ALWAYS: "unless-stopped",
    RestartPolicy.ON_FAILURE: "on-failure",
    RestartPolicy.NEVER: "no",
}

# The engine's container events orchestr reports, with the state each one leaves behind.
EVENT_STATES: dict[str, State | None] = {
    "create": State.CREATED,
    "start": State.RUNNING,
    "die": State.EXITED,
    "oom": None,
    "pause": State.PAUSED,
    "unpause": State.RUNNING,
    "stop": State.EXITED,
    "destroy": None,
}

_EXITED_STATUS = re.compile(r"^Exited \((-?\d+)\)")

# Layer statuses of the engine's pull and load progress, in orchestr's words.
_PROGRESS = {
    "Pulling fs layer": PullStatus.WAITING,
    "Waiting": PullStatus.WAITING,
    "Downloading": PullStatus.DOWNLOADING,
    "Verifying Checksum": PullStatus.VERIFYING,
    "Download complete": PullStatus.DOWNLOADED,
    "Extracting": PullStatus.EXTRACTING,
    "Pull complete": PullStatus.DONE,
    "Already exists": PullStatus.EXISTS,
    "Loading layer": PullStatus.LOADING,
}


def engine_name(namespace: str, name: str) -> str:
    """The engine's container name: unique across namespaces, as the engine requires."""
    return f"{namespace}_{name}"


def _time(value: str | None) -> str | None:
    return None if not value or value == ZERO_TIME else value


def _mount(namespace: str, volume: Volume) -> dict[str, Any]:
    mount: dict[str, Any] = {"Type": volume.type, "Target": volume.target, "ReadOnly": volume.read_only}
    if volume.type == "bind":
        mount["Source"] = volume.source
    elif volume.type == "volume":
        mount["Source"] = volume_key(namespace, volume.source or "")
    elif volume.type == "tmpfs":
        mount["TmpfsOptions"] = {"SizeBytes": volume.tmpfs_size}
    return mount


def create_body(spec: ContainerSpec, argv: list[str]) -> dict[str, Any]:
    """The body of POST /containers/create for spec, whose volumes are checked (orchestr.containers.volumes)
    and whose command line is argv (orchestr.containers.argv of the image's entrypoint and cmd)."""
    host: dict[str, Any] = {
        "NetworkMode": spec.network,
        "RestartPolicy": {"Name": _RESTART[spec.restart_policy]},
        "Init": spec.init,
        "ReadonlyRootfs": spec.read_only,
        "Mounts": [_mount(spec.namespace, v) for v in spec.volumes],
        "PortBindings": {},
    }
    if spec.seccomp == "unconfined":
        host["SecurityOpt"] = ["seccomp=unconfined"]
    res = spec.resources
    if res.cpus is not None:
        host["NanoCpus"] = round(res.cpus * 1e9)
    if res.memory is not None:
        host["Memory"] = host["MemorySwap"] = res.memory  # equal values leave no swap on top
    if res.pids is not None:
        host["PidsLimit"] = res.pids
    exposed: dict[str, dict] = {}
    for port in spec.ports:
        key = f"{port.container_port}/{port.protocol}"
        exposed[key] = {}
        if serviced(port):
            continue  # the service's port, balanced across its replicas' addresses (publish_service)
        host_port = str(port.host_port) if port.host_port else ""  # empty: the engine picks one
        host["PortBindings"].setdefault(key, []).append({"HostIp": port.host_ip, "HostPort": host_port})
    body: dict[str, Any] = {
        "Image": spec.image,
        "Labels": dict(spec.labels),
        "Env": [f"{k}={v}" for k, v in spec.env.items()],
        "Tty": spec.tty,
        "OpenStdin": spec.interactive,
        "ExposedPorts": exposed,
        # the engine's own stops (its shutdown, `docker stop`) then honour the spec's grace period
        "StopTimeout": math.ceil(spec.stop_grace_period),
        "HostConfig": host,
    }
    # the whole argv as the entrypoint: a non-empty Entrypoint keeps the engine from merging in the image's Cmd
    body["Entrypoint"] = list(argv)
    body["Cmd"] = []
    if spec.network != "host":  # the engine refuses a hostname on the host's network
        body["Hostname"] = spec.name
    if spec.working_dir:
        body["WorkingDir"] = spec.working_dir
    if spec.user:
        body["User"] = spec.user
    return body


def _name(engine: str, namespace: str) -> str:
    engine = engine.lstrip("/")
    return engine.removeprefix(f"{namespace}_") if namespace else engine


def container_from_inspect(info: dict[str, Any]) -> Container:
    """A Container from GET /containers/{id}/json."""
    labels = info["Config"].get("Labels") or {}
    namespace = labels.get(L_NAMESPACE, "")
    st = info["State"]
    state = _STATES.get(st["Status"], State.EXITED)
    net = info.get("NetworkSettings") or {}
    ips = [net.get("IPAddress")] + [n.get("IPAddress") for n in (net.get("Networks") or {}).values()]
    return Container(
        id=info["Id"],
        name=_name(info["Name"], namespace),
        namespace=namespace,
        runtime=RUNTIME,
        image=info["Config"]["Image"],
        state=state,
        labels=labels,
        exit_code=st["ExitCode"] if state is State.EXITED else None,
        pid=(st["Pid"] or None) if state in (State.RUNNING, State.PAUSED) else None,
        ip=next((ip for ip in ips if ip), None),
        ports=_bound_ports((key.partition("/"), b.get("HostIp"), b.get("HostPort"))
                           for key, bound in (net.get("Ports") or {}).items() for b in bound or ()),
        oom_killed=bool(st.get("OOMKilled")),
        restarts=info.get("RestartCount", 0),
        created_at=_time(info.get("Created")),
        started_at=_time(st.get("StartedAt")),
        finished_at=_time(st.get("FinishedAt")),
    )


def container_from_summary(item: dict[str, Any]) -> Container:
    """A Container from one entry of GET /containers/json; it carries no pid, OOM flag or start times."""
    labels = item.get("Labels") or {}
    namespace = labels.get(L_NAMESPACE, "")
    state = _STATES.get(item["State"], State.EXITED)
    exited = _EXITED_STATUS.match(item.get("Status") or "")
    networks = (item.get("NetworkSettings") or {}).get("Networks") or {}
    return Container(
        id=item["Id"],
        name=_name((item.get("Names") or [""])[0], namespace),
        namespace=namespace,
        runtime=RUNTIME,
        image=item["Image"],
        state=state,
        labels=labels,
        exit_code=int(exited[1]) if exited and state is State.EXITED else None,
        restarts=0 if state is State.CREATED else None,  # a summary has no restart count; inspect has
        ip=next((n["IPAddress"] for n in networks.values() if n.get("IPAddress")), None),
        ports=_bound_ports(((str(p.get("PrivatePort")), "/", p.get("Type")), p.get("IP"), p.get("PublicPort"))
                           for p in item.get("Ports") or ()),
        created_at=rfc3339(int(item["Created"]) * 10**9) if item.get("Created") else None,
    )


def _bound_ports(bindings) -> tuple[Port, ...]:  # type: ignore[no-untyped-def]
    """Ports from the engine's ((container port, "/", protocol), host IP, host port) bindings; the engine lists
    a port bound on both IPv4 and IPv6 twice, and orchestr's ports are IPv4."""
    found = set()
    for (port, _, protocol), host_ip, host_port in bindings:
        if host_port and ":" not in (host_ip or ""):
            found.add(Port(int(port), int(host_port), protocol or "tcp", host_ip or "0.0.0.0"))
    return tuple(sorted(found, key=lambda p: (p.container_port, p.protocol, p.host_port)))


def _references(tags: list[str] | None, digests: list[str] | None) -> tuple[str, ...]:
    # the engine writes "<none>:<none>" and "<none>@<none>" for an image with no name
    return tuple(r for r in [*(tags or ()), *(digests or ())] if not r.startswith("<none>"))


def _digest(digests: list[str] | None) -> str | None:
    return next((d.partition("@")[2] for d in digests or () if "@sha256:" in d), None)


def image_from_inspect(info: dict[str, Any]) -> Image:
    return Image(
        id=info["Id"],
        references=_references(info.get("RepoTags"), info.get("RepoDigests")),
        size=info.get("Size") or 0,
        created=_time(info.get("Created")),
        digest=_digest(info.get("RepoDigests")),
        runtime=RUNTIME,
    )


def image_from_summary(item: dict[str, Any]) -> Image:
    return Image(
        id=item["Id"],
        references=_references(item.get("RepoTags"), item.get("RepoDigests")),
        size=item.get("Size") or 0,
        created=rfc3339(int(item["Created"]) * 10**9) if item.get("Created") else None,
        digest=_digest(item.get("RepoDigests")),
        runtime=RUNTIME,
    )


def history_entry(item: dict[str, Any]) -> HistoryEntry:
    """One entry of GET /images/{name}/history; "<missing>" is the engine's id for steps it has no image of."""
    size = item.get("Size") or 0
    entry_id = item.get("Id")
    return HistoryEntry(
        created_by=item.get("CreatedBy") or "",
        size=size,
        created=rfc3339(int(item["Created"]) * 10**9) if item.get("Created") else None,
        id=None if entry_id in (None, "", "<missing>") else entry_id,
        comment=item.get("Comment") or None,
        empty_layer=size == 0,  # the engine keeps no layer for a step that changed no file
    )


def event_from_engine(message: dict[str, Any]) -> Event | None:
    """An Event from one message of GET /events, or None when it is not one orchestr reports."""
    action = message.get("Action") or message.get("status") or ""
    if message.get("Type") != "container" or action not in EVENT_STATES:
        return None
    actor = message.get("Actor") or {}
    attrs = actor.get("Attributes") or {}
    namespace = attrs.get(L_NAMESPACE)
    if namespace is None:
        return None
    exit_code = attrs.get("exitCode")
    nanos = message.get("timeNano")
    return Event(
        runtime=RUNTIME,
        id=actor.get("ID") or message.get("id", ""),
        name=_name(attrs.get("name", ""), namespace),
        namespace=namespace,
        action=EventAction(action),
        state=EVENT_STATES[action],
        exit_code=int(exit_code) if action == "die" and exit_code is not None else None,
        time=rfc3339(nanos) if nanos else None,
    )


def stats_from_engine(raw: dict[str, Any], memory_limit: int | None) -> Stats:
    """Stats from GET /containers/{id}/stats?stream=false (cgroup v1 or v2 underneath); memory_limit is the
    container's own (the engine reports the host's memory when there is none)."""
    cpu = ((raw.get("cpu_stats") or {}).get("cpu_usage") or {}).get("total_usage")
    memory_stats = raw.get("memory_stats") or {}
    memory = memory_stats.get("usage")
    if memory is not None:
        detail = memory_stats.get("stats") or {}
        # page cache the kernel can drop at once is not in use: v1 calls it total_inactive_file, v2 inactive_file
        inactive = detail.get("total_inactive_file", detail.get("inactive_file", 0))
        memory -= inactive if inactive < memory else 0
    networks = raw.get("networks")
    blkio = (raw.get("blkio_stats") or {}).get("io_service_bytes_recursive")
    return Stats(
        cpu_seconds=cpu / 1e9 if cpu is not None else None,
        memory=memory,
        memory_limit=memory_limit,
        pids=(raw.get("pids_stats") or {}).get("current"),
        net_rx=sum(n.get("rx_bytes", 0) for n in networks.values()) if networks is not None else None,
        net_tx=sum(n.get("tx_bytes", 0) for n in networks.values()) if networks is not None else None,
        block_read=sum(e["value"] for e in blkio if e.get("op", "").lower() == "read") if blkio is not None else None,
        block_write=sum(e["value"] for e in blkio if e.get("op", "").lower() == "write") if blkio is not None else None,
        time=_time(raw.get("read")),
    )


def update_body(resources: Resources) -> dict[str, Any]:
    """The body of POST /containers/{id}/update: the limits resources sets; the engine leaves the rest."""
    body: dict[str, Any] = {}
    if resources.cpus is not None:
        body["NanoCpus"] = round(resources.cpus * 1e9)
    if resources.memory is not None:
        body["Memory"] = body["MemorySwap"] = resources.memory
    if resources.pids is not None:
        body["PidsLimit"] = resources.pids
    return body


def progress(ref: str, message: dict[str, Any]) -> PullProgress | None:
    """A PullProgress from one message of the engine's pull or load stream, or None for other chatter (whole-image
    messages such as "Pulling from x", "Digest: ...", "Status: ...")."""
    status = _PROGRESS.get(message.get("status") or "")
    layer = message.get("id")
    if status is None or not layer:
        return None
    detail = message.get("progressDetail") or {}
    return PullProgress(ref, layer, status, detail.get("current") or 0, detail.get("total"))
