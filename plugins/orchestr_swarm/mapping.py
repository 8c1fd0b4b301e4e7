"""Translates between orchestr's model and the Docker Engine's swarm API: a service template in, a swarm service
spec out; swarm's services and task containers back as orchestr's. Pure functions, no I/O."""

from __future__ import annotations

import ipaddress
from dataclasses import replace
from typing import Any

from orchestr.containers import volume_key
from orchestr.errors import TerminalFailure
from orchestr.model import L_NAMESPACE, L_REPLICA, L_SERVICE, Container, ContainerSpec, Deployment, Event, RestartPolicy

RUNTIME = "swarm"
TASK_NAME = "com.docker.swarm.task.name"  # <service>.<slot>.<task id>, on each task's container
NETWORK_PREFIX = "orchestr_"  # a namespace's overlay network: orchestr_<namespace>

_CONDITION = {RestartPolicy.ALWAYS: "any", RestartPolicy.ON_FAILURE: "on-failure", RestartPolicy.NEVER: "none"}
_SECOND = 1_000_000_000  # the swarm API's durations are nanoseconds


def service_name(namespace: str, name: str) -> str:
    """The engine's name of a service: unique across namespaces, as the swarm requires."""
    return f"{namespace}_{name}"


def network_name(namespace: str) -> str:
    return NETWORK_PREFIX + namespace


def network_body(namespace: str) -> dict[str, Any]:
    """POST /networks/create for a namespace's overlay network: its services reach each other by name there."""
    return {"Name": network_name(namespace), "Driver": "overlay", "CheckDuplicate": True,
            "Labels": {L_NAMESPACE: namespace}}


def service_spec(template: ContainerSpec, replicas: int, mesh: bool = False) -> dict[str, Any]:
    """The swarm service spec that runs replicas containers like template (a service's replica 0, named as the
    service, without a replica label). TerminalFailure for what a swarm service cannot be asked for.

    Without mesh, the service's name resolves to each replica's address (DNS round robin, as orchestr's names do)
    and a published port is bound on the node that runs the replica (host mode); with mesh, the name is a
    virtual address and published ports go through the routing mesh, on every node: both need the kernel's
    IPVS on every node."""

    def refuse(what: str) -> TerminalFailure:
        return TerminalFailure(f"service {template.namespace}/{template.name}: {what}", container=template.name)

    container: dict[str, Any] = {
        "Image": template.image,
        "Labels": dict(template.labels),
        "Env": [f"{k}={v}" for k, v in template.env.items()],
        "StopGracePeriod": round(template.stop_grace_period * _SECOND),
        "ReadOnly": template.read_only,
        "Init": template.init,
        "Mounts": [_mount(template.namespace, v) for v in template.volumes],
    }
    # Command replaces the image's entrypoint and, without Args, its cmd too; Args alone replaces the cmd: as the
    # spec's command and args.
    if template.command:
        container["Command"] = list(template.command)
    if template.args:
        container["Args"] = list(template.args)
    if template.working_dir:
        container["Dir"] = template.working_dir
    if template.user:
        container["User"] = template.user
    if template.seccomp != "default":
        raise refuse("seccomp: unconfined: this engine's swarm services always run under its seccomp profile")
    limits: dict[str, int] = {}
    res = template.resources
    if res.cpus is not None:
        limits["NanoCPUs"] = round(res.cpus * 1e9)
    if res.memory is not None:
        limits["MemoryBytes"] = res.memory
    if res.pids is not None:
        limits["Pids"] = res.pids
    ports = []
    for i, p in enumerate(template.ports):
        if not ipaddress.ip_address(p.host_ip).is_unspecified:
            raise refuse(f"ports[{i}]: a swarm service publishes on every address of its nodes, so hostIP "
                         f"{p.host_ip} cannot be kept; leave hostIP out, or use another runtime")
        port: dict[str, Any] = {"Protocol": p.protocol, "TargetPort": p.container_port,
                                "PublishMode": "ingress" if mesh else "host"}
        if p.host_port:
            port["PublishedPort"] = p.host_port  # without one, the engine picks one
        ports.append(port)
    target = network_name(template.namespace) if template.network == "bridge" else template.network
    network: dict[str, Any] = {"Target": target}
    if template.network == "bridge":
        network["Aliases"] = [template.name]  # the service's name, as orchestr's other runtimes resolve it
    return {
        "Name": service_name(template.namespace, template.name),
        "Labels": dict(template.labels),
        "TaskTemplate": {
            "ContainerSpec": container,
            "Resources": {"Limits": limits} if limits else {},
            "RestartPolicy": {"Condition": _CONDITION[template.restart_policy], "MaxAttempts": 0},
            "Networks": [network],
        },
        "Mode": {"Replicated": {"Replicas": replicas}},
        # orchestr recreates a changed container: stop the old one first, one replica at a time; a replica
        # that fails within its first second stops the roll-out where it is
        "UpdateConfig": {"Parallelism": 1, "Order": "stop-first", "FailureAction": "pause", "Monitor": _SECOND},
        "EndpointSpec": {"Mode": "vip" if mesh else "dnsrr", "Ports": ports},
    }


def _mount(namespace: str, volume) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    mount: dict[str, Any] = {"Type": volume.type, "Target": volume.target, "ReadOnly": volume.read_only}
    if volume.type == "bind":
        mount["Source"] = volume.source
    elif volume.type == "volume":
        mount["Source"] = volume_key(namespace, volume.source or "")
        mount["VolumeOptions"] = {"Labels": {L_NAMESPACE: namespace}}
    else:
        mount["TmpfsOptions"] = {"SizeBytes": volume.tmpfs_size}
    return mount


def deployment(item: dict[str, Any]) -> Deployment | None:
    """A Deployment from one entry of GET /services, or None for a service orchestr did not make."""
    spec = item.get("Spec") or {}
    labels = spec.get("Labels") or {}
    if L_NAMESPACE not in labels or L_SERVICE not in labels:
        return None
    replicated = (spec.get("Mode") or {}).get("Replicated") or {}
    return Deployment(id=item["ID"], name=labels[L_SERVICE], namespace=labels[L_NAMESPACE], runtime=RUNTIME,
                      replicas=int(replicated.get("Replicas", 0)), labels=labels)


def task_replica(labels: dict[str, str]) -> int | None:
    """The replica a task's container is (its slot, counted from 0), from its task name; None if it has none."""
    parts = labels.get(TASK_NAME, "").split(".")
    if len(parts) < 3 or not parts[-2].isdigit():
        return None
    return int(parts[-2]) - 1


def task_container(c: Container) -> Container:
    """A task's container as orchestr names it: <service>-<replica>, on the swarm runtime."""
    replica = task_replica(c.labels)
    if replica is None:
        return replace(c, runtime=RUNTIME)
    return replace(c, runtime=RUNTIME, name=f"{c.labels.get(L_SERVICE, c.name)}-{replica}",
                   labels={**c.labels, L_REPLICA: str(replica)})


def task_event(event: Event, attributes: dict[str, str]) -> Event:
    replica = task_replica(attributes)
    name = f"{attributes.get(L_SERVICE, event.name)}-{replica}" if replica is not None else event.name
    return replace(event, runtime=RUNTIME, name=name)
