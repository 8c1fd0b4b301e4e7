"""Resource limits, freezing and accounting through cgroups: one manager interface over v1 and v2."""

from __future__ import annotations

import os

from .common import PARENT, Manager

ROOT = "/sys/fs/cgroup"
CGROUP2_SUPER_MAGIC = 0x63677270

__all__ = ["Manager", "manager", "owned_ids", "version"]


def version(root: str = ROOT) -> int:
    """2 when root is a cgroup2 mount (the unified hierarchy), else 1."""
    from ..process import linux

    return 2 if linux.statfs_type(root) == CGROUP2_SUPER_MAGIC else 1


def manager(id: str, root: str = ROOT, cgroup_version: int | None = None) -> Manager:
    if (cgroup_version or version(root)) == 2:
        from .v2.manager import V2Manager

        return V2Manager(id, root)
    from .v1.manager import V1Manager

    return V1Manager(id, root)


def owned_ids(root: str = ROOT) -> set[str]:
    """Ids of every container cgroup present on the host, in any hierarchy."""
    found: set[str] = set()
    if version(root) == 2:
        parents = [os.path.join(root, PARENT)]
    else:
        parents = [os.path.join(root, h, PARENT) for h in os.listdir(root)]
    for parent in parents:
        try:
            found.update(e.name for e in os.scandir(parent) if e.is_dir())
        except (FileNotFoundError, NotADirectoryError):
            continue
    return found
