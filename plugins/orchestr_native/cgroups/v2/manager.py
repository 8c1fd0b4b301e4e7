"""cgroup v2 manager: one directory in the unified hierarchy, controllers enabled from the root down."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from ..common import PARENT, Manager
from ..files import read, read_pids, write
from . import cpu, freezer, io, memory, pids

if TYPE_CHECKING:
    from orchestr.model import Resources

NEEDED = {"cpus": "cpu", "memory": "memory", "pids": "pids"}  # the controller each limit needs


class V2Manager(Manager):
    def __init__(self, id: str, root: str):
        self.id, self.root = id, root
        self.parent = os.path.join(root, PARENT)
        self.path = os.path.join(self.parent, id)

    def create(self, resources: Resources) -> None:
        available = set(read(os.path.join(self.root, "cgroup.controllers")).split())
        wanted = {controller for field, controller in NEEDED.items() if getattr(resources, field) is not None}
        if missing := sorted(wanted - available):
            raise OSError(f"cgroup v2 controllers {', '.join(missing)} are not available in {self.root}")
        os.makedirs(self.parent, exist_ok=True)
        # A controller reaches a cgroup only when every ancestor lists it in cgroup.subtree_control; io for its
        # accounting alone.
        enable = " ".join(f"+{c}" for c in sorted({"cpu", "io", "memory", "pids"} & available))
        if enable:
            write(os.path.join(self.root, "cgroup.subtree_control"), enable)
            write(os.path.join(self.parent, "cgroup.subtree_control"), enable)
        os.makedirs(self.path, exist_ok=True)
        cpu.apply(self.path, resources.cpus)
        memory.apply(self.path, resources.memory)
        pids.apply(self.path, resources.pids)

    def join(self) -> None:
        write(os.path.join(self.path, "cgroup.procs"), "0")

    def procs(self) -> list[int]:
        return read_pids(os.path.join(self.path, "cgroup.procs"))

    def freeze(self) -> None:
        freezer.freeze(self.path)

    def thaw(self) -> None:
        freezer.thaw(self.path)

    def frozen(self) -> bool:
        return freezer.frozen(self.path)

    def oom_kills(self) -> int:
        return memory.oom_kills(self.path)

    def cpu_usage_ns(self) -> int:
        return cpu.usage_ns(self.path)

    def usage(self) -> dict[str, int | None]:
        read, written = io.transferred(self.path)
        return {"cpu_ns": self.cpu_usage_ns(), "memory": memory.usage(self.path),
                "memory_limit": memory.limit(self.path), "pids": pids.current(self.path), "block_read": read,
                "block_write": written}

    def exists(self) -> bool:
        return os.path.isdir(self.path)

    def remove(self) -> None:
        if not self.exists():
            return
        self.kill_all()
        try:
            os.rmdir(self.path)
        except FileNotFoundError:
            pass
