"""Service ports and rolling updates: requests failed while a service's spec changes, and what balancing costs."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
import urllib.error
import urllib.request

from context import Context
from harness import Contender, Goal, compare

ID = "rollout"
TITLE = "Rolling updates behind a service port, and the port's throughput"
DESCRIPTION = (
    "A client fetches through one host port, a new connection per request, while the service behind it changes "
    "its spec: orchestr rolls 3 replicas out one at a time (maxSurge 1, maxUnavailable 0, minReadySeconds 1s), "
    "docker-compose recreates its one container (`up -d` after the change). Counted: requests that failed, and "
    "how long the update took. Then the time to fetch 256 MiB (a 64 MiB file 4 times) and 300 small pages "
    "each way a user on the host can reach a service's containers, rows interleaved: through the service port "
    "127.0.0.1:hostPort (iptables DNAT balancing over 3 replicas); through the published ports (mode: host, "
    "127.0.0.1:hostPort) of 3 one-replica services taken in turn, what one had before service ports; the 3 "
    "replicas' own addresses taken in turn; one replica's own address."
)
NOTES = [
    "docker-compose cannot publish one host port from 3 replicas (each would bind it), so its service has one.",
    "Every request is a new connection (HTTP/1.0 from busybox httpd), so each one is balanced anew.",
    "One client (urllib, one connection at a time) for every row. The service port and the published ports are "
    "reached from 127.0.0.1, as a user on the host reaches a port: their connections are DNAT'd (and, from "
    "127.0.0.1, masqueraded) into the bridge, a cost every packet pays. A container's own address is reached from "
    "the host's address on that bridge, without NAT: a way only the host itself has, shown beside for what NAT "
    "costs. The goal compares like with like: the same source, the same NAT and the same spread over 3 "
    "containers, what publishing 3 containers gave before service ports.",
    "The replicas' own addresses in turn against one replica's own address is what spreading one client's "
    "requests over 3 containers costs by itself, without any port.",
    "Docker publishes a port on 127.0.0.1 through docker-proxy (a userland copy) when reached from the host itself.",
]
SERVE = ("dd if=/dev/zero of=/var/www/big bs=1M count=64 2>/dev/null; echo $HOSTNAME $V > /var/www/index.html; "
         "exec httpd -f -p 8080 -h /var/www")
NATIVE, DOCKER = "orchestr native", "orchestr docker"


def run(ctx: Context) -> list[dict]:
    repeat = 1 if ctx.quick else 3
    groups = compare("update 3 replicas behind one port", [
        Contender(NATIVE, lambda: rollout(ctx, "native")),
        Contender(DOCKER, lambda: rollout(ctx, "docker")),
        Contender("docker-compose (recreate)", lambda: recreate(ctx), versus=(NATIVE, DOCKER)),
    ], repeat=repeat, warmup=0)
    for group in groups:
        if group["case"].endswith("failed requests"):
            group["unit"] = "requests"
    for runtime in ("native", "docker"):
        tool = f"orchestr {runtime} service port (3 replicas)"
        with contextlib.ExitStack() as stack:
            d = Deployment(ctx, runtime, stack)
            groups += compare(f"{runtime}: a service port and the other ways in", [
                Contender(tool, lambda d=d: throughput(d, "port")),
                Contender("3 containers' published ports, in turn", lambda d=d: throughput(d, "published"),
                          versus=(tool,), goal=Goal("at least 0.9x the throughput of published ports (ratio <= 1.11)",
                                                    max_ratio=1 / 0.9)),
                Contender("the replicas' own addresses, in turn", lambda d=d: throughput(d, "replicas"),
                          versus=(tool,)),
                Contender("one replica's own address", lambda d=d: throughput(d, "replica"), versus=(tool,)),
            ], repeat=1 if ctx.quick else 15, warmup=1)
    return groups


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spec(ctx: Context, runtime: str, namespace: str, port: int, version: str) -> str:
    doc = {
        "apiVersion": "orchestr/v1", "kind": "Service", "metadata": {"name": "web", "namespace": namespace},
        "spec": {"runtime": runtime, "image": ctx.orchestr_runtime(runtime), "command": ["sh", "-c", SERVE],
                 "replicas": 3, "env": {"V": version}, "stopGracePeriod": "1s",
                 "ports": [{"containerPort": 8080, "hostPort": port, "hostIP": "127.0.0.1"}],
                 "update": {"maxSurge": 1, "maxUnavailable": 0, "minReadySeconds": "1s"}},
    }
    return json.dumps(doc)


class Client(threading.Thread):
    """Fetches url, a new connection each time, until stopped; counts the requests that failed."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url, self.done, self.failed, self.ok = url, threading.Event(), 0, 0

    def run(self) -> None:
        while not self.done.is_set():
            try:
                with urllib.request.urlopen(self.url, timeout=5) as r:
                    r.read()
                self.ok += 1
            except (OSError, urllib.error.URLError):
                self.failed += 1
                time.sleep(0.001)

    def __enter__(self) -> Client:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.join(30)


def wait_serving(url: str) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                r.read()
            return
        except (OSError, urllib.error.URLError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@contextlib.contextmanager
def rollout(ctx: Context, runtime: str):
    namespace = ctx.namespace(f"rollout-{runtime}")
    path = ctx.tempdir(f"rollout-{runtime}") / "web.yaml"
    port = free_port()
    url = f"http://127.0.0.1:{port}/index.html"
    versions = iter(range(1, 1000))
    try:
        path.write_text(spec(ctx, runtime, namespace, port, f"v{next(versions)}"))
        ctx.sh(ctx.orchestr("apply", "-f", path))
        wait_serving(url)

        def trial() -> dict[str, float]:
            path.write_text(spec(ctx, runtime, namespace, port, f"v{next(versions)}"))
            with Client(url) as client:
                took = ctx.timed(ctx.orchestr("apply", "-f", path))
            return {"failed requests": client.failed, "update time": took}
        yield trial
    finally:
        ctx.orchestr_delete_namespace(namespace)


@contextlib.contextmanager
def recreate(ctx: Context):
    ctx.need("docker-compose")
    image = ctx.docker_image()
    project = ctx.namespace("rollout-compose")
    path = ctx.tempdir("rollout-compose") / "docker-compose.yml"
    port = free_port()
    url = f"http://127.0.0.1:{port}/index.html"
    base = ["docker-compose", "-p", project, "-f", path]
    versions = iter(range(1, 1000))

    def write() -> None:
        service = {"image": image, "command": ["sh", "-c", SERVE], "environment": {"V": f"v{next(versions)}"},
                   "ports": [f"127.0.0.1:{port}:8080"], "stop_grace_period": "1s"}
        path.write_text(json.dumps({"version": "2.4", "services": {"web": service}}))

    try:
        write()
        ctx.sh([*base, "up", "-d"])
        wait_serving(url)

        def trial() -> dict[str, float]:
            write()
            with Client(url) as client:
                took = ctx.timed([*base, "up", "-d"])
                wait_serving(url)  # until it serves again: what fails meanwhile counts
            return {"failed requests": client.failed, "update time": took}
        yield trial
    finally:
        ctx.sh([*base, "down", "-t", "1"], check=False)


class Deployment:
    """The throughput comparison's services, deployed once for all its rows (the first row that asks deploys
    them): web, 3 replicas behind a service port, and pub-0..2, one replica each publishing a port of its own."""

    def __init__(self, ctx: Context, runtime: str, stack: contextlib.ExitStack):
        self.ctx, self.runtime, self.stack = ctx, runtime, stack
        self.ways: dict[str, list[str]] | None = None
        self.error: Exception | None = None

    def __call__(self, way: str) -> list[str]:
        """The base URLs a row takes in turn, a new connection each."""
        if self.error is None and self.ways is None:
            try:
                self.ways = self.stack.enter_context(deploy(self.ctx, self.runtime))
            except Exception as e:  # noqa: BLE001 - every row that asks gets the same reason
                self.error = e
        if self.error is not None:
            raise self.error
        return self.ways[way]


@contextlib.contextmanager
def deploy(ctx: Context, runtime: str):
    namespace = ctx.namespace(f"throughput-{runtime}")
    path = ctx.tempdir(namespace) / "web.yaml"
    port, published = free_port(), [free_port() for _ in range(3)]
    try:
        docs = [json.loads(spec(ctx, runtime, namespace, port, "v1"))]
        for i, p in enumerate(published):
            doc = json.loads(spec(ctx, runtime, namespace, p, "v1"))
            doc["metadata"]["name"], doc["spec"]["replicas"] = f"pub-{i}", 1
            doc["spec"]["ports"][0]["mode"] = "host"
            docs.append(doc)
        path.write_text("\n---\n".join(json.dumps(d) for d in docs))
        ctx.sh(ctx.orchestr("apply", "-f", path))
        ip = {c["name"]: c["ip"] for c in json.loads(ctx.sh(ctx.orchestr("get", "-n", namespace, "-o", "json")).stdout)}
        ways = {"port": [f"http://127.0.0.1:{port}"],
                "replicas": [f"http://{ip[f'web-{i}']}:8080" for i in range(3)],
                "published": [f"http://127.0.0.1:{p}" for p in published]}
        ways["replica"] = ways["replicas"][:1]
        for base in {b for bases in ways.values() for b in bases}:
            wait_serving(f"{base}/index.html")
        yield ways
    finally:
        ctx.orchestr_delete_namespace(namespace)


@contextlib.contextmanager
def throughput(deployment: Deployment, way: str):
    bases = deployment(way)

    def fetch(n: int, path: str, timeout: float) -> None:
        for i in range(n):
            with urllib.request.urlopen(f"{bases[i % len(bases)]}{path}", timeout=timeout) as r:
                while r.read(1 << 20):
                    pass

    def trial() -> dict[str, float]:
        t0 = time.perf_counter()
        fetch(4, "/big", 60)
        t1 = time.perf_counter()
        fetch(300, "/index.html", 10)
        return {"256 MiB": t1 - t0, "300 requests": time.perf_counter() - t1}
    yield trial
