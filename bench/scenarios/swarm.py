"""Scenario 10: N services onto a swarm, `orchestr apply` on the swarm runtime against `docker stack deploy`."""

from __future__ import annotations

import contextlib
import json
import time

from context import SLEEP, Context
from harness import Contender, Goal, Skip, compare

ID = "swarm"
TITLE = "N services onto a single-node swarm"
DESCRIPTION = (
    "`orchestr apply -f` of N `sleep` services on the swarm runtime against `docker stack deploy "
    "--resolve-image never -c` of the equivalent compose file (replicas 1, a stop grace period of 1 s, one overlay "
    "network), each into a fresh namespace or stack. Two figures per trial: until the command returns (both return "
    "once the swarm has the services, as neither waits for their containers), and until all N containers run. "
    "Removing them afterwards is not timed. Needs the engine to be a swarm manager (`make test`'s setup)."
)
NOTES: list[str] = []

ORCHESTR = "orchestr apply (swarm)"
GOAL = Goal("orchestr at most 1.0x docker stack deploy", max_ratio=1.0)


def run(ctx: Context) -> list[dict]:
    n, repeat, warmup = (10, 2, 0) if ctx.quick else (10, 10, 1)
    contenders = [
        Contender(ORCHESTR, lambda: orchestr(ctx, n)),
        Contender("docker stack deploy", lambda: stack(ctx, n), versus=(ORCHESTR,), goal=GOAL),
    ]
    return compare(f"{n} services", contenders, repeat=repeat, warmup=warmup)


def _swarm(ctx: Context) -> str:
    image = ctx.docker_image()
    state = ctx.sh(["docker", "info", "--format", "{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}}"])
    if state.stdout.decode().split() != ["active", "true"]:
        raise Skip("the Docker Engine is not a swarm manager (scripts/setup.sh makes it one)")
    return image


def _running(ctx: Context, label: str) -> int:
    out = ctx.sh(["docker", "ps", "-q", "--filter", f"label={label}", "--filter", "status=running"]).stdout
    return len(out.split())


def _gone(ctx: Context, label: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while ctx.sh(["docker", "ps", "-aq", "--filter", f"label={label}"]).stdout.split():
        if time.monotonic() > deadline:
            raise RuntimeError(f"containers labelled {label} were still there {timeout:g}s after their removal")
        time.sleep(0.2)


def _trial(ctx: Context, up: list[str], down: list[str], label: str, n: int) -> dict[str, float]:
    t0 = time.perf_counter()
    ctx.sh(up)
    returned = time.perf_counter() - t0
    deadline = time.monotonic() + 120
    while _running(ctx, label) < n:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{n} containers labelled {label} were not running 120 s after `{' '.join(up)}`")
        time.sleep(0.05)
    running = time.perf_counter() - t0
    ctx.sh(down)
    _gone(ctx, label)
    return {"command returns": returned, "all running": running}


@contextlib.contextmanager
def orchestr(ctx: Context, n: int):
    image = _swarm(ctx)
    ctx.orchestr_cli()
    work = ctx.tempdir(f"swarm-orchestr-{n}")
    rounds = iter(range(1_000_000))
    namespaces: list[str] = []

    def trial() -> dict[str, float]:
        namespace = ctx.namespace(f"swarm-{next(rounds)}")
        namespaces.append(namespace)
        docs = [{"apiVersion": "orchestr/v1", "kind": "Service", "metadata": {"name": f"s{i}", "namespace": namespace},
                 "spec": {"runtime": "swarm", "image": image, "command": SLEEP, "stopGracePeriod": "1s"}}
                for i in range(n)]
        path = work / f"{namespace}.yaml"
        path.write_text("".join(f"---\n{json.dumps(d)}\n" for d in docs))
        return _trial(ctx, ctx.orchestr("apply", "-f", path), ctx.orchestr("delete", "-f", path),
                      f"orchestr.namespace={namespace}", n)

    try:
        yield trial
    finally:
        for namespace in namespaces:
            ctx.orchestr_delete_namespace(namespace)


@contextlib.contextmanager
def stack(ctx: Context, n: int):
    image = _swarm(ctx)
    work = ctx.tempdir(f"swarm-stack-{n}")
    path = work / "docker-compose.yml"
    services = {f"s{i}": {"image": image, "command": SLEEP, "stop_grace_period": "1s", "deploy": {"replicas": 1}}
                for i in range(n)}
    path.write_text(json.dumps({"version": "3.8", "services": services}, indent=1))
    rounds = iter(range(1_000_000))
    stacks: list[str] = []

    def trial() -> dict[str, float]:
        name = ctx.namespace(f"stack-{next(rounds)}")
        stacks.append(name)
        up = ["docker", "stack", "deploy", "--resolve-image", "never", "-c", path, name]
        return _trial(ctx, up, ["docker", "stack", "rm", name], f"com.docker.stack.namespace={name}", n)

    try:
        yield trial
    finally:
        for name in stacks:
            ctx.sh(["docker", "stack", "rm", name], check=False)
