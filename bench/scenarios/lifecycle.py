"""Scenario 1: create, start, wait for and delete one `true` container, sequentially, with every tool."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from breakdown import summarise
from context import VENV_BIN, Context, mkimage
from harness import Contender, Goal, Skip, compare, describe

ID = "lifecycle"
TITLE = "Lifecycle of one `true` container"
DESCRIPTION = (
    "Create, start, wait for and delete a container running `true`, one after the other. "
    "runc and crun run a prepared OCI bundle (busybox-static rootfs, `runc spec` with args [\"true\"]); "
    "ctr runs the same image imported into containerd; docker and orchestr's docker runtime use the image "
    "loaded into the Docker Engine."
)
NOTES = [
    "Network of each row: orchestr's rows say theirs. `orchestr run` without `--network` and `Client.run` "
    "without `network=` use the bridge network, orchestr's default, in a namespace with no other container: "
    "its bridge is made by the namespace's first container (the warm-up) and then kept, as docker0 is. "
    "`docker run` and orchestr's docker runtime use Docker's default bridge; runc, crun and `ctr run` give the "
    "container a network namespace with loopback only (their default), as `--network none` does.",
    "crun 1.8 refuses hybrid cgroup hosts whose cgroup2 mount has controllers, so it runs in a private "
    "mount namespace without /sys/fs/cgroup/unified, entered with `nsenter` (about 2 ms of the time).",
]

LIB = "orchestr native, library Client.run (default network: bridge)"
LIB_NONE = "orchestr native, library Client.run, network none"
CLI_NATIVE = "orchestr run --rm (defaults: native, network bridge)"
CLI_NATIVE_NONE = "orchestr run --rm --network none (native)"
CLI_DOCKER = "orchestr run --rm --runtime docker (Docker's default bridge)"
DOCKER_GOAL = 1.0  # orchestr run --runtime docker against docker run


def run(ctx: Context) -> list[dict]:
    repeat, warmup = (2, 1) if ctx.quick else (15, 2)
    contenders = [
        Contender(CLI_NATIVE, lambda: cli(ctx, "native")),
        Contender(CLI_NATIVE_NONE, lambda: cli(ctx, "native", "none")),
        Contender(CLI_DOCKER, lambda: cli(ctx, "docker")),
        Contender(LIB, lambda: library(ctx)),
        Contender(LIB_NONE, lambda: library(ctx, "none")),
        Contender("runc run (bundle)", lambda: oci(ctx, "runc"), versus=(LIB, LIB_NONE, CLI_NATIVE)),
        Contender("crun run (bundle)", lambda: oci(ctx, "crun"), versus=(LIB, LIB_NONE, CLI_NATIVE),
                  goal=Goal("library lifecycle at most 1.0x crun run", max_ratio=1.0)),
        Contender("ctr run --rm", lambda: ctr(ctx), versus=(CLI_NATIVE, CLI_NATIVE_NONE, LIB),
                  goal=Goal("orchestr run --rm (defaults) at most 1.0x ctr run --rm", max_ratio=1.0)),
        Contender("docker run --rm", lambda: docker(ctx), versus=(CLI_NATIVE, CLI_DOCKER, CLI_NATIVE_NONE),
                  goal=Goal("orchestr run --rm (defaults) at most 0.5x docker run --rm", max_ratio=0.5)),
    ]
    groups = compare("one `true` container", contenders, repeat=repeat, warmup=warmup)
    medians = {s["tool"]: (s["summary"] or {}).get("median") for s in groups[0]["series"]}
    if medians.get(CLI_DOCKER) and medians.get("docker run --rm"):
        ratio = medians[CLI_DOCKER] / medians["docker run --rm"]
        met = "met" if ratio <= DOCKER_GOAL else "NOT MET"
        ctx.note(f"{CLI_DOCKER} is {ratio:.2f}x docker run --rm (goal: at most {DOCKER_GOAL:g}x: {met}).")
    breakdowns(ctx, 3 if ctx.quick else 9)
    return groups


def breakdowns(ctx: Context, n: int) -> None:
    """Where each orchestr row's time goes, as notes: medians of n runs timed by bench/breakdown.py."""
    script = Path(__file__).resolve().parent.parent / "breakdown.py"
    out = ctx.work / "breakdown.json"
    rows = [(CLI_NATIVE, "native", []), (CLI_NATIVE_NONE, "native", ["--network", "none"]),
            (CLI_DOCKER, "docker", [])]
    for tool, runtime, extra in rows:
        try:
            image = ctx.orchestr_runtime(runtime)
        except Skip:
            continue
        namespace = ctx.namespace("breakdown")
        runs = []
        try:
            for i in range(n + 1):
                t0 = time.perf_counter()
                ctx.sh([VENV_BIN / "python", script, out, repr(t0), "--", "run", "--rm", "--runtime", runtime, *extra,
                        "-n", namespace, image, "true"])
                total = (time.perf_counter() - t0) * 1000
                found = json.loads(out.read_text())
                found["exit"] = total - sum(v for k, v in found.items() if not k.startswith("network"))
                if i:  # the first makes the namespace's bridge
                    runs.append(found)
        except subprocess.CalledProcessError as e:
            ctx.note(f"{tool}: no breakdown: {describe(e)}")
            continue
        finally:
            ctx.orchestr_delete_namespace(namespace)
        ctx.note(f"Where {tool} spends its time (median ms of {n} runs): {summarise(runs)}.")
    image = ctx.orchestr_runtime("native")
    for tool, network in ((LIB, "bridge"), (LIB_NONE, "none")):
        namespace = ctx.namespace(f"breakdown-{network}")
        try:
            ctx.sh([VENV_BIN / "python", script, out, "--library", ctx.work / "orchestr-state-library", image,
                    namespace, network, str(n)])
            ctx.note(f"Where {tool} spends its time (median ms of {n} runs; cli: the rest of Client.run): "
                     f"{summarise(json.loads(out.read_text()))}.")
        except subprocess.CalledProcessError as e:
            ctx.note(f"{tool}: no breakdown: {describe(e)}")
        finally:
            with contextlib.suppress(subprocess.CalledProcessError):
                ctx.sh([VENV_BIN / "python", "-c", REMOVE_NETWORK, ctx.work / "orchestr-state-library", namespace])


REMOVE_NETWORK = """import sys, anyio, orchestr
async def main():
    async with orchestr.Client(state_dir=sys.argv[1], runtime="native") as c:
        await c.runtime("native").remove_network(sys.argv[2])
anyio.run(main)"""


@contextlib.contextmanager
def library(ctx: Context, network: str = "bridge"):
    image = ctx.orchestr_runtime("native")
    import orchestr

    namespace, portal = ctx.namespace(f"lifecycle-{network}"), ctx.portal()
    # A state dir of its own, as a program embedding orchestr would have.
    state_dir = ctx.work / "orchestr-state-library"
    with portal.wrap_async_context_manager(orchestr.Client(state_dir=state_dir, runtime="native")) as client:
        portal.call(client.runtime("native").import_image, ctx.archive())

        def once():
            return client.run(image, ["true"], namespace=namespace, remove=True, network=network)

        def trial() -> float:
            t0 = time.perf_counter()
            _, code = portal.call(once)
            elapsed = time.perf_counter() - t0
            if code != 0:
                raise RuntimeError(f"the container exited with {code}")
            return elapsed
        try:
            yield trial
        finally:
            for c in portal.call(client.get, namespace):
                portal.call(lambda: client.runtime("native").delete(c.id, force=True))
            portal.call(client.runtime("native").remove_network, namespace)


@contextlib.contextmanager
def cli(ctx: Context, runtime: str, network: str | None = None):
    image = ctx.orchestr_runtime(runtime)
    namespace = ctx.namespace(f"lifecycle-{runtime}-{network or 'default'}")
    # the defaults: no --runtime for native (the default runtime), no --network
    flags = (["--runtime", runtime] if runtime != "native" else []) + (["--network", network] if network else [])
    argv = ctx.orchestr("run", "--rm", *flags, "-n", namespace, image, "true")
    try:
        yield lambda: ctx.timed(argv)
    finally:
        ctx.orchestr_delete_namespace(namespace)


def bundle(ctx: Context):
    """An OCI bundle: busybox-static rootfs and `runc spec`'s config running `true` without a terminal."""
    def make():
        ctx.need("runc")
        path = ctx.tempdir("bundle")
        (path / "rootfs").mkdir()
        layer = path / "layer.tar"
        layer.write_bytes(mkimage.busybox_layer().bytes())
        ctx.sh(["tar", "-xf", layer, "-C", path / "rootfs"])
        layer.unlink()
        ctx.sh(["runc", "spec"], cwd=path)
        config = json.loads((path / "config.json").read_text())
        config["process"]["args"] = ["true"]
        config["process"]["terminal"] = False
        (path / "config.json").write_text(json.dumps(config, indent=2))
        return path
    return ctx.once("bundle", make)


@contextlib.contextmanager
def oci(ctx: Context, tool: str) -> Iterator:
    ctx.need(tool)
    path = bundle(ctx)
    cid = f"orchestr-bench-{tool}-{ctx.run_id}"
    with private_mounts(ctx) if tool == "crun" else contextlib.nullcontext([]) as prefix:
        argv = [*prefix, tool, "run", "--bundle", path, cid]
        try:
            yield lambda: ctx.timed(argv)
        finally:
            ctx.sh([tool, "delete", "-f", cid], check=False)


@contextlib.contextmanager
def private_mounts(ctx: Context) -> Iterator[list[str]]:
    """A mount namespace without the cgroup2 mount of a hybrid host, held open by a sleeping process."""
    ctx.need("unshare", "nsenter")
    unified = Path("/sys/fs/cgroup/unified")
    if not os.path.ismount(unified) or not (unified / "cgroup.controllers").read_text().strip():
        yield []  # nothing for crun to refuse
        return
    holder = subprocess.Popen(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c",
         "umount /sys/fs/cgroup/unified && echo ready && exec sleep infinity"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )
    try:
        if holder.stdout.readline().strip() != b"ready":
            raise Skip("cannot make a mount namespace without /sys/fs/cgroup/unified")
        yield ["nsenter", "-t", str(holder.pid), "-m"]
    finally:
        holder.kill()
        holder.wait()


@contextlib.contextmanager
def ctr(ctx: Context):
    image = ctx.ctr_image()
    cid = f"orchestr-bench-ctr-{ctx.run_id}"
    argv = ["ctr", "-n", ctx.ctr_namespace, "run", "--rm", image, cid, "true"]
    yield lambda: ctx.timed(argv)


@contextlib.contextmanager
def docker(ctx: Context):
    image = ctx.docker_image()
    name = f"orchestr-bench-lifecycle-{ctx.run_id}"
    try:
        yield lambda: ctx.timed(["docker", "run", "--rm", "--name", name, image, "true"])
    finally:
        ctx.sh(["docker", "rm", "-f", name], check=False)
