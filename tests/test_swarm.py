"""The swarm runtime on a real single-node swarm (the Docker Engine the tests use, made a swarm manager by
`make test`'s setup): whole services applied, scaled, rolled out, restarted by the swarm and deleted, while each
replica's container is listed, logged and exec'd; and the pure parts (the planner's service actions, the
mapping to swarm's service spec)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import anyio
import pytest

from conftest import TEST_IMAGE, docker_containers
from orchestr import Client, loads
from orchestr.errors import TerminalFailure
from orchestr.model import L_NAMESPACE, L_SERVICE, L_SPEC_HASH, ContainerSpec, Deployment, Port, Resources, State
from orchestr.planner import Kind, plan, plan_delete, plan_delete_namespace
from orchestr.spec import Service
from orchestr_swarm import mapping

ORCHESTR = str(Path(sys.executable).parent / "orchestr")
pytestmark = pytest.mark.anyio


def docker(*args: str) -> str:
    return subprocess.run(["docker", *args], check=True, capture_output=True, text=True).stdout


@pytest.fixture(scope="session")
def swarm_engine(docker_image) -> str:
    """The tests' Docker Engine as a swarm manager; `make test` (scripts/setup.sh) makes it one."""
    info = json.loads(docker("info", "--format", "{{json .Swarm}}"))
    if info.get("LocalNodeState") != "active" or not info.get("ControlAvailable"):
        pytest.fail("the Docker Engine is not a swarm manager; run `make test`, whose setup runs "
                    "`docker swarm init --advertise-addr 127.0.0.1`", pytrace=False)
    return docker_image


@pytest.fixture
def ns(swarm_engine, namespace):
    """A namespace whose swarm services, containers, network and volumes are checked and removed after the test."""
    yield namespace
    services = docker("service", "ls", "-q", "--filter", f"label={L_NAMESPACE}={namespace}").split()
    if services:
        docker("service", "rm", *services)
    deadline = time.monotonic() + 60
    while docker_containers(namespace) and time.monotonic() < deadline:
        time.sleep(0.2)
    subprocess.run(["docker", "network", "rm", mapping.network_name(namespace)], capture_output=True)
    # the engine lets go of a volume a little after the last container using it is gone
    deadline = time.monotonic() + 30
    while volumes := docker("volume", "ls", "-q", "--filter", f"label={L_NAMESPACE}={namespace}").split():
        if not subprocess.run(["docker", "volume", "rm", *volumes], capture_output=True).returncode:
            break
        assert time.monotonic() < deadline, f"volumes {volumes} could not be removed"
        time.sleep(0.2)


def update_state(service: str) -> str | None:
    (found,) = json.loads(docker("service", "inspect", service))
    return (found.get("UpdateStatus") or {}).get("State")


def spec(ns: str, *, replicas: int = 2, env: str = "v1", extra: str = "") -> str:
    return f"""\
apiVersion: orchestr/v1
kind: Service
metadata: {{name: db, namespace: {ns}, labels: {{tier: data}}}}
spec:
  runtime: swarm
  image: {TEST_IMAGE}
  command: [sh, -c, "trap 'exit 0' TERM; echo db up; while :; do sleep 1; done"]
  volumes: [{{type: volume, source: data, target: /data}}, {{type: tmpfs, target: /tmp, size: 1Mi}}]
  stopGracePeriod: 2s
---
apiVersion: orchestr/v1
kind: Service
metadata: {{name: web, namespace: {ns}}}
spec:
  runtime: swarm
  image: {TEST_IMAGE}
  command: [sh, -c, "echo $VERSION from $(hostname) > /tmp/index.html; exec httpd -f -p 8080 -h /tmp"]
  env: {{VERSION: {env}}}
  replicas: {replicas}
  dependsOn: [db]
  resources: {{cpus: 0.5, memory: 32Mi, pids: 50}}
  ports: [{{containerPort: 8080}}]
  stopGracePeriod: 2s
{extra}"""


async def converged(oc: Client, ns: str, want: dict[str, str], timeout: float = 90) -> list:
    """The namespace's containers once exactly the replicas in want (name -> spec hash) run, and nothing else."""
    deadline = time.monotonic() + timeout
    while True:
        found = await oc.get(ns)
        now = {c.name: c.spec_hash for c in found if c.state is State.RUNNING}
        if now == want and len(found) == len(want):
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"the swarm did not converge in {timeout:g}s: want {want}, have "
                        f"{[(c.name, c.state.value, c.spec_hash) for c in found]}")
        await anyio.sleep(0.2)


def hashes(services, replicas: dict[str, int]) -> dict[str, str]:
    return {f"{s.name}-{i}": s.spec_hash for s in services for i in range(replicas[s.name])}


async def test_whole_services_on_the_swarm_with_each_replica_a_container(ns, state_dir):
    services = loads(spec(ns))
    async with Client(state_dir=state_dir) as oc:
        result = await oc.apply(services)
        assert result.ok, result.failed
        assert [(a.kind, a.name, a.reason) for a in result.plan] == [
            (Kind.DEPLOY, "db", "missing"), (Kind.DEPLOY, "web", "missing")]
        assert result.plan.actions[1].after == (0,)  # web after db
        found = await converged(oc, ns, hashes(services, {"db": 1, "web": 2}))
        assert {c.runtime for c in found} == {"swarm"}
        assert found[0].labels["tier"] == "data"

        # the swarm service carries the whole spec
        (db,) = json.loads(docker("service", "inspect", f"{ns}_db"))
        (web,) = json.loads(docker("service", "inspect", f"{ns}_web"))
        assert web["Spec"]["Mode"] == {"Replicated": {"Replicas": 2}}
        task = web["Spec"]["TaskTemplate"]
        assert task["Resources"]["Limits"] == {"NanoCPUs": 500_000_000, "MemoryBytes": 32 << 20, "Pids": 50}
        assert task["RestartPolicy"]["Condition"] == "any"
        assert web["Spec"]["UpdateConfig"]["Order"] == "stop-first"
        assert task["ContainerSpec"]["StopGracePeriod"] == 2_000_000_000
        network = json.loads(docker("network", "inspect", mapping.network_name(ns)))[0]
        assert network["Driver"] == "overlay" and network["Labels"] == {L_NAMESPACE: ns}
        mounts = db["Spec"]["TaskTemplate"]["ContainerSpec"]["Mounts"]
        assert mounts[0]["Source"] == f"{ns}_data" and mounts[1]["TmpfsOptions"] == {"SizeBytes": 1 << 20}

        # get, logs and exec per replica
        lines = [line.data.decode() async for line in oc.logs("db-0", ns)]
        assert lines == ["db up\n"]
        result = await oc.exec("web-1", ["sh", "-c", "nslookup db | grep -c '^Address: 10\\.'; cat /tmp/index.html"],
                               ns, timeout=20)
        assert result.exit_code == 0, result.stderr
        count, page = result.stdout.decode().splitlines()
        assert count == "1" and page.startswith("v1 from ")
        # each replica's published port, bound on this node
        web_0 = next(c for c in found if c.name == "web-0")
        (port,) = (await oc.runtime("swarm").inspect(web_0.id)).ports
        with urllib.request.urlopen(f"http://127.0.0.1:{port.host_port}/", timeout=10) as response:
            assert response.read().decode().startswith("v1 from ")
        # the name of a service resolves to every replica, as on orchestr's other runtimes
        result = await oc.exec("db-0", ["sh", "-c", "nslookup web | grep -c '^Address: 10\\.'"], ns, timeout=20)
        assert result.stdout.decode().strip() == "2"

        # nothing to do again; the docker runtime does not count the swarm's containers as its own
        assert not (await oc.plan(services))
        assert await oc.runtime("docker").list(ns) == []


async def test_scaling_keeps_replicas_and_a_changed_spec_rolls_out(ns, state_dir):
    async with Client(state_dir=state_dir) as oc:
        services = loads(spec(ns, replicas=1))
        assert (await oc.apply(services)).ok
        before = {c.name: c.id for c in await converged(oc, ns, hashes(services, {"db": 1, "web": 1}))}

        services = loads(spec(ns, replicas=3))
        result = await oc.apply(services)
        assert [(a.kind, a.name, a.reason) for a in result.plan] == [(Kind.DEPLOY, "web", "scaled to 3")]
        after = {c.name: c.id for c in await converged(oc, ns, hashes(services, {"db": 1, "web": 3}))}
        assert after["web-0"] == before["web-0"] and after["db-0"] == before["db-0"]

        services = loads(spec(ns, replicas=3, env="v2"))
        result = await oc.apply(services)
        assert [(a.kind, a.name, a.reason) for a in result.plan] == [(Kind.DEPLOY, "web", "spec changed")]
        rolled = {c.name: c.id for c in await converged(oc, ns, hashes(services, {"db": 1, "web": 3}))}
        assert rolled["db-0"] == before["db-0"]
        assert not {rolled[f"web-{i}"] for i in range(3)} & set(after.values())
        page = (await oc.exec("web-2", ["cat", "/tmp/index.html"], ns)).stdout.decode()
        assert page.startswith("v2 from ")
        deadline = time.monotonic() + 60
        while (state := update_state(f"{ns}_web")) != "completed":  # a rolling update, by the swarm
            assert state == "updating" and time.monotonic() < deadline, state
            await anyio.sleep(0.2)

        services = loads(spec(ns, replicas=1, env="v2"))
        assert [a.reason for a in (await oc.apply(services)).plan] == ["scaled to 1"]
        await converged(oc, ns, hashes(services, {"db": 1, "web": 1}))


async def test_the_swarm_restarts_a_replica_itself(ns, state_dir):
    async with Client(state_dir=state_dir) as oc:
        services = loads(spec(ns, replicas=1))
        assert (await oc.apply(services)).ok
        first = {c.name: c.id for c in await converged(oc, ns, hashes(services, {"db": 1, "web": 1}))}
        docker("kill", first["web-0"])  # no orchestr command runs meanwhile
        deadline = time.monotonic() + 60
        while True:
            running = {c.name: c.id for c in await oc.get(ns) if c.state is State.RUNNING}
            if running.get("web-0") not in (None, first["web-0"]):
                break
            assert time.monotonic() < deadline, "the swarm did not replace the killed replica"
            await anyio.sleep(0.2)


async def test_the_controller_leaves_a_converged_swarm_alone_and_deploys_a_removed_service_again(ns, state_dir):
    from orchestr.controller import Controller

    services = loads(spec(ns, replicas=1))
    async with Client(state_dir=state_dir) as oc:
        assert (await oc.apply(services)).ok
        await converged(oc, ns, hashes(services, {"db": 1, "web": 1}))
        controller = Controller(oc, resync=3600)
        report = await controller.reconcile()
        assert not report.error and not report.plan  # the swarm's containers are not planned one by one
        docker("service", "rm", f"{ns}_web")
        report = await controller.reconcile()
        assert not report.error, report.error
        assert [(a.kind, a.name, a.reason) for a in report.plan] == [(Kind.DEPLOY, "web", "missing")]
        assert all(o.ok for o in report.outcomes)
        await converged(oc, ns, hashes(services, {"db": 1, "web": 1}))


async def test_delete_leaves_nothing(ns, state_dir):
    services = loads(spec(ns))
    async with Client(state_dir=state_dir) as oc:
        assert (await oc.apply(services)).ok
        await converged(oc, ns, hashes(services, {"db": 1, "web": 2}))
        result = await oc.delete(services)
        assert result.ok, result.failed
        assert [(a.kind, a.name) for a in result.plan] == [(Kind.UNDEPLOY, "web"), (Kind.UNDEPLOY, "db")]
        assert result.plan.actions[1].after == (0,)  # dependents first
        # when delete returns, every container has gone: nothing waits for the swarm
        assert docker_containers(ns) == []
        assert docker("service", "ls", "-q", "--filter", f"label={L_NAMESPACE}={ns}").split() == []
        assert subprocess.run(["docker", "network", "inspect", mapping.network_name(ns)],
                              capture_output=True).returncode != 0
        assert await oc.get(ns) == []


async def test_a_delete_right_after_an_apply_leaves_nothing_behind_it(ns, state_dir):
    services = loads(spec(ns))
    async with Client(state_dir=state_dir) as oc:
        assert (await oc.apply(services)).ok
        assert (await oc.delete(services)).ok  # while the swarm is still starting the tasks
        volumes = docker("volume", "ls", "-q", "--filter", f"label={L_NAMESPACE}={ns}").split()
        assert docker_containers(ns) == []
        await anyio.sleep(3)  # nothing of the removed services shows up later
        assert docker_containers(ns) == []
        assert docker("volume", "ls", "-q", "--filter", f"label={L_NAMESPACE}={ns}").split() == volumes


async def test_services_deleted_together_leave_their_network_once(ns, state_dir):
    text = "---\n".join(
        f"apiVersion: orchestr/v1\nkind: Service\nmetadata: {{name: s{i}, namespace: {ns}}}\n"
        f"spec: {{runtime: swarm, image: {TEST_IMAGE}, replicas: 0}}\n" for i in range(12))
    async with Client(state_dir=state_dir) as oc:
        assert (await oc.apply(loads(text))).ok
        assert mapping.network_name(ns) in docker("network", "ls", "--format", "{{.Name}}").split()
        result = await oc.delete(loads(text))
        assert result.ok, result.failed
        assert len(result.plan) == 12
        assert mapping.network_name(ns) not in docker("network", "ls", "--format", "{{.Name}}").split()


async def test_a_network_removed_by_another_client_is_made_again_for_the_next_service(ns, state_dir):
    def one(name: str) -> list[Service]:
        return loads(f"apiVersion: orchestr/v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}}}\n"
                     f"spec: {{runtime: swarm, image: {TEST_IMAGE}, replicas: 0}}\n")

    async with Client(state_dir=state_dir) as oc, Client(state_dir=state_dir) as other:
        assert (await oc.apply(one("a"))).ok  # oc's runtime has made the namespace's network
        assert (await other.delete(one("a"))).ok  # and the other client removed it with the namespace's last service
        assert mapping.network_name(ns) not in docker("network", "ls", "--format", "{{.Name}}").split()
        result = await oc.apply(one("b"))
        assert result.ok, result.failed
        assert mapping.network_name(ns) in docker("network", "ls", "--format", "{{.Name}}").split()
        (b,) = json.loads(docker("service", "inspect", f"{ns}_b"))
        (network,) = json.loads(docker("network", "inspect", mapping.network_name(ns)))
        assert [n["Target"] for n in b["Spec"]["TaskTemplate"]["Networks"]] == [network["Id"]]


async def test_a_service_moves_between_docker_and_the_swarm(ns, state_dir):
    text = spec(ns, replicas=1)
    async with Client(state_dir=state_dir) as oc:
        on_docker = loads(text.replace("runtime: swarm", "runtime: docker"))
        assert (await oc.apply(on_docker)).ok
        docker_ids = {c.id for c in await oc.get(ns)}
        on_swarm = loads(text)
        result = await oc.apply(on_swarm)
        assert result.ok, result.failed
        assert sorted((a.kind.value, a.name, a.reason) for a in result.plan) == [
            ("delete", "db-0", "runtime changed"), ("delete", "web-0", "runtime changed"),
            ("deploy", "db", "missing"), ("deploy", "web", "missing")]
        found = await converged(oc, ns, hashes(on_swarm, {"db": 1, "web": 1}))
        assert not docker_ids & {c.id for c in found}
        result = await oc.apply(on_docker)
        assert sorted((a.kind.value, a.name, a.reason) for a in result.plan) == [
            ("create", "db-0", "missing"), ("create", "web-0", "missing"),
            ("undeploy", "db", "runtime changed"), ("undeploy", "web", "runtime changed")]
        assert result.ok, result.failed
        assert {c.runtime for c in await oc.get(ns)} == {"docker"}
        assert (await oc.delete(on_docker)).ok


@pytest.mark.parametrize("extra, message", [
    ("  paused: true\n", "spec.paused: the swarm runtime cannot pause containers"),
    ("  seccomp: unconfined\n", "seccomp: unconfined: this engine's swarm services always run under its seccomp "
                                "profile"),
])
async def test_what_a_swarm_service_cannot_be_is_refused_in_one_line(ns, state_dir, extra, message):
    services = loads(spec(ns, replicas=1, extra=extra))
    async with Client(state_dir=state_dir) as oc:
        try:
            result = await oc.apply(services)
        except TerminalFailure as e:
            assert message in str(e) and "\n" not in str(e)
        else:
            (failed,) = [o for o in result.outcomes if not o.ok and not o.skipped]
            assert message in failed.error and "\n" not in failed.error
        assert docker("service", "ls", "-q", "--filter", f"label={L_SERVICE}=web",
                      "--filter", f"label={L_NAMESPACE}={ns}").split() == []


def test_the_command_line_refuses_a_loopback_port_and_a_one_off_run(ns, state_dir, tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(spec(ns, replicas=1).replace("[{containerPort: 8080}]",
                                                 "[{containerPort: 8080, hostIP: 127.0.0.1}]"))
    proc = subprocess.run([ORCHESTR, "apply", "-f", str(path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert f"FAILED   deploy {ns}/web: deploy web: service {ns}/web: ports[0]: a swarm service publishes on " \
           f"every address of its nodes, so hostIP 127.0.0.1 cannot be kept" in proc.stderr
    assert subprocess.run([ORCHESTR, "delete", "-f", str(path)], capture_output=True, timeout=120).returncode == 0
    proc = subprocess.run([ORCHESTR, "run", "--runtime", "swarm", "--rm", TEST_IMAGE, "true"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 1 and len(proc.stderr.splitlines()) == 1
    assert "the swarm runtime runs whole services, not single containers" in proc.stderr


def test_apply_returns_once_the_swarm_has_the_services_and_waits_for_their_replicas_when_asked(ns, state_dir, tmp_path):
    def service(name: str, replicas: int, command: list[str], policy: str = "Always") -> str:
        return (f"apiVersion: orchestr/v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n"
                f"  runtime: swarm\n  image: {TEST_IMAGE}\n  replicas: {replicas}\n  stopGracePeriod: 1s\n"
                f"  restartPolicy: {policy}\n  command: {json.dumps(command)}\n")

    path = tmp_path / "s.yaml"
    web = service("web", 2, ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"])
    path.write_text(web)
    apply = [ORCHESTR, "apply", "-f", str(path)]
    proc = subprocess.run(apply, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert f"the runtime starts the replicas of the services deployed: `orchestr get -n {ns}` shows them" in proc.stdout
    proc = subprocess.run([*apply, "--wait", "60s"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "every replica runs"
    running = docker("ps", "-q", "--filter", f"label={L_NAMESPACE}={ns}", "--filter", "status=running").split()
    assert len(running) == 2
    # a replica that cannot start (and restartPolicy Never: is not tried again) never runs: the wait gives up, and
    # says which service
    path.write_text(web + "---\n" + service("job", 1, ["/no/such/program"], "Never"))
    proc = subprocess.run([*apply, "--wait", "3s"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.splitlines()[-1] == f"orchestr: not every replica runs 3s after apply: {ns}/job"


# -- pure parts ---------------------------------------------------------------------------------------------
def deployed(service: Service, replicas: int | None = None, spec_hash: str | None = None) -> Deployment:
    labels = {L_NAMESPACE: service.namespace, L_SERVICE: service.name,
              L_SPEC_HASH: spec_hash or service.spec_hash}
    if service.spec.depends_on:
        labels["orchestr.depends-on"] = ",".join(service.spec.depends_on)
    return Deployment(f"id-{service.name}", service.name, service.namespace, "swarm",
                      service.spec.replicas if replicas is None else replicas, labels)


def test_the_planner_hands_whole_services_to_a_runtime_that_runs_them():
    db = Service.build("db", runtime="swarm")
    web = Service.build("web", runtime="swarm", replicas=3, depends_on=["db"])
    whole = {"swarm"}
    p = plan([db, web], [], default_runtime="docker", service_runtimes=whole)
    assert [(a.kind, a.name, a.container_id, a.after) for a in p] == [
        (Kind.DEPLOY, "db", None, ()), (Kind.DEPLOY, "web", None, (0,))]
    assert not plan([db, web], [], default_runtime="docker", deployed=[deployed(db), deployed(web)],
                    service_runtimes=whole)
    p = plan([db, web], [], default_runtime="docker", deployed=[deployed(db, spec_hash="old"), deployed(web, 1)],
             service_runtimes=whole)
    assert [(a.kind, a.name, a.container_id, a.reason) for a in p] == [
        (Kind.DEPLOY, "db", "id-db", "spec changed"), (Kind.DEPLOY, "web", "id-web", "scaled to 3")]
    # the runtime's own containers are its business: never planned one by one
    from orchestr.model import Container

    task = Container("c1", "web-7", "default", "swarm", "busybox", State.EXITED,
                     {L_NAMESPACE: "default", L_SERVICE: "web", "orchestr.replica": "7"})
    assert not plan([db, web], [task], default_runtime="docker", deployed=[deployed(db), deployed(web)],
                    service_runtimes=whole, prune=True)
    # undeclared services go with prune only, dependents first
    p = plan([], [], default_runtime="docker", deployed=[deployed(db), deployed(web)], service_runtimes=whole,
             scope=["default"], prune=True)
    assert [(a.kind, a.name, a.after) for a in p] == [(Kind.UNDEPLOY, "web", ()), (Kind.UNDEPLOY, "db", (0,))]
    assert not plan([], [], default_runtime="docker", deployed=[deployed(db)], service_runtimes=whole,
                    scope=["default"])
    p = plan_delete([("default", "db")], [task], deployed=[deployed(db), deployed(web)])
    assert [(a.kind, a.name) for a in p] == [(Kind.UNDEPLOY, "db")]
    p = plan_delete_namespace("default", [task], deployed=[deployed(db), deployed(web)])
    assert [(a.kind, a.name) for a in p] == [(Kind.UNDEPLOY, "web"), (Kind.UNDEPLOY, "db")]


def template(**kw) -> ContainerSpec:
    return ContainerSpec(**{"name": "web", "namespace": "shop", "image": "busybox", **kw})


def test_a_template_maps_to_a_swarm_service_spec():
    body = mapping.service_spec(template(
        args=("-v",), env={"A": "1"}, working_dir="/srv", user="1000:1000", init=True, read_only=True,
        resources=Resources(cpus=0.25, memory=64 << 20), ports=(Port(80, 8080), Port(53, None, "udp")),
    ), 2)
    container = body["TaskTemplate"]["ContainerSpec"]
    assert "Command" not in container and container["Args"] == ["-v"]
    assert (container["Env"], container["Dir"], container["User"]) == (["A=1"], "/srv", "1000:1000")
    assert (container["Init"], container["ReadOnly"]) == (True, True)
    assert body["TaskTemplate"]["Resources"] == {"Limits": {"NanoCPUs": 250_000_000, "MemoryBytes": 64 << 20}}
    assert body["TaskTemplate"]["Networks"] == [{"Target": "orchestr_shop", "Aliases": ["web"]}]
    assert body["EndpointSpec"] == {"Mode": "dnsrr", "Ports": [
        {"Protocol": "tcp", "TargetPort": 80, "PublishMode": "host", "PublishedPort": 8080},
        {"Protocol": "udp", "TargetPort": 53, "PublishMode": "host"}]}
    mesh = mapping.service_spec(template(ports=(Port(80, 8080),)), 1, mesh=True)["EndpointSpec"]
    assert mesh == {"Mode": "vip", "Ports": [
        {"Protocol": "tcp", "TargetPort": 80, "PublishMode": "ingress", "PublishedPort": 8080}]}
    host = mapping.service_spec(template(network="host", command=("sleep", "1")), 1)
    assert host["TaskTemplate"]["Networks"] == [{"Target": "host"}]
    assert host["TaskTemplate"]["ContainerSpec"]["Command"] == ["sleep", "1"]
    with pytest.raises(TerminalFailure, match="hostIP 127.0.0.1 cannot be kept"):
        mapping.service_spec(template(ports=(Port(80, 8080, "tcp", "127.0.0.1"),)), 1)


def test_a_task_container_is_named_by_its_slot():
    assert mapping.task_replica({mapping.TASK_NAME: "shop_web.3.abcdef"}) == 2
    assert mapping.task_replica({mapping.TASK_NAME: "shop_web.abcdef"}) is None
    assert mapping.task_replica({}) is None
