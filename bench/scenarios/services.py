"""Scenario 2: bring up N `sleep` services and tear them down, with orchestr's runtimes and docker-compose."""

from __future__ import annotations

import contextlib

from context import Context
from harness import Contender, Goal, compare
from scenarios.fleet import compose_fleet, expect, orchestr_fleet, running_compose, running_orchestr

ID = "services"
TITLE = "Bring up and tear down N `sleep` services"
DESCRIPTION = (
    "`orchestr apply -f` then `orchestr delete -f` of N one-replica services, against `docker-compose up -d` "
    "then `down` of the equivalent generated compose file. up ends when the command returns (every container "
    "started), down when every container is stopped and removed."
)
NOTES = [
    "Each service runs `sh -c \"trap 'exit 0' TERM; sleep 3600 & wait\"`, so a stop never waits out the grace period.",
    "docker-compose also creates and removes the project's network.",
]

NATIVE, DOCKER, CONTAINERD = "orchestr native", "orchestr docker", "orchestr containerd"


def run(ctx: Context) -> list[dict]:
    groups = []
    # The 50-service case follows the 10-service one, which warms every tool up, so it skips its own warm-up.
    for n, repeat, warmup in ([(3, 1, 0)] if ctx.quick else [(10, 5, 1), (50, 3, 0)]):
        contenders = [
            Contender(NATIVE, lambda n=n: orchestr(ctx, n, "native")),
            Contender(DOCKER, lambda n=n: orchestr(ctx, n, "docker")),
            Contender(CONTAINERD, lambda n=n: orchestr(ctx, n, "containerd")),
            Contender("docker-compose", lambda n=n: compose(ctx, n), versus=(CONTAINERD, DOCKER, NATIVE),
                      goal=Goal("orchestr containerd at most 0.5x compose's time", max_ratio=0.5)),
        ]
        groups += compare(f"{n} services", contenders, repeat=repeat, warmup=warmup)
    return groups


@contextlib.contextmanager
def orchestr(ctx: Context, n: int, runtime: str):
    with orchestr_fleet(ctx, n, runtime, "services") as (up, down, namespace):
        def trial() -> dict[str, float]:
            t_up = ctx.timed(up)
            expect(f"after `orchestr apply` on {runtime}", running_orchestr(ctx, namespace), n)
            return {"up": t_up, "down": ctx.timed(down)}
        yield trial


@contextlib.contextmanager
def compose(ctx: Context, n: int):
    with compose_fleet(ctx, n, "services") as (up, down, project):
        def trial() -> dict[str, float]:
            t_up = ctx.timed(up)
            expect("after `docker-compose up -d`", running_compose(ctx, project), n)
            return {"up": t_up, "down": ctx.timed(down)}
        yield trial
