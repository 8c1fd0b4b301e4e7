"""Translates between orchestr's model and the Kubernetes API: a service in, export's objects out; workloads and
pods back as orchestr's deployments and containers. Pure functions over plain data, no I/O."""

from __future__ import annotations

import re
from typing import Any

from orchestr.export.kubernetes import MANAGED_BY, to_kubernetes
from orchestr.model import (
    L_NAMESPACE, L_REPLICA, L_SERVICE, Container, ContainerSpec, Deployment, Health, State,
)
from orchestr.spec.models import Service

RUNTIME = "kubernetes"
WORKLOADS = ("Deployment", "StatefulSet", "Job")
OWNED = ("NetworkPolicy", "Service", *WORKLOADS)  # the kinds export labels with the service's own labels
POD_INDEX = "apps.kubernetes.io/pod-index"  # a StatefulSet's pod's ordinal (Kubernetes 1.28 on)
JOB_INDEX = "batch.kubernetes.io/job-completion-index"  # an Indexed Job's pod's index
_ORDINAL = re.compile(r"-(\d+)$")


def objects(service: Service, template: ContainerSpec) -> list[dict[str, Any]]:
    """What deploy applies for service: export's objects as `orchestr export --format kubernetes` writes them,
    but for the Namespace (see namespace_body), and with orchestr's bookkeeping on the workload as annotations
    (its spec hash, dependencies and grace period: the labels of template that export does not write), so that
    reading the workload back tells whether the spec changed."""
    out = []
    for obj in to_kubernetes([service]).objects:
        if obj["kind"] == "Namespace":
            continue
        if obj["kind"] in WORKLOADS:
            labels = obj["metadata"]["labels"]
            notes = {k: v for k, v in template.labels.items() if k not in labels and k != L_REPLICA}
            if notes:
                obj["metadata"]["annotations"] = notes
        out.append(obj)
    return out


def namespace_body(namespace: str) -> dict[str, Any]:
    """The Namespace orchestr creates when it is missing, labelled as orchestr's (one that exists is left as is)."""
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": namespace, "labels": {MANAGED_BY: "orchestr", L_NAMESPACE: namespace}}}


def service_labels(namespace: str, name: str) -> dict[str, str]:
    """The label selector of everything export makes for one service (its workload, Services, NetworkPolicies,
    and the pods of its workload)."""
    return {L_NAMESPACE: namespace, L_SERVICE: name}


def service_id(namespace: str, name: str) -> str:
    return f"{namespace}/{name}"


def split_id(id: str) -> tuple[str, str]:
    namespace, _, name = id.partition("/")
    return namespace, name


def deployment(workload: dict[str, Any]) -> Deployment | None:
    """A workload export made (Deployment, StatefulSet or Job) as orchestr's Deployment; None for another."""
    meta = workload.get("metadata") or {}
    labels = meta.get("labels") or {}
    name, namespace = labels.get(L_SERVICE), labels.get(L_NAMESPACE)
    if not name or not namespace:
        return None
    spec = workload.get("spec") or {}
    replicas = spec.get("parallelism") if workload.get("kind") == "Job" else spec.get("replicas")
    notes = {k: v for k, v in (meta.get("annotations") or {}).items() if k.startswith("orchestr.")}
    return Deployment(id=service_id(namespace, name), name=name, namespace=namespace, runtime=RUNTIME,
                      replicas=1 if replicas is None else int(replicas), labels={**labels, **notes})


def containers(pods: list[dict[str, Any]]) -> list[Container]:
    """Pods of orchestr's services as its containers, each named <service>-<replica>: a StatefulSet's pod by its
    ordinal, an Indexed Job's by its index, a Deployment's (which Kubernetes does not number) by its place among
    the service's pods, oldest first."""
    by_service: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for pod in pods:
        labels = (pod.get("metadata") or {}).get("labels") or {}
        if L_SERVICE in labels and L_NAMESPACE in labels:
            by_service.setdefault((labels[L_NAMESPACE], labels[L_SERVICE]), []).append(pod)
    out = []
    for (_, service), group in sorted(by_service.items()):
        group.sort(key=lambda p: (p["metadata"].get("creationTimestamp") or "", p["metadata"].get("name", "")))
        numbered = [(_index(p), p) for p in group]
        taken = {i for i, _ in numbered if i is not None}
        spare = (i for i in range(len(group) + len(taken)) if i not in taken)
        for index, pod in numbered:
            out.append(container(pod, service, index if index is not None else next(spare)))
    return out


def _index(pod: dict[str, Any]) -> int | None:
    meta = pod["metadata"]
    for key in (POD_INDEX, JOB_INDEX):
        value = (meta.get("labels") or {}).get(key) or (meta.get("annotations") or {}).get(key)
        if value is not None and value.isdigit():
            return int(value)
    owners = meta.get("ownerReferences") or []
    if any(o.get("kind") == "StatefulSet" for o in owners):
        m = _ORDINAL.search(meta.get("name", ""))
        if m:
            return int(m.group(1))
    return None


def container(pod: dict[str, Any], service: str, replica: int) -> Container:
    """One pod as orchestr's container: its phase and its main container's state as orchestr's state, its
    readiness as health when it has a readiness probe."""
    meta, spec, status = pod["metadata"], pod.get("spec") or {}, pod.get("status") or {}
    main = next((c for c in spec.get("containers") or [] if c.get("name") == service),
                (spec.get("containers") or [{}])[0])
    statuses = status.get("containerStatuses") or []
    current = next((s for s in statuses if s.get("name") == main.get("name")), statuses[0] if statuses else {})
    now = current.get("state") or {}
    last = (current.get("lastState") or {}).get("terminated") or {}
    phase = status.get("phase", "Pending")
    exit_code = None
    if "running" in now and phase == "Running":
        state = State.RUNNING
    elif "terminated" in now:
        state, exit_code = State.EXITED, now["terminated"].get("exitCode")
    elif phase in ("Succeeded", "Failed", "Unknown") or last:
        # ended, or waiting to be started again after it ended (CrashLoopBackOff)
        state, exit_code = State.EXITED, last.get("exitCode")
    else:
        state = State.CREATED  # scheduled or not, its image pulled or not: not yet started
    health = None
    if main.get("readinessProbe") is not None and state is State.RUNNING:
        # Kubernetes says ready or not, never whether a replica that is not ready ever was
        health = Health.HEALTHY if current.get("ready") else Health.STARTING
    running = now.get("running") or {}
    ended = now.get("terminated") or last
    return Container(
        id=f"{meta.get('namespace', '')}/{meta['name']}",
        name=f"{service}-{replica}",
        namespace=meta.get("namespace", ""),
        runtime=RUNTIME,
        image=main.get("image", ""),
        state=state,
        labels={**(meta.get("labels") or {}), L_REPLICA: str(replica)},
        exit_code=exit_code,
        ip=status.get("podIP"),
        restarts=current.get("restartCount"),
        created_at=meta.get("creationTimestamp"),
        started_at=running.get("startedAt") or ended.get("startedAt"),
        finished_at=ended.get("finishedAt") if state is State.EXITED else None,
        health=health,
    )


__all__ = ["containers", "deployment", "namespace_body", "objects"]
