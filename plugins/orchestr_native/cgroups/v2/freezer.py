"""cgroup v2 freezer: write cgroup.freeze, then cgroup.events reports "frozen 1" once every task stopped."""

from __future__ import annotations

import functools
import os

from ..common import settles
from ..files import read_keyed, write


def freeze(path: str, timeout: float = 10.0) -> None:
    write(os.path.join(path, "cgroup.freeze"), "1")
    if not settles(functools.partial(frozen, path), timeout):
        thaw(path)
        raise TimeoutError(f"cgroup {path} did not freeze within {timeout:g}s")


def thaw(path: str) -> None:
    write(os.path.join(path, "cgroup.freeze"), "0")


def frozen(path: str) -> bool:
    try:
        return read_keyed(os.path.join(path, "cgroup.events")).get("frozen", 0) == 1
    except FileNotFoundError:
        return False
