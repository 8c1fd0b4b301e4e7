"""Scenario 1: create, start, wait for and delete one `true` container, sequentially, with every tool."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from context import Context, mkimage
from harness import Contender, Skip, compare

ID = "lifecycle"
TITLE = "Lifecycle of one `true` container"
DESCRIPTION = (
    "Create, start, wait for and delete a container running `true`, one after the other. "
    "runc and crun run a prepared OCI bundle (busybox-static rootfs, `runc spec` with args [\"true\"]); "
    "ctr runs the same image imported into containerd; docker and orchestr's docker runtime use the image "
    "loaded into the Docker Engine."
)
NOTES = [
    "runc, crun, ctr and orchestr native (`--network none`) give the container a network namespace with "
    "loopback only; `docker run` and orchestr's docker runtime (default bridge) also attach it to a bridge.",
    "crun 1.8 refuses hybrid cgroup hosts whose cgroup2 mount has controllers, so it runs in a private "
    "mount namespace without /sys/fs/cgroup/unified, entered with `nsenter` (about 2 ms of the time).",
]

LIB = "orchestr native, library Client.run"
LIB_BRIDGE = "orchestr native, library Client.run, network bridge"
BRIDGE_GOAL_MS = 5.0
CLI_NATIVE = "orchestr run --rm --runtime native --network none"
CLI_DOCKER = "orchestr run --rm --runtime docker"


def run(ctx: Context) -> list[dict]:
    repeat, warmup = (2, 1) if ctx.quick else (15, 2)
    contenders = [
        Contender(LIB, lambda: library(ctx)),
        Contender(LIB_BRIDGE, lambda: library(ctx, "bridge")),
        Contender(CLI_NATIVE, lambda: cli(ctx, "native")),
        Contender(CLI_DOCKER, lambda: cli(ctx, "docker")),
        Contender("runc run (bundle)", lambda: oci(ctx, "runc"), versus=(LIB, CLI_NATIVE)),
        Contender("crun run (bundle)", lambda: oci(ctx, "crun"), versus=(LIB, CLI_NATIVE)),
        Contender("ctr run --rm", lambda: ctr(ctx), versus=(LIB, CLI_NATIVE)),
        Contender("docker run --rm", lambda: docker(ctx), versus=(CLI_DOCKER, CLI_NATIVE)),
    ]
    groups = compare("one `true` container", contenders, repeat=repeat, warmup=warmup)
    medians = {s["tool"]: (s["summary"] or {}).get("median") for s in groups[0]["series"]}
    if medians.get(LIB) and medians.get(LIB_BRIDGE):
        added = round((medians[LIB_BRIDGE] - medians[LIB]) * 1000, 1) + 0.0  # + 0.0: no "-0.0"
        met = "met" if added <= BRIDGE_GOAL_MS else "NOT MET"
        ctx.note(f"The bridge network adds {added:.1f} ms to the library lifecycle's median (goal: at most "
                 f"{BRIDGE_GOAL_MS:g} ms: {met}). Another container of the namespace keeps its bridge up meanwhile, "
                 "as in any namespace with a service running; a namespace's first container also makes the bridge.")
    return groups


@contextlib.contextmanager
def library(ctx: Context, network: str = "none"):
    image = ctx.orchestr_runtime("native")
    import orchestr

    namespace, portal = ctx.namespace(f"lifecycle-{network}"), ctx.portal()
    # A state dir of its own, as a program embedding orchestr would have.
    state_dir = ctx.work / "orchestr-state-library"
    with portal.wrap_async_context_manager(orchestr.Client(state_dir=state_dir, runtime="native")) as client:
        portal.call(client.runtime("native").import_image, ctx.archive())
        if network == "bridge":
            portal.call(lambda: client.run(image, ["sleep", "3600"], name="keeper", namespace=namespace,
                                           detach=True, network=network))

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


@contextlib.contextmanager
def cli(ctx: Context, runtime: str):
    image = ctx.orchestr_runtime(runtime)
    network = ["--network", "none"] if runtime == "native" else []
    argv = ctx.orchestr("run", "--rm", "--runtime", runtime, *network, "-n", ctx.namespace("lifecycle"), image, "true")
    try:
        yield lambda: ctx.timed(argv)
    finally:
        ctx.orchestr_delete_namespace(ctx.namespace("lifecycle"))


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
