"""Builds the container's mount table in its new mount namespace, then pivots into the root."""

from __future__ import annotations

import contextlib
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
LOCKED = linux.MOUNT_ATTR_RDONLY | linux.MOUNT_ATTR_NOSUID | linux.MOUNT_ATTR_NODEV | linux.MOUNT_ATTR_NOEXEC


def setup(config: dict) -> None:
    fs = config["rootfs"]
    root = fs["merged"]
    # Nothing mounted from here on may propagate back to the host.
    linux.mount(None, "/", None, linux.MS_REC | linux.MS_SLAVE)
    overlay.mount(fs["layers"], fs["upper"], fs["work"], root, NODEV)
    with contextlib.ExitStack() as fds:
        root_fd = _keep(fds, os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC))
        linux.mount_at(_keep(fds, _kernel_dir(root_fd, "proc")), "/proc", "proc", "proc", NOSUID | NODEV | NOEXEC)
        _sysfs(_keep(fds, _kernel_dir(root_fd, "sys")))
        dev.populate(root, _keep(fds, _kernel_dir(root_fd, "dev")))
        for m in config["mounts"]:
            mount_volume(root, root_fd, m)
        for target, source in config["files"].items():
            mount_volume(root, root_fd, {"type": "bind", "source": source, "target": target, "read_only": False})
        paths.resolve(root, config["process"]["cwd"] or "/", create="dir")
        _mask(root_fd)
    if fs["read_only"]:
        linux.mount(None, root, None, linux.MS_BIND | linux.MS_REMOUNT | RDONLY | NODEV)
    _pivot(root)


def _keep(fds: contextlib.ExitStack, fd: int) -> int:
    fds.callback(os.close, fd)
    return fd


def _kernel_dir(root_fd: int, name: str) -> int:
    """An fd of the directory /name of the new root, made when missing. Whatever else the image has there is
    refused, never followed: procfs, sysfs and /dev go exactly where the masks expect them (runc refuses too)."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(name, 0o755, dir_fd=root_fd)
    try:
        return paths.open_beneath(root_fd, name, os.O_DIRECTORY)
    except OSError as e:
        if e.errno not in (errno.ELOOP, errno.ENOTDIR):
            raise
        raise OSError(e.errno, f"the image's /{name} is not a directory but a symbolic link or a file; "
                               f"/{name} is mounted only on a directory") from None


def _sysfs(target: int) -> None:
    try:
        linux.mount_at(target, "/sys", "sysfs", "sysfs", RDONLY | NOSUID | NODEV | NOEXEC)
    except OSError:
        # sharing the host's network namespace can forbid a new sysfs: show the host's, read-only
        host = os.open("/sys", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            _bind(host, target, LOCKED)
        finally:
            os.close(host)


def _bind(source: int, target: int, attrs: int) -> None:
    """Binds the tree at source, every mount below it included, onto target, with attrs (MOUNT_ATTR_*) set on
    each of those mounts before it is attached: a read-only bind is read-only all the way down. The copy is
    private (Docker's default too): a mount the host makes later below source would arrive with flags of its
    own, writable under a read-only bind."""
    tree = linux.clone_tree(source)
    try:
        linux.set_mount_attrs(tree, attrs, linux.MS_PRIVATE)
        linux.move_mount(tree, target)
    finally:
        os.close(tree)


def mount_volume(root: str, root_fd: int, m: dict) -> None:
    """One bind, named volume or tmpfs at m["target"], resolved inside root; never over the root itself nor
    inside /proc. A bind's source is opened here, at every start, and the host's root guard applied to what it
    is now: the path may have been swapped for a symlink since create."""
    where = f"{m['type']} {m['target']!r}"
    with contextlib.ExitStack() as fds:
        source = None if m["type"] == "tmpfs" else _keep(fds, _open_source(m))
        kind = "dir" if source is None or stat.S_ISDIR(os.fstat(source).st_mode) else "file"
        resolved = os.path.relpath(paths.resolve(root, m["target"], create=kind), root)
        target = _keep(fds, paths.open_beneath(root_fd, resolved))
        if _same(target, root_fd):
            raise OSError(errno.EINVAL, f"refusing to mount {where} over the container's root")
        if linux.statfs_type(f"/proc/self/fd/{target}") == linux.PROC_SUPER_MAGIC:
            raise OSError(errno.EINVAL, f"refusing to mount {where} inside /proc")
        if source is None:
            flags = NOSUID | NODEV | (RDONLY if m.get("read_only") else 0)
            size = f",size={m['size']}" if m.get("size") else ""  # none recorded by an older orchestr
            linux.mount_at(target, m["target"], "tmpfs", "tmpfs", flags, "mode=1777" + size)
        else:
            # nodev on every bind: a device node the container makes in a host directory must not open
            _bind(source, target, linux.MOUNT_ATTR_NODEV | (linux.MOUNT_ATTR_RDONLY if m.get("read_only") else 0))


def _open_source(m: dict) -> int:
    try:
        fd = os.open(m["source"], os.O_PATH | os.O_CLOEXEC)
    except OSError as e:
        raise OSError(e.errno, f"{m['type']} source {m['source']}: {e.strerror}") from None
    if not (m.get("read_only") or m.get("allow_host_root")) and _same(fd, "/"):
        os.close(fd)
        raise OSError(errno.EPERM, f"the bind source {m['source']} is the host's / now; binding the host's / "
                                   "read-write needs allowHostRoot")
    return fd


def _same(fd: int, other: int | str) -> bool:
    a, b = os.fstat(fd), os.stat(other)
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _mask(root_fd: int) -> None:
    """runc's masked and read-only paths, at their fixed places: under /proc and /sys, which are ours."""
    for path in MASKED:
        fd = _open_masked(root_fd, path)
        if fd is None:
            continue
        try:
            if stat.S_ISDIR(os.fstat(fd).st_mode):
                linux.mount_at(fd, path, "tmpfs", "tmpfs", RDONLY | NOSUID | NODEV | NOEXEC, "size=0")
            else:
                linux.mount_at(fd, path, "/dev/null", None, linux.MS_BIND)
        finally:
            os.close(fd)
    for path in READ_ONLY:
        fd = _open_masked(root_fd, path)
        if fd is None:
            continue
        try:
            _bind(fd, fd, LOCKED)
        finally:
            os.close(fd)


def _open_masked(root_fd: int, path: str) -> int | None:
    """An fd of path in the new root, reached through no symlink; None only when the kernel has no such file."""
    try:
        return paths.open_beneath(root_fd, path)
    except FileNotFoundError:
        parent = paths.open_beneath(root_fd, os.path.dirname(path))
        try:
            kernel = linux.statfs_type(f"/proc/self/fd/{parent}") in (linux.PROC_SUPER_MAGIC, linux.SYSFS_MAGIC)
        finally:
            os.close(parent)
        if kernel:
            return None
        raise OSError(errno.ENOENT, f"cannot mask {path}: something other than the kernel's file system is "
                                    f"mounted at {os.path.dirname(path)}") from None


def _pivot(root: str) -> None:
    # pivot_root(".", ".") stacks the old root on top of the new one; detaching it leaves only the new root.
    os.chdir(root)
    linux.pivot_root(".", ".")
    linux.umount(".", linux.MNT_DETACH)
    os.chdir("/")
