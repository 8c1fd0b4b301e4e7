"""Scenario 9: `orchestr export --format kubernetes` of N services, the command end to end and the library alone."""

from __future__ import annotations

import contextlib
import resource
import time

from context import Context
from harness import Contender, Goal, Skip, compare

ID = "export"
TITLE = "Kubernetes export of N services"
DESCRIPTION = (
    "`orchestr export --format kubernetes -f FILE` of one spec file of N services (each with env, limits, a "
    "published port, a tmpfs volume and a dependency on the one before), YAML read from its pipe: the process "
    "end to end, reading and validating the file included. The library row is `to_kubernetes` alone on the loaded "
    "services. The command's CPU time (user and system) is given beside its wall time, which other load on "
    "the machine stretches. Nothing to compare with: no tool converts orchestr's specs."
)
NOTES: list[str] = []

CLI = "orchestr export --format kubernetes"
LIBRARY = "orchestr.export.kubernetes.to_kubernetes"
GOAL = Goal("1,000 services under 1 s", max_value=1.0)


def spec(n: int) -> str:
    docs = []
    for i in range(n):
        depends = f"  dependsOn: [s{i - 1}]\n" if i else ""
        docs.append(
            f"apiVersion: orchestr/v1\nkind: Service\nmetadata: {{name: s{i}, namespace: bench, labels: {{tier: t}}}}\n"
            f"spec:\n  image: busybox:latest\n  command: [sh, -c, 'exec httpd -f -p 8080']\n"
            f"  env: {{INDEX: '{i}'}}\n  replicas: 2\n  resources: {{cpus: 250m, memory: 32Mi}}\n"
            f"  ports: [{{containerPort: 8080}}]\n  volumes: [{{type: tmpfs, target: /tmp}}]\n{depends}"
        )
    return "---\n".join(docs)


def run(ctx: Context) -> list[dict]:
    n, repeat, warmup = (1_000, 3, 1) if ctx.quick else (1_000, 20, 2)
    path = ctx.tempdir("export") / f"{n}.yaml"
    path.write_text(spec(n))
    contenders = [
        Contender(CLI, lambda: cli(ctx, path), goal=GOAL),
        Contender(LIBRARY, lambda: library(path)),
    ]
    return compare(f"{n:,} services", contenders, repeat=repeat, warmup=warmup)


@contextlib.contextmanager
def cli(ctx: Context, path):
    ctx.orchestr_cli()
    argv = ctx.orchestr("export", "--format", "kubernetes", "-f", str(path))
    ctx.sh(argv)  # fails the row now if the export fails

    def trial() -> dict[str, float]:
        # the CPU time too: on a machine others load, it is the figure that does not depend on them
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        wall = ctx.timed(argv)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        return {"wall": wall, "CPU (user + system)": cpu}
    yield trial


@contextlib.contextmanager
def library(path):
    try:
        from orchestr.export.kubernetes import to_kubernetes
        from orchestr.spec import load
    except ImportError as e:
        raise Skip(f"orchestr's Kubernetes export is not there: {e}") from None
    services = load([path])

    def trial() -> dict[str, float]:
        t0, c0 = time.perf_counter(), time.process_time()
        to_kubernetes(services)
        return {"wall": time.perf_counter() - t0, "CPU (user + system)": time.process_time() - c0}
    yield trial
