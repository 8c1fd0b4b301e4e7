"""`orchestr export --format kubernetes`: every object it writes passes the OpenAPI schemas of a current Kubernetes
release (kubernetes-validate's, shipped with the package, so offline), for the example specs, every spec the tests
write inline, a set of rich specs that use every field, and generated ones; plus the rules of the API server that
a schema cannot say (names, label values, port names, volumes a mount refers to)."""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import ROOT
from orchestr.errors import SpecError
from orchestr.export.kubernetes import to_kubernetes
from orchestr.spec import loads
from orchestr.spec.models import ServiceSpec

kubernetes_validate = pytest.importorskip("kubernetes_validate")  # the test extra has it: see pyproject.toml

VERSION = kubernetes_validate.latest_version()
ORCHESTR = str(Path(sys.executable).parent / "orchestr")
DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
DNS_1035 = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")
LABEL = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?")
PORT_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


def check(objects: list[dict]) -> None:
    """Every object against its kind's schema (strict: no field the API does not know), and the API server's
    own rules that a schema cannot express."""
    assert objects
    for obj in objects:
        try:
            kubernetes_validate.validate(obj, VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{obj['kind']} {obj['metadata']['name']}: {e.caught.message} at "
                        f"{'/'.join(map(str, e.caught.absolute_path))}", pytrace=False)
        server_rules(obj)
    keys = [(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in objects]
    assert len(keys) == len(set(keys)), "an object is written twice"


def server_rules(obj: dict) -> None:
    meta = obj["metadata"]
    assert DNS_LABEL.fullmatch(meta["name"]), meta["name"]
    for key, value in meta.get("labels", {}).items():
        assert LABEL.fullmatch(key.rpartition("/")[2]) and LABEL.fullmatch(value), (key, value)
    kind, spec = obj["kind"], obj.get("spec", {})
    if kind == "Service":
        assert DNS_1035.fullmatch(meta["name"]), meta["name"]
        names = [p.get("name") for p in spec.get("ports", [])]
        if len(names) > 1:
            assert all(n and len(n) <= 15 and PORT_NAME.fullmatch(n) and re.search("[a-z]", n) for n in names)
            assert len(set(names)) == len(names)
        assert spec.get("clusterIP") == "None" or spec.get("ports"), "a Service with an address needs ports"
    if kind in ("Deployment", "StatefulSet", "Job"):
        template = spec["template"]
        if kind != "Job":
            selector = spec["selector"]["matchLabels"]
            assert selector.items() <= template["metadata"]["labels"].items(), "the selector misses its pods"
        pod = template["spec"]
        policy = pod["restartPolicy"]
        assert policy == "Always" if kind != "Job" else policy in ("OnFailure", "Never")
        containers = pod.get("initContainers", []) + pod["containers"]
        assert len({c["name"] for c in containers}) == len(containers)
        volumes = {v["name"] for v in pod.get("volumes", [])}
        volumes |= {t["metadata"]["name"] for t in spec.get("volumeClaimTemplates", [])}
        assert len(volumes) == len(pod.get("volumes", [])) + len(spec.get("volumeClaimTemplates", []))
        for c in containers:
            assert DNS_LABEL.fullmatch(c["name"])
            for m in c.get("volumeMounts", []):
                assert m["name"] in volumes, f"{c['name']} mounts {m['name']}, which the pod does not have"
            for p in c.get("ports", []):
                assert 1 <= p["containerPort"] <= 65535
        if kind == "Job":
            assert spec["completionMode"] == "Indexed" and spec["completions"] == spec["parallelism"]


def export(text: str, **options) -> tuple[list[dict], list[str]]:
    manifests = to_kubernetes(loads(text, "t.yaml", base_dir=Path("/srv/app")), **options)
    check(manifests.objects)
    assert list(yaml.safe_load_all(manifests.dump())) == manifests.objects
    return manifests.objects, [str(w) for w in manifests.warnings]


def find(objects: list[dict], kind: str, name: str) -> dict:
    (obj,) = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return obj


def container(objects: list[dict], kind: str, name: str) -> dict:
    return find(objects, kind, name)["spec"]["template"]["spec"]["containers"][0]


def doc(name: str, body: str = "", namespace: str = "shop") -> str:
    return (f"apiVersion: orchestr/v1\nkind: Service\nmetadata: {{name: {name}, namespace: {namespace}}}\n"
            f"spec:\n  image: busybox:latest\n{body}")


# -- the example specs and every spec the tests write ----------------------------------------------------
@pytest.mark.parametrize("path", sorted((ROOT / "specs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_spec_exports_to_valid_objects(path):
    from orchestr.spec import load

    manifests = to_kubernetes(load([path]))
    check(manifests.objects)
    kinds = {o["kind"] for o in manifests.objects}
    assert {"Namespace", "NetworkPolicy"} <= kinds and kinds & {"Deployment", "StatefulSet", "Job"}


def _test_specs() -> list[tuple[str, str]]:
    """Every spec the test modules hold as text that loads: string constants, and sums and calls of their spec
    builders (doc, service) over constants, evaluated in their module."""
    found: dict[str, str] = {}
    sys.path.insert(0, str(ROOT / "tests"))
    for path in sorted((ROOT / "tests").glob("test_*.py")):
        if path.name == Path(__file__).name:  # its own are the rich specs below, and the bad ones
            continue
        if "apiVersion: orchestr/v1" not in path.read_text() and "doc(" not in path.read_text():
            continue
        module = importlib.import_module(path.stem)
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.expr) or not _foldable(node, vars(module)):
                continue
            try:
                text = eval(compile(ast.Expression(node), str(path), "eval"), vars(module))  # noqa: S307
            except Exception:  # noqa: BLE001 - a builder refusing odd constants is no spec
                continue
            if isinstance(text, str) and "apiVersion: orchestr/v1" in text:
                try:
                    loads(text, base_dir=Path("/srv/app"))
                except SpecError:
                    continue  # the tests of bad input
                found.setdefault(text, f"{path.name}:{node.lineno}")
    return [(where, text) for text, where in found.items()]


def _foldable(node: ast.expr, names: dict) -> bool:
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _foldable(node.left, names) and _foldable(node.right, names)
    if isinstance(node, ast.Name):
        return isinstance(names.get(node.id), str)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("doc", "service"):
        return all(_foldable(a, names) for a in [*node.args, *(k.value for k in node.keywords)]) or \
            all(isinstance(a, ast.Constant) for a in [*node.args, *(k.value for k in node.keywords)])
    return False


TEST_SPECS = _test_specs()


def test_the_tests_hold_specs_to_export():
    assert len(TEST_SPECS) >= 20, TEST_SPECS  # the walk finds them: a broken walk would leave the next test empty
    assert any("volumes" in text and "ports" in text for _, text in TEST_SPECS)


@pytest.mark.parametrize("text", [t for _, t in TEST_SPECS], ids=[w for w, _ in TEST_SPECS])
def test_every_spec_of_the_tests_exports_to_valid_objects(text):
    export(text)


# -- rich specs: every field, and every value that changes the objects ----------------------------------
RICH = {
    "everything": doc("web", """\
  runtime: docker
  command: [sh, -c, "echo $HOME $(id -u) $$; exec httpd -f -p 8080"]
  args: [-v, "$(NOT_EXPANDED)"]
  env: {PORT: 8080, RATIO: 0.5, PRICE: "$5 $(PORT) $$"}
  workingDir: /srv
  user: "1000:2000"
  replicas: 1
  resources: {cpus: 1500m, memory: 1536Mi, pids: 100}
  restartPolicy: Always
  dependsOn: [db, cache]
  stopGracePeriod: 1m30.5s
  volumes:
    - {type: bind, source: data, target: /data, readOnly: true}
    - {type: bind, source: /, target: /host, readOnly: true}
    - {type: bind, source: /var/run, target: /run/host, allowHostRoot: true}
    - {type: tmpfs, target: /tmp, size: 1Mi}
    - {type: tmpfs, target: /scratch}
  ports:
    - {containerPort: 8080, hostPort: 18080, hostIP: 127.0.0.1}
    - {containerPort: 8443, hostPort: 443}
    - {containerPort: 53, protocol: udp}
    - {containerPort: 53, protocol: tcp, hostPort: 5353, hostIP: 10.0.0.5}
  network: bridge
  paused: true
  init: true
  readOnly: true
  seccomp: unconfined
  healthcheck: {http: {port: 8080, path: /healthz, status: 200-299}, interval: 5s, timeout: 1500ms, startPeriod: 3s}
  update: {maxSurge: 1, maxUnavailable: 0, minReadySeconds: 2s, progressDeadline: 1m}
""", "shop").replace("metadata: {name: web, namespace: shop}",
                     "metadata: {name: web, namespace: shop, labels: {tier: front, example.com/team: a-b.c_d, "
                     "empty: ''}}") + "---\n" + doc("db", "  volumes: [{type: volume, source: data, target: /d}]\n")
    + "---\n" + doc("cache", "  network: host\n"),
    "stateful, shared volume": doc("db", """\
  replicas: 2
  volumes:
    - {type: volume, source: data, target: /data}
    - {type: volume, source: data, target: /again, readOnly: true}
    - {type: volume, source: tmp-1, target: /named-like-a-tmpfs}
    - {type: tmpfs, target: /tmp}
  probes:
    startup: {tcp: {port: 5432}, interval: 1s, retries: 30}
    readiness: {exec: [pg_isready], interval: 2s}
    liveness: {tcp: {port: 5432}}
""") + "---\n" + doc("backup", """\
  restartPolicy: OnFailure
  volumes: [{type: volume, source: data, target: /data, readOnly: true}]
""") + "---\n" + doc("restore", """\
  restartPolicy: Never
  volumes: [{type: volume, source: data, target: /data}]
"""),
    "jobs and users": doc("once", "  restartPolicy: Never\n  user: nobody\n  args: [id]\n  replicas: 0\n")
    + "---\n" + doc("retry", "  restartPolicy: OnFailure\n  user: app:staff\n  command: ['false']\n  replicas: 4\n")
    + "---\n" + doc("root", "  user: root:root\n  dependsOn: [{name: once, condition: completed}, sealed]\n")
    + "---\n" + doc("sealed", "  network: none\n  user: 1000:staff\n"),
    "default namespace, digits": doc("a1", "  ports: [{containerPort: 1}, {containerPort: 65535, hostPort: 65535}]\n",
                                     "default"),
}


@pytest.mark.parametrize("text", RICH.values(), ids=RICH.keys())
def test_rich_specs_export_to_valid_objects(text):
    export(text)


def test_the_rich_specs_use_every_field_of_a_service():
    used: set[str] = set()
    for text in RICH.values():
        for s in loads(text, base_dir=Path("/srv/app")):
            used |= {name for name in ServiceSpec.model_fields if name in s.spec.model_fields_set}
            used |= {f"labels:{bool(s.metadata.labels)}"}
    assert set(ServiceSpec.model_fields) <= used, set(ServiceSpec.model_fields) - used
    assert "labels:True" in used


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    replicas=st.integers(0, 5),
    policy=st.sampled_from(["Always", "OnFailure", "Never"]),
    network=st.sampled_from(["bridge", "host", "none"]),
    volumes=st.lists(st.sampled_from([
        "{type: volume, source: v1, target: /a}", "{type: volume, source: v2, target: /b, readOnly: true}",
        "{type: bind, source: /srv, target: /c}", "{type: tmpfs, target: /d, size: 3Mi}",
        "{type: volume, source: host-4, target: /e}"]), unique=True),
    ports=st.lists(st.tuples(st.integers(1, 65535), st.sampled_from(["tcp", "udp"]),
                             st.sampled_from(["", "127.0.0.1", "0.0.0.0", "::1", "192.0.2.1"])),
                   max_size=4, unique_by=lambda p: (p[0], p[1])),
    user=st.sampled_from([None, "0", "1000", "1000:1000", "www-data", "app:staff", "root"]),
    grace=st.sampled_from(["0", "500ms", "10s", "2m"]),
    cpus=st.sampled_from([None, "10m", "0.333", "1", "2"]),
    depends=st.booleans(),
)
def test_generated_specs_export_to_valid_objects(replicas, policy, network, volumes, ports, user, grace, cpus,
                                                 depends):
    body = f"  replicas: {replicas}\n  restartPolicy: {policy}\n  network: {network}\n  stopGracePeriod: {grace}\n"
    if volumes:
        body += f"  volumes: [{', '.join(volumes)}]\n"
    if ports and network == "bridge":
        items = [f"{{containerPort: {p}, protocol: {proto}" + (f", hostIP: '{ip}'" if ip else "") + "}"
                 for p, proto, ip in ports]
        body += f"  ports: [{', '.join(items)}]\n"
    if user:
        body += f"  user: '{user}'\n"
    if cpus:
        body += f"  resources: {{cpus: '{cpus}', memory: 7Mi}}\n"
    if depends:
        body += "  dependsOn: [dep]\n"
    export(doc("gen", body) + "---\n" + doc("dep", f"  network: {network}\n"))


# -- what maps to what --------------------------------------------------------------------------------------
def test_a_service_becomes_a_deployment_and_a_headless_service_of_its_name():
    objects, warnings = export(doc("web", "  replicas: 2\n  ports: [{containerPort: 8080}]\n"
                                          "  resources: {cpus: 0.5, memory: 64Mi}\n  stopGracePeriod: 2500ms\n"))
    assert [(o["kind"], o["metadata"]["name"]) for o in objects] == [
        ("Namespace", "shop"), ("NetworkPolicy", "orchestr-same-namespace"), ("NetworkPolicy", "web-published"),
        ("Service", "web"), ("Service", "web-published"), ("Deployment", "web")]
    deployment = find(objects, "Deployment", "web")
    assert deployment["spec"]["replicas"] == 2
    pod = deployment["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 3
    assert pod["automountServiceAccountToken"] is False and pod["enableServiceLinks"] is False
    c = pod["containers"][0]
    assert c["resources"] == {"limits": {"cpu": "500m", "memory": "64Mi"}}
    assert c["securityContext"] == {"allowPrivilegeEscalation": False, "seccompProfile": {"type": "RuntimeDefault"}}
    headless = find(objects, "Service", "web")["spec"]
    assert headless["clusterIP"] == "None" and headless["selector"] == {"orchestr.service": "web"}
    published = find(objects, "Service", "web-published")["spec"]
    assert published["type"] == "LoadBalancer"
    assert published["ports"] == [{"name": "tcp-8080", "port": 8080, "targetPort": 8080, "protocol": "TCP"}]
    assert warnings == []


def test_published_ports_keep_their_host_port_and_loopback_ones_stay_in_the_cluster():
    objects, warnings = export(doc("web", "  ports:\n"
                                          "    - {containerPort: 80, hostPort: 18080}\n"
                                          "    - {containerPort: 81, hostPort: 18081, hostIP: 127.0.0.1}\n"
                                          "    - {containerPort: 82, protocol: udp, hostIP: 192.0.2.7}\n"))
    published = find(objects, "Service", "web-published")["spec"]["ports"]
    assert [(p["port"], p["targetPort"], p["protocol"]) for p in published] == [(18080, 80, "TCP"), (82, 82, "UDP")]
    assert [p["port"] for p in find(objects, "Service", "web")["spec"]["ports"]] == [80, 81, 82]
    policy = find(objects, "NetworkPolicy", "web-published")["spec"]
    assert policy["ingress"] == [{"ports": [{"port": 80, "protocol": "TCP"}, {"port": 82, "protocol": "UDP"}]}]
    assert warnings == ["t.yaml:9: spec.ports[2].hostIP: a Service publishes on every address the cluster gives "
                        "it, not on 192.0.2.7 alone"]
    objects, _ = export(doc("web", "  ports: [{containerPort: 80, hostPort: 18080, hostIP: 127.0.0.1}]\n"))
    assert not [o for o in objects if o["metadata"]["name"] == "web-published"]


def test_named_volumes_make_a_statefulset_with_a_claim_per_replica():
    objects, warnings = export(doc("db", "  replicas: 2\n  volumes: [{type: volume, source: data, target: /d}]\n"),
                               volume_size="5Gi")
    sts = find(objects, "StatefulSet", "db")["spec"]
    assert sts["serviceName"] == "db" and sts["podManagementPolicy"] == "Parallel"
    assert sts["volumeClaimTemplates"] == [{"metadata": {"name": "data"}, "spec": {
        "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "5Gi"}}}}]
    assert sts["template"]["spec"]["containers"][0]["volumeMounts"] == [{"mountPath": "/d", "name": "data"}]
    assert warnings == ["t.yaml:7: spec.volumes[0]: named volume 'data' becomes a claim per replica (a StatefulSet's "
                        "volumeClaimTemplates): the replicas no longer share its data"]


def test_restart_policies_other_than_always_make_indexed_jobs_whose_pods_share_a_claim():
    objects, _ = export(doc("once", "  restartPolicy: Never\n  replicas: 3\n"
                                    "  volumes: [{type: volume, source: out, target: /out}]\n")
                        + "---\n" + doc("retry", "  restartPolicy: OnFailure\n"
                                                 "  volumes: [{type: volume, source: out, target: /out}]\n"))
    once, retry = find(objects, "Job", "once")["spec"], find(objects, "Job", "retry")["spec"]
    assert (once["completions"], once["parallelism"], once["backoffLimit"]) == (3, 3, 0)
    assert "backoffLimit" not in retry  # Kubernetes' default: 6 retries
    assert once["template"]["spec"]["restartPolicy"] == "Never"
    assert retry["template"]["spec"]["restartPolicy"] == "OnFailure"
    (claim,) = [o for o in objects if o["kind"] == "PersistentVolumeClaim"]
    assert claim["metadata"]["name"] == "out"
    assert once["template"]["spec"]["volumes"] == [{"name": "out", "persistentVolumeClaim": {"claimName": "out"}}]


def test_depends_on_waits_in_an_init_container_until_the_dependency_resolves():
    objects, warnings = export(doc("web", "  dependsOn: [db, sealed]\n") + "---\n" + doc("db") + "---\n"
                               + doc("sealed", "  network: none\n"), wait_image="registry.local/busybox:1",
                               cluster_domain="k8s.example")
    (wait,) = find(objects, "Deployment", "web")["spec"]["template"]["spec"]["initContainers"]
    assert wait["name"] == "wait-db" and wait["image"] == "registry.local/busybox:1"
    assert "nslookup db.shop.svc.k8s.example" in wait["command"][2]
    assert wait["securityContext"]["runAsNonRoot"] is True
    assert warnings == ["t.yaml:6: spec.dependsOn[1]: 'sealed' has network none, so no Service names it: nothing "
                        "waits for it"]
    sealed = find(objects, "NetworkPolicy", "sealed")["spec"]
    assert sealed == {"podSelector": {"matchLabels": {"orchestr.service": "sealed"}},
                      "policyTypes": ["Ingress", "Egress"]}
    assert not [o for o in objects if o["kind"] == "Service" and o["metadata"]["name"] == "sealed"]


def test_commands_and_env_reach_the_container_as_written():
    objects, _ = export(doc("web", """\
  command: [sh, -c, "echo $(date) $$ $HOME $"]
  env: {A: "$(B)", B: "$$x"}
"""))
    c = container(objects, "Deployment", "web")
    # Kubernetes turns $$ into $ and expands $(NAME): escaped, each comes out as written
    assert c["command"] == ["sh", "-c", "echo $$(date) $$$ $HOME $"]
    assert c["env"] == [{"name": "A", "value": "$$(B)"}, {"name": "B", "value": "$$$x"}]
    assert [expand(a) for a in c["command"]] == ["sh", "-c", "echo $(date) $$ $HOME $"]
    assert [expand(e["value"]) for e in c["env"]] == ["$(B)", "$$x"]


@given(st.text(alphabet="$()ab ", max_size=12))
def test_any_text_survives_kubernetes_expansion(text):
    from orchestr.export.kubernetes import _literal

    assert expand(_literal(text), {"a": "EXPANDED", "b": "EXPANDED"}) == text


@settings(max_examples=300)
@given(st.lists(st.one_of(st.text(), st.text(alphabet="ab \t\n#:-'\"\\|>{}[]&*!%@`,?yYnNoO01.~"), st.integers(),
                          st.booleans()), max_size=4))
def test_the_yaml_written_reads_back_as_the_objects(values):
    from orchestr.export.kubernetes import Manifests

    objects = [{"metadata": {"name": "x", "labels": {"k": v for v in values[:1]}},
                "spec": {"list": values, "maps": [{"a": v, "b": [v]} for v in values], "empty": {}, "none": []}}]
    assert list(yaml.safe_load_all(Manifests(objects).dump())) == objects


def expand(text: str, env: dict[str, str] | None = None) -> str:
    """What Kubernetes makes of a command, argument or env value (its expansion package, as documented): $$ is $,
    $(NAME) is NAME's value when there is one, anything else stays."""
    env = env or {}
    out, i = [], 0
    while i < len(text):
        if text[i] == "$" and i + 1 < len(text):
            nxt = text[i + 1]
            if nxt == "$":
                out.append("$")
                i += 2
                continue
            if nxt == "(" and (end := text.find(")", i + 2)) != -1:
                name = text[i + 2:end]
                out.append(env.get(name, f"$({name})"))
                i = end + 1
                continue
        out.append(text[i])
        i += 1
    return "".join(out)


def test_users_map_to_numeric_ids_and_names_to_run_as_non_root():
    objects, warnings = export(doc("a", "  user: '1000:2000'\n  readOnly: true\n") + "---\n"
                               + doc("b", "  user: www-data\n") + "---\n" + doc("c", "  user: '0:staff'\n"))
    assert container(objects, "Deployment", "a")["securityContext"] == {
        "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "runAsUser": 1000, "runAsGroup": 2000,
        "seccompProfile": {"type": "RuntimeDefault"}}
    assert container(objects, "Deployment", "b")["securityContext"]["runAsNonRoot"] is True
    c = container(objects, "Deployment", "c")["securityContext"]
    assert c["runAsUser"] == 0 and "runAsGroup" not in c
    assert [w.split(": ", 2)[1] for w in warnings] == ["spec.user", "spec.user"]


def test_host_network_init_and_seccomp():
    objects, _ = export(doc("web", "  network: host\n  init: true\n  seccomp: unconfined\n"))
    pod = find(objects, "Deployment", "web")["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True and pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert pod["shareProcessNamespace"] is True
    assert pod["containers"][0]["securityContext"]["seccompProfile"] == {"type": "Unconfined"}


def test_what_cannot_map_is_a_warning_on_its_line():
    _, warnings = export(doc("web", "  paused: true\n  resources: {pids: 5}\n"
                                    "  volumes: [{type: bind, source: data, target: /d}]\n"))
    assert warnings == [
        "t.yaml:7: spec.resources.pids: Kubernetes limits pids per node (the kubelet's podPidsLimit), not per "
        "container: left out",
        "t.yaml:8: spec.volumes[0]: a bind becomes a hostPath: /srv/app/data of whichever node runs the pod",
        "t.yaml:6: spec.paused: Kubernetes cannot freeze a container: the replicas run",
    ]


# -- bad input ----------------------------------------------------------------------------------------------
BAD = {
    "label value": (
        "apiVersion: orchestr/v1\nkind: Service\nmetadata:\n  name: web\n  labels: {note: hello world}\n"
        "spec: {image: busybox}\n",
        "t.yaml:5: metadata.labels.note: Kubernetes takes label values of letters, digits, '-', '_' and '.' (at most "
        "63, starting and ending with a letter or digit), got 'hello world'"),
    "label name": (
        "apiVersion: orchestr/v1\nkind: Service\nmetadata:\n  name: web\n  labels: {a b: c}\n"
        "spec: {image: busybox}\n",
        "t.yaml:5: metadata.labels.a b: Kubernetes takes label names of letters, digits, '-', '_' and '.' (at most "
        "63, starting and ending with a letter or digit), optionally after a DNS prefix and '/', got 'a b'"),
    "service name": (
        doc("1web"),
        "t.yaml:3: metadata.name: a Kubernetes Service's name starts with a letter, got '1web' (with network: none "
        "the service gets no Service)"),
    "published twice": (
        doc("web", "  ports:\n    - {containerPort: 80}\n    - {containerPort: 81, hostPort: 80}\n"),
        "t.yaml:8: spec.ports[1]: tcp port 80 is published twice; a Kubernetes Service has each port once"),
    "a name another object has": (
        doc("web", "  ports: [{containerPort: 80}]\n") + "---\n" + doc("web-published"),
        "t.yaml:10: metadata.name: the Service 'web-published' would be written twice, for this service and "
        "another; rename one"),
    "env name": (
        doc("web", "  env: {\"caf\\u00e9\": x}\n"),
        "t.yaml:6: spec.env.café: Kubernetes takes environment names of printable ASCII, got 'café'"),
}


@pytest.mark.parametrize("text, message", BAD.values(), ids=BAD.keys())
def test_what_kubernetes_refuses_is_one_line_naming_file_line_and_field(text, message):
    with pytest.raises(SpecError) as info:
        to_kubernetes(loads(text, "t.yaml"))
    assert str(info.value) == message


def test_a_digit_first_name_is_fine_without_a_network():
    objects, _ = export(doc("1job", "  network: none\n"))
    assert find(objects, "Deployment", "1job")


# -- the command line ---------------------------------------------------------------------------------------
def test_the_command_writes_a_yaml_stream_and_warnings_on_stderr(tmp_path):
    proc = subprocess.run([ORCHESTR, "export", "--format", "kubernetes", "-f", str(ROOT / "specs" / "demo.yaml"),
                           "-f", str(ROOT / "specs" / "limits.yaml")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    objects = list(yaml.safe_load_all(proc.stdout))
    check(objects)
    assert {("StatefulSet", "db"), ("Deployment", "web"), ("Job", "worker"), ("Job", "oneshot")} <= {
        (o["kind"], o["metadata"]["name"]) for o in objects}
    lines = proc.stderr.splitlines()
    assert lines and all(line.startswith("orchestr: warning: ") for line in lines)


@pytest.mark.parametrize("args, message", [
    (["--volume-size", "lots"], "orchestr: --volume-size: expected a quantity like 64Mi, got 'lots'"),
    (["--wait-image", "Not An Image"],
     "orchestr: --wait-image: expected an image reference like busybox:1.36, got 'Not An Image'"),
    (["--cluster-domain=-x."], "orchestr: --cluster-domain: expected a DNS name like cluster.local, got '-x.'"),
])
def test_bad_options_are_one_line(args, message):
    proc = subprocess.run([ORCHESTR, "export", "--format", "kubernetes", "-f", str(ROOT / "specs" / "demo.yaml"),
                           *args], capture_output=True, text=True, timeout=60)
    assert (proc.returncode, proc.stdout, proc.stderr) == (1, "", message + "\n")


def test_a_bad_spec_is_one_line_and_exit_2(tmp_path):
    spec = tmp_path / "bad.yaml"
    spec.write_text(doc("web", "  labels: {}\n"))
    proc = subprocess.run([ORCHESTR, "export", "--format", "kubernetes", "-f", str(spec)], capture_output=True,
                          text=True, timeout=60)
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr == f"orchestr: {spec}:6: spec.labels: unknown field, expected one of: runtime, image, " \
                          f"command, args, env, workingDir, user, replicas, resources, restartPolicy, dependsOn, " \
                          f"stopGracePeriod, volumes, ports, network, paused, init, readOnly, seccomp, healthcheck, " \
                          f"probes, update\n"
    spec.write_text(doc("web", "").replace("name: web,", "name: web, labels: {x: 'a b'},"))
    proc = subprocess.run([ORCHESTR, "export", "--format", "kubernetes", "-f", str(spec)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2 and proc.stdout == "" and len(proc.stderr.splitlines()) == 1
    assert "Traceback" not in proc.stderr


def test_the_library_is_pure(tmp_path, monkeypatch):
    """Exporting touches nothing: no file, no runtime, no clock; the same services give the same objects."""
    services = loads(RICH["everything"], base_dir=Path("/srv/app"))
    monkeypatch.chdir(tmp_path)
    first, second = to_kubernetes(services), to_kubernetes(services)
    assert first.objects == second.objects and list(tmp_path.iterdir()) == []
