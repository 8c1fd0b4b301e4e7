"""Spec files: loading, one-line errors with file, line and field, set-wide checks, hashing, ContainerSpecs."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from orchestr.errors import SpecError
from orchestr.model import (
    L_DEPENDS_ON,
    L_NAMESPACE,
    L_REPLICA,
    L_SERVICE,
    L_SPEC_HASH,
    L_SERVICE_PORTS,
    L_STOP_GRACE,
    Port,
    Resources,
    RestartPolicy,
    Volume,
)
from orchestr.quantity import parse_cpus, parse_duration, parse_quantity
from orchestr.spec import Service, load, loads, validate_set

ROOT = Path(__file__).resolve().parent.parent

# Lines 1-7; a case's extra spec lines start at line 8.
HEAD = """\
apiVersion: orchestr/v1
kind: Service
metadata:
  name: web
  namespace: shop
spec:
  image: busybox:latest
"""


def doc(name: str, body: str = "", namespace: str = "shop") -> str:
    """A document of 4 lines plus body (indented under spec:)."""
    return f"apiVersion: orchestr/v1\nkind: Service\nmetadata: {{name: {name}, namespace: {namespace}}}\n" \
           f"spec:\n  image: busybox:latest\n{body}"


def error_of(text: str, filename: str = "shop.yaml") -> str:
    with pytest.raises(SpecError) as info:
        loads(text, filename, base_dir=Path("/srv/app"))
    return str(info.value)


MALFORMED = {
    "healthcheck interval of zero": (
        HEAD + "  healthcheck:\n    tcp: {port: 80}\n    interval: 0s\n",
        "shop.yaml:10: spec.healthcheck.interval: expected a duration greater than 0, like 10s or 500ms, got 0s"),
    "healthcheck retries": (
        HEAD + "  healthcheck:\n    exec: [pg_isready]\n    retries: 0\n",
        "shop.yaml:10: spec.healthcheck.retries: expected an integer >= 1, got 0"),
    "healthcheck with two checks": (
        HEAD + "  healthcheck:\n    exec: [pg_isready]\n    http: {port: 80}\n",
        "shop.yaml:10: spec.healthcheck.http: expected exactly one of exec, http or tcp, got exec and http"),
    "healthcheck with none": (
        HEAD + "  healthcheck:\n    interval: 5s\n",
        "shop.yaml:9: spec.healthcheck: expected exactly one of exec, http or tcp"),
    "healthcheck status": (
        HEAD + "  healthcheck:\n    http: {port: 80, status: 200-999}\n",
        "shop.yaml:9: spec.healthcheck.http.status: expected an HTTP status like 200 or a range like 200-399, "
        "got '200-999'"),
    "probe path": (
        HEAD + "  probes:\n    readiness:\n      http: {port: 80, path: health}\n",
        "shop.yaml:10: spec.probes.readiness.http.path: expected a path starting with '/', without spaces, "
        "got 'health'"),
    "healthcheck and probes": (
        HEAD + "  healthcheck: {tcp: {port: 1}}\n  probes: {liveness: {tcp: {port: 1}}}\n",
        "shop.yaml:9: spec.probes: give healthcheck or probes, not both"),
    "dependency condition": (
        HEAD + "  dependsOn: [{name: db, condition: ready}]\n",
        "shop.yaml:8: spec.dependsOn[0].condition: expected one of started, healthy, completed, got 'ready'"),
    "unknown field, close to a known one": (
        HEAD + "  imagee: x\n",
        "shop.yaml:8: spec.imagee: unknown field, did you mean 'image'?"),
    "unknown field, nothing close": (
        HEAD + "  colour: red\n",
        "shop.yaml:8: spec.colour: unknown field, expected one of: runtime, image, command, args, env, workingDir, "
        "user, replicas, resources, restartPolicy, dependsOn, stopGracePeriod, volumes, ports, network, paused, "
        "init, readOnly, seccomp, healthcheck, probes, update"),
    "unknown field in a list item": (
        HEAD + "  ports:\n    - containerPort: 80\n      hostport: 8080\n",
        "shop.yaml:10: spec.ports[0].hostport: unknown field, did you mean 'hostPort'?"),
    "unknown field at the top": (
        HEAD + "status: {}\n",
        "shop.yaml:8: status: unknown field, expected one of: apiVersion, kind, metadata, spec"),
    "wrong apiVersion": (
        HEAD.replace("orchestr/v1", "orchestr/v2"),
        "shop.yaml:1: apiVersion: expected 'orchestr/v1', got 'orchestr/v2'"),
    "wrong kind, reported before other errors": (
        HEAD.replace("kind: Service", "kind: Deployment") + "  replicas: -1\n",
        "shop.yaml:2: kind: expected 'Service', got 'Deployment'"),
    "missing image: the line of the mapping missing it": (
        HEAD.replace("  image: busybox:latest\n", "  replicas: 1\n"),
        "shop.yaml:7: spec.image: required field is missing"),
    "missing metadata": (
        "apiVersion: orchestr/v1\nkind: Service\nspec: {image: x}\n",
        "shop.yaml:1: metadata: required field is missing"),
    "bad quantity": (
        HEAD + "  resources:\n    memory: lots\n",
        "shop.yaml:9: spec.resources.memory: expected a quantity like 64Mi, got 'lots'"),
    "bad quantity, flow style": (
        HEAD + "  resources: {cpus: 1, memory: 12Q}\n",
        "shop.yaml:8: spec.resources.memory: expected a quantity like 64Mi, got '12Q'"),
    "zero memory": (
        HEAD + "  resources: {memory: 0}\n",
        "shop.yaml:8: spec.resources.memory: expected a quantity greater than 0, got 0"),
    "bad cpus": (
        HEAD + "  resources: {cpus: 0}\n",
        "shop.yaml:8: spec.resources.cpus: expected a number of CPUs greater than 0, like 0.5 or 500m, got 0"),
    "pids below 1": (
        HEAD + "  resources: {pids: 0}\n",
        "shop.yaml:8: spec.resources.pids: expected an integer >= 1, got 0"),
    "negative replicas": (
        HEAD + "  replicas: -1\n",
        "shop.yaml:8: spec.replicas: expected an integer >= 0, got -1"),
    "replicas of the wrong type": (
        HEAD + "  replicas: two\n",
        "shop.yaml:8: spec.replicas: expected an integer, got 'two'"),
    "replicas as a boolean": (
        HEAD + "  replicas: yes\n",
        "shop.yaml:8: spec.replicas: expected an integer, got true"),
    "bad DNS name": (
        HEAD.replace("name: web", "name: Web_1"),
        "shop.yaml:4: metadata.name: expected a DNS label (lowercase letters, digits and '-', at most 63, "
        "starting and ending with a letter or digit), got 'Web_1'"),
    "bad namespace": (
        HEAD.replace("namespace: shop", "namespace: -shop"),
        "shop.yaml:5: metadata.namespace: expected a DNS label (lowercase letters, digits and '-', at most 63, "
        "starting and ending with a letter or digit), got '-shop'"),
    "name too long": (
        HEAD.replace("name: web", "name: " + "a" * 64),
        f"shop.yaml:4: metadata.name: expected a DNS label (lowercase letters, digits and '-', at most 63, "
        f"starting and ending with a letter or digit), got '{'a' * 64}'"),
    "bad restartPolicy": (
        HEAD + "  restartPolicy: Sometimes\n",
        "shop.yaml:8: spec.restartPolicy: expected one of 'Always', 'OnFailure' or 'Never', got 'Sometimes'"),
    "bad network": (
        HEAD + "  network: wifi\n",
        "shop.yaml:8: spec.network: expected one of 'bridge', 'host' or 'none', got 'wifi'"),
    "bad seccomp": (
        HEAD + "  seccomp: strict\n",
        "shop.yaml:8: spec.seccomp: expected one of 'default' or 'unconfined', got 'strict'"),
    "bad duration": (
        HEAD + "  stopGracePeriod: soon\n",
        "shop.yaml:8: spec.stopGracePeriod: expected a duration like 10s, 1m30s or 500ms, got 'soon'"),
    "negative duration": (
        HEAD + "  stopGracePeriod: -5\n",
        "shop.yaml:8: spec.stopGracePeriod: expected a duration like 10s, 1m30s or 500ms, got -5"),
    "bind of the host's root, read-write": (
        HEAD + "  volumes:\n    - type: bind\n      source: /\n      target: /host\n",
        "shop.yaml:10: spec.volumes[0].source: binding the host's / read-write is not allowed; "
        "set readOnly: true (or allowHostRoot: true)"),
    "bind of the host's root through '..'": (
        HEAD + "  volumes: [{type: bind, source: /srv/.., target: /host}]\n",
        "shop.yaml:8: spec.volumes[0].source: binding the host's / read-write is not allowed; "
        "set readOnly: true (or allowHostRoot: true)"),
    "mount over the container's root": (
        HEAD + "  volumes:\n    - {type: bind, source: /srv, target: /}\n",
        "shop.yaml:9: spec.volumes[0].target: mounting over the container's root is not allowed"),
    "relative target": (
        HEAD + "  volumes:\n    - {type: tmpfs, target: data}\n",
        "shop.yaml:9: spec.volumes[0].target: expected an absolute path without '..', got 'data'"),
    "target with '..'": (
        HEAD + "  volumes:\n    - {type: tmpfs, target: /data/../etc}\n",
        "shop.yaml:9: spec.volumes[0].target: expected an absolute path without '..', got '/data/../etc'"),
    "named volume without a source": (
        HEAD + "  volumes:\n    - type: volume\n      target: /data\n",
        "shop.yaml:9: spec.volumes[0].source: a named volume needs a volume name as its source"),
    "tmpfs with a source": (
        HEAD + "  volumes:\n    - {type: tmpfs, source: /srv, target: /data}\n",
        "shop.yaml:9: spec.volumes[0].source: a tmpfs volume takes no source"),
    "bad volume name": (
        HEAD + "  volumes:\n    - {type: volume, source: My_Data, target: /data}\n",
        "shop.yaml:9: spec.volumes[0].source: expected a volume name (lowercase letters, digits and '-', "
        "at most 63, starting and ending with a letter or digit), got 'My_Data'"),
    "bad volume type": (
        HEAD + "  volumes:\n    - {type: nfs, source: x, target: /data}\n",
        "shop.yaml:9: spec.volumes[0].type: expected one of 'bind', 'volume' or 'tmpfs', got 'nfs'"),
    "two volumes on one target": (
        HEAD + "  volumes:\n    - {type: tmpfs, target: /data}\n    - {type: tmpfs, target: /data/}\n",
        "shop.yaml:10: spec.volumes[1].target: /data is already the target of spec.volumes[0]"),
    "port number too big": (
        HEAD + "  ports:\n    - containerPort: 70000\n",
        "shop.yaml:9: spec.ports[0].containerPort: expected a port number from 1 to 65535, got 70000"),
    "host port zero": (
        HEAD + "  ports:\n    - {containerPort: 80, hostPort: 0}\n",
        "shop.yaml:9: spec.ports[0].hostPort: expected a port number from 1 to 65535, got 0"),
    "port without containerPort": (
        HEAD + "  ports:\n    - hostPort: 8080\n",
        "shop.yaml:9: spec.ports[0].containerPort: required field is missing"),
    "bad protocol": (
        HEAD + "  ports: [{containerPort: 80, protocol: sctp}]\n",
        "shop.yaml:8: spec.ports[0].protocol: expected one of 'tcp' or 'udp', got 'sctp'"),
    "bad hostIP": (
        HEAD + "  ports: [{containerPort: 80, hostIP: localhost}]\n",
        "shop.yaml:8: spec.ports[0].hostIP: expected an IP address like 127.0.0.1, got 'localhost'"),
    "ports on the host network": (
        HEAD + "  network: host\n  ports: [{containerPort: 80}]\n",
        "shop.yaml:9: spec.ports: ports are published only with network: bridge, not host"),
    "env value of the wrong type": (
        HEAD + "  env:\n    DEBUG: true\n",
        "shop.yaml:9: spec.env.DEBUG: expected a string or a number, got true"),
    "env as a list": (
        HEAD + "  env: [A=1]\n",
        "shop.yaml:8: spec.env: expected a mapping of names to strings, got a list"),
    "reserved label": (
        HEAD.replace("  namespace: shop\n", "  namespace: shop\n  labels: {orchestr.service: x}\n"),
        "shop.yaml:6: metadata.labels.orchestr.service: label names starting with 'orchestr.' are reserved "
        "for orchestr, got 'orchestr.service'"),
    "command that is a string": (
        HEAD + "  command: httpd -f\n",
        "shop.yaml:8: spec.command: expected a non-empty list of strings, got 'httpd -f'"),
    "command item of the wrong type": (
        HEAD + "  command:\n    - sh\n    - {x: 1}\n",
        "shop.yaml:10: spec.command[1]: expected a string, got a mapping"),
    "relative workingDir": (
        HEAD + "  workingDir: srv\n",
        "shop.yaml:8: spec.workingDir: expected an absolute path, got 'srv'"),
    "bad user": (
        HEAD + "  user: 'root user'\n",
        "shop.yaml:8: spec.user: expected a user like 1000, 1000:1000 or www-data, got 'root user'"),
    "bad image": (
        HEAD.replace("busybox:latest", "Busy Box"),
        "shop.yaml:7: spec.image: expected an image reference like busybox:latest, got 'Busy Box'"),
    "paused of the wrong type": (
        HEAD + "  paused: maybe\n",
        "shop.yaml:8: spec.paused: expected true or false, got 'maybe'"),
    "resources of the wrong type": (
        HEAD + "  resources: 2\n",
        "shop.yaml:8: spec.resources: expected a mapping, got 2"),
    "duplicate field": (
        HEAD + "  replicas: 1\n  replicas: 2\n",
        "shop.yaml:9: spec.replicas: duplicate field, expected each field once"),
    "dependsOn listing a service twice": (
        HEAD + "  dependsOn: [db, db]\n",
        "shop.yaml:8: spec.dependsOn[1]: 'db' is listed twice"),
    "document that is not a mapping": (
        "- web\n- db\n",
        "shop.yaml:1: expected a Service document (a mapping), got a list"),
    "YAML syntax error": (
        HEAD + "  env:\n    A: 1\n   B: 2\n",
        "shop.yaml:10: invalid YAML: did not find expected key (while parsing a block mapping)"),
    "YAML syntax error in a later document": (
        HEAD + "---\n" + "key: [unclosed\n",
        "shop.yaml:10: invalid YAML: did not find expected ',' or ']' (while parsing a flow sequence)"),
    "recursive alias": (
        HEAD + "  command: &argv [sh, *argv]\n",
        "shop.yaml:8: spec.command[1]: expected a spec document, got a recursive alias"),
    "memory too small for a process": (
        HEAD + "  resources: {memory: 1Ki}\n",
        "shop.yaml:8: spec.resources.memory: expected at least 6Mi, too little memory for a process to start, "
        "got 1Ki"),
    "cpus too few for a process": (
        HEAD + "  resources: {cpus: 1m}\n",
        "shop.yaml:8: spec.resources.cpus: expected at least 0.01 CPUs (10m), the least a process can be given, "
        "got 0.001"),
    "a tab in the indentation": (
        HEAD + "  env:\n\tA: 1\n",
        "shop.yaml:9: invalid YAML: a tab at column 1; YAML indents with spaces only "
        "(while scanning for the next token)"),
    "a name YAML 1.1 reads as a boolean": (
        HEAD.replace("name: web", "name: yes"),
        "shop.yaml:4: metadata.name: expected a string, got true (YAML reads a plain yes as a boolean; "
        "quote it: \"yes\")"),
    "an env value YAML 1.1 reads as a boolean": (
        HEAD + "  env: {DEBUG: on}\n",
        "shop.yaml:8: spec.env.DEBUG: expected a string or a number, got true (YAML reads a plain on as a "
        "boolean; quote it: \"on\")"),
    "an argument YAML 1.1 reads as a boolean": (
        HEAD + "  command: [answer, no]\n",
        "shop.yaml:8: spec.command[1]: expected a string, got false (YAML reads a plain no as a boolean; "
        "quote it: \"no\")"),
    "the first error in line order": (
        HEAD + "  replicas: -1\n  restartPolicy: Sometimes\n  imagee: x\n",
        "shop.yaml:8: spec.replicas: expected an integer >= 0, got -1"),
}


@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_spec_gives_file_line_field_and_what_was_expected(case):
    text, expected = MALFORMED[case]
    assert error_of(text) == expected


SET_ERRORS = {
    "dependsOn cycle": (
        doc("a", "  dependsOn: [b]\n") + "---\n" + doc("b", "  dependsOn: [a]\n"),
        "shop.yaml:6: spec.dependsOn[0]: dependency cycle: a -> b -> a"),
    "longer cycle, named from the member listed first": (
        doc("c", "  dependsOn: [a]\n") + "---\n" + doc("a", "  dependsOn: [x, b]\n") + "---\n"
        + doc("b", "  dependsOn: [c]\n") + "---\n" + doc("x"),
        "shop.yaml:6: spec.dependsOn[0]: dependency cycle: c -> a -> b -> c"),
    "self-dependency": (
        doc("a", "  dependsOn: [a]\n"),
        "shop.yaml:6: spec.dependsOn[0]: a service cannot depend on itself"),
    "unknown dependsOn target": (
        doc("a", "  dependsOn:\n    - ghost\n"),
        "shop.yaml:7: spec.dependsOn[0]: no service 'ghost' in namespace 'shop'"),
    "dependsOn target in another namespace": (
        doc("db", namespace="other") + "---\n" + doc("a", "  dependsOn: [db]\n"),
        "shop.yaml:12: spec.dependsOn[0]: no service 'db' in namespace 'shop'"),
    "duplicate names in one file": (
        doc("a") + "---\n" + doc("a"),
        "shop.yaml:9: metadata.name: service shop/a is already defined at shop.yaml:3"),
    "host port used twice": (
        doc("a", "  ports: [{containerPort: 80, hostPort: 8080}]\n") + "---\n"
        + doc("b", "  ports:\n    - {containerPort: 81, hostPort: 8080, hostIP: 127.0.0.1}\n", namespace="other"),
        "shop.yaml:14: spec.ports[0].hostPort: host port 127.0.0.1:8080/tcp is already published by shop/a "
        "at shop.yaml:6"),
    "host port used by two replicas": (
        doc("a", "  replicas: 2\n  ports:\n    - containerPort: 80\n      hostPort: 8080\n      mode: host\n"),
        "shop.yaml:9: spec.ports[0].hostPort: host port 0.0.0.0:8080/tcp cannot be published by 2 replicas in "
        "mode: host; set replicas: 1, leave hostPort out or leave mode out (a service port balancing across the "
        "replicas)"),
    "host port used twice in one service": (
        doc("a", "  ports:\n    - {containerPort: 80, hostPort: 8080}\n    - {containerPort: 81, hostPort: 8080}\n"),
        "shop.yaml:8: spec.ports[1].hostPort: host port 0.0.0.0:8080/tcp is already published by shop/a "
        "at shop.yaml:7"),
}


@pytest.mark.parametrize("case", SET_ERRORS)
def test_set_level_error_names_the_place(case):
    text, expected = SET_ERRORS[case]
    assert error_of(text) == expected


def test_host_ports_that_do_not_overlap_are_fine():
    services = loads(
        doc("a", "  ports: [{containerPort: 80, hostPort: 8080, hostIP: 127.0.0.1}]\n") + "---\n"
        + doc("b", "  ports: [{containerPort: 80, hostPort: 8080, hostIP: 127.0.0.2}]\n") + "---\n"
        + doc("c", "  ports: [{containerPort: 80, hostPort: 8080, protocol: udp}]\n") + "---\n"
        + doc("d", "  replicas: 3\n  ports: [{containerPort: 80}]\n"))
    assert [s.name for s in services] == ["a", "b", "c", "d"]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_duplicate_names_across_files_name_both_places(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "a.yaml", doc("web"))
    write(tmp_path / "more" / "b.yaml", "# the same service again\n" + doc("web"))
    with pytest.raises(SpecError) as info:
        load(["a.yaml", Path("more/b.yaml")])
    assert str(info.value) == "more/b.yaml:4: metadata.name: service shop/web is already defined at a.yaml:3"


def test_dependencies_and_port_clashes_span_files(tmp_path):
    a = write(tmp_path / "a.yaml", doc("web", "  dependsOn: [db]\n  ports: [{containerPort: 80, hostPort: 9000}]\n"))
    b = write(tmp_path / "b.yaml", doc("db"))
    assert [s.name for s in load([a, b])] == ["web", "db"]
    c = write(tmp_path / "c.yaml", doc("api", "  ports: [{containerPort: 80, hostPort: 9000}]\n"))
    with pytest.raises(SpecError) as info:
        load([a, b, c])
    assert str(info.value) == (f"{c}:6: spec.ports[0].hostPort: host port 0.0.0.0:9000/tcp is already published "
                               f"by shop/web at {a}:7")


def test_an_error_in_the_first_file_comes_before_set_errors(tmp_path):
    a = write(tmp_path / "a.yaml", doc("web", "  dependsOn: [ghost]\n"))
    b = write(tmp_path / "b.yaml", doc("db", "  replicas: many\n"))
    with pytest.raises(SpecError) as info:
        load([a, b])
    assert str(info.value) == f"{b}:6: spec.replicas: expected an integer, got 'many'"


def test_unreadable_file(tmp_path):
    with pytest.raises(SpecError) as info:
        load([tmp_path / "missing.yaml"])
    assert str(info.value) == f"{tmp_path / 'missing.yaml'}: cannot read the spec file: No such file or directory"


def test_an_empty_file_holds_no_documents(tmp_path):
    for text in ("", "# nothing but a comment\n---\n"):
        empty = write(tmp_path / "empty.yaml", text)
        with pytest.raises(SpecError) as info:
            load([empty])
        assert str(info.value) == f"{empty}: the file holds no documents; expected at least one Service"


def test_a_file_too_large_is_refused_naming_the_limit(tmp_path, monkeypatch):
    big = tmp_path / "big.yaml"
    with big.open("w") as f:  # valid YAML all the way, so only the size can refuse it
        f.write(doc("web", "  env:\n"))
        line = "    K{}: " + "v" * 100 + "\n"
        for i in range(500_000):
            f.write(line.format(i))
    size = big.stat().st_size
    assert size > 50 << 20
    with pytest.raises(SpecError) as info:
        load([big])
    assert str(info.value) == f"{big}: the file is too large ({size / 2**20:.1f}Mi): a spec file may hold at most 8Mi"
    # a pipe has no size to look at first: its reading stops at the limit
    monkeypatch.setattr("sys.stdin", io.StringIO(big.read_text()))
    with pytest.raises(SpecError) as info:
        load(["-"])
    assert str(info.value) == "<stdin>: the file is too large: a spec file may hold at most 8Mi"


def test_an_alias_bomb_is_refused_naming_the_limit():
    text = 'a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n'
    for previous, name in zip("abcdefgh", "bcdefghi"):
        text += f"{name}: &{name} [{', '.join(['*' + previous] * 9)}]\n"
    assert error_of(text) == ("shop.yaml:1: the document holds too many values: more than 100,000 "
                              "(each use of an alias counts its values again)")


def test_limits_beyond_this_host_are_refused():
    cpus = os.cpu_count()
    assert error_of(HEAD + f"  resources: {{cpus: {cpus + 1}}}\n") == (
        f"shop.yaml:8: spec.resources.cpus: expected at most {cpus} CPUs, as many as this host has, got {cpus + 1}")
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    gib = f"{memory / 2**30:.1f}".removesuffix(".0")
    assert error_of(HEAD + f"  resources:\n    memory: {memory + 2**30}\n") == (
        f"shop.yaml:9: spec.resources.memory: expected at most {gib}Gi, the memory of this host, "
        f"got {(memory + 2**30) / 2**30:.1f}".removesuffix(".0") + "Gi")
    (service,) = loads(HEAD + f"  resources: {{cpus: {cpus}, memory: 6Mi}}\n")
    assert (service.spec.resources.cpus, service.spec.resources.memory) == (cpus, 6 << 20)


def test_error_carries_its_parts():
    with pytest.raises(SpecError) as info:
        loads(HEAD + "  replicas: -1\n", "shop.yaml")
    e = info.value
    assert (e.file, e.line, e.path) == ("shop.yaml", 8, "spec.replicas")


FULL = """\
apiVersion: orchestr/v1
kind: Service
metadata:
  name: web
  namespace: shop
  labels: {tier: front, version: 2}
spec:
  runtime: docker
  image: registry.local:5000/shop/web:1.2
  command: [httpd, -f, -p, 8080]
  env: {PORT: 8080, RATIO: 0.5, NAME: web}
  workingDir: /srv
  user: 1000
  replicas: 1
  resources: {cpus: 500m, memory: 64Mi, pids: 100}
  restartPolicy: OnFailure
  dependsOn: [db]
  stopGracePeriod: 1m30s
  volumes:
    - {type: bind, source: data, target: /data, readOnly: true}
    - {type: volume, source: cache, target: /cache}
    - {type: tmpfs, target: /tmp, size: 1Mi}
    - {type: bind, source: /, target: /host, readOnly: true}
  ports:
    - {containerPort: 8080, hostPort: 18080, hostIP: 127.0.0.1}
    - {containerPort: 53, protocol: udp}
  network: bridge
  paused: true
  init: true
  readOnly: true
---
apiVersion: orchestr/v1
kind: Service
metadata: {name: db, namespace: shop}
spec: {image: busybox:latest}
"""


def test_a_full_spec_loads_with_normalized_values():
    web, db = loads(FULL, "shop.yaml", base_dir=Path("/srv/app"))
    assert (web.name, web.namespace, web.api_version, web.kind) == ("web", "shop", "orchestr/v1", "Service")
    assert web.metadata.labels == {"tier": "front", "version": "2"}
    s = web.spec
    assert s.runtime == "docker"
    assert s.command == ("httpd", "-f", "-p", "8080")
    assert s.args is None
    assert s.env == {"NAME": "web", "PORT": "8080", "RATIO": "0.5"}
    assert (s.working_dir, s.user, s.replicas) == ("/srv", "1000", 1)
    assert (s.resources.cpus, s.resources.memory, s.resources.pids) == (0.5, 64 * 2**20, 100)
    assert s.restart_policy is RestartPolicy.ON_FAILURE
    assert s.depends_on == ("db",)
    assert s.stop_grace_period == 90.0
    assert [(v.type, v.source, v.target, v.read_only, v.size) for v in s.volumes] == [
        ("bind", "/srv/app/data", "/data", True, None),
        ("volume", "cache", "/cache", False, None),
        ("tmpfs", None, "/tmp", False, 2**20),
        ("bind", "/", "/host", True, None),
    ]
    assert [(p.container_port, p.host_port, p.protocol, p.host_ip) for p in s.ports] == [
        (8080, 18080, "tcp", "127.0.0.1"), (53, None, "udp", "0.0.0.0")]
    assert (s.network, s.paused, s.init, s.read_only) == ("bridge", True, True, True)
    assert web.source == ("shop.yaml", 1)
    assert db.source == ("shop.yaml", 32)
    d = db.spec
    assert (db.namespace, d.runtime, d.replicas, d.restart_policy, d.stop_grace_period) == (
        "shop", None, 1, RestartPolicy.ALWAYS, 10.0)
    assert (d.command, d.env, d.volumes, d.ports, d.network, d.depends_on) == (None, {}, (), (), "bridge", ())
    assert (d.resources.cpus, d.resources.memory, d.resources.pids) == (None, None, None)


def test_a_loaded_spec_round_trips_through_its_dump():
    for service in loads(FULL, base_dir=Path("/srv/app")):
        dumped = service.model_dump(mode="json", by_alias=True)
        again = Service.model_validate(dumped)
        assert again.model_dump() == service.model_dump()
        assert again.spec_hash == service.spec_hash


def test_allow_host_root_permits_a_read_write_bind_of_root():
    (service,) = loads(HEAD + "  volumes: [{type: bind, source: /, target: /host, allowHostRoot: true}]\n")
    assert service.spec.volumes[0].source == "/"
    assert service.spec.volumes[0].read_only is False
    assert service.container_spec(0).volumes[0].allow_host_root is True  # the runtime checks it at every start


def test_a_relative_bind_source_resolves_against_the_spec_files_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "app" / "spec.yaml",
          HEAD + "  volumes:\n    - {type: bind, source: data, target: /data}\n"
                 "    - {type: bind, source: ../shared/./x, target: /x}\n")
    (service,) = load(["app/spec.yaml"])
    assert [v.source for v in service.spec.volumes] == [str(tmp_path / "app" / "data"), str(tmp_path / "shared/x")]
    assert service.source == ("app/spec.yaml", 1)


def test_loads_resolves_relative_sources_against_base_dir_or_the_working_directory(tmp_path, monkeypatch):
    text = HEAD + "  volumes: [{type: bind, source: data, target: /data}]\n"
    assert loads(text, base_dir=Path("/opt/app"))[0].spec.volumes[0].source == "/opt/app/data"
    monkeypatch.chdir(tmp_path)
    assert loads(text)[0].spec.volumes[0].source == str(tmp_path / "data")


def test_empty_documents_are_ignored():
    services = loads("---\n" + doc("a") + "---\n# nothing here\n---\n" + doc("b") + "---\n")
    assert [s.name for s in services] == ["a", "b"]
    assert [s.source[1] for s in services] == [2, 10]
    assert loads("") == []
    assert loads("# only a comment\n---\n") == []


def test_stdin_is_read_for_a_dash(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.stdin", io.StringIO(HEAD + "  volumes: [{type: bind, source: d, target: /d}]\n"))
    (service,) = load(["-"])
    assert service.source == ("<stdin>", 1)
    assert service.spec.volumes[0].source == str(tmp_path / "d")


def test_command_and_args_reach_the_runtime_as_given():
    # orchestr.containers.argv puts them together with the image's entrypoint and cmd, the same on every runtime
    (only_args,) = loads(HEAD + "  args: [-v, 2]\n")
    spec = only_args.container_spec(0)
    assert (spec.command, spec.args) == (None, ("-v", "2"))
    (both,) = loads(HEAD + "  command: [httpd, -f]\n  args: [-v]\n")
    spec = both.container_spec(0)
    assert (spec.command, spec.args) == (("httpd", "-f"), ("-v",))


def test_container_spec_carries_everything_and_the_ownership_labels():
    web, _ = loads(FULL, base_dir=Path("/srv/app"))
    spec = web.container_spec(2)
    assert (spec.name, spec.namespace, spec.image) == ("web-2", "shop", "registry.local:5000/shop/web:1.2")
    assert spec.labels == {
        "tier": "front",
        "version": "2",
        L_NAMESPACE: "shop",
        L_SERVICE: "web",
        L_REPLICA: "2",
        L_SPEC_HASH: web.spec_hash,
        L_DEPENDS_ON: "db",
        L_STOP_GRACE: "90",
        L_SERVICE_PORTS: "tcp:127.0.0.1:18080:8080",  # a service port: the other one has no host port
    }
    assert spec.command == ("httpd", "-f", "-p", "8080")
    assert spec.env == {"NAME": "web", "PORT": "8080", "RATIO": "0.5"}
    assert (spec.working_dir, spec.user) == ("/srv", "1000")
    assert spec.resources == Resources(cpus=0.5, memory=64 * 2**20, pids=100)
    assert spec.restart_policy is RestartPolicy.ON_FAILURE
    assert spec.stop_grace_period == 90.0
    assert spec.volumes == (
        Volume(type="bind", target="/data", source="/srv/app/data", read_only=True),
        Volume(type="volume", target="/cache", source="cache"),
        Volume(type="tmpfs", target="/tmp", size=2**20),
        Volume(type="bind", target="/host", source="/", read_only=True),
    )
    assert spec.ports == (Port(8080, 18080, "tcp", "127.0.0.1", "ingress"), Port(53, None, "udp", "0.0.0.0", "ingress"))
    assert (spec.network, spec.init, spec.read_only) == ("bridge", True, True)


def test_container_spec_leaves_out_depends_on_when_there_is_none():
    (service,) = loads(HEAD)
    labels = service.container_spec(0).labels
    assert L_DEPENDS_ON not in labels
    assert labels[L_REPLICA] == "0"
    several = Service.build("web", depends_on=["db", "cache"]).container_spec(1)
    assert several.labels[L_DEPENDS_ON] == "db,cache"
    assert several.name == "web-1"


def hash_of(body: str, head: str = HEAD) -> str:
    (service,) = loads(head + body)
    return service.spec_hash


def test_spec_hash_is_16_hex_and_stable():
    h = hash_of("  env: {A: '1'}\n")
    assert len(h) == 16 and int(h, 16) >= 0
    assert hash_of("  env: {A: '1'}\n") == h


def test_spec_hash_ignores_key_order_notation_and_explicit_defaults():
    base = hash_of("  env: {A: '1', B: x}\n  resources: {memory: 64Mi, cpus: 1}\n")
    reordered = """\
spec:
  resources:
    cpus: 1.0
    memory: 67108864
  env:
    B: x
    A: 1
  image: busybox:latest
  restartPolicy: Always
  stopGracePeriod: 10s
  network: bridge
  volumes: []
kind: Service
metadata: {namespace: shop, name: web}
apiVersion: orchestr/v1
"""
    (service,) = loads(reordered)
    assert service.spec_hash == base


def test_spec_hash_ignores_what_changes_without_recreating():
    base = hash_of("")
    assert hash_of("  replicas: 5\n") == base
    assert hash_of("  replicas: 0\n") == base
    assert loads(HEAD + "  dependsOn: [db]\n---\n" + doc("db"))[0].spec_hash == base
    assert hash_of("  paused: true\n") == base  # pausing is done in place
    assert hash_of("  runtime: docker\n") == base  # the planner moves containers between runtimes itself
    assert hash_of("", HEAD.replace("name: web", "name: api")) == base


@pytest.mark.parametrize("body", [
    "  env: {A: '2'}\n",
    "  command: [sh]\n",
    "  args: [sh]\n",
    "  user: '1000'\n",
    "  resources: {memory: 65Mi}\n",
    "  restartPolicy: Never\n",
    "  stopGracePeriod: 11s\n",
    "  volumes: [{type: tmpfs, target: /tmp}]\n",
    "  ports: [{containerPort: 80}]\n",
    "  network: none\n",
    "  init: true\n",
    "  readOnly: true\n",
])
def test_spec_hash_changes_with_what_a_container_is_made_of(body):
    assert hash_of(body) != hash_of("")


def test_spec_hash_changes_with_image_and_labels():
    base = hash_of("")
    assert hash_of("", HEAD.replace("busybox:latest", "busybox:1.36")) != base
    assert hash_of("", HEAD.replace("  namespace: shop\n", "  namespace: shop\n  labels: {a: b}\n")) != base


def test_build_makes_validated_services_like_loaded_ones():
    built = Service.build("web", namespace="shop", image="busybox:latest", replicas=2, depends_on=["db"],
                          env={"A": 1}, restart_policy=RestartPolicy.NEVER)
    body = "  replicas: 2\n  dependsOn: [db]\n  env: {A: 1}\n  restartPolicy: Never\n"
    loaded, _ = loads(HEAD + body + "---\n" + doc("db"))
    assert built.model_dump() == loaded.model_dump()
    assert built.spec_hash == loaded.spec_hash
    assert built.source == ("<built>", 0)
    with pytest.raises(SpecError) as info:
        Service.build("web", replicas=-2)
    assert str(info.value) == "<built>: spec.replicas: expected an integer >= 0, got -2"
    with pytest.raises(TypeError):
        Service.build("web", replica=2)


def test_validate_set_over_built_services():
    services = [Service.build(f"s{i}", depends_on=[f"s{i - 1}"] if i else []) for i in range(500)]
    validate_set(services)  # a long chain, no cycle
    services.append(Service.build("s0", namespace="other", depends_on=["s1"]))
    with pytest.raises(SpecError) as info:
        validate_set(services)
    assert str(info.value) == "<built>: spec.dependsOn[0]: no service 's1' in namespace 'other'"


def test_example_specs_load():
    paths = sorted((ROOT / "specs").glob("*.yaml"))
    assert paths
    for path in paths:
        services = load([path])
        assert services, path
        for service in services:
            assert service.spec.runtime is None, f"{path}: examples run on the default runtime"
            assert service.spec.image == "busybox:latest"
    demo = {s.name: s for s in load([ROOT / "specs" / "demo.yaml"])}
    assert {s.namespace for s in demo.values()} == {"demo"}
    assert demo["web"].spec.replicas == 2 and "db" in demo["web"].spec.depends_on


@pytest.mark.parametrize("text, expected", [
    ("64Mi", 64 * 2**20), ("1.5Gi", 3 * 2**29), ("512k", 512_000), ("1Ki", 1024), ("2G", 2 * 10**9),
    ("100", 100), (100, 100), ("0.5", 1), (".5Ki", 512),
])
def test_quantities(text, expected):
    assert parse_quantity(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("500ms", 0.5), ("10s", 10.0), ("1m30s", 90.0), ("2h", 7200.0), ("10", 10.0), (2.5, 2.5), ("1.5s", 1.5), (0, 0.0),
])
def test_durations(text, expected):
    assert parse_duration(text) == pytest.approx(expected)


@pytest.mark.parametrize("text, expected", [("500m", 0.5), (0.25, 0.25), (2, 2.0), ("1.5", 1.5)])
def test_cpus(text, expected):
    assert parse_cpus(text) == expected


@pytest.mark.parametrize("parse, value", [
    (parse_quantity, "64MB"), (parse_quantity, -1), (parse_quantity, 1.5), (parse_quantity, True),
    (parse_quantity, "1ki"), (parse_duration, "10 s"), (parse_duration, "1d"), (parse_duration, float("inf")),
    (parse_duration, "-1s"), (parse_cpus, "0m"), (parse_cpus, -0.5), (parse_cpus, "half"), (parse_cpus, False),
])
def test_bad_units_are_refused(parse, value):
    with pytest.raises(ValueError, match="^expected "):
        parse(value)


def test_a_copy_with_changes_gets_its_own_hash():
    service = Service.build("web")
    changed = service.model_copy(update={"spec": service.spec.model_copy(update={"image": "busybox:1.36"})})
    assert changed.spec_hash != service.spec_hash
    assert changed.spec_hash == Service.build("web", image="busybox:1.36").spec_hash
