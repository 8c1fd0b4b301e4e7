"""cgroup v2 pids: pids.max."""

from __future__ import annotations

import os

from .. import write


def apply(path: str, pids: int | None) -> None:
    if pids is not None:
        write(os.path.join(path, "pids.max"), str(pids))
