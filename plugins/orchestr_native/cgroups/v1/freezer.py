"""cgroup v1 freezer: freezer.state goes FREEZING then FROZEN; THAWED resumes."""

from __future__ import annotations

import os
import time

from .. import read, write


def freeze(path: str, timeout: float = 10.0) -> None:
    state = os.path.join(path, "freezer.state")
    deadline = time.monotonic() + timeout
    delay = 0.001
    while True:
        write(state, "FROZEN")  # writing again nudges a FREEZING cgroup whose tasks were busy
        if read(state) == "FROZEN":
            return
        if time.monotonic() > deadline:
            write(state, "THAWED")
            raise TimeoutError(f"cgroup {path} did not freeze within {timeout:g}s")
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def thaw(path: str) -> None:
    write(os.path.join(path, "freezer.state"), "THAWED")


def frozen(path: str) -> bool:
    try:
        return read(os.path.join(path, "freezer.state")) != "THAWED"
    except FileNotFoundError:
        return False
