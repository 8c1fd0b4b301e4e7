"""cgroup v2 memory: memory.max, no swap (memory.swap.max 0), what is in use, OOM kills from memory.events."""

from __future__ import annotations

import os

from ..files import read_int, read_keyed, write


def apply(path: str, memory: int | None) -> None:
    if memory is None:
        return
    write(os.path.join(path, "memory.max"), str(memory))
    swap = os.path.join(path, "memory.swap.max")
    if os.path.exists(swap):  # absent when the kernel runs without swap accounting
        write(swap, "0")


def usage(path: str) -> int | None:
    used = read_int(os.path.join(path, "memory.current"))
    if used is None:
        return None
    try:
        inactive = read_keyed(os.path.join(path, "memory.stat")).get("inactive_file", 0)
    except FileNotFoundError:
        inactive = 0
    return used - inactive if inactive < used else used


def limit(path: str) -> int | None:
    return read_int(os.path.join(path, "memory.max"))  # None for "max"


def oom_kills(path: str) -> int:
    try:
        return read_keyed(os.path.join(path, "memory.events")).get("oom_kill", 0)
    except FileNotFoundError:
        return 0
