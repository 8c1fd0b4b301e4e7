"""cgroup v1 pids: the most processes and threads the container may have (pids.max), and how many it has."""

from __future__ import annotations

import os

from ..files import read_int, write


def apply(path: str, pids: int | None) -> None:
    if pids is not None:
        write(os.path.join(path, "pids.max"), str(pids))


def current(path: str) -> int | None:
    return read_int(os.path.join(path, "pids.current"))
