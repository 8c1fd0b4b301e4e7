"""cgroup v2 memory: memory.max, no swap (memory.swap.max 0), OOM kills from memory.events."""

from __future__ import annotations

import os

from .. import read_keyed, write


def apply(path: str, memory: int | None) -> None:
    if memory is None:
        return
    write(os.path.join(path, "memory.max"), str(memory))
    swap = os.path.join(path, "memory.swap.max")
    if os.path.exists(swap):  # absent when the kernel runs without swap accounting
        write(swap, "0")


def oom_kills(path: str) -> int:
    try:
        return read_keyed(os.path.join(path, "memory.events")).get("oom_kill", 0)
    except FileNotFoundError:
        return 0
