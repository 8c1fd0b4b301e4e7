"""Scenario: the cri runtime: a `true` container's lifecycle, and N `sleep` services up and down."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import time

from context import ROOT, Context
from harness import Contender, Skip, compare
from scenarios.fleet import compose_fleet, expect, orchestr_fleet, running_compose, running_orchestr

ID = "cri"
TITLE = "The cri runtime: one `true` container, and N services up and down"
DESCRIPTION = (
    "orchestr's cri runtime drives a CRI runtime as the kubelet does: a pod sandbox per replica, then its "
    "container. The CRI runtime is containerd's CRI plugin, in a containerd of the benchmark's own "
    "(scripts/cri_containerd.py; ORCHESTR_CRI_ENDPOINT names another). A `true` container's create, start, wait "
    "and delete, against orchestr's containerd runtime and `ctr run --rm` on the host's containerd; then "
    "`orchestr apply` and `delete` of N one-replica services against `docker-compose up -d` and `down`."
)
NOTES = [
    "Every cri container is a pod: a sandbox (its own network namespace, attached to a CNI bridge with portmap "
    "and firewall, and its sandbox process) and then the container; `ctr run --rm` makes a loopback-only network "
    "namespace and no sandbox.",
]

CRI_CLI = "orchestr run --rm --runtime cri"
CRI_LIB = "orchestr cri, library Client.run"
CONTAINERD_CLI = "orchestr run --rm --runtime containerd"
CRI, CONTAINERD = "orchestr cri", "orchestr containerd"


def cri_endpoint(ctx: Context) -> str:
    """ORCHESTR_CRI_ENDPOINT, or a containerd of the run's own with a working CRI plugin (stopped at the end)."""
    def make() -> str:
        if endpoint := os.environ.get("ORCHESTR_CRI_ENDPOINT"):
            return endpoint
        ctx.need("containerd", "ctr")
        spec = importlib.util.spec_from_file_location("cri_containerd", ROOT / "scripts" / "cri_containerd.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        runtime = module.CriContainerd(ctx.work / "cri")
        ctx.stack.callback(runtime.stop)
        try:
            endpoint = runtime.start()
        except RuntimeError as e:
            raise Skip(f"no CRI runtime: {e}") from None
        ctx.env["ORCHESTR_CRI_ENDPOINT"] = os.environ["ORCHESTR_CRI_ENDPOINT"] = endpoint
        return endpoint
    return ctx.once("cri-endpoint", make)


def run(ctx: Context) -> list[dict]:
    cri_endpoint(ctx)
    repeat, warmup = (2, 1) if ctx.quick else (15, 2)
    groups = compare("one `true` container", [
        Contender(CRI_LIB, lambda: library(ctx)),
        Contender(CRI_CLI, lambda: cli(ctx, "cri")),
        Contender(CONTAINERD_CLI, lambda: cli(ctx, "containerd")),
        Contender("ctr run --rm", lambda: ctr(ctx), versus=(CRI_CLI, CRI_LIB, CONTAINERD_CLI)),
    ], repeat=repeat, warmup=warmup)
    medians = {s["tool"]: (s["summary"] or {}).get("median") for s in groups[0]["series"]}
    if medians.get(CRI_CLI) and medians.get(CONTAINERD_CLI):
        ctx.note(f"`{CRI_CLI}` takes {medians[CRI_CLI] / medians[CONTAINERD_CLI]:.2f}x the time of "
                 f"`{CONTAINERD_CLI}`.")
    n, repeat, warmup = (3, 1, 0) if ctx.quick else (10, 5, 1)
    groups += compare(f"{n} services", [
        Contender(CRI, lambda: fleet(ctx, n, "cri")),
        Contender(CONTAINERD, lambda: fleet(ctx, n, "containerd")),
        Contender("docker-compose", lambda: compose(ctx, n), versus=(CRI, CONTAINERD)),
    ], repeat=repeat, warmup=warmup)
    return groups


@contextlib.contextmanager
def library(ctx: Context):
    image = ctx.orchestr_runtime("cri")
    import orchestr

    namespace, portal = ctx.namespace("cri-lifecycle-lib"), ctx.portal()
    with portal.wrap_async_context_manager(orchestr.Client(state_dir=ctx.state_dir, runtime="cri")) as client:
        def trial() -> float:
            t0 = time.perf_counter()
            _, code = portal.call(lambda: client.run(image, ["true"], namespace=namespace, remove=True))
            elapsed = time.perf_counter() - t0
            if code != 0:
                raise RuntimeError(f"the container exited with {code}")
            return elapsed
        try:
            yield trial
        finally:
            ctx.orchestr_delete_namespace(namespace)


@contextlib.contextmanager
def cli(ctx: Context, runtime: str):
    image = ctx.orchestr_runtime(runtime)
    namespace = ctx.namespace(f"cri-lifecycle-{runtime}")
    argv = ctx.orchestr("run", "--rm", "--runtime", runtime, "-n", namespace, image, "true")
    try:
        yield lambda: ctx.timed(argv)
    finally:
        ctx.orchestr_delete_namespace(namespace)


@contextlib.contextmanager
def ctr(ctx: Context):
    image = ctx.ctr_image()
    cid = f"orchestr-bench-cri-ctr-{ctx.run_id}"
    yield lambda: ctx.timed(["ctr", "-n", ctx.ctr_namespace, "run", "--rm", image, cid, "true"])


@contextlib.contextmanager
def fleet(ctx: Context, n: int, runtime: str):
    with orchestr_fleet(ctx, n, runtime, "cri-services") as (up, down, namespace):
        def trial() -> dict[str, float]:
            t_up = ctx.timed(up)
            expect(f"after `orchestr apply` on {runtime}", running_orchestr(ctx, namespace), n)
            return {"up": t_up, "down": ctx.timed(down)}
        yield trial


@contextlib.contextmanager
def compose(ctx: Context, n: int):
    with compose_fleet(ctx, n, "cri-services") as (up, down, project):
        def trial() -> dict[str, float]:
            t_up = ctx.timed(up)
            expect("after `docker-compose up -d`", running_compose(ctx, project), n)
            return {"up": t_up, "down": ctx.timed(down)}
        yield trial
