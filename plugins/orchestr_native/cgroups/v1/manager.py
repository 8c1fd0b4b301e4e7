"""cgroup v1 manager: the container's directory in each controller's hierarchy, driven together."""

from __future__ import annotations

import functools
import os
from typing import TYPE_CHECKING

from ..common import PARENT, Manager
from ..files import read_pids, write
from . import blkio, cpu, freezer, memory, pids

if TYPE_CHECKING:
    from orchestr.model import Resources

CONTROLLERS = ("cpu", "cpuacct", "memory", "pids", "freezer")
OPTIONAL = ("blkio",)  # joined where the host mounts it: block I/O accounting


@functools.cache
def _mounted(root: str) -> tuple[str, ...]:
    """The controllers root has hierarchies for: looked up once, not for each of hundreds of containers listed."""
    return tuple(c for c in CONTROLLERS + OPTIONAL if os.path.isdir(os.path.join(root, c)))


class V1Manager(Manager):
    def __init__(self, id: str, root: str):
        self.id = id
        # co-mounted controllers (cpu,cpuacct) appear under both names; each directory is handled once
        # formatted, not os.path.join'ed: `orchestr get` makes a manager for each of hundreds of containers
        self.paths = {c: f"{root}/{c}/{PARENT}/{id}" for c in _mounted(root)}

    def _dirs(self) -> list[str]:
        seen, out = set(), []
        for path in self.paths.values():
            real = os.path.realpath(path)
            if real not in seen:
                seen.add(real)
                out.append(path)
        return out

    def create(self, resources: Resources) -> None:
        missing = [c for c in CONTROLLERS if c not in self.paths]
        if missing:
            raise OSError(f"cgroup v1 controllers {', '.join(missing)} are not mounted")
        for path in self._dirs():
            os.makedirs(path, exist_ok=True)
        cpu.apply(self.paths["cpu"], resources.cpus)
        memory.apply(self.paths["memory"], resources.memory)
        pids.apply(self.paths["pids"], resources.pids)

    def join(self) -> None:
        # A single-threaded caller is the whole process, and moving only the calling thread ("0" to tasks) spares
        # the kernel's global threadgroup lock, whose first taking waits out an RCU grace period (5-15 ms here).
        single = len(os.listdir("/proc/self/task")) == 1
        optional = {self.paths[c] for c in OPTIONAL if c in self.paths}
        for path in self._dirs():
            if path in optional and not os.path.isdir(path):
                continue  # made by an orchestr from before that controller was used
            write(os.path.join(path, "tasks" if single else "cgroup.procs"), "0")

    def procs(self) -> list[int]:
        found: set[int] = set()
        for path in self._dirs():
            found.update(read_pids(os.path.join(path, "cgroup.procs")))
        return sorted(found)

    def freeze(self) -> None:
        freezer.freeze(self.paths["freezer"])

    def thaw(self) -> None:
        freezer.thaw(self.paths["freezer"])

    def frozen(self) -> bool:
        return freezer.frozen(self.paths["freezer"])

    def oom_kills(self) -> int:
        return memory.oom_kills(self.paths["memory"])

    def cpu_usage_ns(self) -> int:
        return cpu.usage_ns(self.paths["cpuacct"])

    def usage(self) -> dict[str, int | None]:
        read, written = blkio.transferred(self.paths["blkio"]) if "blkio" in self.paths else (None, None)
        return {"cpu_ns": self.cpu_usage_ns(), "memory": memory.usage(self.paths["memory"]),
                "memory_limit": memory.limit(self.paths["memory"]), "pids": pids.current(self.paths["pids"]),
                "block_read": read, "block_write": written}

    def exists(self) -> bool:
        return any(os.path.isdir(p) for p in self.paths.values())

    def remove(self) -> None:
        if not self.exists():
            return
        self.kill_all()
        for path in self._dirs():
            try:
                os.rmdir(path)
            except FileNotFoundError:
                pass
