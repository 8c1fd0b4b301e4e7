"""Scenario: a quiet container's log delivery, get and exec, alone and beside a container writing as fast as it can."""

from __future__ import annotations

import contextlib
import statistics
import subprocess
import threading
import time

from context import Context
from harness import Contender, compare

ID = "neighbour"
TITLE = "A quiet container beside a noisy one: log delivery, get and exec"
DESCRIPTION = (
    "A quiet container prints the host's uptime every 50 ms; a follower (`orchestr logs -f`, `docker logs -f`) "
    "reads its log, and each line's delivery time is when the follower got it less the uptime it carries. Then "
    "one listing (`orchestr get -n NS`, `docker ps`) and one `exec ... true` (`orchestr exec`, `docker exec`) "
    "are timed. Each tool is measured alone and with a second container running `yes` (its output logged, as "
    "fast as the logger takes it), started for that round and removed after it; the rounds alternate. orchestr "
    "native against Docker (json-file logging, 3 files of 10 MB as orchestr keeps). All containers on network none."
)
NOTES = [
    "Delivery times come from /proc/uptime, read in the container and on the host: 10 ms steps, so each is up "
    "to 10 ms long and the medians are comparable, not exact.",
    "This machine has 2 cores: `yes` takes one, its logger (orchestr's supervisor, or dockerd and the shim) "
    "most of the other, so part of any slowing is the CPU the reader, `get` and `exec` wait for.",
]

WINDOW = 2.0  # seconds of the quiet container's lines per round
SETTLE = 1.0  # seconds for `yes` to reach full speed before a noisy round is measured
TICKER = ["sh", "-c", "while :; do read u _ < /proc/uptime; echo \"t $u\"; sleep 0.05; done"]
NOISY = ["yes"]
NATIVE, NATIVE_NOISY = "orchestr native, alone", "orchestr native, beside `yes`"
DOCKER, DOCKER_NOISY = "docker, alone", "docker, beside `yes`"
# Docker's json-file keeps every record unless told: capped as orchestr's own log is
DOCKER_LOG = ["--log-opt", "max-size=10m", "--log-opt", "max-file=3"]


def run(ctx: Context) -> list[dict]:
    repeat, warmup = (1, 0) if ctx.quick else (5, 1)
    window = 0.5 if ctx.quick else WINDOW
    groups = compare("quiet container", [
        Contender(NATIVE, lambda: native(ctx, False, window)),
        Contender(NATIVE_NOISY, lambda: native(ctx, True, window)),
        Contender(DOCKER, lambda: docker(ctx, False, window), versus=(NATIVE,)),
        Contender(DOCKER_NOISY, lambda: docker(ctx, True, window), versus=(NATIVE_NOISY,)),
    ], repeat=repeat, warmup=warmup)
    for group in groups:
        medians = {s["tool"]: (s["summary"] or {}).get("median") for s in group["series"]}
        ratios = []
        for tool, alone, noisy in (("orchestr native", NATIVE, NATIVE_NOISY), ("docker", DOCKER, DOCKER_NOISY)):
            if medians.get(alone) and medians.get(noisy):
                ratios.append(f"{tool} {medians[noisy] / medians[alone]:.2f}x")
        if ratios:
            ctx.note(f"{group['case']}, beside `yes` against alone (median of {group['repeat']} rounds each): "
                     f"{', '.join(ratios)}.")
    return groups


class Follower:
    """A `logs -f` process whose lines are stamped with the host's uptime as they arrive."""

    def __init__(self, argv: list[str], env: dict):
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     stdin=subprocess.DEVNULL, env=env)
        self.lines: list[tuple[float, float]] = []  # (uptime when read, uptime the line carries)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            got = time.clock_gettime(time.CLOCK_BOOTTIME)
            parts = line.split()
            if len(parts) == 2 and parts[0] == b"t":
                self.lines.append((got, float(parts[1])))

    def delivery(self, window: float) -> float:
        """The median delivery time of the lines read over the next window seconds."""
        start = len(self.lines)
        time.sleep(window)
        got = [now - sent for now, sent in self.lines[start:]]
        if not got:
            raise RuntimeError(f"no line of the quiet container arrived within {window:g}s")
        return statistics.median(got)

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self.thread.join(5)


def _round(ctx: Context, follower: Follower, window: float, get: list[str], exec_: list[str]) -> dict[str, float]:
    return {"log delivery": follower.delivery(window), "get": ctx.timed(get), "exec": ctx.timed(exec_)}


@contextlib.contextmanager
def native(ctx: Context, noisy: bool, window: float):
    image = ctx.orchestr_runtime("native")
    tag = "noisy" if noisy else "alone"
    namespace, loud = ctx.namespace(f"neighbour-{tag}"), ctx.namespace(f"neighbour-{tag}-yes")
    try:
        ctx.sh(ctx.orchestr("run", "-d", "--network", "none", "-n", namespace, "--name", "quiet", image, *TICKER))
        follower = Follower(ctx.orchestr("logs", "-f", "-n", namespace, "quiet"), ctx.env)
        try:
            def trial() -> dict[str, float]:
                if noisy:
                    ctx.sh(ctx.orchestr("run", "-d", "--network", "none", "-n", loud, "--name", "yes", image, *NOISY))
                    time.sleep(SETTLE)
                try:
                    return _round(ctx, follower, window, ctx.orchestr("get", "-n", namespace),
                                  ctx.orchestr("exec", "-n", namespace, "quiet", "--", "true"))
                finally:
                    if noisy:
                        ctx.orchestr_delete_namespace(loud)
            yield trial
        finally:
            follower.close()
    finally:
        ctx.orchestr_delete_namespace(loud)
        ctx.orchestr_delete_namespace(namespace)


@contextlib.contextmanager
def docker(ctx: Context, noisy: bool, window: float):
    image = ctx.docker_image()
    tag = "noisy" if noisy else "alone"
    quiet, loud = f"orchestr-bench-quiet-{tag}-{ctx.run_id}", f"orchestr-bench-yes-{ctx.run_id}"
    try:
        ctx.sh(["docker", "run", "-d", "--network", "none", *DOCKER_LOG, "--name", quiet, image, *TICKER])
        follower = Follower(["docker", "logs", "-f", quiet], ctx.env)
        try:
            def trial() -> dict[str, float]:
                if noisy:
                    ctx.sh(["docker", "run", "-d", "--network", "none", *DOCKER_LOG, "--name", loud, image, *NOISY])
                    time.sleep(SETTLE)
                try:
                    return _round(ctx, follower, window, ["docker", "ps"], ["docker", "exec", quiet, "true"])
                finally:
                    if noisy:
                        ctx.sh(["docker", "rm", "-f", loud], check=False)
            yield trial
        finally:
            follower.close()
    finally:
        ctx.sh(["docker", "rm", "-f", quiet, loud], check=False)
