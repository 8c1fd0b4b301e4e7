"""N identical `sleep` services, written both as an orchestr spec and as the equivalent compose file."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path

from context import SLEEP, Context


def orchestr_spec(path: Path, n: int, namespace: str, image: str, network: str = "bridge") -> Path:
    spec = {"image": image, "command": SLEEP, "replicas": 1} | ({"network": network} if network != "bridge" else {})
    docs = [
        {"apiVersion": "orchestr/v1", "kind": "Service", "metadata": {"name": f"s{i}", "namespace": namespace},
         "spec": spec}
        for i in range(n)
    ]
    # JSON is YAML: one document per service
    path.write_text("".join(f"---\n{json.dumps(d)}\n" for d in docs))
    return path


def compose_file(path: Path, n: int, image: str) -> Path:
    services = {f"s{i}": {"image": image, "command": SLEEP} for i in range(n)}
    path.write_text(json.dumps({"version": "2.4", "services": services}, indent=1))
    return path


@contextlib.contextmanager
def orchestr_fleet(ctx: Context, n: int, runtime: str, tag: str) -> Iterator[tuple[list[str], list[str], str]]:
    """The apply and delete commands for n services on runtime, and their namespace; deletes them on exit."""
    image = ctx.orchestr_runtime(runtime)
    namespace = ctx.namespace(f"{tag}-{runtime}")
    network, why = ctx.networks.get(runtime, ("bridge", ""))
    if network != "bridge":
        ctx.note(f"orchestr {runtime} runs these services with network: {network}, as bridge fails here: {why}")
    spec = orchestr_spec(ctx.tempdir(f"{tag}-{runtime}-{n}") / "services.yaml", n, namespace, image, network)
    try:
        yield (ctx.orchestr("apply", "-f", spec, "--runtime", runtime), ctx.orchestr("delete", "-f", spec), namespace)
    finally:
        ctx.orchestr_delete_namespace(namespace)


@contextlib.contextmanager
def compose_fleet(ctx: Context, n: int, tag: str) -> Iterator[tuple[list[str], list[str], str]]:
    """`docker-compose up -d` and `down` for n services in a project of this run's own; takes it down on exit."""
    ctx.need("docker-compose")
    image = ctx.docker_image()
    project = ctx.namespace(f"{tag}-{n}")
    path = compose_file(ctx.tempdir(f"{tag}-compose-{n}") / "docker-compose.yml", n, image)
    base = ["docker-compose", "-p", project, "-f", path]
    try:
        yield [*base, "up", "-d"], [*base, "down"], project
    finally:
        # The engine can refuse to remove the project's network while it still counts endpoints of containers
        # just removed ("has active endpoints"): asked again until it lets go, so no network is left behind.
        for _ in range(30):
            if ctx.sh([*base, "down", "-t", "1"], check=False).returncode == 0:
                break
            time.sleep(1)


def running_orchestr(ctx: Context, namespace: str) -> int:
    out = ctx.sh(ctx.orchestr("get", "-n", namespace, "-o", "json")).stdout
    data = json.loads(out or b"[]")
    items = data.get("items", []) if isinstance(data, dict) else data
    return sum(1 for c in items if c.get("state") == "running")


def running_compose(ctx: Context, project: str) -> int:
    out = ctx.sh(["docker", "ps", "-q", "--filter", f"label=com.docker.compose.project={project}"]).stdout
    return len(out.split())


def expect(what: str, got: int, want: int) -> None:
    if got != want:
        raise RuntimeError(f"{what}: expected {want} running containers, found {got}")
