"""Scenario 3: re-apply a spec whose services all run already: the cost of finding there is nothing to do."""

from __future__ import annotations

import contextlib

from context import Context
from harness import Contender, compare
from scenarios.fleet import compose_fleet, expect, orchestr_fleet, running_compose, running_orchestr

ID = "reapply"
TITLE = "No-op re-apply of N running services"
DESCRIPTION = (
    "With N services already up, `orchestr apply -f` of the same spec against `docker-compose up -d` "
    "of the same compose file: both must read the actual state, compare and change nothing."
)
NOTES: list[str] = []

NATIVE, DOCKER = "orchestr apply (native)", "orchestr apply (docker)"


def run(ctx: Context) -> list[dict]:
    n, repeat, warmup = (3, 2, 0) if ctx.quick else (50, 10, 1)
    contenders = [
        Contender(DOCKER, lambda: orchestr(ctx, n, "docker")),
        Contender(NATIVE, lambda: orchestr(ctx, n, "native")),
        Contender("docker-compose up -d", lambda: compose(ctx, n), versus=(DOCKER, NATIVE)),
    ]
    return compare(f"{n} services, nothing to do", contenders, repeat=repeat, warmup=warmup)


@contextlib.contextmanager
def orchestr(ctx: Context, n: int, runtime: str):
    with orchestr_fleet(ctx, n, runtime, "reapply") as (up, _, namespace):
        ctx.sh(up)
        expect(f"after `orchestr apply` on {runtime}", running_orchestr(ctx, namespace), n)
        yield lambda: ctx.timed(up)


@contextlib.contextmanager
def compose(ctx: Context, n: int):
    with compose_fleet(ctx, n, "reapply") as (up, _, project):
        ctx.sh(up)
        expect("after `docker-compose up -d`", running_compose(ctx, project), n)
        yield lambda: ctx.timed(up)
