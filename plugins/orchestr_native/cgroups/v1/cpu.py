"""cgroup v1 cpu and cpuacct: the CFS quota over a period, and the CPU time used."""

from __future__ import annotations

import os

from ..files import read, write

PERIOD_US = 100_000


def apply(path: str, cpus: float | None) -> None:
    if cpus is None:
        return
    write(os.path.join(path, "cpu.cfs_period_us"), str(PERIOD_US))
    write(os.path.join(path, "cpu.cfs_quota_us"), str(max(1000, int(cpus * PERIOD_US))))


def usage_ns(path: str) -> int:
    """From path in the cpuacct hierarchy (co-mounted with cpu on most hosts)."""
    return int(read(os.path.join(path, "cpuacct.usage")))
