"""Kubernetes manifests as input: Pods, Deployments and Services translated, the rest refused at file:line:field,
multi-document files, and manifests brought up on the native runtime."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from orchestr.errors import SpecError
from orchestr.spec import dump, load, loads

DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
spec:
  replicas: 1
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
        - name: web
          image: busybox:latest
          command: [httpd, -f, -p, "8080"]
          ports: [{name: http, containerPort: 8080}]
"""


def write(tmp_path: Path, *docs: str) -> Path:
    path = tmp_path / "manifests.yaml"
    path.write_text("---\n".join(textwrap.dedent(d) for d in docs))
    return path


def load_all(path: Path):
    warnings: list[str] = []
    services = load([path], warn=warnings.append)
    return {s.name: s for s in services}, [w.replace(str(path), "FILE") for w in warnings]


def error_of(tmp_path: Path, *docs: str) -> str:
    path = write(tmp_path, *docs)
    with pytest.raises(SpecError) as info:
        load_all(path)
    return str(info.value).replace(str(path), "FILE")


def test_a_deployment_a_pod_and_a_service_in_one_file(tmp_path):
    path = write(tmp_path, """\
        apiVersion: apps/v1
        kind: Deployment
        metadata: {name: web, namespace: shop, labels: {team: a}}
        spec:
          replicas: 3
          selector: {matchLabels: {app: web}}
          strategy: {type: Recreate}
          template:
            metadata: {labels: {app: web, tier: front}}
            spec:
              terminationGracePeriodSeconds: 5
              securityContext: {runAsUser: 1000, runAsGroup: 1001}
              nodeSelector: {disk: ssd}
              containers:
                - name: web
                  image: busybox:latest
                  command: [httpd]
                  args: [-f, -p, "8080"]
                  workingDir: /srv
                  ports: [{name: http, containerPort: 8080}]
                  env: [{name: MODE, value: prod}, {name: EMPTY}]
                  resources: {limits: {cpu: 500m, memory: 64Mi}, requests: {cpu: 100m}}
                  readinessProbe: {httpGet: {path: /, port: http}}
                  securityContext: {runAsUser: 33, allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}}
                  volumeMounts:
                    - {name: cache, mountPath: /cache}
                    - {name: static, mountPath: /srv, readOnly: true}
                    - {name: data, mountPath: /data}
              volumes:
                - {name: cache, emptyDir: {sizeLimit: 16Mi}}
                - {name: static, hostPath: {path: /etc, type: Directory}}
                - {name: data, persistentVolumeClaim: {claimName: web-data}}
        """, """\
        apiVersion: v1
        kind: Service
        metadata: {name: web-public, namespace: shop}
        spec:
          type: LoadBalancer
          selector: {app: db}
          ports: [{port: 8443, targetPort: 8443, protocol: UDP}]
        """, """\
        apiVersion: v1
        kind: Pod
        metadata: {name: db, namespace: shop, labels: {app: db}}
        spec:
          restartPolicy: Never
          containers:
            - name: db
              image: busybox:latest
              command: [sleep, "3600"]
              ports: [{containerPort: 5432, hostPort: 15432, hostIP: 127.0.0.1}]
              securityContext: {readOnlyRootFilesystem: true, seccompProfile: {type: Unconfined}}
        """, """\
        apiVersion: v1
        kind: Service
        metadata: {name: db, namespace: shop}
        spec: {selector: {app: db}, ports: [{port: 5432}]}
        """)
    services, warnings = load_all(path)
    assert list(services) == ["web", "db"]
    web, db = services["web"].spec, services["db"].spec
    assert services["web"].metadata.labels == {"app": "web", "tier": "front"} and services["web"].namespace == "shop"
    assert (web.replicas, web.command, web.args, web.working_dir) == (3, ("httpd",), ("-f", "-p", "8080"), "/srv")
    assert dict(web.env) == {"MODE": "prod", "EMPTY": ""} and web.user == "33:1001"
    assert (web.resources.cpus, web.resources.memory, web.stop_grace_period) == (0.5, 64 << 20, 5)
    assert [(v.type, v.source, v.target, v.read_only, v.size) for v in web.volumes] == [
        ("tmpfs", None, "/cache", False, 16 << 20), ("bind", "/etc", "/srv", True, None),
        ("volume", "web-data", "/data", False, None)]
    assert web.ports == ()  # a containerPort alone publishes nothing
    assert (db.restart_policy, db.network, db.read_only, db.seccomp) == ("Never", "bridge", True, "unconfined")
    assert [(p.host_ip, p.host_port, p.container_port, p.protocol) for p in db.ports] == [
        ("127.0.0.1", 15432, 5432, "tcp"), ("0.0.0.0", 8443, 8443, "udp")]
    assert web.update.strategy == "Recreate"  # the Deployment's strategy
    assert warnings == [
        "FILE:13: spec.template.spec.nodeSelector: ignored: a cluster's scheduling and accounts; orchestr runs on "
        "this host",
        "FILE:22: spec.template.spec.containers[0].resources.requests: ignored: requests are not reserved on one host",
        "FILE:24: spec.template.spec.containers[0].securityContext.capabilities.drop: ignored: containers keep "
        "Docker's default capabilities",
    ]
    # the db Service is a ClusterIP named as its pod: nothing to say or publish
    again = loads(dump(services.values()))
    assert [s.spec_hash for s in again] == [s.spec_hash for s in services.values()]


def test_a_node_port_service_publishes_the_named_target_port(tmp_path):
    services, warnings = load_all(write(tmp_path, DEPLOYMENT, """\
        apiVersion: v1
        kind: Service
        metadata: {name: front, namespace: shop}
        spec: {type: NodePort, selector: {app: web}, ports: [{port: 80, targetPort: http, nodePort: 30080}]}
        """, """\
        apiVersion: v1
        kind: Service
        metadata: {name: inside, namespace: shop}
        spec: {selector: {app: web}, ports: [{port: 80}]}
        """))
    assert [(p.container_port, p.host_port) for p in services["web"].spec.ports] == [(8080, 30080)]
    assert services["web"].spec.ports[0].mode == "ingress"  # balanced across the replicas, as a NodePort is
    assert warnings == ["FILE:27: metadata.name: a ClusterIP Service publishes nothing; its pods are reached in their "
                        "namespace by their own names (web), not as 'inside'"]


def test_host_network_publishes_nothing(tmp_path):
    services, warnings = load_all(write(tmp_path, DEPLOYMENT.replace(
        "      containers:", "      hostNetwork: true\n      containers:").replace(
        "containerPort: 8080}", "containerPort: 8080, hostPort: 8080}")))
    assert (services["web"].spec.network, services["web"].spec.ports) == ("host", ())
    assert warnings == ["FILE:19: spec.template.spec.containers[0].ports[0].hostPort: ignored: with hostNetwork the "
                        "container listens on the host itself"]


BROKEN = {
    "a kind orchestr does not read": (
        ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata: {a: b}\n",),
        "FILE:2: kind: 'ConfigMap' of apiVersion 'v1' is not supported: orchestr reads Pod (v1), Deployment (apps/v1) "
        "and Service (v1)"),
    "a second container": (
        (DEPLOYMENT + "        - name: sidecar\n          image: busybox\n",),
        "FILE:19: spec.template.spec.containers[1]: not supported: orchestr runs one container per service; give each "
        "its own Pod or Deployment"),
    "an unknown container field": (
        (DEPLOYMENT + "          imagePulPolicy: Always\n",),
        "FILE:19: spec.template.spec.containers[0].imagePulPolicy: unknown field, did you mean 'imagePullPolicy'?"),
    "a bad image, from orchestr's check": (
        (DEPLOYMENT.replace("busybox:latest", "Busy Box"),),
        "FILE:16: spec.template.spec.containers[0].image: expected an image reference like busybox:latest, got "
        "'Busy Box'"),
    "a bad memory limit, from orchestr's check": (
        (DEPLOYMENT + "          resources: {limits: {memory: lots}}\n",),
        "FILE:19: spec.template.spec.containers[0].resources.limits.memory: expected a quantity like 64Mi, got 'lots'"),
    "a gpu limit": (
        (DEPLOYMENT + "          resources: {limits: {nvidia.com/gpu: 1}}\n",),
        "FILE:19: spec.template.spec.containers[0].resources.limits.nvidia.com/gpu: not supported: expected cpu or "
        "memory"),
    "env from a secret": (
        (DEPLOYMENT + "          env: [{name: A, valueFrom: {secretKeyRef: {name: s, key: k}}}]\n",),
        "FILE:19: spec.template.spec.containers[0].env[0].valueFrom: not supported: orchestr has no ConfigMaps, "
        "Secrets or field references; give value"),
    "a configMap volume": (
        (DEPLOYMENT + "      volumes: [{name: c, configMap: {name: c}}]\n",),
        "FILE:19: spec.template.spec.volumes[0].configMap: not supported: a configMap volume; orchestr mounts emptyDir "
        "(as tmpfs), hostPath and persistentVolumeClaim (as a named volume)"),
    "a mount of no volume": (
        (DEPLOYMENT + "          volumeMounts: [{name: nope, mountPath: /x}]\n",),
        "FILE:19: spec.template.spec.containers[0].volumeMounts[0].name: no volume 'nope' in the pod's volumes"),
    "privileged": (
        (DEPLOYMENT + "          securityContext: {privileged: true}\n",),
        "FILE:19: spec.template.spec.containers[0].securityContext.privileged: not supported: orchestr runs no "
        "privileged containers"),
    "a selector that misses the template": (
        (DEPLOYMENT.replace("matchLabels: {app: web}", "matchLabels: {app: other}"),),
        "FILE:9: spec.selector: the selector does not match the template's labels"),
    "a probe's threshold, from orchestr's check": (
        (DEPLOYMENT + "          livenessProbe: {tcpSocket: {port: 8080}, failureThreshold: 0}\n",),
        "FILE:19: spec.template.spec.containers[0].livenessProbe.failureThreshold: expected an integer >= 1, got 0"),
    "a grpc probe": (
        (DEPLOYMENT + "          readinessProbe: {grpc: {port: 8080}}\n",),
        "FILE:19: spec.template.spec.containers[0].readinessProbe.grpc: not supported: use exec, httpGet or "
        "tcpSocket"),
    "a probe of a port no container port names": (
        (DEPLOYMENT + "          startupProbe: {httpGet: {port: admin}}\n",),
        "FILE:19: spec.template.spec.containers[0].startupProbe.httpGet.port: no container port named 'admin'"),
    "a bad restart policy": (
        (DEPLOYMENT.replace("      containers:", "      restartPolicy: Sometimes\n      containers:"),),
        "FILE:14: spec.template.spec.restartPolicy: expected Always, OnFailure or Never, got 'Sometimes'"),
    "a name that is no DNS label, from orchestr's check": (
        (DEPLOYMENT.replace("name: web\n  namespace", "name: web.v1\n  namespace"),),
        "FILE:4: metadata.name: expected a DNS label (lowercase letters, digits and '-', at most 63, starting and "
        "ending with a letter or digit), got 'web.v1'"),
    "a service selecting nothing": (
        (DEPLOYMENT, "apiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: shop}\n"
                     "spec: {type: NodePort, selector: {app: db}, ports: [{port: 80}]}\n"),
        "FILE:23: spec.selector: selects no Pod or Deployment of namespace 'shop' in this file"),
    "a service port naming no container port": (
        (DEPLOYMENT, "apiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: shop}\n"
                     "spec:\n  type: NodePort\n  selector: {app: web}\n  ports:\n  - {port: 80, targetPort: https}\n"),
        "FILE:27: spec.ports[0].targetPort: no container port named 'https' in web"),
    "an ExternalName service": (
        (DEPLOYMENT, "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {type: ExternalName}\n"),
        "FILE:23: spec.type: expected ClusterIP, NodePort or LoadBalancer, got 'ExternalName'"),
}


@pytest.mark.parametrize("case", BROKEN)
def test_broken_manifests_give_one_line_at_file_line_and_field(tmp_path, case):
    docs, expected = BROKEN[case]
    assert error_of(tmp_path, *docs) == expected


native = pytest.mark.skipif(os.geteuid() != 0, reason="the native runtime needs root")


@native
def test_manifests_come_up_on_the_native_runtime(namespace, state_dir, busybox_archive, tmp_path):
    from test_compose import fetch, free_port
    from test_native_cli import assert_nothing_left, get_json, orc

    from conftest import TEST_IMAGE

    port = free_port()
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "index.html").write_text("hello from a Deployment\n")
    path = write(tmp_path, f"""\
        apiVersion: apps/v1
        kind: Deployment
        metadata: {{name: web, namespace: {namespace}}}
        spec:
          replicas: 1
          selector: {{matchLabels: {{app: web}}}}
          template:
            metadata: {{labels: {{app: web}}}}
            spec:
              terminationGracePeriodSeconds: 1
              containers:
                - name: web
                  image: {TEST_IMAGE}
                  command: [httpd, -f, -p, "8080", -h, /www]
                  ports: [{{name: http, containerPort: 8080}}]
                  resources: {{limits: {{memory: 32Mi}}}}
                  volumeMounts: [{{name: www, mountPath: /www, readOnly: true}}]
              volumes: [{{name: www, hostPath: {{path: {tmp_path / "www"}}}}}]
        """, f"""\
        apiVersion: v1
        kind: Service
        metadata: {{name: web-public, namespace: {namespace}}}
        spec:
          type: NodePort
          selector: {{app: web}}
          ports: [{{port: 80, targetPort: http, nodePort: {port}}}]
        """, f"""\
        apiVersion: v1
        kind: Pod
        metadata: {{name: worker, namespace: {namespace}}}
        spec:
          terminationGracePeriodSeconds: 1
          containers:
            - name: worker
              image: {TEST_IMAGE}
              command: [sh, -c, "wget -q -O- http://web:8080/index.html; exec sleep 3600"]
        """)
    orc("images", "import", str(busybox_archive), state_dir=state_dir, check=True)
    try:
        out = orc("apply", "-f", str(path), state_dir=state_dir, check=True).stdout
        assert "2 done, 0 failed" in out
        assert sorted((c["name"], c["state"]) for c in get_json(namespace, state_dir)) == \
            [("web-0", "running"), ("worker-0", "running")]
        assert fetch(f"http://127.0.0.1:{port}/index.html") == "hello from a Deployment\n"
        assert "nothing to do" in orc("apply", "-f", str(path), state_dir=state_dir, check=True).stdout
        orc("delete", "-f", str(path), state_dir=state_dir, check=True)
        assert get_json(namespace, state_dir) == []
    finally:
        assert_nothing_left(namespace, state_dir)
