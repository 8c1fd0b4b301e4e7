"""cgroup v2 freezing: write cgroup.freeze, then cgroup.events reports "frozen 1" once every task stopped."""

from __future__ import annotations

import os
import time

from .. import read_keyed, write


def freeze(path: str, timeout: float = 10.0) -> None:
    write(os.path.join(path, "cgroup.freeze"), "1")
    deadline = time.monotonic() + timeout
    delay = 0.001
    while not frozen(path):
        if time.monotonic() > deadline:
            write(os.path.join(path, "cgroup.freeze"), "0")
            raise TimeoutError(f"cgroup {path} did not freeze within {timeout:g}s")
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def thaw(path: str) -> None:
    write(os.path.join(path, "cgroup.freeze"), "0")


def frozen(path: str) -> bool:
    try:
        return read_keyed(os.path.join(path, "cgroup.events")).get("frozen", 0) == 1
    except FileNotFoundError:
        return False
