"""Scenario: a container writing lines as fast as it can, through orchestr's supervisor and Docker's json-file."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time

from context import Context
from harness import Contender, Goal, compare

ID = "logs"
TITLE = "Log throughput of a container writing as fast as it can"
DESCRIPTION = (
    "A container running `yes | head -n N` (N two-byte lines), started and waited for: orchestr native "
    "(`Client.run`, its output logged by the supervisor as JSON lines) against `docker run -d` + `docker wait` "
    "(Docker's default json-file logging). The container can write no faster than its output is taken from the "
    "pipe, so its time is the logger's (Docker's also holds `docker start`'s own). CPU per MB of output: the "
    "supervisor's processes, against dockerd and the container's shim. Both on network none."
)
NOTES = [
    "orchestr's log keeps 3 files of 10 MiB by default, so the first records are rotated away; Docker's "
    "json-file keeps them all. Both write every record.",
]

NATIVE = "orchestr native (supervisor)"
DOCKER = "docker run (json-file)"


def run(ctx: Context) -> list[dict]:
    lines, repeat, warmup = (100_000, 2, 1) if ctx.quick else (2_000_000, 5, 1)
    goal = Goal("orchestr at most 1.0x Docker", max_ratio=1.0)
    return compare(f"{lines * 2 / 1e6:g} MB of `yes`", [
        Contender(NATIVE, lambda: native(ctx, lines)),
        Contender(DOCKER, lambda: docker(ctx, lines), versus=(NATIVE,), goal=goal),
    ], repeat=repeat, warmup=warmup)


def _command(lines: int) -> list[str]:
    return ["sh", "-c", f"yes | head -n {lines}"]


def _cpu(pids: list[int]) -> float:
    """CPU seconds the processes have used so far (those gone count nothing)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return total / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def native(ctx: Context, lines: int):
    image = ctx.orchestr_runtime("native")
    import orchestr

    namespace, portal = ctx.namespace("logs"), ctx.portal()
    state_dir = ctx.work / "orchestr-state-logs"
    with portal.wrap_async_context_manager(orchestr.Client(state_dir=state_dir, runtime="native")) as client:
        rt = client.runtime("native")
        portal.call(rt.import_image, ctx.archive())

        def trial() -> dict[str, float]:
            portal.call(lambda: client.run(image, ["true"], namespace=namespace, remove=True, network="none"))
            pids = rt._containers.supervisor_pids()  # the supervisor, up for the run
            c0, t0 = _cpu(pids), time.perf_counter()
            container, code = portal.call(lambda: client.run(image, _command(lines), namespace=namespace,
                                                             network="none"))
            elapsed, cpu = time.perf_counter() - t0, _cpu(pids) - c0
            portal.call(rt.delete, container.id)
            if code != 0:
                raise RuntimeError(f"the container exited with {code}")
            return {"time": elapsed, "logger CPU per MB": cpu / (lines * 2 / 1e6)}
        yield trial


@contextlib.contextmanager
def docker(ctx: Context, lines: int):
    image = ctx.docker_image()
    name = f"orchestr-bench-logs-{ctx.run_id}"
    dockerd = [int(p) for p in ctx.sh(["pgrep", "-x", "dockerd"], check=False).stdout.split()]

    def shims() -> set[int]:
        return {int(p) for p in ctx.sh(["pgrep", "-f", "containerd-shim"], check=False).stdout.split()}

    def trial() -> dict[str, float]:
        ctx.sh(["docker", "rm", "-f", name], check=False)
        ctx.sh(["docker", "create", "--name", name, "--network", "none", image, *_command(lines)])
        before = shims()
        c0, t0 = _cpu(dockerd), time.perf_counter()
        ctx.sh(["docker", "start", name])
        shim = sorted(shims() - before)  # the container's own, made by the start
        s0 = _cpu(shim)
        ctx.sh(["docker", "wait", name])
        elapsed = time.perf_counter() - t0
        cpu = _cpu(dockerd) - c0 + _cpu(shim) - s0
        ctx.sh(["docker", "rm", "-f", name], check=False)
        return {"time": elapsed, "logger CPU per MB": cpu / (lines * 2 / 1e6)}
    try:
        yield trial
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)
