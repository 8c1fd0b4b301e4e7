"""cgroup v2 cpu: cpu.max is "quota period" ("max period" unlimited); cpu.stat counts the CPU time used."""

from __future__ import annotations

import os

from ..files import read_keyed, write

PERIOD_US = 100_000


def apply(path: str, cpus: float | None) -> None:
    if cpus is not None:
        write(os.path.join(path, "cpu.max"), f"{max(1000, int(cpus * PERIOD_US))} {PERIOD_US}")


def usage_ns(path: str) -> int:
    return read_keyed(os.path.join(path, "cpu.stat")).get("usage_usec", 0) * 1000
