"""Scenario 4: the planner alone, in-process: N declared services against N containers that already match."""

from __future__ import annotations

import contextlib
import time

from harness import Contender, Goal, Skip, compare

ID = "planner"
TITLE = "Planner alone: N services against N matching containers"
DESCRIPTION = (
    "`orchestr.planner.plan(services, actual, default_runtime=...)` in-process, where every service "
    "(built with `Service.build`) already has its running container with matching ownership labels and "
    "spec hash, so the plan is empty. Building the inputs is not timed."
)
NOTES: list[str] = []

TOOL = "orchestr.planner.plan"
GOAL = Goal("10k services under 50 ms", max_value=0.050)


def run(ctx) -> list[dict]:
    sizes = [(1_000, 10), (10_000, 5)] if ctx.quick else [(1_000, 30), (10_000, 20), (100_000, 5)]
    groups = []
    for n, repeat in sizes:
        contender = Contender(TOOL, lambda n=n: planner(n), goal=GOAL if n == 10_000 else None)
        groups += compare(f"{n:,} services", [contender], repeat=repeat, warmup=1)
    return groups


def inputs(n: int, runtime: str = "docker"):
    """n services in one namespace and, for each, the running container the runtime would report."""
    try:
        from orchestr.model import L_NAMESPACE, L_REPLICA, L_SERVICE, L_SPEC_HASH, Container, State
        from orchestr.spec import Service
    except ImportError as e:
        raise Skip(f"orchestr's spec module is not there yet: {e}") from None
    services, actual = [], []
    for i in range(n):
        s = Service.build(f"s{i}", namespace="bench", image="orchestr-bench/busybox:latest",
                          command=["sleep", "3600"])
        services.append(s)
        labels = {L_NAMESPACE: s.namespace, L_SERVICE: s.name, L_REPLICA: "0", L_SPEC_HASH: s.spec_hash}
        actual.append(Container(id=f"{i:064x}", name=f"{s.name}-0", namespace=s.namespace, runtime=runtime,
                                image=s.spec.image, state=State.RUNNING, labels=labels, pid=1000 + i))
    return services, actual


@contextlib.contextmanager
def planner(n: int):
    try:
        from orchestr.planner import plan
    except ImportError as e:
        raise Skip(f"orchestr.planner.plan is not there yet: {e}") from None
    services, actual = inputs(n)
    if leftover := plan(services, actual, default_runtime="docker"):
        raise RuntimeError(f"expected an empty plan for matching containers, got {len(leftover)} actions")

    def trial() -> float:
        t0 = time.perf_counter()
        plan(services, actual, default_runtime="docker")
        return time.perf_counter() - t0
    yield trial
