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
    "how long the update took. Then the time to fetch 256 MiB (a 64 MiB file 4 times) and 300 small pages, "
    "through the service port (iptables DNAT balancing over 3 replicas) and straight to one replica's address."
)
NOTES = [
    "docker-compose cannot publish one host port from 3 replicas (each would bind it), so its service has one.",
    "Every request is a new connection (HTTP/1.0 from busybox httpd), so each one is balanced anew.",
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
        tool = f"orchestr {runtime} service port"
        groups += compare(f"{runtime}: through the service port vs straight to a replica", [
            Contender(tool, lambda runtime=runtime: throughput(ctx, runtime, via_port=True)),
            Contender("straight to the replica's address", lambda runtime=runtime: throughput(ctx, runtime, False),
                      versus=(tool,), goal=Goal("at least 0.9x the direct throughput (ratio <= 1.11)",
                                                max_ratio=1 / 0.9)),
        ], repeat=1 if ctx.quick else 5, warmup=1)
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


@contextlib.contextmanager
def throughput(ctx: Context, runtime: str, via_port: bool):
    namespace = ctx.namespace(f"throughput-{runtime}-{'port' if via_port else 'direct'}")
    path = ctx.tempdir(namespace) / "web.yaml"
    port = free_port()
    try:
        path.write_text(spec(ctx, runtime, namespace, port, "v1"))
        ctx.sh(ctx.orchestr("apply", "-f", path))
        wait_serving(f"http://127.0.0.1:{port}/index.html")
        if via_port:
            base = f"http://127.0.0.1:{port}"
        else:
            items = json.loads(ctx.sh(ctx.orchestr("get", "-n", namespace, "-o", "json")).stdout)
            base = f"http://{items[0]['ip']}:8080"
        wait_serving(f"{base}/big")

        def trial() -> dict[str, float]:
            t0 = time.perf_counter()
            for _ in range(4):
                with urllib.request.urlopen(f"{base}/big", timeout=60) as r:
                    while r.read(1 << 20):
                        pass
            t1 = time.perf_counter()
            for _ in range(300):
                with urllib.request.urlopen(f"{base}/index.html", timeout=10) as r:
                    r.read()
            return {"256 MiB": t1 - t0, "300 requests": time.perf_counter() - t1}
        yield trial
    finally:
        ctx.orchestr_delete_namespace(namespace)
