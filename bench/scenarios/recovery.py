"""Scenario 9: the controller: how soon a container killed or removed behind its back runs again, what the controller
costs while nothing happens, and how long a resync pass over many containers takes."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

from context import SLEEP, Context
from harness import Contender, Goal, Skip, compare
from scenarios.fleet import expect, orchestr_fleet, orchestr_spec, running_orchestr

ID = "recovery"
TITLE = "Controller: recovery after a kill or a removal, idle cost, resync pass"
DESCRIPTION = (
    "`orchestr controller` runs over one service; its container is then killed (SIGKILL to its first process) or "
    "removed behind orchestr's back (the runtime's own delete; `docker rm -f`), and the time is taken from that "
    "moment until the runtime reports a container of the service running again (a new process, or a new "
    "container), polled every 5 ms through the library. The anchor is the Docker Engine restarting an "
    "`unless-stopped` container whose process was killed, polled the same way. Then the controller's CPU use "
    "and resident memory while idle over N native services, and one resync pass (list, plan, nothing to do) over "
    "M native containers."
)
NOTES = [
    "Kubernetes documents a first crash-loop back-off of 10 s before a crashed container's restart "
    "(then 20 s, 40 s, ... up to 5 min); orchestr restarts the first at once and backs off from the second.",
    "On native the supervisor restarts a killed container by its restart policy, controller or not; a removed one "
    "is made again by the controller, woken by the runtime's destroy event.",
    "The controller runs with ORCHESTR_RESTART_BACKOFF=10s,5m,1s here: a container that has run for a second is "
    "out of its crash loop, so every kill measures a first restart.",
    "Goals: recovery p50 ≤ 1 s on native; idle CPU ≤ 1 % of a core with 50 services.",
]

KILLED, DELETED, REMOVED = ("orchestr controller, killed (native)", "orchestr controller, deleted (native)",
                            "orchestr controller, docker rm -f (docker)")
BACKOFF = "10s,5m,1s"
POLL = 0.005
IDLE = "orchestr controller"


def run(ctx: Context) -> list[dict]:
    repeat, warmup = (2, 0) if ctx.quick else (15, 1)
    idle_n, idle_for, resync_n = (3, 2.0, 5) if ctx.quick else (50, 20.0, 500)
    groups = compare("a container killed or removed, until one runs again", [
        Contender(KILLED, lambda: controlled(ctx, "native", "kill"), goal=Goal("p50 ≤ 1 s", max_value=1.0)),
        Contender(DELETED, lambda: controlled(ctx, "native", "delete"), goal=Goal("p50 ≤ 1 s", max_value=1.0)),
        Contender(REMOVED, lambda: controlled(ctx, "docker", "remove")),
        Contender("dockerd restart, unless-stopped (killed)", lambda: docker_restart(ctx), versus=(KILLED, REMOVED)),
    ], repeat=repeat, warmup=warmup)
    with orchestr_fleet(ctx, idle_n, "native", "idle") as (up, _, namespace):
        ctx.sh(up)
        expect("after `orchestr apply` on native", running_orchestr(ctx, namespace), idle_n)
        proc = controller(ctx)
        time.sleep(1.0)  # past the pass that the services' start woke
        case = f"controller idle over {idle_n} native services, for {idle_for:g} s"
        groups += compare(case, [Contender(IDLE, lambda: idle_cpu(proc.pid, idle_for), goal=Goal("≤ 1 %", 1.0))],
                          repeat=1 if ctx.quick else 3, warmup=0, unit="%")
        groups += compare(case, [Contender(IDLE, lambda: rss(proc.pid))], repeat=1, warmup=0, unit="bytes")
    groups += compare(f"one resync pass over {resync_n} native containers, nothing to do", [
        Contender("Controller.reconcile (native)", lambda: resync(ctx, resync_n)),
    ], repeat=3 if ctx.quick else 10, warmup=1)
    return groups


def controller(ctx: Context) -> subprocess.Popen:
    """`orchestr controller` on the run's state dir, once its first pass is done; stopped with SIGTERM at the end
    of the run. One for every case: one controller per state dir."""
    def make() -> subprocess.Popen:
        log = ctx.work / "controller.log"
        env = dict(ctx.env, ORCHESTR_RESTART_BACKOFF=BACKOFF)
        with open(log, "w") as err:
            proc = subprocess.Popen([*ctx.orchestr("controller", "--metrics-address", "", "--resync", "1h")], env=env,
                                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
        ctx.stack.callback(_stop, proc)
        deadline = time.monotonic() + 60
        while not _first_pass(ctx.state_dir, proc.pid):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the controller did not start: {log.read_text().strip()[-300:]}")
            time.sleep(0.02)
        return proc
    return ctx.once("controller", make)


def _stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _first_pass(state_dir: Path, pid: int) -> bool:
    try:
        status = json.loads((state_dir / "controller.json").read_text())
    except (FileNotFoundError, ValueError):
        return False
    return status.get("pid") == pid and bool(status.get("lastPass"))


def _client(ctx: Context):
    from orchestr.api import Client

    def make():
        client = Client(state_dir=ctx.state_dir)
        ctx.stack.callback(ctx.portal().call, client.close)
        return client
    return ctx.once("client", make)


async def _running(client, namespace: str, old: tuple[str, int | None]):
    """The running container of the namespace's one service that is not old (id, pid)."""
    for c in await client.get(namespace):
        if c.state == "running" and c.pid and (c.id, c.pid) != old:
            return c
    return None


async def _recovery(client, namespace: str, how: str) -> float:
    import anyio

    [c] = [c for c in await client.get(namespace) if c.state == "running"]
    await anyio.sleep(1.2)  # past the back-off's reset (1 s here): each kill is a first restart
    began = time.perf_counter()
    if how == "kill":
        os.kill(c.pid, signal.SIGKILL)
    elif how == "delete":
        await client.runtime(c.runtime).delete(c.id, force=True)
    else:
        subprocess.run(["docker", "rm", "-f", c.id], check=True, capture_output=True)
    while await _running(client, namespace, (c.id, c.pid)) is None:
        await anyio.sleep(POLL)
    return time.perf_counter() - began


@contextlib.contextmanager
def controlled(ctx: Context, runtime: str, how: str):
    client = _client(ctx)
    with orchestr_fleet(ctx, 1, runtime, f"recovery-{how}") as (up, _, namespace):
        # the container keeps the back-off in force at its create
        subprocess.run(up, check=True, capture_output=True, env=dict(ctx.env, ORCHESTR_RESTART_BACKOFF=BACKOFF))
        expect(f"after `orchestr apply` on {runtime}", running_orchestr(ctx, namespace), 1)
        controller(ctx)
        yield lambda: ctx.portal().call(_recovery, client, namespace, how)


@contextlib.contextmanager
def docker_restart(ctx: Context):
    """A fresh `unless-stopped` container each time (the engine backs off from its second restart on)."""
    image = ctx.docker_image()
    label = f"orchestr-bench={ctx.run_id}"
    names: list[str] = []

    def trial() -> float:
        name = f"orchestr-bench-restart-{ctx.run_id}-{len(names)}"
        names.append(name)
        ctx.sh(["docker", "run", "-d", "--name", name, "--label", label, "--restart", "unless-stopped", image,
                *SLEEP])
        pid = int(ctx.sh(["docker", "inspect", "-f", "{{.State.Pid}}", name]).stdout)
        return ctx.portal().call(_engine_restart, name, pid)

    try:
        yield trial
    finally:
        if names:
            ctx.sh(["docker", "rm", "-f", *names], check=False)


async def _engine_restart(name: str, pid: int) -> float:
    import aiodocker
    import anyio

    async with aiodocker.Docker() as docker:
        container = await docker.containers.get(name)
        began = time.perf_counter()
        os.kill(pid, signal.SIGKILL)
        while True:
            state = (await container.show())["State"]
            if state["Running"] and state["Pid"] not in (0, pid):
                return time.perf_counter() - began
            await anyio.sleep(POLL)


@contextlib.contextmanager
def idle_cpu(pid: int, seconds: float):
    def trial() -> float:
        before, t0 = _cpu_seconds(pid), time.perf_counter()
        time.sleep(seconds)
        return 100 * (_cpu_seconds(pid) - before) / (time.perf_counter() - t0)
    yield trial


@contextlib.contextmanager
def rss(pid: int):
    yield lambda: float(_rss(pid))


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise Skip(f"no VmRSS for process {pid}")


@contextlib.contextmanager
def resync(ctx: Context, n: int):
    from orchestr.controller import Controller

    client = _client(ctx)
    image = ctx.orchestr_runtime("native")
    namespace = ctx.namespace("resync-native")
    # network none: more containers than a namespace's bridge has addresses for
    spec = orchestr_spec(ctx.tempdir(f"resync-native-{n}") / "services.yaml", n, namespace, image, "none")
    try:
        ctx.sh(ctx.orchestr("apply", "-f", spec, "--runtime", "native"), timeout=3600)
        expect("after `orchestr apply` on native", running_orchestr(ctx, namespace), n)
        ctl = Controller(client, resync=3600)

        def trial() -> float:
            report = ctx.portal().call(ctl.reconcile, "resync")
            if report.error or report.plan:
                raise RuntimeError(f"the pass was not a no-op: {report.error or report.as_dict()['plan'][:3]}")
            return report.duration
        yield trial
    finally:
        ctx.orchestr_delete_namespace(namespace)
