"""Services as Kubernetes objects: a pure function of validated services, with a warning for each meaning lost.

A service becomes a Deployment, a StatefulSet when it mounts named volumes (one claim per replica), or an
Indexed Job when its restartPolicy is OnFailure or Never (Deployments and StatefulSets only know Always). Every
service on a network gets a headless Service of its name, so the name resolves to its ready replicas as
orchestr's service names do; published ports get a LoadBalancer Service besides. `dependsOn` becomes an init
container per dependency that waits until the dependency's name resolves, that is until it has a ready replica:
Kubernetes starts nothing in order, and this is the ordering its own documentation shows.
"""

from __future__ import annotations

import functools
import ipaddress
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..model import L_NAMESPACE, L_SERVICE, TMPFS_SIZE, RestartPolicy
from ..spec.models import Service

WAIT_IMAGE = "busybox:1.36"  # runs the dependency waits: needs sh, nslookup and sleep
CLUSTER_DOMAIN = "cluster.local"
VOLUME_SIZE = "1Gi"  # what a named volume's claim asks for; orchestr's volumes have no size
MANAGED_BY = "app.kubernetes.io/managed-by"
NAMESPACE_POLICY = "orchestr-same-namespace"
PUBLISHED = "-published"  # the suffix of the LoadBalancer Service of a service's published ports

_LABEL_NAME = re.compile(r"[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*")
_EXPANDED = re.compile(r"\$(?=[$(])")  # what Kubernetes expands in command, args and env: $(NAME) and $$


@dataclass(frozen=True, slots=True)
class ExportWarning:
    """Something of a spec that Kubernetes expresses differently or not at all."""

    file: str
    line: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.path}: {self.message}"


@dataclass(slots=True)
class Manifests:
    """Kubernetes objects, in the order `kubectl apply` would best meet them, and the warnings made on the way."""

    objects: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[ExportWarning] = field(default_factory=list)

    def dump(self) -> str:
        """The objects as one YAML stream of documents, in block style."""
        out: list[str] = []
        for obj in self.objects:
            out.append("---\n")
            _emit_map(obj, "", out)
        return "".join(out)


def to_kubernetes(
    services: Sequence[Service],
    *,
    wait_image: str = WAIT_IMAGE,
    cluster_domain: str = CLUSTER_DOMAIN,
    volume_size: str = VOLUME_SIZE,
) -> Manifests:
    """The Kubernetes objects for services (validated as a set); raises SpecError for what Kubernetes refuses."""
    return _Export(services, wait_image, cluster_domain, volume_size).run()


class _Export:
    def __init__(self, services: Sequence[Service], wait_image: str, cluster_domain: str, volume_size: str):
        self.services = services
        self.by_key = {(s.namespace, s.name): s for s in services}
        self.wait_image, self.cluster_domain, self.volume_size = wait_image, cluster_domain, volume_size
        self.warnings: list[ExportWarning] = []
        self.namespaces: list[dict] = []
        self.policies: list[dict] = []
        self.claims: dict[tuple[str, str], dict] = {}
        self.networking: list[dict] = []
        self.workloads: list[dict] = []
        users: dict[tuple[str, str], list[str]] = {}  # named volume -> the services that mount it
        for s in services:
            for v in s.spec.volumes:
                if v.type == "volume" and s.name not in users.setdefault((s.namespace, v.source), []):
                    users[(s.namespace, v.source)].append(s.name)
        self.volume_users = users

    def run(self) -> Manifests:
        seen: set[str] = set()
        for s in self.services:
            if s.namespace not in seen:
                seen.add(s.namespace)
                self.namespace(s.namespace)
            self.service(s)
        objects = [*self.namespaces, *self.policies, *self.claims.values(), *self.networking, *self.workloads]
        written: set[tuple[str, str, str]] = set()
        for obj in objects:
            kind, meta = obj["kind"], obj["metadata"]
            key = (kind, meta.get("namespace", ""), meta["name"])
            if key in written:  # a service named as an object made for another (web-published)
                owner = self.by_key.get(key[1:]) or next(s for s in self.services if s.namespace == key[1])
                raise owner.error("metadata.name", f"the {kind} {meta['name']!r} would be written twice, for this "
                                                   f"service and another; rename one")
            written.add(key)
        return Manifests(objects, self.warnings)

    def warn(self, s: Service, path: str, message: str) -> None:
        self.warnings.append(ExportWarning(s.source[0], s.line(path) or None, path, message))

    # -- per namespace ----------------------------------------------------------------------
    def namespace(self, ns: str) -> None:
        if ns != "default":
            self.namespaces.append({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        # orchestr drops traffic between namespaces: its pods take connections from their own namespace only
        # (published ports are let in by each service's own policy).
        self.policies.append({
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": NAMESPACE_POLICY, "namespace": ns, "labels": {MANAGED_BY: "orchestr"}},
            "spec": {
                "podSelector": {"matchLabels": {L_NAMESPACE: ns}},
                "policyTypes": ["Ingress"],
                "ingress": [{"from": [{"podSelector": {}}]}],
            },
        })

    # -- per service ------------------------------------------------------------------------
    def service(self, s: Service) -> None:
        spec = s.spec
        labels = self.labels(s)
        meta = {"name": s.name, "namespace": s.namespace, "labels": labels}
        selector = {L_SERVICE: s.name}
        if spec.network != "none":
            self.services_of(s, dict(meta, labels=dict(labels)), selector)
        else:  # no traffic in or out: what Kubernetes can say of a pod that must have an interface
            self.policies.append({
                "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": dict(meta, labels=dict(labels)),
                "spec": {"podSelector": {"matchLabels": dict(selector)}, "policyTypes": ["Ingress", "Egress"]},
            })
        pod, claim_templates = self.pod(s)
        template = {"metadata": {"labels": dict(labels)}, "spec": pod}
        selector = dict(selector)
        if spec.restart_policy is not RestartPolicy.ALWAYS:
            job: dict[str, Any] = {
                "completionMode": "Indexed",  # replica i is completion index i, as web-0, web-1
                "completions": spec.replicas,
                "parallelism": spec.replicas,
            }
            if spec.restart_policy is RestartPolicy.NEVER:
                job["backoffLimit"] = 0  # Never: a finished or failed replica is left alone
            job["template"] = template
            self.workloads.append({"apiVersion": "batch/v1", "kind": "Job", "metadata": meta, "spec": job})
        elif claim_templates:
            self.workloads.append({
                "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": meta,
                "spec": {
                    "serviceName": s.name,
                    "replicas": spec.replicas,
                    "podManagementPolicy": "Parallel",  # orchestr starts a service's replicas together
                    "selector": {"matchLabels": selector},
                    "template": template,
                    "volumeClaimTemplates": claim_templates,
                },
            })
        else:
            deployment: dict[str, Any] = {"replicas": spec.replicas, "selector": {"matchLabels": selector},
                                          "template": template}
            update = getattr(spec, "update", None)
            if update is not None and update != type(update)():  # Kubernetes' defaults are orchestr's
                if update.strategy == "Recreate":
                    deployment["strategy"] = {"type": "Recreate"}
                else:
                    deployment["strategy"] = {"type": "RollingUpdate", "rollingUpdate": {
                        "maxSurge": update.max_surge, "maxUnavailable": update.max_unavailable}}
                if update.min_ready_seconds:
                    deployment["minReadySeconds"] = math.ceil(update.min_ready_seconds)
                deployment["progressDeadlineSeconds"] = max(math.ceil(update.progress_deadline),
                                                            math.ceil(update.min_ready_seconds) + 1)
            self.workloads.append({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta,
                                   "spec": deployment})
        if spec.paused:
            self.warn(s, "spec.paused", "Kubernetes cannot freeze a container: the replicas run")

    def labels(self, s: Service) -> dict[str, str]:
        for key, value in s.metadata.labels.items():
            path = f"metadata.labels.{key}"
            prefix, _, name = key.rpartition("/")
            if not (_LABEL_NAME.fullmatch(name) and (not prefix or _is_subdomain(prefix))):
                raise s.error(path, f"Kubernetes takes label names of letters, digits, '-', '_' and '.' (at most 63, "
                                    f"starting and ending with a letter or digit), optionally after a DNS prefix "
                                    f"and '/', got {key!r}")
            if value and not _LABEL_NAME.fullmatch(value):
                raise s.error(path, f"Kubernetes takes label values of letters, digits, '-', '_' and '.' (at most "
                                    f"63, starting and ending with a letter or digit), got {value!r}")
        return {**s.metadata.labels, MANAGED_BY: s.metadata.labels.get(MANAGED_BY, "orchestr"),
                L_NAMESPACE: s.namespace, L_SERVICE: s.name}

    def services_of(self, s: Service, meta: dict, selector: dict) -> None:
        if not s.name[0].isalpha():
            raise s.error("metadata.name", f"a Kubernetes Service's name starts with a letter, got {s.name!r} "
                                           f"(with network: none the service gets no Service)")
        ports, published, seen = [], [], set()
        for i, p in enumerate(s.spec.ports):
            protocol = p.protocol.upper()
            if (p.container_port, protocol) not in seen:
                seen.add((p.container_port, protocol))
                ports.append({"name": f"{p.protocol}-{p.container_port}", "port": p.container_port,
                              "targetPort": p.container_port, "protocol": protocol})
            address = ipaddress.ip_address(p.host_ip)
            if address.is_loopback:
                continue  # only this host could connect: on a cluster, only the cluster can (the headless Service)
            if not address.is_unspecified:
                self.warn(s, f"spec.ports[{i}].hostIP", f"a Service publishes on every address the cluster gives it, "
                                                        f"not on {p.host_ip} alone")
            port = p.host_port or p.container_port
            if any(q["port"] == port and q["protocol"] == protocol for q in published):
                raise s.error(f"spec.ports[{i}]", f"{p.protocol} port {port} is published twice; a Kubernetes "
                                                  f"Service has each port once")
            published.append({"name": f"{p.protocol}-{port}", "port": port, "targetPort": p.container_port,
                              "protocol": protocol})
        headless: dict[str, Any] = {"clusterIP": "None", "selector": dict(selector)}
        if ports:
            headless["ports"] = ports
        self.networking.append({"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": headless})
        if not published:
            return
        name = s.name + PUBLISHED
        if len(name) > 63:
            raise s.error("metadata.name", f"too long for a Kubernetes Service of published ports, {name!r} "
                                           f"(at most {63 - len(PUBLISHED)} characters)")
        self.networking.append({
            "apiVersion": "v1", "kind": "Service", "metadata": {**meta, "name": name, "labels": dict(meta["labels"])},
            "spec": {"type": "LoadBalancer", "selector": dict(selector), "ports": published},
        })
        self.policies.append({
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {**meta, "name": name, "labels": dict(meta["labels"])},
            "spec": {
                "podSelector": {"matchLabels": dict(selector)},
                "policyTypes": ["Ingress"],
                "ingress": [{"ports": [{"port": q["targetPort"], "protocol": q["protocol"]} for q in published]}],
            },
        })

    def pod(self, s: Service) -> tuple[dict, list[dict]]:
        spec = s.spec
        container: dict[str, Any] = {"name": s.name, "image": spec.image}
        if spec.command is not None:
            container["command"] = [_literal(a) for a in spec.command]
        if spec.args is not None:
            container["args"] = [_literal(a) for a in spec.args]
        if spec.working_dir:
            container["workingDir"] = spec.working_dir
        if spec.env:
            for name in spec.env:
                if not (name.isascii() and name.isprintable()):
                    raise s.error(f"spec.env.{name}", f"Kubernetes takes environment names of printable ASCII, "
                                                      f"got {name!r}")
            container["env"] = [{"name": k, "value": _literal(v)} for k, v in spec.env.items()]
        ports, seen = [], set()
        for p in spec.ports:
            if (p.container_port, p.protocol) not in seen:
                seen.add((p.container_port, p.protocol))
                ports.append({"containerPort": p.container_port, "protocol": p.protocol.upper()})
        if ports:
            container["ports"] = ports
        limits = {}
        if spec.resources.cpus is not None:
            limits["cpu"] = _cpus(spec.resources.cpus)
        if spec.resources.memory is not None:
            limits["memory"] = _bytes(spec.resources.memory)
        if spec.resources.pids is not None:
            self.warn(s, "spec.resources.pids", "Kubernetes limits pids per node (the kubelet's podPidsLimit), "
                                                "not per container: left out")
        if limits:
            container["resources"] = {"limits": limits}  # requests default to the limits
        container.update(self.probes(s))
        container["securityContext"] = self.security(s)
        volumes, mounts, claim_templates = self.volumes(s)
        if mounts:
            container["volumeMounts"] = mounts
        pod: dict[str, Any] = {
            "restartPolicy": spec.restart_policy.value,
            "terminationGracePeriodSeconds": math.ceil(spec.stop_grace_period),
            "automountServiceAccountToken": False,  # orchestr's containers hold no credentials of the engine
            "enableServiceLinks": False,  # nor an environment variable per service of the namespace
        }
        if spec.network == "host":
            pod["hostNetwork"] = True
            pod["dnsPolicy"] = "ClusterFirstWithHostNet"  # service names still resolve
        if spec.init:
            pod["shareProcessNamespace"] = True  # the pod's first process, the sandbox's, reaps zombies
        waits = self.waits(s)
        if waits:
            pod["initContainers"] = waits
        pod["containers"] = [container]
        if volumes:
            pod["volumes"] = volumes
        return pod, claim_templates

    def security(self, s: Service) -> dict:
        spec = s.spec
        context: dict[str, Any] = {"allowPrivilegeEscalation": False}  # no_new_privs, as orchestr sets always
        if spec.read_only:
            context["readOnlyRootFilesystem"] = True
        if spec.user is not None:
            user, _, group = spec.user.partition(":")
            uid, gid = _id(user), _id(group) if group else None
            if uid is None:
                self.warn(s, "spec.user", f"Kubernetes takes a numeric uid, not {user!r}: the image's user runs, "
                                          f"and runAsNonRoot refuses it if that is root")
                context["runAsNonRoot"] = True
            else:
                context["runAsUser"] = uid
            if group and gid is None:
                self.warn(s, "spec.user", f"Kubernetes takes a numeric gid, not {group!r}: left out")
            elif gid is not None:
                context["runAsGroup"] = gid
        context["seccompProfile"] = {"type": "RuntimeDefault" if spec.seccomp == "default" else "Unconfined"}
        return context

    def volumes(self, s: Service) -> tuple[list[dict], list[dict], list[dict]]:
        spec = s.spec
        named = {v.source for v in spec.volumes if v.type == "volume"}
        volumes: list[dict] = []
        mounts: list[dict] = []
        templates: list[dict] = []
        stateful = spec.restart_policy is RestartPolicy.ALWAYS
        for i, v in enumerate(spec.volumes):
            path = f"spec.volumes[{i}]"
            mount: dict[str, Any] = {"mountPath": v.target}
            if v.read_only:
                mount["readOnly"] = True
            if v.type == "volume":
                mount["name"] = v.source
                if any(t["metadata"]["name"] == v.source for t in templates) or \
                        any(x["name"] == v.source for x in volumes):
                    mounts.append(mount)
                    continue
                claim_spec = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": self.volume_size}}}
                if stateful:
                    templates.append({"metadata": {"name": v.source}, "spec": claim_spec})
                    others = [n for n in self.volume_users[(s.namespace, v.source)] if n != s.name]
                    if spec.replicas > 1 or others:
                        shared = f"service {others[0]!r}" if others else "the replicas"
                        self.warn(s, path, f"named volume {v.source!r} becomes a claim per replica (a StatefulSet's "
                                           f"volumeClaimTemplates): {shared} no longer share its data")
                else:
                    # a Job's pods share one claim, as orchestr's replicas share the volume
                    self.claims.setdefault((s.namespace, v.source), {
                        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
                        "metadata": {"name": v.source, "namespace": s.namespace, "labels": {MANAGED_BY: "orchestr"}},
                        "spec": claim_spec,
                    })
                    volumes.append({"name": v.source, "persistentVolumeClaim": {"claimName": v.source}})
            else:
                name = _unused(f"{'host' if v.type == 'bind' else 'tmp'}-{i}", named)
                mount["name"] = name
                if v.type == "bind":
                    volumes.append({"name": name, "hostPath": {"path": v.source}})
                    self.warn(s, path, f"a bind becomes a hostPath: {v.source} of whichever node runs the pod")
                else:
                    volumes.append({"name": name, "emptyDir": {"medium": "Memory",
                                                               "sizeLimit": _bytes(v.size or TMPFS_SIZE)}})
            mounts.append(mount)
        return volumes, mounts, templates

    def probes(self, s: Service) -> dict[str, dict]:
        """The container's probes: a healthcheck is both its readiness and liveness probe."""
        probes = s.probes()
        if probes is None:
            return {}
        path = "spec.healthcheck" if probes.combined else "spec.probes"
        out = {}
        for kind, check in (("readiness", probes.readiness), ("liveness", probes.liveness),
                            ("startup", probes.startup)):
            if check is None:
                continue
            at = path if probes.combined else f"{path}.{kind}"
            probe: dict[str, Any]
            if check.kind == "exec":
                probe = {"exec": {"command": [_literal(a) for a in check.argv]}}
            elif check.kind == "http":
                probe = {"httpGet": {"path": check.path, "port": check.port}}
                if check.status != (200, 399):
                    self.warn(s, f"{at}.http.status", "Kubernetes counts 200 to 399 as passing, whatever is asked")
            else:
                probe = {"tcpSocket": {"port": check.port}}
            probe.update(periodSeconds=max(1, math.ceil(check.interval)),
                         timeoutSeconds=max(1, math.ceil(check.timeout)), failureThreshold=check.retries)
            if check.start_period:
                probe["initialDelaySeconds"] = math.ceil(check.start_period)
            out[f"{kind}Probe"] = probe
        return out

    def waits(self, s: Service) -> list[dict]:
        waits = []
        for i, dep in enumerate(s.spec.depends_on):
            if s.spec.depends_on[i].condition == "completed":
                self.warn(s, f"spec.dependsOn[{i}]", f"Kubernetes waits until {dep!r} has a ready replica, not until "
                                                     "it has finished")
            target = self.by_key.get((s.namespace, dep))
            if target is not None and target.spec.network == "none":
                self.warn(s, f"spec.dependsOn[{i}]", f"{dep!r} has network none, so no Service names it: "
                                                     f"nothing waits for it")
                continue
            host = f"{dep}.{s.namespace}.svc.{self.cluster_domain}"
            name = f"wait-{dep}"
            waits.append({
                "name": name if len(name) <= 63 else f"wait-{i}",
                "image": self.wait_image,
                # a headless Service's name resolves once one of its replicas is ready
                "command": ["sh", "-c", f"until nslookup {host} >/dev/null 2>&1; do echo waiting for {dep}; "
                                        f"sleep 2; done"],
                "resources": {"limits": {"cpu": "50m", "memory": "16Mi"}},
                "securityContext": {
                    "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True,
                    "runAsUser": 65534, "runAsGroup": 65534, "capabilities": {"drop": ["ALL"]},
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
            })
        return waits


# -- YAML ------------------------------------------------------------------------------------------------
# PyYAML's dumper spends 3 s on the objects of 1,000 services: the few kinds of value here are written directly.
_PLAIN = re.compile(r"[A-Za-z/_][-A-Za-z0-9_./]*")  # a string that YAML reads back as that string when plain...
_NOT_PLAIN = {"y", "n", "yes", "no", "on", "off", "true", "false", "null"}  # ...unless YAML 1.1 reads it otherwise


def _scalar(value: Any, indent: str) -> str:
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if "\n" not in value:
        return _inline(value)
    if _literal_block(value):
        lines = value.split("\n")
        if value.endswith("\n"):
            lines.pop()
        body = indent + "  "
        return ("|\n" if value.endswith("\n") else "|-\n") + "\n".join(body + line if line else "" for line in lines)
    return _quoted(value)


@functools.lru_cache(maxsize=4096)  # the same names and values come back in every object
def _inline(value: str) -> str:
    if _PLAIN.fullmatch(value) and value.lower() not in _NOT_PLAIN:
        return value
    return _quoted(value)


def _quoted(value: str) -> str:
    if value.isprintable() and '"' not in value and "\\" not in value:
        return f'"{value}"'
    return '"' + "".join(c if c.isprintable() and c not in '"\\' else _escape(c) for c in value) + '"'


def _escape(char: str) -> str:
    code = ord(char)
    if char in '"\\':
        return "\\" + char
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def _literal_block(text: str) -> bool:
    """Whether text reads back the same from a literal block: no blank lines at either end, no line ending in
    white space (a line of spaces alone would come back empty), nothing that is not printable but tabs."""
    lines = text.split("\n")
    if text.endswith("\n"):
        lines.pop()
    return bool(lines[0]) and lines[0][0] not in " \t" and bool(lines[-1]) and \
        all(not line or (line[-1] not in " \t" and line.replace("\t", "").isprintable()) for line in lines)


def _emit_map(mapping: dict, indent: str, out: list[str], first: str | None = None) -> None:
    """mapping in block style, each key at indent; the first after first instead (a list item's "- ")."""
    lead = indent if first is None else first
    for key, value in mapping.items():
        _emit_value(f"{lead}{_inline(key)}:", value, indent, out)
        lead = indent


def _emit_list(items: list, indent: str, out: list[str]) -> None:
    for value in items:
        if type(value) is dict and value:
            _emit_map(value, indent + "  ", out, first=indent + "- ")
        else:
            _emit_value(indent + "-", value, indent, out)


def _emit_value(head: str, value: Any, indent: str, out: list[str]) -> None:
    kind = type(value)
    if kind is str:
        out.append(f"{head} {_inline(value) if chr(10) not in value else _scalar(value, indent)}\n")
    elif kind is dict:
        if value:
            out.append(head + "\n")
            _emit_map(value, indent + "  ", out)
        else:
            out.append(head + " {}\n")
    elif kind is list:
        if value:
            out.append(head + "\n")
            _emit_list(value, indent + "  ", out)
        else:
            out.append(head + " []\n")
    else:
        out.append(f"{head} {_scalar(value, indent)}\n")


def _is_subdomain(text: str) -> bool:
    return len(text) <= 253 and bool(_DNS_SUBDOMAIN.fullmatch(text))


def _literal(text: str) -> str:
    """text as Kubernetes passes it on unchanged: it expands $(NAME) and turns $$ into $ in commands and env."""
    return _EXPANDED.sub("$$", text)


def _id(text: str) -> int | None:
    if text.isdigit():
        return int(text)
    return 0 if text == "root" else None


def _cpus(cpus: float) -> str:
    milli = round(cpus * 1000)
    return str(milli // 1000) if milli % 1000 == 0 else f"{milli}m"


def _bytes(n: int) -> str:
    for suffix, size in (("Ti", 1 << 40), ("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)):
        if n % size == 0:
            return f"{n // size}{suffix}"
    return str(n)


def _unused(name: str, taken: Iterable[str]) -> str:
    taken = set(taken)
    while name in taken:
        name += "-x"
    return name


__all__ = ["ExportWarning", "Manifests", "to_kubernetes"]
