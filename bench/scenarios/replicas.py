"""Scenario: one `sleep` service scaled to N replicas on the default network, up and down, and listing them."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import statistics
import time

from context import SLEEP, Context
from harness import Contender, Goal, compare
from scenarios.fleet import expect, running_compose, running_orchestr

ID = "replicas"
TITLE = "N replicas of one `sleep` service, up, listed and down"
DESCRIPTION = (
    "`orchestr apply -f` of one service with `replicas: N` on its default network (native: the namespace's "
    "bridge; every replica gets an address and every replica's /etc/hosts names all the others), then "
    "`orchestr delete -f`, against `docker-compose up -d --scale s=N` and `docker-compose down` of the "
    "equivalent compose file (the project's default network, made and removed with it); and `orchestr get -n NS` "
    "of the N running replicas."
)
NOTES = [
    "Each replica runs `sh -c \"trap 'exit 0' TERM; sleep 3600 & wait\"`, so a stop never waits out the grace period.",
    "docker-compose 1.29's down of hundreds of containers can fail to remove the project's network (the engine "
    "still holds endpoints): its time is then that of the first down, which removed every container, and the "
    "network goes with a later down, untimed.",
]

NATIVE = "orchestr native (network bridge, the default)"
GET = "orchestr get -n NS (native)"


def run(ctx: Context) -> list[dict]:
    n, repeat, warmup = (5, 1, 0) if ctx.quick else (200, 2, 0)
    goal = Goal("orchestr native at most 0.2x docker-compose", max_ratio=0.2)
    groups = compare(f"{n} replicas", [
        Contender(NATIVE, lambda: orchestr(ctx, n)),
        Contender("docker-compose --scale", lambda: compose(ctx, n), versus=(NATIVE,), goal=goal),
    ], repeat=repeat, warmup=warmup)
    cpu: list[float] = []
    with orchestr_up(ctx, n) as (_, namespace):
        load = os.getloadavg()[0]
        groups += compare(f"list {n} running replicas", [
            Contender(GET, lambda: _simple(lambda: _get(ctx, namespace, cpu))),
        ], repeat=3 if ctx.quick else 10, warmup=1)
    for s in groups[-1]["series"]:
        if s["summary"]:
            met = "met" if s["summary"]["median"] <= 0.1 else "NOT MET"
            ctx.note(f"`orchestr get` of {n} running replicas: median {s['summary']['median'] * 1000:.0f} ms "
                     f"(goal: at most 100 ms: {met}); the CPU time (user and system) of its process: median "
                     f"{statistics.median(cpu) * 1000:.0f} ms, the rest of the wall-clock time waiting for a CPU "
                     f"(load average {load:.1f} when it began).")
    return groups


def _get(ctx: Context, namespace: str, cpu: list[float]) -> float:
    """One `orchestr get`, timed; cpu gets the process's CPU time, which other work on the machine does not
    lengthen as it does the wall-clock time."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    elapsed = ctx.timed(ctx.orchestr("get", "-n", namespace))
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return elapsed


@contextlib.contextmanager
def _simple(trial):
    yield trial


def _spec(ctx: Context, n: int, namespace: str) -> str:
    doc = {"apiVersion": "orchestr/v1", "kind": "Service", "metadata": {"name": "s", "namespace": namespace},
           "spec": {"image": ctx.orchestr_runtime("native"), "command": SLEEP, "replicas": n}}
    path = ctx.tempdir(f"{namespace}-spec") / "service.yaml"
    path.write_text(json.dumps(doc))  # JSON is YAML
    return str(path)


@contextlib.contextmanager
def orchestr_up(ctx: Context, n: int):
    namespace = ctx.namespace(f"replicas-up-{n}")
    spec = _spec(ctx, n, namespace)
    try:
        ctx.sh(ctx.orchestr("apply", "-f", spec))
        expect("after `orchestr apply`", running_orchestr(ctx, namespace), n)
        yield spec, namespace
    finally:
        ctx.orchestr_delete_namespace(namespace)


@contextlib.contextmanager
def orchestr(ctx: Context, n: int):
    namespace = ctx.namespace(f"replicas-{n}")
    spec = _spec(ctx, n, namespace)
    try:
        def trial() -> dict[str, float]:
            t_up = ctx.timed(ctx.orchestr("apply", "-f", spec))
            expect("after `orchestr apply`", running_orchestr(ctx, namespace), n)
            return {"up": t_up, "down": ctx.timed(ctx.orchestr("delete", "-f", spec))}
        yield trial
    finally:
        ctx.orchestr_delete_namespace(namespace)


@contextlib.contextmanager
def compose(ctx: Context, n: int):
    ctx.need("docker-compose")
    project = ctx.namespace(f"replicas-{n}")
    path = ctx.tempdir(f"replicas-compose-{n}") / "docker-compose.yml"
    path.write_text(json.dumps({"version": "2.4", "services": {"s": {"image": ctx.docker_image(), "command": SLEEP}}}))
    base = ["docker-compose", "-p", project, "-f", path]
    kept: list[bool] = []
    try:
        def down() -> float:
            """docker-compose 1.29's down, timed until its containers are gone. With hundreds of them it can ask
            to remove the project's network before the engine has let go of their endpoints, and fail: then it
            is asked again, untimed, until the network is gone too."""
            t0 = time.perf_counter()
            done = ctx.sh([*base, "down"], timeout=1800, check=False)
            elapsed = time.perf_counter() - t0
            for _ in range(60):  # on a busy machine the engine can take most of a minute to let go
                if done.returncode == 0:
                    break
                time.sleep(1)
                done = ctx.sh([*base, "down"], timeout=1800, check=False)
            else:  # the engine's own leak (endpoints of removed containers): the next up reuses the network
                if done.returncode and not kept:
                    kept.append(True)
                    ctx.note("docker-compose's down removed every container but the engine kept the project's "
                             "network for more than a minute (\"has active endpoints\" with none left); the next "
                             "up reused it.")
            return elapsed

        def trial() -> dict[str, float]:
            t_up = ctx.timed([*base, "up", "-d", "--scale", f"s={n}"], timeout=1800)
            expect("after `docker-compose up -d --scale`", running_compose(ctx, project), n)
            return {"up": t_up, "down": down()}
        yield trial
    finally:
        ctx.sh([*base, "down", "-t", "1"], check=False, timeout=1800)
