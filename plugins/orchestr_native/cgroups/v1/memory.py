"""cgroup v1 memory: the limit, the same limit on memory plus swap when swap accounting is on, OOM kills."""

from __future__ import annotations

import os

from .. import read_keyed, write


def apply(path: str, memory: int | None) -> None:
    if memory is None:
        return
    write(os.path.join(path, "memory.limit_in_bytes"), str(memory))
    memsw = os.path.join(path, "memory.memsw.limit_in_bytes")
    if os.path.exists(memsw):  # only with swap accounting; memory+swap equal to memory means no swap
        write(memsw, str(memory))


def oom_kills(path: str) -> int:
    try:
        return read_keyed(os.path.join(path, "memory.oom_control")).get("oom_kill", 0)
    except FileNotFoundError:
        return 0
