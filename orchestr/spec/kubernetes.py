"""Kubernetes manifests to Services: Pods and Deployments become Services, Services their published ports.

What a manifest asks that orchestr cannot do on one host is an error at its file, line and field; what only a
cluster would do (scheduling, probes, requests) is dropped with a warning. The README's table says which.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import SpecError
from .loader import Lines
from .messages import show
from .models import Service
from .translated import Translated

Warn = Callable[[str], None]
_WORKLOADS = {("v1", "Pod"), ("apps/v1", "Deployment")}

# Pod spec fields a single host has no use for: dropped with a warning.
_POD_IGNORED = {
    "nodeSelector", "nodeName", "affinity", "tolerations", "topologySpreadConstraints", "priorityClassName",
    "priority", "schedulerName", "serviceAccountName", "serviceAccount", "automountServiceAccountToken",
    "imagePullSecrets", "dnsPolicy", "dnsConfig", "enableServiceLinks", "preemptionPolicy", "runtimeClassName",
    "activeDeadlineSeconds", "readinessGates", "overhead", "hostname", "subdomain", "setHostnameAsFQDN",
}
_CONTAINER_IGNORED = {"terminationMessagePath", "terminationMessagePolicy", "imagePullPolicy", "stdin", "stdinOnce",
                      "tty", "name", "resizePolicy"}
_PROBES = {"livenessProbe", "readinessProbe", "startupProbe"}
_CONTAINER_FIELDS = {"image", "command", "args", "env", "workingDir", "ports", "resources", "securityContext",
                     "volumeMounts", "lifecycle", "envFrom", "volumeDevices", "restartPolicy"} | _PROBES | _CONTAINER_IGNORED


def translate(manifests: list[tuple[Any, int, Lines]], filename: str, base_dir: Path,
              options: dict[str, Any]) -> list[Service]:
    """The Services of a file's Kubernetes documents; raises SpecError naming the first problem's file, line, field."""
    warn: Warn = options.get("warn") or (lambda _: None)
    workloads: list[_Workload] = []
    services: list[tuple[dict[str, Any], Lines, int]] = []
    for data, line, lines in manifests:
        doc = _Manifest(filename, line, lines, base_dir, warn)
        key = (data.get("apiVersion"), data.get("kind"))
        if key in _WORKLOADS:
            workloads.append(doc.workload(data))
        elif key == ("v1", "Service"):
            services.append((data, lines, line))
        else:
            raise doc.error("kind", f"{show(key[1])} of apiVersion {show(key[0])} is not supported: orchestr reads "
                                    "Pod (v1), Deployment (apps/v1) and Service (v1)")
    for data, lines, line in services:
        _Manifest(filename, line, lines, base_dir, warn).service(data, workloads)
    return [w.doc.validate() for w in workloads]


class _Workload:
    def __init__(self, doc: Translated, namespace: str, labels: dict[str, Any], ports: dict[str, int],
                 replicas: int) -> None:
        self.doc, self.namespace, self.labels, self.named_ports, self.replicas = doc, namespace, labels, ports, replicas


class _Manifest:
    def __init__(self, file: str, line: int, lines: Lines, base_dir: Path, warn: Warn) -> None:
        self.file, self.line, self.lines, self.base_dir, self._warn = file, line, lines, base_dir, warn

    def error(self, path: str, message: str, key: bool = False) -> SpecError:
        return SpecError(self.file, self.lines.find(path, self.line, key=key) or None, path, message)

    def warn(self, path: str, message: str) -> None:
        self._warn(f"{self.file}:{self.lines.find(path, self.line, key=True)}: {path}: {message}")

    def mapping(self, value: Any, path: str) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.error(path, f"expected a mapping, got {show(value)}")
        return value

    def only(self, body: dict[str, Any], path: str, known: set[str], ignored: dict[str, str] | None = None) -> None:
        """Refuses a field of body outside known; warns for one in ignored."""
        for key in body:
            sub = f"{path}.{key}" if path else key
            if ignored and key in ignored:
                self.warn(sub, f"ignored: {ignored[key]}")
            elif key not in known:
                close = difflib.get_close_matches(str(key), sorted(known), n=1)
                hint = f", did you mean '{close[0]}'?" if close else ", or not supported by orchestr"
                raise self.error(sub, f"unknown field{hint}", key=True)

    # -- Pod and Deployment -------------------------------------------------------------------------------
    def workload(self, data: dict[str, Any]) -> _Workload:
        kind = data["kind"]
        self.only(data, "", {"apiVersion", "kind", "metadata", "spec", "status"})
        meta = self.mapping(data.get("metadata"), "metadata")
        self.only(meta, "metadata", {"name", "namespace", "labels", "annotations", "uid", "resourceVersion",
                                     "generation", "creationTimestamp", "managedFields", "selfLink"})
        if "name" not in meta:
            raise self.error("metadata", "expected a name")
        namespace = meta.get("namespace") or "default"
        spec = self.mapping(data.get("spec"), "spec")
        doc = Translated(self.file, self.lines, self.base_dir, "metadata.name", namespace, meta["name"], "")
        doc.note("metadata.namespace", "metadata.namespace" if "namespace" in meta else "metadata")
        replicas = 1
        if kind == "Deployment":
            self.only(spec, "spec", {"replicas", "selector", "template", "strategy", "minReadySeconds",
                                     "revisionHistoryLimit", "progressDeadlineSeconds", "paused"},
                      {"revisionHistoryLimit": "orchestr history keeps revisions"})
            if spec.get("paused"):
                raise self.error("spec.paused", "not supported: a paused rollout; orchestr has none")
            strategy = self.mapping(spec.get("strategy"), "spec.strategy")
            self.only(strategy, "spec.strategy", {"type", "rollingUpdate"})
            if "type" in strategy:
                doc.put("update.strategy", strategy["type"], "spec.strategy.type")
            rolling = self.mapping(strategy.get("rollingUpdate"), "spec.strategy.rollingUpdate")
            self.only(rolling, "spec.strategy.rollingUpdate", {"maxSurge", "maxUnavailable"})
            for key in ("maxSurge", "maxUnavailable"):
                if key in rolling:
                    doc.put(f"update.{key}", rolling[key], f"spec.strategy.rollingUpdate.{key}")
            for key, field in (("minReadySeconds", "minReadySeconds"), ("progressDeadlineSeconds", "progressDeadline")):
                if key in spec:
                    doc.put(f"update.{field}", spec[key], f"spec.{key}")
            if "replicas" in spec:
                doc.put("replicas", spec["replicas"], "spec.replicas")
                replicas = spec["replicas"] if isinstance(spec["replicas"], int) else 1
            template = self.mapping(spec.get("template"), "spec.template")
            self.only(template, "spec.template", {"metadata", "spec"})
            labels = self.mapping(self.mapping(template.get("metadata"), "spec.template.metadata").get("labels"),
                                  "spec.template.metadata.labels")
            selector = self.mapping(spec.get("selector"), "spec.selector")
            wanted = self.mapping(selector.get("matchLabels"), "spec.selector.matchLabels")
            if "matchExpressions" in selector:
                raise self.error("spec.selector.matchExpressions", "not supported: select with matchLabels", key=True)
            if any(labels.get(k) != v for k, v in wanted.items()):
                raise self.error("spec.selector", "the selector does not match the template's labels")
            pod, at = self.mapping(template.get("spec"), "spec.template.spec"), "spec.template.spec"
            labels_at = "spec.template.metadata.labels"
        else:
            labels, pod, at, labels_at = self.mapping(meta.get("labels"), "metadata.labels"), spec, "spec", "metadata.labels"
        if labels:
            doc.meta("labels", {str(k): v for k, v in labels.items()}, labels_at)
        ports = self.pod(doc, pod, at, kind)
        return _Workload(doc, namespace, labels, ports, replicas)

    def pod(self, doc: Translated, pod: dict[str, Any], at: str, kind: str) -> dict[str, int]:
        self.only(pod, at, {"containers", "volumes", "restartPolicy", "terminationGracePeriodSeconds", "hostNetwork",
                            "securityContext"} | _POD_IGNORED,
                  {key: "a cluster's scheduling and accounts; orchestr runs on this host" for key in _POD_IGNORED})
        containers = pod.get("containers")
        if not isinstance(containers, list) or not containers:
            raise self.error(f"{at}.containers", f"expected a list of one container, got {show(containers)}")
        if len(containers) > 1:
            raise self.error(f"{at}.containers[1]", "not supported: orchestr runs one container per service; give "
                                                    "each its own Pod or Deployment")
        policy = pod.get("restartPolicy", "Always")
        if policy not in ("Always", "OnFailure", "Never"):
            raise self.error(f"{at}.restartPolicy", f"expected Always, OnFailure or Never, got {show(policy)}")
        doc.put("restartPolicy", policy, f"{at}.restartPolicy" if "restartPolicy" in pod else None)
        if "terminationGracePeriodSeconds" in pod:
            doc.put("stopGracePeriod", pod["terminationGracePeriodSeconds"], f"{at}.terminationGracePeriodSeconds")
        if pod.get("hostNetwork"):
            doc.put("network", "host", f"{at}.hostNetwork")
        user = self.security(doc, self.mapping(pod.get("securityContext"), f"{at}.securityContext"),
                             f"{at}.securityContext", pod=True)
        volumes = self.volumes(pod.get("volumes"), f"{at}.volumes")
        return self.container(doc, self.mapping(containers[0], f"{at}.containers[0]"), f"{at}.containers[0]",
                              volumes, user, bool(pod.get("hostNetwork")))

    def container(self, doc: Translated, body: dict[str, Any], at: str, volumes: dict[str, tuple[dict, str]],
                  pod_user: tuple[Any, Any], host_network: bool) -> dict[str, int]:
        self.only(body, at, _CONTAINER_FIELDS)
        if "image" not in body:
            raise self.error(at, "expected an image")
        doc.put("image", body["image"], f"{at}.image")
        for key in ("command", "args", "workingDir"):
            if key in body:
                doc.put(key, body[key], f"{at}.{key}")
        for key in ("envFrom", "volumeDevices", "lifecycle", "restartPolicy"):
            if key in body:
                raise self.error(f"{at}.{key}", "not supported by orchestr", key=True)
        env = {}
        for i, item in enumerate(body.get("env") or []):
            sub = f"{at}.env[{i}]"
            item = self.mapping(item, sub)
            if "valueFrom" in item:
                raise self.error(f"{sub}.valueFrom", "not supported: orchestr has no ConfigMaps, Secrets or field "
                                                     "references; give value", key=True)
            self.only(item, sub, {"name", "value"})
            if not isinstance(item.get("name"), str):
                raise self.error(sub, "expected a name")
            value = item.get("value", "")
            env[item["name"]] = value
        if env:
            doc.put("env", env, f"{at}.env")
        self.resources(doc, self.mapping(body.get("resources"), f"{at}.resources"), f"{at}.resources")
        user = self.security(doc, self.mapping(body.get("securityContext"), f"{at}.securityContext"),
                             f"{at}.securityContext", pod=False)
        uid, gid = user[0] if user[0] is not None else pod_user[0], user[1] if user[1] is not None else pod_user[1]
        if uid is not None:
            doc.put("user", f"{uid}:{gid}" if gid is not None else uid, f"{at}.securityContext")
        elif gid is not None:
            raise self.error(f"{at}.securityContext", "runAsGroup needs runAsUser: orchestr takes uid:gid")
        named: dict[str, int] = {}
        for i, port in enumerate(body.get("ports") or []):
            sub = f"{at}.ports[{i}]"
            port = self.mapping(port, sub)
            self.only(port, sub, {"containerPort", "hostPort", "protocol", "hostIP", "name"})
            if isinstance(port.get("name"), str):
                named[port["name"]] = port.get("containerPort")
            if "hostPort" in port and host_network:
                self.warn(f"{sub}.hostPort", "ignored: with hostNetwork the container listens on the host itself")
            elif "hostPort" in port:  # a containerPort alone publishes nothing, in Kubernetes too
                entry = {"containerPort": port.get("containerPort"), "hostPort": port["hostPort"],
                         "protocol": str(port.get("protocol", "TCP")).lower()}
                if "hostIP" in port:
                    entry["hostIP"] = port["hostIP"]
                doc.append("ports", entry, sub)
        for i, mount in enumerate(body.get("volumeMounts") or []):
            sub = f"{at}.volumeMounts[{i}]"
            mount = self.mapping(mount, sub)
            self.only(mount, sub, {"name", "mountPath", "readOnly", "subPath", "mountPropagation"})
            if "subPath" in mount:
                raise self.error(f"{sub}.subPath", "not supported: mount the whole volume", key=True)
            if mount.get("mountPropagation") not in (None, "None"):
                raise self.error(f"{sub}.mountPropagation", "not supported: mounts are private to the container")
            if mount.get("name") not in volumes:
                raise self.error(f"{sub}.name", f"no volume {show(mount.get('name'))} in the pod's volumes")
            volume, where = volumes[mount["name"]]
            entry = {**volume, "target": mount.get("mountPath")}
            if mount.get("readOnly") or entry.pop("readOnly", False):
                entry["readOnly"] = True
            doc.append("volumes", entry, sub)
        for key in sorted(_PROBES & set(body)):
            self.probe(doc, self.mapping(body[key], f"{at}.{key}"), f"{at}.{key}", key.removesuffix("Probe"), named)
        return named

    def probe(self, doc: Translated, body: dict[str, Any], at: str, kind: str, named: dict[str, int]) -> None:
        """A probe as one of the spec's probes, Kubernetes' defaults written out (they are not compose's)."""
        self.only(body, at, {"exec", "httpGet", "tcpSocket", "grpc", "periodSeconds", "timeoutSeconds",
                             "failureThreshold", "initialDelaySeconds", "successThreshold",
                             "terminationGracePeriodSeconds"},
                  {"terminationGracePeriodSeconds": "a restart stops the container within its own grace period"})
        check: dict[str, Any] = {"interval": body.get("periodSeconds", 10), "timeout": body.get("timeoutSeconds", 1),
                                 "retries": body.get("failureThreshold", 3),
                                 "startPeriod": body.get("initialDelaySeconds", 0)}
        keys = {"interval": "periodSeconds", "timeout": "timeoutSeconds", "retries": "failureThreshold",
                "startPeriod": "initialDelaySeconds"}
        if body.get("successThreshold", 1) != 1:
            self.warn(f"{at}.successThreshold", "ignored: one success makes the container ready")
        if "grpc" in body:
            raise self.error(f"{at}.grpc", "not supported: use exec, httpGet or tcpSocket", key=True)

        def port_of(value: Any, path: str) -> Any:
            if isinstance(value, str) and not value.isdigit():
                if value not in named:
                    raise self.error(path, f"no container port named {show(value)}")
                return named[value]
            return int(value) if isinstance(value, str) else value

        if "exec" in body:
            action = self.mapping(body["exec"], f"{at}.exec")
            self.only(action, f"{at}.exec", {"command"})
            check["exec"], keys["exec"] = action.get("command"), "exec.command"
        if "httpGet" in body:
            get = self.mapping(body["httpGet"], f"{at}.httpGet")
            self.only(get, f"{at}.httpGet", {"port", "path", "scheme", "host", "httpHeaders"},
                      {"httpHeaders": "checks send no headers of their own"})
            if get.get("scheme", "HTTP") != "HTTP" or "host" in get:
                key = "scheme" if "scheme" in get else "host"
                raise self.error(f"{at}.httpGet.{key}", "not supported: checks GET the container's own address "
                                                        "over plain HTTP")
            check["http"] = {"port": port_of(get.get("port"), f"{at}.httpGet.port"), "path": get.get("path", "/")}
            keys["http"] = "httpGet"
        if "tcpSocket" in body:
            sock = self.mapping(body["tcpSocket"], f"{at}.tcpSocket")
            self.only(sock, f"{at}.tcpSocket", {"port", "host"})
            if "host" in sock:
                raise self.error(f"{at}.tcpSocket.host", "not supported: checks connect to the container itself")
            check["tcp"] = {"port": port_of(sock.get("port"), f"{at}.tcpSocket.port")}
            keys["tcp"] = "tcpSocket"
        doc.put(f"probes.{kind}", check, at.removeprefix(doc.prefix))
        for field, key in keys.items():
            if field in check:
                doc.note(f"spec.probes.{kind}.{field}", f"{at.removeprefix(doc.prefix)}.{key}")

    def resources(self, doc: Translated, body: dict[str, Any], at: str) -> None:
        self.only(body, at, {"limits", "requests", "claims"}, {"requests": "requests are not reserved on one host"})
        if "claims" in body:
            raise self.error(f"{at}.claims", "not supported by orchestr", key=True)
        limits = self.mapping(body.get("limits"), f"{at}.limits")
        for key, value in limits.items():
            field = {"cpu": "cpus", "memory": "memory"}.get(key)
            if field is None:
                raise self.error(f"{at}.limits.{key}", "not supported: expected cpu or memory", key=True)
            doc.put(f"resources.{field}", value, f"{at}.limits.{key}")

    def security(self, doc: Translated, body: dict[str, Any], at: str, pod: bool) -> tuple[Any, Any]:
        known = {"runAsUser", "runAsGroup", "runAsNonRoot", "seccompProfile", "privileged", "readOnlyRootFilesystem",
                 "allowPrivilegeEscalation", "capabilities", "fsGroup", "supplementalGroups", "seLinuxOptions",
                 "procMount", "appArmorProfile", "sysctls", "fsGroupChangePolicy", "windowsOptions"}
        self.only(body, at, known)
        for key in ("sysctls", "seLinuxOptions", "windowsOptions", "fsGroup", "supplementalGroups", "appArmorProfile",
                    "procMount", "fsGroupChangePolicy"):
            if key in body:
                raise self.error(f"{at}.{key}", "not supported by orchestr", key=True)
        if body.get("privileged"):
            raise self.error(f"{at}.privileged", "not supported: orchestr runs no privileged containers")
        caps = self.mapping(body.get("capabilities"), f"{at}.capabilities")
        if caps.get("add"):
            raise self.error(f"{at}.capabilities.add", "not supported: containers get Docker's default capabilities")
        if caps.get("drop"):
            self.warn(f"{at}.capabilities.drop", "ignored: containers keep Docker's default capabilities")
        if body.get("runAsNonRoot") and body.get("runAsUser") in (None, 0):
            raise self.error(f"{at}.runAsNonRoot", "needs a runAsUser other than 0: orchestr does not look up the "
                                                   "image's user to check")
        if body.get("readOnlyRootFilesystem"):
            doc.put("readOnly", True, f"{at}.readOnlyRootFilesystem")
        profile = self.mapping(body.get("seccompProfile"), f"{at}.seccompProfile")
        if profile:
            kind = profile.get("type")
            if kind == "Unconfined":
                doc.put("seccomp", "unconfined", f"{at}.seccompProfile.type")
            elif kind != "RuntimeDefault":
                raise self.error(f"{at}.seccompProfile.type", f"expected RuntimeDefault or Unconfined, got {show(kind)}")
        return body.get("runAsUser"), body.get("runAsGroup")

    def volumes(self, value: Any, at: str) -> dict[str, tuple[dict, str]]:
        out: dict[str, tuple[dict, str]] = {}
        for i, item in enumerate(value or []):
            sub = f"{at}[{i}]"
            item = self.mapping(item, sub)
            name = item.get("name")
            kinds = [k for k in item if k != "name"]
            if not isinstance(name, str) or len(kinds) != 1:
                raise self.error(sub, "expected a name and one source: emptyDir, hostPath or persistentVolumeClaim")
            kind, body = kinds[0], self.mapping(item[kinds[0]], f"{sub}.{kinds[0]}")
            if kind == "emptyDir":
                self.only(body, f"{sub}.emptyDir", {"medium", "sizeLimit"})
                volume: dict[str, Any] = {"type": "tmpfs"}
                if "sizeLimit" in body:
                    volume["size"] = body["sizeLimit"]
            elif kind == "hostPath":
                self.only(body, f"{sub}.hostPath", {"path", "type"})
                if body.get("type") not in (None, "", "Directory", "File", "DirectoryOrCreate", "FileOrCreate"):
                    raise self.error(f"{sub}.hostPath.type", f"not supported: {show(body.get('type'))}; expected a "
                                                             "Directory or File")
                volume = {"type": "bind", "source": body.get("path")}
            elif kind == "persistentVolumeClaim":
                self.only(body, f"{sub}.persistentVolumeClaim", {"claimName", "readOnly"})
                volume = {"type": "volume", "source": body.get("claimName")}
                if body.get("readOnly"):
                    volume["readOnly"] = True
            else:
                raise self.error(f"{sub}.{kind}", f"not supported: a {kind} volume; orchestr mounts emptyDir (as "
                                                  "tmpfs), hostPath and persistentVolumeClaim (as a named volume)",
                                 key=True)
            out[name] = (volume, sub)
        return out

    # -- Service ------------------------------------------------------------------------------------------
    def service(self, data: dict[str, Any], workloads: list[_Workload]) -> None:
        self.only(data, "", {"apiVersion", "kind", "metadata", "spec", "status"})
        meta = self.mapping(data.get("metadata"), "metadata")
        spec = self.mapping(data.get("spec"), "spec")
        self.only(spec, "spec", {"selector", "ports", "type", "clusterIP", "clusterIPs", "sessionAffinity",
                                 "externalTrafficPolicy", "internalTrafficPolicy", "ipFamilies", "ipFamilyPolicy"},
                  {k: "a cluster's service routing" for k in ("clusterIP", "clusterIPs", "sessionAffinity",
                   "externalTrafficPolicy", "internalTrafficPolicy", "ipFamilies", "ipFamilyPolicy")})
        kind = spec.get("type", "ClusterIP")
        if kind not in ("ClusterIP", "NodePort", "LoadBalancer"):
            raise self.error("spec.type", f"expected ClusterIP, NodePort or LoadBalancer, got {show(kind)}")
        selector = self.mapping(spec.get("selector"), "spec.selector")
        if not selector:
            raise self.error("spec", "not supported: a Service without a selector; orchestr publishes the ports of "
                                     "the Pods or Deployments it selects")
        namespace = meta.get("namespace") or "default"
        chosen = [w for w in workloads if w.namespace == namespace
                  and all(w.labels.get(k) == v for k, v in selector.items())]
        if not chosen:
            raise self.error("spec.selector", f"selects no Pod or Deployment of namespace {namespace!r} in this file")
        name = meta.get("name")
        if kind == "ClusterIP":
            names = ", ".join(w.doc.metadata["name"] for w in chosen)
            if name not in [w.doc.metadata["name"] for w in chosen]:
                self.warn("metadata.name", f"a ClusterIP Service publishes nothing; its pods are reached in their "
                                           f"namespace by their own names ({names}), not as {show(name)}")
            return
        for i, port in enumerate(spec.get("ports") or []):
            sub = f"spec.ports[{i}]"
            port = self.mapping(port, sub)
            self.only(port, sub, {"port", "targetPort", "nodePort", "protocol", "name", "appProtocol"})
            for w in chosen:
                target = port.get("targetPort", port.get("port"))
                if isinstance(target, str):
                    if target not in w.named_ports:
                        raise self.error(f"{sub}.targetPort", f"no container port named {target!r} in "
                                                              f"{w.doc.metadata['name']}")
                    target = w.named_ports[target]
                entry: dict[str, Any] = {"containerPort": target,
                                         "protocol": str(port.get("protocol", "TCP")).lower()}
                host = port.get("nodePort") if kind == "NodePort" else port.get("port")
                if host is not None:
                    entry["hostPort"] = host
                w.doc.append("ports", entry, None)
                w.doc.origin[f"spec.ports[{len(w.doc.spec['ports']) - 1}]"] = sub
                w.doc.lines.values[f"spec.ports[{len(w.doc.spec['ports']) - 1}]"] = self.lines.find(sub, self.line)
