"""Builds the container's mount table in its new mount namespace, then pivots into the root."""

from __future__ import annotations

import errno
import os
import stat

from ..process import linux
from . import dev, overlay, paths

MASKED = (
    "/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
    "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap",
)
READ_ONLY = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")
NOSUID, NODEV, NOEXEC, RDONLY = linux.MS_NOSUID, linux.MS_NODEV, linux.MS_NOEXEC, linux.MS_RDONLY
_KEPT_FLAGS = RDONLY | NOSUID | NODEV | NOEXEC  # statvfs's ST_* bits have the same values as these MS_* bits


def setup(config: dict) -> None:
    fs = config["rootfs"]
    root = fs["merged"]
    # Nothing mounted from here on may propagate back to the host.
    linux.mount(None, "/", None, linux.MS_REC | linux.MS_SLAVE)
    overlay.mount(fs["layers"], fs["upper"], fs["work"], root, NODEV)
    linux.mount("proc", paths.resolve(root, "/proc", create="dir"), "proc", NOSUID | NODEV | NOEXEC)
    _sysfs(paths.resolve(root, "/sys", create="dir"))
    dev.populate(root)
    for m in config["mounts"]:
        mount_volume(root, m)
    for target, source in config["files"].items():
        mount_volume(root, {"type": "bind", "source": source, "target": target, "read_only": False})
    paths.resolve(root, config["process"]["cwd"] or "/", create="dir")
    _mask(root)
    if fs["read_only"]:
        linux.mount(None, root, None, linux.MS_BIND | linux.MS_REMOUNT | RDONLY | NODEV)
    _pivot(root)


def _sysfs(target: str) -> None:
    try:
        linux.mount("sysfs", target, "sysfs", RDONLY | NOSUID | NODEV | NOEXEC)
    except OSError:
        # sharing the host's network namespace can forbid a new sysfs: show the host's, read-only
        linux.mount("/sys", target, None, linux.MS_BIND | linux.MS_REC)
        linux.mount(None, target, None, linux.MS_BIND | linux.MS_REMOUNT | RDONLY | NOSUID | NODEV | NOEXEC)


def mount_volume(root: str, m: dict) -> None:
    """One bind, named volume or tmpfs at m["target"], resolved inside root; never over the root itself."""
    ro = RDONLY if m.get("read_only") else 0
    kind = "dir" if m["type"] == "tmpfs" or os.path.isdir(m["source"]) else "file"
    target = paths.resolve(root, m["target"], create=kind)
    if os.path.realpath(target) == os.path.realpath(root):
        raise OSError(errno.EINVAL, f"refusing to mount {m['type']} {m['target']!r} over the container's root")
    if m["type"] == "tmpfs":
        linux.mount("tmpfs", target, "tmpfs", NOSUID | NODEV | ro, "mode=1777")
        return
    source = m["source"]
    linux.mount(source, target, None, linux.MS_BIND | linux.MS_REC)
    kept = os.statvfs(source).f_flag & _KEPT_FLAGS
    # nodev on every bind: a device node the container makes in a host directory must not open
    linux.mount(None, target, None, linux.MS_BIND | linux.MS_REMOUNT | kept | NODEV | ro)


def _mask(root: str) -> None:
    for path in MASKED:
        host = os.path.join(root, path.lstrip("/"))
        try:
            mode = os.lstat(host).st_mode
        except OSError:
            continue
        if stat.S_ISDIR(mode):
            linux.mount("tmpfs", host, "tmpfs", RDONLY | NOSUID | NODEV | NOEXEC, "size=0")
        else:
            linux.mount("/dev/null", host, None, linux.MS_BIND)
    for path in READ_ONLY:
        host = os.path.join(root, path.lstrip("/"))
        if os.path.lexists(host):
            linux.mount(host, host, None, linux.MS_BIND | linux.MS_REC)
            linux.mount(None, host, None, linux.MS_BIND | linux.MS_REMOUNT | RDONLY | NOSUID | NODEV | NOEXEC)


def _pivot(root: str) -> None:
    # pivot_root(".", ".") stacks the old root on top of the new one; detaching it leaves only the new root.
    os.chdir(root)
    linux.pivot_root(".", ".")
    linux.umount(".", linux.MNT_DETACH)
    os.chdir("/")
