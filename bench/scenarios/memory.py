"""Scenario 5: memory of supervision, the PSS of the processes that watch over each running container."""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path

from context import SLEEP, Context
from harness import Contender, compare
from scenarios.fleet import expect, orchestr_fleet

ID = "memory"
TITLE = "Supervision memory per running container"
DESCRIPTION = (
    "K `sleep` containers run; the supervising processes are every ancestor of a container's first process "
    "up to (not including) PID 1 and this benchmark's own ancestry. Their summed PSS "
    "(/proc/PID/smaps_rollup) divided by K is the cost per container: orchestr native (started with "
    "`orchestr apply`) against containerd's shims (started with `ctr run -d`)."
)
NOTES = [
    "PSS shares each page among the processes that map it, so shims sharing their binary pay it once in total.",
    "orchestr native's supervision is two processes, the worker (the containers' parent) and its keeper (the "
    "worker's parent, which outlives a crash of it): both are counted.",
]

NATIVE = "orchestr native"


def run(ctx: Context) -> list[dict]:
    k, repeat = (2, 1) if ctx.quick else (10, 3)
    contenders = [
        Contender(NATIVE, lambda: orchestr(ctx, k)),
        Contender("containerd-shim (ctr run -d)", lambda: shims(ctx, k), versus=(NATIVE,)),
    ]
    return compare(f"{k} containers", contenders, repeat=repeat, warmup=0, unit="bytes")


@contextlib.contextmanager
def orchestr(ctx: Context, k: int):
    with orchestr_fleet(ctx, k, "native", "memory") as (up, down, namespace):
        def trial() -> float:
            ctx.sh(up)
            try:
                items = json.loads(ctx.sh(ctx.orchestr("get", "-n", namespace, "-o", "json")).stdout or b"[]")
                pids = [c["pid"] for c in items if c.get("state") == "running" and c.get("pid")]
                expect("orchestr native", len(pids), k)
                return pss_per_container(pids)
            finally:
                ctx.sh(down)
        yield trial


@contextlib.contextmanager
def shims(ctx: Context, k: int):
    image = ctx.ctr_image()
    ctr = ["ctr", "-n", ctx.ctr_namespace]
    names = [f"orchestr-bench-mem-{ctx.run_id}-{i}" for i in range(k)]

    def remove() -> None:
        for name in names:
            ctx.sh([*ctr, "tasks", "kill", "-s", "SIGKILL", name], check=False)
        for name in names:
            ctx.sh([*ctr, "tasks", "delete", "-f", name], check=False)
            ctx.sh([*ctr, "containers", "delete", name], check=False)

    def trial() -> float:
        try:
            for name in names:
                ctx.sh([*ctr, "run", "-d", image, name, *SLEEP])
            tasks = ctx.sh([*ctr, "tasks", "ls"]).stdout.decode().splitlines()[1:]
            pids = [int(t.split()[1]) for t in tasks if t.split()[0] in names and t.split()[2] == "RUNNING"]
            expect("ctr run -d", len(pids), k)
            return pss_per_container(pids)
        finally:
            remove()
    try:
        yield trial
    finally:
        remove()


def pss_per_container(pids: list[int]) -> float:
    time.sleep(0.5)  # let supervisors finish starting up before they are weighed
    mine = ancestry(os.getpid())
    supervisors: set[int] = set()
    for pid in pids:
        parent = ppid(pid)
        while parent > 1 and parent not in mine:
            supervisors.add(parent)
            parent = ppid(parent)
    if not supervisors:
        raise RuntimeError(f"found no supervising process above containers {pids}")
    return sum(pss(p) for p in supervisors) / len(pids)


def ancestry(pid: int) -> set[int]:
    seen = set()
    while pid > 0 and pid not in seen:
        seen.add(pid)
        pid = ppid(pid)
    return seen


def ppid(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rpartition(")")[2].split()[1])


def pss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no Pss line in /proc/{pid}/smaps_rollup")
