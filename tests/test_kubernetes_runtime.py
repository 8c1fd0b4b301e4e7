"""The kubernetes runtime, at the level of the requests it sends to an API server.

No Kubernetes API server can run on this machine (nor a kubelet, a scheduler or etcd), so these tests stop at the
request level and fake no cluster: the runtime's own HTTP client (lightkube's httpx2 client) is given its
transport hook, httpx2.MockTransport, which records each request (method, path, query, content type, body) and
answers it with a response of the shape the Kubernetes API reference gives (a 404 Status, an empty List, the
applied object echoed back, a PodList written from the reference's fields, not recorded from a cluster). What a
cluster does with what it is sent (scheduling, probes, rolling updates, the garbage collector) is not tested here.
The unreachable API server is a real one: a closed port on 127.0.0.1.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qs

import httpx2
import pytest

from orchestr import loads
from orchestr.errors import NotFound, RuntimeUnavailable, TerminalFailure
from orchestr.executor import execute
from orchestr.export.kubernetes import to_kubernetes
from orchestr.model import L_NAMESPACE, L_REPLICA, L_SERVICE, Health, State
from orchestr.planner import Kind, plan
from orchestr.plugins import runtimes
from orchestr_kubernetes import mapping
from orchestr_kubernetes.runtime import KubernetesRuntime

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).resolve().parent.parent
ORCHESTR = str(Path(sys.executable).parent / "orchestr")
APPLY = "application/apply-patch+yaml"
SERVER = "https://127.0.0.1:6443"  # never connected to: every request of these tests ends at the transport hook
LIST_KINDS = {"networkpolicies": "NetworkPolicyList", "services": "ServiceList", "deployments": "DeploymentList",
              "statefulsets": "StatefulSetList", "jobs": "JobList", "pods": "PodList", "namespaces": "NamespaceList"}

HEALTHY_WEB = """\
apiVersion: orchestr/v1
kind: Service
metadata: {name: web, namespace: shop, labels: {tier: front}}
spec:
  image: busybox:latest
  command: [httpd, -f, -p, "8080"]
  replicas: 2
  ports: [{containerPort: 8080, hostPort: 18080}]
  healthcheck: {http: {path: /, port: 8080}, interval: 5s}
  dependsOn: [db]
---
apiVersion: orchestr/v1
kind: Service
metadata: {name: db, namespace: shop}
spec:
  image: busybox:latest
  command: [sleep, "3600"]
  volumes: [{type: volume, source: data, target: /data}]
"""


def kubeconfig(path: Path, server: str = SERVER) -> Path:
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "test",
        "clusters": [{"name": "c", "cluster": {"server": server, "insecure-skip-tls-verify": True}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "test", "context": {"cluster": "c", "user": "u"}}],
    }))
    return path


@pytest.fixture
def config(tmp_path, monkeypatch) -> Path:
    """A kubeconfig naming an API server no test connects to; the service account's directory is absent here."""
    monkeypatch.setenv("HOME", str(tmp_path))
    path = kubeconfig(tmp_path / "kubeconfig")
    monkeypatch.setenv("KUBECONFIG", str(path))
    return path


class Server:
    """The transport hook's handler: records each request and answers as the API reference says an API server
    would, from what the test put in objects (by plural resource name)."""

    def __init__(self, objects: dict[str, list[dict]] | None = None, namespaces: set[str] = frozenset(),
                 status: int | None = None):
        self.objects = objects or {}
        self.namespaces = set(namespaces)
        self.status = status  # every request answered with this error Status, when given
        self.requests: list[tuple[str, str, dict[str, list[str]], str | None, object]] = []

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        body = json.loads(request.content) if request.content else None
        query = parse_qs(request.url.query.decode() if isinstance(request.url.query, bytes) else request.url.query)
        self.requests.append((request.method, request.url.path, query, request.headers.get("content-type"), body))
        if self.status is not None:
            return status(self.status, "Forbidden", 'deployments.apps "web" is forbidden: User "dev" cannot patch '
                                                    'resource "deployments" in API group "apps" in the namespace "shop"')
        parts = request.url.path.strip("/").split("/")
        if request.method == "GET" and parts[-2:-1] == ["namespaces"] and parts[-1] not in LIST_KINDS:
            name = parts[-1]
            if name in self.namespaces:
                return httpx2.Response(200, json={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
            return status(404, "NotFound", f'namespaces "{name}" not found')
        if request.method == "POST":
            self.namespaces.add(body["metadata"]["name"])
            return httpx2.Response(201, json=body)
        if request.method == "PATCH":
            return httpx2.Response(200, json=body)
        if request.method == "DELETE":
            return httpx2.Response(200, json={"apiVersion": "v1", "kind": "Status", "status": "Success"})
        plural = parts[-1]
        version = "/".join(parts[1:3]) if parts[0] == "apis" else parts[1]
        items = self.objects.get(plural, [])
        return httpx2.Response(200, json={"apiVersion": version, "kind": LIST_KINDS[plural],
                                          "metadata": {"resourceVersion": "7"}, "items": items})

    def sent(self, method: str) -> list[tuple[str, dict[str, list[str]], str | None, object]]:
        return [r[1:] for r in self.requests if r[0] == method]


def status(code: int, reason: str, message: str) -> httpx2.Response:
    return httpx2.Response(code, json={"apiVersion": "v1", "kind": "Status", "status": "Failure", "code": code,
                                       "reason": reason, "message": message})


def runtime(server: Server) -> KubernetesRuntime:
    return KubernetesRuntime(None, transport=httpx2.MockTransport(server))


async def deploy_all(rt: KubernetesRuntime, services) -> list:
    p = plan(services, [], default_runtime="kubernetes", service_runtimes={"kubernetes"})
    assert {a.kind for a in p.actions} == {Kind.DEPLOY}
    outcomes = await execute(p, {(s.namespace, s.name): s for s in services}, {"kubernetes": rt})
    assert [o.error for o in outcomes] == [None] * len(outcomes)
    return outcomes


def path_of(obj: dict) -> str:
    group, _, version = obj["apiVersion"].rpartition("/")
    base = f"/apis/{group}/{version}" if group else f"/api/{version}"
    plural = {"NetworkPolicy": "networkpolicies", "Service": "services", "Deployment": "deployments",
              "StatefulSet": "statefulsets", "Job": "jobs", "PersistentVolumeClaim": "persistentvolumeclaims"}
    return f"{base}/namespaces/{obj['metadata']['namespace']}/{plural[obj['kind']]}/{obj['metadata']['name']}"


# -- apply ---------------------------------------------------------------------------------------------------
async def test_apply_is_a_server_side_apply_of_exactly_what_export_writes(config):
    services = loads((ROOT / "specs" / "demo.yaml").read_text(), "demo.yaml") + loads(HEALTHY_WEB, "shop.yaml")
    server = Server()
    rt = runtime(server)
    await deploy_all(rt, services)
    patches = server.sent("PATCH")
    expected = []
    for s in services:  # the planner's order may differ from the files'; the objects of one service do not
        objects = [o for o in to_kubernetes([s]).objects if o["kind"] != "Namespace"]
        for o in objects:
            if o["kind"] in mapping.WORKLOADS:  # orchestr's bookkeeping, so a second apply sees no change
                # orchestr's labels of a replica that export does not write: spec hash, grace, dependencies...
                o["metadata"]["annotations"] = {k: v for k, v in s.container_spec(0).labels.items() if
                                                k.startswith("orchestr.") and k not in (L_NAMESPACE, L_SERVICE, L_REPLICA)}
                assert o["metadata"]["annotations"]["orchestr.spec-hash"] == s.spec_hash
        expected.append(objects)
    by_path = {p[0]: p for p in patches}
    # each namespace's policy comes with each of its services, the same each time; nothing else comes twice
    assert len(patches) == sum(len(objects) for objects in expected)
    assert set(by_path) == {path_of(o) for objects in expected for o in objects}
    for objects in expected:
        for obj in objects:
            path, query, content_type, body = by_path[path_of(obj)]
            assert query == {"fieldManager": ["orchestr"], "force": ["true"]}
            assert content_type == APPLY
            assert body == obj
    # every object of a service is applied, export's order kept (policies, claims, Services, workload)
    web = [p[0] for p in patches if p[3]["metadata"].get("labels", {}).get(L_SERVICE) == "web"
           and p[3]["metadata"]["namespace"] == "shop"]
    assert web == ["/apis/networking.k8s.io/v1/namespaces/shop/networkpolicies/web-published",
                   "/api/v1/namespaces/shop/services/web", "/api/v1/namespaces/shop/services/web-published",
                   "/apis/apps/v1/namespaces/shop/deployments/web"]
    await rt.close()


async def test_a_missing_namespace_is_created_labelled_as_orchestrs_and_an_existing_one_left_alone(config):
    services = loads(HEALTHY_WEB, "shop.yaml")
    server = Server()
    await deploy_all(runtime(server), services)
    created = server.sent("POST")
    assert created == [("/api/v1/namespaces", {"fieldManager": ["orchestr"]}, "application/json", {
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": "shop", "labels": {"app.kubernetes.io/managed-by": "orchestr", L_NAMESPACE: "shop"}}})]
    server = Server(namespaces={"shop"})
    await deploy_all(runtime(server), services)
    assert server.sent("POST") == []
    assert not any("/namespaces/shop" == p[0][len("/api/v1"):] for p in server.sent("PATCH"))


async def test_a_second_apply_of_the_same_spec_plans_nothing(config):
    services = loads(HEALTHY_WEB, "shop.yaml")
    server = Server()
    rt = runtime(server)
    await deploy_all(rt, services)
    # the API server keeps what was applied: the workloads come back from their lists as they were sent
    for method, path, query, _, body in server.requests:
        if method == "PATCH" and body["kind"] in mapping.WORKLOADS:
            server.objects.setdefault(path.split("/")[-2], []).append(body)
    deployed = await rt.deployments("shop")
    assert sorted((d.id, d.replicas, d.spec_hash) for d in deployed) == sorted(
        (f"shop/{s.name}", s.spec.replicas, s.spec_hash) for s in services)
    assert not plan(services, [], default_runtime="kubernetes", deployed=deployed, service_runtimes={"kubernetes"})
    lists = [(p, q) for p, q, _, _ in server.sent("GET") if p.endswith(("/deployments", "/statefulsets", "/jobs"))]
    assert lists[-3:] == [(f"/apis/{g}/namespaces/shop/{k}", {"labelSelector": [f"{L_NAMESPACE}=shop,{L_SERVICE}"]})
                          for g, k in (("apps/v1", "deployments"), ("apps/v1", "statefulsets"), ("batch/v1", "jobs"))]


async def test_what_an_earlier_apply_made_and_this_one_does_not_is_deleted(config):
    stale = {"metadata": {"name": "web-published", "namespace": "shop",
                          "labels": {L_NAMESPACE: "shop", L_SERVICE: "web"}}, "spec": {}}
    server = Server({"services": [stale, {"metadata": {"name": "web", "namespace": "shop",
                                                       "labels": {L_NAMESPACE: "shop", L_SERVICE: "web"}}}]})
    rt = runtime(server)
    unpublished = loads(HEALTHY_WEB.replace('  ports: [{containerPort: 8080, hostPort: 18080}]\n', ""))[0]
    assert not unpublished.spec.ports
    await rt.deploy(unpublished.container_spec(0), 2, service=unpublished)
    assert [(p, q) for p, q, _, _ in server.sent("DELETE")] == [
        ("/api/v1/namespaces/shop/services/web-published", {"propagationPolicy": ["Background"]})]


async def test_a_changed_job_replaces_the_old_one_whose_pod_template_cannot_change(config):
    job = loads(HEALTHY_WEB.replace("  replicas: 2\n", "  replicas: 2\n  restartPolicy: OnFailure\n"))[0]
    server = Server(namespaces={"shop"})
    path = "/apis/batch/v1/namespaces/shop/jobs/web"
    answers = {("PATCH", path): [status(422, "Invalid", 'Job.batch "web" is invalid: spec.template: Invalid value: '
                                                        'field is immutable')],
               ("GET", path): [httpx2.Response(200, json={"apiVersion": "batch/v1", "kind": "Job",
                                                          "metadata": {"name": "web", "namespace": "shop"}}),
                               status(404, "NotFound", 'jobs.batch "web" not found')]}

    def answer(request):
        queued = answers.get((request.method, request.url.path))
        if queued:
            server.requests.append((request.method, request.url.path, {}, None, None))
            return queued.pop(0)
        return server(request)

    rt = KubernetesRuntime(None, transport=httpx2.MockTransport(answer))
    await rt.deploy(job.container_spec(0), 2, "shop/web", service=job)
    assert [(m, p) for m, p, *_ in server.requests if p.startswith(path)] == [
        ("PATCH", path), ("DELETE", path), ("GET", path), ("GET", path), ("PATCH", path)]
    assert [q for m, p, q, *_ in server.requests if m == "DELETE"] == [{"propagationPolicy": ["Foreground"]}]
    assert server.requests[-1 - len(mapping.OWNED)][4]["spec"]["template"]["spec"]["restartPolicy"] == "OnFailure"
    # any other refusal is one line, and nothing is deleted for it
    server = Server(namespaces={"shop"})
    answers[("PATCH", "/apis/apps/v1/namespaces/shop/deployments/web")] = [
        status(422, "Invalid", 'Deployment.apps "web" is invalid: spec.replicas: Invalid value: -1')]
    web = loads(HEALTHY_WEB)[0]
    with pytest.raises(TerminalFailure) as e:
        await rt.deploy(web.container_spec(0), 2, service=web)
    assert str(e.value) == ('apply Deployment shop/web: the API server refused it: Deployment.apps "web" is '
                            'invalid: spec.replicas: Invalid value: -1')
    assert server.sent("DELETE") == []


# -- read back -----------------------------------------------------------------------------------------------
def pod(name: str, phase: str, *, owner: str = "ReplicaSet", created: str = "2026-12-01T10:00:00Z",
        probe: bool = True, **status) -> dict:
    container = {"name": "web", "image": "busybox:latest"}
    if probe:
        container["readinessProbe"] = {"httpGet": {"path": "/", "port": 8080}}
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "shop", "creationTimestamp": created,
                     "labels": {"app.kubernetes.io/managed-by": "orchestr", L_NAMESPACE: "shop", L_SERVICE: "web"},
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": owner, "name": "web-5d8f", "uid": "u",
                                          "controller": True}]},
        "spec": {"containers": [container]},
        "status": {"phase": phase, "podIP": "10.1.0.7", "containerStatuses": [{
            "name": "web", "image": "busybox:latest", "imageID": "", "ready": False, "restartCount": 0, **status}]},
    }


RUNNING = {"running": {"startedAt": "2026-12-01T10:00:05Z"}}


async def test_pods_are_read_back_as_containers_with_orchestrs_states(config):
    pods = [
        pod("web-5d8f-a", "Running", state=RUNNING, ready=True, restartCount=0),
        pod("web-5d8f-b", "Running", created="2026-12-01T10:00:01Z", state=RUNNING, ready=False, restartCount=0),
        pod("web-5d8f-c", "Running", created="2026-12-01T10:00:02Z", ready=False, restartCount=3,
            state={"waiting": {"reason": "CrashLoopBackOff"}},
            lastState={"terminated": {"exitCode": 2, "startedAt": "2026-12-01T10:01:00Z",
                                      "finishedAt": "2026-12-01T10:01:01Z"}}),
        pod("web-5d8f-d", "Pending", created="2026-12-01T10:00:03Z",
            state={"waiting": {"reason": "ContainerCreating"}}, ready=False, restartCount=0),
        pod("web-5d8f-e", "Succeeded", created="2026-12-01T10:00:04Z", probe=False, ready=False, restartCount=0,
            state={"terminated": {"exitCode": 0, "startedAt": "2026-12-01T10:00:05Z",
                                  "finishedAt": "2026-12-01T10:00:09Z"}}),
    ]
    server = Server({"pods": pods})
    found = await runtime(server).list("shop")
    assert [(c.id, c.name, c.state, c.health, c.exit_code, c.restarts) for c in found] == [
        ("shop/web-5d8f-a", "web-0", State.RUNNING, Health.HEALTHY, None, 0),
        ("shop/web-5d8f-b", "web-1", State.RUNNING, Health.STARTING, None, 0),
        ("shop/web-5d8f-c", "web-2", State.EXITED, None, 2, 3),
        ("shop/web-5d8f-d", "web-3", State.CREATED, None, None, 0),
        ("shop/web-5d8f-e", "web-4", State.EXITED, None, 0, 0),
    ]
    a = found[0]
    assert (a.namespace, a.runtime, a.image, a.ip, a.service, a.replica, a.started_at) == (
        "shop", "kubernetes", "busybox:latest", "10.1.0.7", "web", 0, "2026-12-01T10:00:05Z")
    assert found[4].finished_at == "2026-12-01T10:00:09Z"
    assert server.sent("GET") == [("/api/v1/namespaces/shop/pods",
                                   {"labelSelector": [f"{L_NAMESPACE}=shop,{L_SERVICE}"]}, None, None)]


def test_a_statefulsets_pods_and_an_indexed_jobs_are_numbered_as_kubernetes_numbers_them():
    late = pod("web-1", "Running", owner="StatefulSet", created="2026-12-01T09:00:00Z", state=RUNNING, ready=True)
    early = pod("web-0", "Running", owner="StatefulSet", created="2026-12-01T11:00:00Z", state=RUNNING, ready=True)
    job = pod("web-x7", "Running", owner="Job", state=RUNNING, ready=True)
    job["metadata"]["labels"][mapping.JOB_INDEX] = "4"
    assert [(c.id, c.name) for c in mapping.containers([late, early, job])] == [
        ("shop/web-1", "web-1"), ("shop/web-x7", "web-4"), ("shop/web-0", "web-0")]


async def test_logs_are_read_from_the_pods_main_container(config):
    server = Server({"pods": [pod("web-5d8f-a", "Running", state=RUNNING, ready=True)]})
    original = server.__call__

    def answer(request):
        if request.url.path.endswith("/log"):
            server.requests.append(("GET", request.url.path, parse_qs(request.url.query.decode()), None, None))
            return httpx2.Response(200, content=b"one\ntwo\n")
        return original(request)

    rt = KubernetesRuntime(None, transport=httpx2.MockTransport(answer))
    lines = [line.data async for line in rt.logs("shop/web-5d8f-a", tail=5)]
    assert lines == [b"one\n", b"two\n"]
    assert server.requests[-1][1:3] == ("/api/v1/namespaces/shop/pods/web-5d8f-a/log",
                                        {"tailLines": ["5"], "container": ["web"], "follow": ["false"],
                                         "timestamps": ["false"]})
    with pytest.raises(NotFound):
        await rt.inspect("shop/web-gone")


# -- delete --------------------------------------------------------------------------------------------------
async def test_delete_removes_only_what_carries_orchestrs_labels_of_that_service(config):
    def owned(name: str, service: str = "web") -> dict:
        return {"metadata": {"name": name, "namespace": "shop", "labels": {L_NAMESPACE: "shop", L_SERVICE: service}},
                "spec": {}}

    # what the API server answers to the label selector: the service's own objects
    server = Server({"networkpolicies": [owned("web-published")], "services": [owned("web"), owned("web-published")],
                     "deployments": [{**owned("web"), "spec": {"selector": {}, "template": {}}}]})
    rt = runtime(server)
    await rt.undeploy("shop/web", timeout=1)
    selector = {"labelSelector": [f"{L_NAMESPACE}=shop,{L_SERVICE}=web"]}
    lists = [(p, q) for p, q, _, _ in server.sent("GET")]
    assert lists == [
        ("/apis/networking.k8s.io/v1/namespaces/shop/networkpolicies", selector),
        ("/api/v1/namespaces/shop/services", selector),
        ("/apis/apps/v1/namespaces/shop/deployments", selector),
        ("/apis/apps/v1/namespaces/shop/statefulsets", selector),
        ("/apis/batch/v1/namespaces/shop/jobs", selector),
        ("/api/v1/namespaces/shop/pods", selector),  # until the service's pods are gone
    ]
    background = {"propagationPolicy": ["Background"]}
    assert [(p, q) for p, q, _, _ in server.sent("DELETE")] == [
        ("/apis/networking.k8s.io/v1/namespaces/shop/networkpolicies/web-published", background),
        ("/api/v1/namespaces/shop/services/web", background),
        ("/api/v1/namespaces/shop/services/web-published", background),
        ("/apis/apps/v1/namespaces/shop/deployments/web", background),
    ]
    assert server.sent("PATCH") == [] and server.sent("POST") == []  # nor the namespace, nor its claims


async def test_deleting_the_namespace_takes_its_policy_once_no_service_of_orchestr_is_left(config):
    policy = {"metadata": {"name": "orchestr-same-namespace", "namespace": "shop",
                           "labels": {"app.kubernetes.io/managed-by": "orchestr"}}, "spec": {"podSelector": {}}}
    server = Server({"networkpolicies": [policy]})
    await runtime(server).remove_network("shop")
    lists = [(p, q) for p, q, _, _ in server.sent("GET")]
    assert lists[-1] == ("/apis/networking.k8s.io/v1/namespaces/shop/networkpolicies",
                         {"labelSelector": [f"app.kubernetes.io/managed-by=orchestr,!{L_SERVICE}"]})
    assert [p for p, *_ in server.sent("DELETE")] == [
        "/apis/networking.k8s.io/v1/namespaces/shop/networkpolicies/orchestr-same-namespace"]
    # a namespace that still has a service of orchestr keeps it
    workload = {"metadata": {"name": "db", "namespace": "shop", "labels": {L_NAMESPACE: "shop", L_SERVICE: "db"}},
                "spec": {"selector": {}, "template": {}, "serviceName": "db"}}
    server = Server({"networkpolicies": [policy], "statefulsets": [workload]})
    await runtime(server).remove_network("shop")
    assert server.sent("DELETE") == []


# -- errors --------------------------------------------------------------------------------------------------
def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_no_configuration_an_unreachable_server_and_a_refusal_are_one_line_each(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KUBECONFIG", raising=False)
    with pytest.raises(TerminalFailure) as e:
        await KubernetesRuntime(None).deployments()
    assert str(e.value) == ("no Kubernetes cluster configured (Configuration file ~/.kube/config not found): set "
                            "KUBECONFIG, or write ~/.kube/config")
    port = closed_port()
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig(tmp_path / "kubeconfig", f"https://127.0.0.1:{port}")))
    with pytest.raises(RuntimeUnavailable) as e:
        await KubernetesRuntime(None).list()
    assert str(e.value).startswith(f"the Kubernetes API server at https://127.0.0.1:{port} cannot be reached to "
                                   f"list orchestr's pods (")
    assert "\n" not in str(e.value) and e.value.retryable
    server = Server(status=403)
    with pytest.raises(TerminalFailure) as e:
        await runtime(server).deploy(loads(HEALTHY_WEB)[1].container_spec(0), 1, service=loads(HEALTHY_WEB)[1])
    assert str(e.value) == (f"the Kubernetes API server at https://127.0.0.1:{port} refused to read namespace "
                            f"shop (403: deployments.apps \"web\" is forbidden: User \"dev\" cannot patch resource "
                            f"\"deployments\" in API group \"apps\" in the namespace \"shop\")")
    assert not e.value.retryable


@pytest.mark.parametrize("command", [["apply", "-f", "SPEC"], ["get"]])
def test_the_command_line_says_a_missing_configuration_and_an_unreachable_api_server_in_one_line(tmp_path, command):
    spec = tmp_path / "shop.yaml"
    spec.write_text(HEALTHY_WEB)
    argv = [ORCHESTR, *[str(spec) if a == "SPEC" else a for a in command], "--runtime", "kubernetes"]
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "ORCHESTR_STATE_DIR": str(tmp_path / "state"),
           "KUBECONFIG": str(tmp_path / "missing")}
    port = closed_port()
    for expected in (f"orchestr: no Kubernetes cluster configured (Configuration file {tmp_path}/missing not "
                     f"found): set KUBECONFIG, or write ~/.kube/config",
                     f"orchestr: the Kubernetes API server at https://127.0.0.1:{port} cannot be reached to "):
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60)
        assert proc.returncode != 0
        assert "Traceback" not in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert proc.stderr.startswith(expected), proc.stderr
        env["KUBECONFIG"] = str(kubeconfig(tmp_path / "kubeconfig", f"https://127.0.0.1:{port}"))


# -- what the runtime is -------------------------------------------------------------------------------------
def test_the_runtime_is_found_through_the_entry_point_group_and_says_what_it_does():
    info = runtimes()["kubernetes"]
    assert info.plugin == "orchestr_kubernetes"
    caps = KubernetesRuntime.capabilities
    assert caps.services and caps.restarts and caps.remove_network and not caps.pause and not caps.exec_tty and not caps.image_import
