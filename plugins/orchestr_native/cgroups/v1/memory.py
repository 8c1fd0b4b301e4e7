"""cgroup v1 memory: the limit, the same limit on memory plus swap when swap accounting is on, what is in
use, OOM kills."""

from __future__ import annotations

import os

from ..files import read_int, read_keyed, write

UNLIMITED = 1 << 62  # the kernel shows no limit as a page-rounded LONG_MAX


def apply(path: str, memory: int | None) -> None:
    if memory is None:
        return
    limit = os.path.join(path, "memory.limit_in_bytes")
    memsw = os.path.join(path, "memory.memsw.limit_in_bytes")
    if not os.path.exists(memsw):  # only with swap accounting; memory+swap equal to memory means no swap
        write(limit, str(memory))
        return
    # memory+swap may never be below memory: raising the limit (an update) moves memory+swap first, lowering it
    # moves memory first; either way the write the kernel refuses is the one the error names
    raising = memory > (read_int(limit) or 0)
    for file in (memsw, limit) if raising else (limit, memsw):
        write(file, str(memory))


def usage(path: str) -> int | None:
    used = read_int(os.path.join(path, "memory.usage_in_bytes"))
    if used is None:
        return None
    inactive = read_keyed(os.path.join(path, "memory.stat")).get("total_inactive_file", 0)
    return used - inactive if inactive < used else used


def limit(path: str) -> int | None:
    value = read_int(os.path.join(path, "memory.limit_in_bytes"))
    return None if value is None or value >= UNLIMITED else value


def oom_kills(path: str) -> int:
    try:
        return read_keyed(os.path.join(path, "memory.oom_control")).get("oom_kill", 0)
    except FileNotFoundError:
        return 0
