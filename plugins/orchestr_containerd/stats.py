"""One sample of a container's resource use, read from the host's cgroup files and /proc through its first
process, as an administrator would (containerd's metrics come as cgroup-version-specific messages)."""

from __future__ import annotations

import os

from orchestr.containers import rfc3339
from orchestr.model import Stats


def _cgroups(pid: int) -> dict[str, str]:
    out = {}
    with open(f"/proc/{pid}/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            for c in controllers.split(",") if controllers else [""]:
                out[c] = path
    return out


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def _int(text: str | None) -> int | None:
    try:
        return int(text.split()[0]) if text else None
    except (ValueError, IndexError):
        return None


def sample(pid: int) -> Stats:
    groups = _cgroups(pid)
    root = "/sys/fs/cgroup"
    cpu = memory = limit = pids = None
    if "cpuacct" in groups:
        usage = _int(_read(f"{root}/cpuacct/{groups['cpuacct']}/cpuacct.usage"))
        cpu = usage / 1e9 if usage is not None else None
    if "memory" in groups:
        base = f"{root}/memory/{groups['memory']}"
        memory = _int(_read(f"{base}/memory.usage_in_bytes"))
        stat = dict(line.split() for line in (_read(f"{base}/memory.stat") or "").splitlines() if " " in line)
        if memory is not None and "total_inactive_file" in stat:
            memory = max(0, memory - int(stat["total_inactive_file"]))
        limit = _int(_read(f"{base}/memory.limit_in_bytes"))
        if limit is not None and limit >= 1 << 62:
            limit = None
    elif "" in groups:
        base = f"{root}/unified{groups['']}"
        memory = _int(_read(f"{base}/memory.current"))
        raw = _read(f"{base}/memory.max")
        limit = None if raw is None or raw.strip() == "max" else _int(raw)
    if "pids" in groups:
        pids = _int(_read(f"{root}/pids/{groups['pids']}/pids.current"))
    rx = tx = None
    net = _read(f"/proc/{pid}/net/dev")
    if net:
        rx = tx = 0
        for line in net.splitlines()[2:]:
            name, _, values = line.partition(":")
            if name.strip() == "lo":
                continue
            fields = values.split()
            rx += int(fields[0])
            tx += int(fields[8])
    return Stats(cpu_seconds=cpu, memory=memory, memory_limit=limit, pids=pids, net_rx=rx, net_tx=tx,
                 time=rfc3339())
