"""Checks across a set of services: unique names, dependsOn that exists and has no cycle, host ports used once."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..errors import SpecError
from ..graph import depth_first
from ..model import RestartPolicy

if TYPE_CHECKING:
    from .models import Service


def validate_set(services: Sequence[Service]) -> None:
    """Raises SpecError for the problem of these services met first in file order, if there is one."""
    files: dict[str, int] = {}
    for service in services:
        files.setdefault(service.source[0], len(files))
    problems: list[tuple[tuple[int, int], SpecError]] = []

    def report(service: Service, path: str, message: str) -> None:
        problems.append(((files[service.source[0]], service.line(path)), service.error(path, message)))

    def where(service: Service, path: str) -> str:
        file, line = service.source[0], service.line(path)
        return f"{file}:{line}" if line else file

    by_key: dict[tuple[str, str], Service] = {}
    for service in services:
        key = (service.namespace, service.name)
        if key in by_key:
            first = by_key[key]
            report(service, "metadata.name",
                   f"service {key[0]}/{key[1]} is already defined at {where(first, 'metadata.name')}")
        else:
            by_key[key] = service

    edges: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for key, service in by_key.items():
        edges[key] = []
        for i, dep in enumerate(service.spec.depends_on):
            if dep == service.name:
                report(service, f"spec.dependsOn[{i}]", "a service cannot depend on itself")
            elif (service.namespace, dep) not in by_key:
                report(service, f"spec.dependsOn[{i}]", f"no service '{dep}' in namespace '{service.namespace}'")
            else:
                edges[key].append((service.namespace, dep))
                target = by_key[(service.namespace, dep)]
                if service.spec.depends_on[i].condition == "completed" and \
                        target.spec.restart_policy == RestartPolicy.ALWAYS:
                    report(service, f"spec.dependsOn[{i}].condition",
                           f"{dep} never completes: its restartPolicy is Always; give it OnFailure or Never")
    order = {key: i for i, key in enumerate(edges)}
    for cycle in depth_first(edges, edges.__getitem__)[1]:
        first = min(range(len(cycle)), key=lambda i: order[cycle[i]])
        cycle = cycle[first:] + cycle[:first + 1]  # from its member listed first, back to it
        service = by_key[cycle[0]]
        i = service.spec.depends_on.index(cycle[1][1])
        report(service, f"spec.dependsOn[{i}]", "dependency cycle: " + " -> ".join(name for _, name in cycle))

    claims: dict[tuple[str, int], list[tuple[str, Service, str]]] = {}
    for service in services:
        for i, port in enumerate(service.spec.ports):
            if port.host_port is None:
                continue
            path = f"spec.ports[{i}].hostPort"
            shown = f"{port.host_ip}:{port.host_port}/{port.protocol}"
            if service.spec.replicas > 1 and port.mode == "host":
                report(service, path, f"host port {shown} cannot be published by {service.spec.replicas} replicas "
                                      "in mode: host; set replicas: 1, leave hostPort out or leave mode out (a "
                                      "service port balancing across the replicas)")
            for ip, other, other_path in claims.get((port.protocol, port.host_port), ()):
                if _overlap(ip, port.host_ip):
                    report(service, path, f"host port {shown} is already published by "
                                          f"{other.namespace}/{other.name} at {where(other, other_path)}")
                    break
            claims.setdefault((port.protocol, port.host_port), []).append((port.host_ip, service, path))

    if problems:
        raise min(problems, key=lambda p: p[0])[1]


def _overlap(a: str, b: str) -> bool:
    return a == b or ipaddress.ip_address(a).is_unspecified or ipaddress.ip_address(b).is_unspecified
