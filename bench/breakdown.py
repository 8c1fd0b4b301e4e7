"""Where a one-off run's time goes: phases timed by wrapping orchestr's own steps, in the CLI or the library.

    python bench/breakdown.py OUT.json T0 -- orchestr-args...   (T0: time.perf_counter() when the parent spawned it)
    python bench/breakdown.py OUT.json --library STATE_DIR IMAGE NAMESPACE NETWORK N

perf_counter is CLOCK_MONOTONIC on Linux, shared by every process, so the parent's spawn time and the child's
marks are on one clock. The phases, in order: python (interpreter and site up), imports (orchestr's CLI and the
runtime's modules), cli (arguments, state dir, plugin and runtime set-up, image lookup), create, network at
create (the bridge network's set-up the create begins: its namespace and veth are made in a thread while the
create ends and the start begins, so this overlaps both and is not part of either's sum), start, run (the container's life and its output), delete (of which network), exit (to the parent's
wait returning; the parent adds it). The library's (Client.run of `true`, N times after one warm-up) has no
python, imports or exit, and its cli is the rest of Client.run: the image lookup, the state store's note of
the namespace, the inspect after the end.
"""

from __future__ import annotations

import functools
import inspect
import json
import statistics
import sys
import time
from collections.abc import Callable

PHASES = ("python", "imports", "cli", "create", "network at create", "start", "run", "delete",
          "network at delete", "exit")


class Marks:
    def __init__(self, t0: float):
        self.t0 = t0
        self.spans: dict[str, float] = {}
        self.points: dict[str, float] = {}

    def reset(self, t0: float) -> None:
        self.t0 = t0
        self.spans.clear()
        self.points.clear()

    def point(self, name: str) -> None:
        self.points[name] = time.perf_counter()

    def span(self, name: str, t: float) -> None:
        now = time.perf_counter()
        self.spans[name] = self.spans.get(name, 0.0) + now - t
        self.points[f"{name} end"] = now


def _timed(marks: Marks, name: str, fn: Callable) -> Callable:
    """fn, its time added to the span name: a coroutine's until its result, a generator's until exhausted."""
    if inspect.iscoroutinefunction(fn):
        @functools.wraps(fn)
        async def waited(*a, **kw):
            marks.points.setdefault(f"{name} begin", time.perf_counter())
            t = time.perf_counter()
            try:
                return await fn(*a, **kw)
            finally:
                marks.span(name, t)
        return waited
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def driven(*a, **kw):
            marks.points.setdefault(f"{name} begin", time.perf_counter())
            t = time.perf_counter()
            try:
                return (yield from fn(*a, **kw))
            finally:
                marks.span(name, t)
        return driven

    @functools.wraps(fn)
    def called(*a, **kw):
        marks.points.setdefault(f"{name} begin", time.perf_counter())
        t = time.perf_counter()
        try:
            return fn(*a, **kw)
        finally:
            marks.span(name, t)
    return called


def instrument(marks: Marks, runtime: str) -> None:
    """Wraps the steps of runtime's one-off run: create, start and delete, and the network's part of them."""
    if runtime == "native":
        from orchestr_native import lifecycle
        from orchestr_native.network import manager

        manager.Network.attach = _timed(marks, "network at create", manager.Network.attach)
        manager.Network.detach = _timed(marks, "network at delete", manager.Network.detach)
        lifecycle.create = _timed(marks, "create", lifecycle.create)
        lifecycle.start_run = _timed(marks, "start", lifecycle.start_run)
        lifecycle.delete_steps = _timed(marks, "delete", lifecycle.delete_steps)
    elif runtime == "containerd":
        from orchestr_containerd import oneoff

        # a run in the foreground makes its gRPC calls itself: each call timed as the step it serves
        steps = {"leases.v1.Leases/Create": "create", "snapshots.v1.Snapshots/Prepare": "create",
                 "containers.v1.Containers/Create": "create", "leases.v1.Leases/Delete": "create",
                 "tasks.v1.Tasks/Create": "start", "tasks.v1.Tasks/Start": "start", "tasks.v1.Tasks/Delete": "delete",
                 "containers.v1.Containers/Delete": "delete", "snapshots.v1.Snapshots/Remove": "delete"}
        call = oneoff._Calls.__call__
        timed = {name: _timed(marks, name, call) for name in set(steps.values())}

        def classified(self, method, *a, **kw):  # type: ignore[no-untyped-def]
            return timed.get(steps.get(method, ""), call)(self, method, *a, **kw)

        oneoff._Calls.__call__ = classified
    else:
        from orchestr_docker import engine
        from orchestr_docker.runtime import DockerRuntime

        for verb in ("create", "start", "delete"):
            setattr(DockerRuntime, verb, _timed(marks, verb, getattr(DockerRuntime, verb)))
        # a run in the foreground makes its engine calls itself, without the event loop's verbs
        phases = {"containers/create": "create", "start": "start", "DELETE": "delete"}
        call = engine.call
        timed = {name: _timed(marks, name, call) for name in phases.values()}

        def classified(socket_path, method, path, *a, **kw):  # type: ignore[no-untyped-def]
            name = next((n for key, n in phases.items() if key in (method, path, path.rpartition("/")[2])), None)
            return (timed[name] if name else call)(socket_path, method, path, *a, **kw)

        engine.call = classified


def phases(marks: Marks, end: float) -> dict[str, float]:
    """The marks as PHASES, in ms: run is from the end of the start to the beginning of the delete, cli what is
    left between the imports and the end."""
    p = marks.points
    out = {"python": p["script"] - marks.t0, "imports": p["imported"] - p["script"]}
    for name in ("create", "network at create", "start", "delete", "network at delete"):
        out[name] = marks.spans.get(name, 0.0)
    if "start end" in p and "delete begin" in p:
        out["run"] = p["delete begin"] - p["start end"]
    out["cli"] = end - p["imported"] - sum(out.get(n, 0.0) for n in ("create", "start", "run", "delete"))
    return {k: round(v * 1000, 2) for k, v in out.items()}


def summarise(runs: list[dict[str, float]]) -> str:
    """One line: each phase's median in ms."""
    parts = []
    for name in PHASES:
        values = [r[name] for r in runs if name in r]
        if values:
            parts.append(f"{name} {statistics.median(values):.1f}")
    return ", ".join(parts)


def library(out: str, state_dir: str, image: str, namespace: str, network: str, n: int) -> None:
    import anyio

    import orchestr

    marks = Marks(0.0)
    instrument(marks, "native")
    runs = []

    async def main() -> None:
        async with orchestr.Client(state_dir=state_dir, runtime="native") as client:
            for i in range(n + 1):
                marks.reset(time.perf_counter())
                marks.point("script")
                marks.point("imported")
                _, code = await client.run(image, ["true"], namespace=namespace, remove=True, network=network)
                if code != 0:
                    raise SystemExit(f"the container exited with {code}")
                found = phases(marks, time.perf_counter())
                if i:  # the first is a warm-up
                    runs.append({k: v for k, v in found.items() if k not in ("python", "imports")})

    anyio.run(main)
    with open(out, "w") as f:
        json.dump(runs, f)


def main() -> None:
    if sys.argv[2] == "--library":
        state_dir, image, namespace, network, n = sys.argv[3:8]
        library(sys.argv[1], state_dir, image, namespace, network, int(n))
        return
    out, t0 = sys.argv[1], float(sys.argv[2])
    argv = sys.argv[sys.argv.index("--") + 1:]
    marks = Marks(t0)
    marks.point("script")
    runtime = argv[argv.index("--runtime") + 1] if "--runtime" in argv else "native"
    from orchestr import cli

    instrument(marks, runtime)
    marks.point("imported")
    sys.argv = ["orchestr", *argv]
    code = 0
    try:
        code = cli.main() or 0
    except SystemExit as e:
        code = e.code or 0
    with open(out, "w") as f:
        json.dump(phases(marks, time.perf_counter()), f)
    sys.exit(code)


if __name__ == "__main__":
    main()
