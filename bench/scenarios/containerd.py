"""Scenario: the containerd runtime beside containerd's own client (ctr) and docker-compose."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from pathlib import Path

from breakdown import summarise
from context import VENV_BIN, Context, mkimage
from harness import Contender, Goal, compare, describe
from scenarios.fleet import compose_fleet, expect, orchestr_fleet, running_compose, running_orchestr
from scenarios.memory import ancestry, pss, pss_per_container

ID = "containerd"
TITLE = "The containerd runtime: one `true` container, a no-op re-apply, an import, supervision memory"
DESCRIPTION = (
    "orchestr's containerd runtime talks to the host's containerd over its gRPC API, in a containerd namespace "
    "of the run's own. A `true` container's create, start, wait and delete (`orchestr run --rm`, network none) "
    "against `ctr run --rm`; a re-apply of N unchanged services against `docker-compose up -d`; `orchestr images "
    "import` of an archive against `ctr images import`; and the PSS of what watches over each running container: "
    "containerd's shim and orchestr's logger for the containerd runtime, the supervisor for native. The services "
    "scenario brings N containerd services up and down against docker-compose and orchestr docker."
)
NOTES = [
    "Both `orchestr run --rm` and `ctr run --rm` pay the same daemon, shim and runc, and read the task's output "
    "through FIFOs; orchestr also pays its own Python (the interpreter, its imports: protobuf's messages, not "
    "grpc) and a seccomp filter in the container, which ctr sets only with --seccomp.",
    "PSS shares each page among the processes mapping it: the shims share their binary, the loggers Python's.",
]

CLI = "orchestr run --rm --runtime containerd --network none"
REAPPLY = "orchestr apply (containerd)"
IMPORT = "orchestr images import --runtime containerd"
CONTAINERD_MEM, NATIVE_MEM = "orchestr containerd (shim + logger)", "orchestr native (supervisor)"


def run(ctx: Context) -> list[dict]:
    ctx.orchestr_runtime("containerd")
    repeat, warmup = (2, 1) if ctx.quick else (15, 2)
    groups = compare("one `true` container", [
        Contender(CLI, lambda: cli(ctx)),
        Contender("ctr run --rm", lambda: ctr_run(ctx), versus=(CLI,),
                  goal=Goal("orchestr at most ctr's time (ratio <= 1.0)", max_ratio=1.0)),
    ], repeat=repeat, warmup=warmup)
    n, repeat, warmup = (3, 2, 0) if ctx.quick else (50, 10, 1)
    groups += compare(f"{n} services, nothing to do", [
        Contender(REAPPLY, lambda: reapply(ctx, n)),
        Contender("docker-compose up -d", lambda: compose_reapply(ctx, n), versus=(REAPPLY,),
                  goal=Goal("orchestr at most 0.3x compose's time", max_ratio=0.3)),
    ], repeat=repeat, warmup=warmup)
    mb, repeat, warmup = (10, 1, 0) if ctx.quick else (200, 5, 1)
    archive = ctx.work / "containerd-big.tar"
    ref = f"orchestr-bench/cd-big:{ctx.run_id}"
    mkimage.busybox_image(archive, [ref], extra_mb=mb, labels={"org.orchestr.bench": "1"})
    groups += compare(f"import {mb} MB", [
        Contender(IMPORT, lambda: orchestr_import(ctx, archive, ref)),
        Contender("ctr images import", lambda: ctr_import(ctx, archive, ref), versus=(IMPORT,),
                  goal=Goal("orchestr at most ctr's time (ratio <= 1.0)", max_ratio=1.0)),
    ], repeat=repeat, warmup=warmup)
    breakdown(ctx, 3 if ctx.quick else 9)
    k, repeat = (2, 1) if ctx.quick else (10, 3)
    groups += compare(f"{k} containers", [
        Contender(CONTAINERD_MEM, lambda: memory(ctx, k, "containerd")),
        Contender(NATIVE_MEM, lambda: memory(ctx, k, "native"), versus=(CONTAINERD_MEM,)),
    ], repeat=repeat, warmup=0, unit="bytes")
    return groups


def breakdown(ctx: Context, n: int) -> None:
    """Where the one-off run's time goes, as a note: medians of n runs timed by bench/breakdown.py."""
    script = Path(__file__).resolve().parent.parent / "breakdown.py"
    out = ctx.work / "breakdown.json"
    namespace = ctx.namespace("cd-breakdown")
    runs = []
    try:
        for i in range(n + 1):
            t0 = time.perf_counter()
            ctx.sh([VENV_BIN / "python", script, out, repr(t0), "--", "run", "--rm", "--runtime", "containerd",
                    "--network", "none", "-n", namespace, ctx.orchestr_runtime("containerd"), "true"])
            total = (time.perf_counter() - t0) * 1000
            found = json.loads(out.read_text())
            found["exit"] = total - sum(v for k, v in found.items() if not k.startswith("network"))
            if i:  # the first is a warm-up
                runs.append(found)
    except subprocess.CalledProcessError as e:
        ctx.note(f"{CLI}: no breakdown: {describe(e)}")
        return
    finally:
        ctx.orchestr_delete_namespace(namespace)
    ctx.note(f"Where {CLI} spends its time (median ms of {n} runs; imports include protobuf's messages, create "
             f"the lease, the snapshot and the container record, start the task's Create and Start): "
             f"{summarise(runs)}.")


@contextlib.contextmanager
def cli(ctx: Context):
    namespace = ctx.namespace("cd-lifecycle")
    argv = ctx.orchestr("run", "--rm", "--runtime", "containerd", "--network", "none", "-n", namespace, ctx.image,
                        "true")
    try:
        yield lambda: ctx.timed(argv)
    finally:
        ctx.orchestr_delete_namespace(namespace)


@contextlib.contextmanager
def ctr_run(ctx: Context):
    image = ctx.ctr_image()
    cid = f"orchestr-bench-cd-ctr-{ctx.run_id}"
    yield lambda: ctx.timed(["ctr", "-n", ctx.ctr_namespace, "run", "--rm", image, cid, "true"])


@contextlib.contextmanager
def reapply(ctx: Context, n: int):
    with orchestr_fleet(ctx, n, "containerd", "cd-reapply") as (up, _, namespace):
        ctx.sh(up)
        expect("after `orchestr apply` on containerd", running_orchestr(ctx, namespace), n)
        yield lambda: ctx.timed(up)


@contextlib.contextmanager
def compose_reapply(ctx: Context, n: int):
    with compose_fleet(ctx, n, "cd-reapply") as (up, _, project):
        ctx.sh(up)
        expect("after `docker-compose up -d`", running_compose(ctx, project), n)
        yield lambda: ctx.timed(up)


@contextlib.contextmanager
def orchestr_import(ctx: Context, archive: Path, ref: str):
    def forget() -> None:
        ctx.sh(ctx.orchestr("images", "rm", "--runtime", "containerd", "--force", ref), check=False)

    def trial() -> float:
        try:
            return ctx.timed(ctx.orchestr("images", "import", "--runtime", "containerd", archive))
        finally:
            forget()
    forget()
    try:
        yield trial
    finally:
        forget()


@contextlib.contextmanager
def ctr_import(ctx: Context, archive: Path, ref: str):
    ctr = ["ctr", "-n", ctx.ctr_namespace]
    ctx.ctr_image()  # the namespace exists and is cleaned at the end

    def forget() -> None:
        ctx.sh([*ctr, "images", "rm", "--sync", f"docker.io/{ref}"], check=False)

    def trial() -> float:
        try:
            return ctx.timed([*ctr, "images", "import", archive])
        finally:
            forget()
    forget()
    try:
        yield trial
    finally:
        forget()


@contextlib.contextmanager
def memory(ctx: Context, k: int, runtime: str):
    with orchestr_fleet(ctx, k, runtime, f"cd-memory-{runtime}") as (up, down, namespace):
        def trial() -> float:
            ctx.sh(up)
            try:
                items = json.loads(ctx.sh(ctx.orchestr("get", "-n", namespace, "-o", "json")).stdout or b"[]")
                pids = [c["pid"] for c in items if c.get("state") == "running" and c.get("pid")]
                expect(f"orchestr {runtime}", len(pids), k)
                if runtime == "native":
                    return pss_per_container(pids)
                return shims_and_loggers(pids)
            finally:
                ctx.sh(down)
        yield trial


def shims_and_loggers(pids: list[int]) -> float:
    """The PSS per container of each container's shim (its parent) and the shim's other children (the logger)."""
    time.sleep(0.5)  # let the loggers finish starting up before they are weighed
    mine = ancestry(os.getpid())
    shims = {int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1]) for pid in pids} - mine
    counted = set(shims)
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                parent = int((proc / "stat").read_text().rpartition(")")[2].split()[1])
            except OSError:
                continue
            if parent in shims and int(proc.name) not in pids:
                counted.add(int(proc.name))
    return sum(pss(p) for p in counted) / len(pids)
