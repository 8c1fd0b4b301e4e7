"""Scenario 6: command start-up, `orchestr --help` against `docker-compose --help`."""

from __future__ import annotations

import contextlib

from context import Context
from harness import Contender, Goal, compare

ID = "startup"
TITLE = "CLI start-up"
DESCRIPTION = "`orchestr --help` (the venv's bin/orchestr) against `docker-compose --help`, output discarded."
NOTES: list[str] = []

ORCHESTR = "orchestr --help"


def run(ctx: Context) -> list[dict]:
    repeat, warmup = (3, 1) if ctx.quick else (20, 2)
    contenders = [
        Contender(ORCHESTR, lambda: cli(ctx, ctx.orchestr("--help"), orchestr=True)),
        Contender("docker-compose --help", lambda: cli(ctx, ["docker-compose", "--help"]), versus=(ORCHESTR,),
                  goal=Goal("orchestr at most 0.2x docker-compose", max_ratio=0.2)),
    ]
    return compare("--help", contenders, repeat=repeat, warmup=warmup)


@contextlib.contextmanager
def cli(ctx: Context, argv: list[str], orchestr: bool = False):
    if orchestr:
        ctx.orchestr_cli()
    else:
        ctx.need(argv[0])
    yield lambda: ctx.timed(argv)
