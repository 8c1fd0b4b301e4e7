"""cgroup v1 pids: the most processes and threads the container may have."""

from __future__ import annotations

import os

from .. import write


def apply(path: str, pids: int | None) -> None:
    if pids is not None:
        write(os.path.join(path, "pids.max"), str(pids))
