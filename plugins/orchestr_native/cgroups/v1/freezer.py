"""cgroup v1 freezer: freezer.state goes FREEZING then FROZEN; THAWED resumes."""

from __future__ import annotations

import os

from ..common import settles
from ..files import read, write


def freeze(path: str, timeout: float = 10.0) -> None:
    state = os.path.join(path, "freezer.state")

    def done() -> bool:
        write(state, "FROZEN")  # writing again nudges a FREEZING cgroup whose tasks were busy
        return read(state) == "FROZEN"

    if not settles(done, timeout):
        thaw(path)
        raise TimeoutError(f"cgroup {path} did not freeze within {timeout:g}s")


def thaw(path: str) -> None:
    write(os.path.join(path, "freezer.state"), "THAWED")


def frozen(path: str) -> bool:
    try:
        return read(f"{path}/freezer.state") != "THAWED"
    except FileNotFoundError:
        return False
