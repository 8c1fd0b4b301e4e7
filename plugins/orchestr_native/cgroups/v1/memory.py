"""cgroup v1 memory: the limit, the same limit on memory plus swap when swap accounting is on, OOM kills,
what is in use."""

from __future__ import annotations

import os

from .. import read_int, read_keyed, write

UNLIMITED = 1 << 62  # the kernel shows no limit as a page-rounded LONG_MAX


def apply(path: str, memory: int | None) -> None:
    if memory is None:
        return
    limit = os.path.join(path, "memory.limit_in_bytes")
    memsw = os.path.join(path, "memory.memsw.limit_in_bytes")
    if not os.path.exists(memsw):  # only with swap accounting; memory+swap equal to memory means no swap
        write(limit, str(memory))
        return
    # memory+swap may never be below memory: a limit raised past it (an update) needs memory+swap raised first
    try:
        write(limit, str(memory))
    except OSError:
        write(memsw, str(memory))
        write(limit, str(memory))
    write(memsw, str(memory))


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
