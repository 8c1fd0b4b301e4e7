"""What the v1 and v2 managers share: the Manager interface, where containers' cgroups live, and waiting for
the kernel to settle a change."""

from __future__ import annotations

import os
import signal
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the supervisor imports this package without orchestr: names for annotations only
    from collections.abc import Callable

    from orchestr.model import Resources

PARENT = "orchestr"  # every container's cgroup lives under <hierarchy>/orchestr/<id>


class Manager:
    """One container's cgroup, whichever version the host runs. Every method is cheap and blocking."""

    id: str

    def create(self, resources: Resources) -> None:
        """Makes the cgroup (idempotent) and writes the limits (None: unlimited, the kernel's default left).
        A write the kernel refuses raises files.WriteError."""
        raise NotImplementedError

    def join(self) -> None:
        """Moves the calling process into the cgroup."""
        raise NotImplementedError

    def procs(self) -> list[int]:
        """Host pids of every process in the cgroup."""
        raise NotImplementedError

    def freeze(self) -> None:
        """Freezes every process and returns once the kernel reports them frozen."""
        raise NotImplementedError

    def thaw(self) -> None:
        raise NotImplementedError

    def frozen(self) -> bool:
        raise NotImplementedError

    def oom_kills(self) -> int:
        """How many processes the OOM killer has killed in this cgroup so far."""
        raise NotImplementedError

    def cpu_usage_ns(self) -> int:
        """CPU time used by the cgroup's processes so far."""
        raise NotImplementedError

    def usage(self) -> dict[str, int | None]:
        """What the cgroup's processes use now: cpu_ns, memory (bytes, page cache the kernel can drop at once
        left out), memory_limit (None: unlimited), pids, block_read and block_write (bytes; None when the host
        does not account them for this cgroup)."""
        raise NotImplementedError

    def exists(self) -> bool:
        raise NotImplementedError

    def remove(self) -> None:
        """Kills whatever still runs in the cgroup, then removes it; a missing one is fine."""
        raise NotImplementedError

    def kill_all(self, timeout: float = 10.0) -> None:
        """SIGKILLs every process in the cgroup (thawing it, since frozen tasks cannot die) until none is left."""
        deadline = time.monotonic() + timeout
        while pids := self.procs():
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            if self.frozen():
                self.thaw()
            if time.monotonic() > deadline:
                raise TimeoutError(f"processes {pids} of cgroup {self.id} did not die within {timeout:g}s")
            time.sleep(0.01)


def settles(done: Callable[[], bool], timeout: float) -> bool:
    """Whether done() turns true within timeout seconds, asked again at growing intervals (the kernel settles a
    change such as a freeze asynchronously)."""
    deadline = time.monotonic() + timeout
    delay = 0.001
    while not done():
        if time.monotonic() > deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 2, 0.05)
    return True
