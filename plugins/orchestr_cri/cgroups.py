"""The pod's cgroup, which orchestr makes as the kubelet makes one per pod: the parent of the sandbox's and the
container's cgroups, and where a pids limit goes that CRI has no field for on cgroup v1.

CRI's LinuxContainerResources carries CPU and memory; a pids limit only through `unified`, which runtimes
apply on cgroup v2 alone. So on v1 orchestr limits the pod's cgroup (the limit plus one, for the sandbox's own
process) before the pod starts, and writes the limit itself into the container's cgroup once it runs: the
container never has more than it asked for, and its cgroup shows exactly that. The runtime must place cgroups
under the parent it is given as paths (the cgroupfs driver; containerd's default): a systemd driver names
slices instead, and a pids limit on v1 is then refused.
"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path

ROOT = "orchestr-cri"


def parent(uid: str) -> str:
    """The cgroup parent of pod uid, as a cgroupfs path."""
    return f"/{ROOT}/pod-{uid}"


def unified() -> bool:
    """Whether this host runs cgroup v2 alone (then runtimes take pids.max through `unified`)."""
    return os.path.exists("/sys/fs/cgroup/cgroup.controllers")


def _mounts() -> dict[str, Path]:
    """v1 controller (or "" for the v2 hierarchy) -> its mount point."""
    found: dict[str, Path] = {}
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fstype, _, options = right.split()[:3]
        point = Path(left.split()[4].replace("\\040", " "))
        if fstype == "cgroup2":
            found.setdefault("", point)
        elif fstype == "cgroup":
            for option in options.split(","):
                found.setdefault(option, point)
    return found


def prepare(uid: str, pids: int) -> None:
    """Makes pod uid's pids cgroup (v1) with room for pids processes and the sandbox's one."""
    root = _mounts().get("pids")
    if root is None:
        raise OSError(errno.ENOENT, "no cgroup v1 pids hierarchy is mounted")
    pod = root / parent(uid).lstrip("/")
    pod.mkdir(parents=True, exist_ok=True)
    (pod / "pids.max").write_text(str(pids + 1))


def _own(pid: int, controller: str) -> Path | None:
    """pid's cgroup directory of a v1 controller."""
    mounts = _mounts()
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(",") and controller in mounts:
            return mounts[controller] / path.lstrip("/")
    return None


def limit_container(pid: int, pids: int) -> None:
    """Writes pids.max into the cgroup of the container whose process pid is (v1)."""
    own = _own(pid, "pids")
    if own is not None and ROOT in own.parts:  # a cgroup under a pod of ours, never the host's own
        (own / "pids.max").write_text(str(pids))


def current_pids(pid: int) -> int | None:
    """How many tasks the cgroup of pid holds (v1 pids controller, else v2)."""
    with contextlib.suppress(OSError, ValueError):
        own = _own(pid, "pids")
        if own is not None:
            return int((own / "pids.current").read_text())
        for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
            if line.startswith("0::") and "" in _mounts():
                return int((_mounts()[""] / line[3:].lstrip("/") / "pids.current").read_text())
    return None


def remove(uid: str) -> None:
    """Removes pod uid's cgroup from every hierarchy (the runtime removed its children), and the shared parent
    once no pod is left in it."""
    for root in set(_mounts().values()):
        for path in (root / parent(uid).lstrip("/"), root / ROOT):
            with contextlib.suppress(FileNotFoundError, OSError):
                path.rmdir()


def pods() -> set[str]:
    """The uids of the pod cgroups that exist in any hierarchy."""
    found = set()
    for root in set(_mounts().values()):
        with contextlib.suppress(OSError):
            found |= {p.name.removeprefix("pod-") for p in (root / ROOT).iterdir() if p.name.startswith("pod-")}
    return found
