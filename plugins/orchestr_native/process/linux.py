"""The Linux system calls Python 3.11 lacks (unshare, setns, mount and the new mount API, openat2, pivot_root,
capset, prctl), through libc."""

from __future__ import annotations

import ctypes
import os

_libc = ctypes.CDLL(None, use_errno=True)

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
MS_SLAVE = 0x80000
MNT_DETACH = 0x2

AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000
OPEN_TREE_CLONE = 0x1
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOVE_MOUNT_T_EMPTY_PATH = 0x40
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOUNT_ATTR_NOEXEC = 0x8
RESOLVE_NO_SYMLINKS = 0x4
RESOLVE_BENEATH = 0x8

PROC_SUPER_MAGIC = 0x9FA0
SYSFS_MAGIC = 0x62656572

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_KEEPCAPS = 8
PR_SET_NAME = 15
PR_CAPBSET_DROP = 24
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4

_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41, "ppc64le": 203, "s390x": 217}
_SYS_RT_SIGACTION = {"x86_64": 13, "aarch64": 134, "riscv64": 134, "ppc64le": 173, "s390x": 174}
# The system calls added since Linux 5.1 have one number on every architecture.
_SYS_OPEN_TREE, _SYS_MOVE_MOUNT, _SYS_OPENAT2, _SYS_MOUNT_SETATTR = 428, 429, 437, 442
_CAP_V3 = 0x20080522


def _check(ret: int, what: str) -> int:
    if ret == -1:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return ret


def _b(s: str | None) -> bytes | None:
    return None if s is None else os.fsencode(s)


def unshare(flags: int) -> None:
    _check(_libc.unshare(ctypes.c_int(flags)), "unshare")


def setns(fd: int, nstype: int = 0) -> None:
    _check(_libc.setns(ctypes.c_int(fd), ctypes.c_int(nstype)), "setns")


def mount(source: str | None, target: str, fstype: str | None = None, flags: int = 0, data: str | None = None) -> None:
    ret = _libc.mount(_b(source), _b(target), _b(fstype), ctypes.c_ulong(flags), _b(data))
    _check(ret, f"mount {fstype or source or ''} on {target}")


def mount_at(fd: int, name: str, source: str | None, fstype: str | None = None, flags: int = 0,
             data: str | None = None) -> None:
    """mount(2) on what fd is, through /proc/self/fd so that no path is looked up again; name is for errors."""
    ret = _libc.mount(_b(source), _b(f"/proc/self/fd/{fd}"), _b(fstype), ctypes.c_ulong(flags), _b(data))
    _check(ret, f"mount {fstype or source or ''} on {name}")


def openat2(dirfd: int, path: str, flags: int, resolve: int) -> int:
    """A new fd for path under dirfd, resolved as resolve (RESOLVE_*) says; close-on-exec."""
    how = (ctypes.c_uint64 * 3)(flags | os.O_CLOEXEC, 0, resolve)  # struct open_how: flags, mode, resolve
    return _check(_libc.syscall(ctypes.c_long(_SYS_OPENAT2), ctypes.c_int(dirfd), _b(path), how,
                                ctypes.c_size_t(ctypes.sizeof(how))), f"open {path}")


def clone_tree(fd: int) -> int:
    """A detached copy of the mount tree at fd, its submounts included (open_tree with OPEN_TREE_CLONE)."""
    flags = OPEN_TREE_CLONE | os.O_CLOEXEC | AT_RECURSIVE | AT_EMPTY_PATH
    return _check(_libc.syscall(ctypes.c_long(_SYS_OPEN_TREE), ctypes.c_int(fd), b"", ctypes.c_uint(flags)),
                  "open_tree")


def set_mount_attrs(fd: int, attrs: int, propagation: int = 0) -> None:
    """Sets MOUNT_ATTR_* attrs, and propagation (MS_PRIVATE, ...) when given, on the mount at fd and on every
    mount below it."""
    attr = (ctypes.c_uint64 * 4)(attrs, 0, propagation, 0)  # struct mount_attr: set, clear, propagation, userns
    _check(_libc.syscall(ctypes.c_long(_SYS_MOUNT_SETATTR), ctypes.c_int(fd), b"",
                         ctypes.c_uint(AT_EMPTY_PATH | AT_RECURSIVE), attr, ctypes.c_size_t(ctypes.sizeof(attr))),
           "mount_setattr")


def move_mount(tree: int, target: int) -> None:
    """Attaches the detached mount tree at the directory or file that the fd target is."""
    flags = MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH
    _check(_libc.syscall(ctypes.c_long(_SYS_MOVE_MOUNT), ctypes.c_int(tree), b"", ctypes.c_int(target), b"",
                         ctypes.c_uint(flags)), "move_mount")


IN_MODIFY, IN_MOVED_TO, IN_CREATE = 0x2, 0x80, 0x100
_IN_NONBLOCK, _IN_CLOEXEC = os.O_NONBLOCK, os.O_CLOEXEC


def inotify(path: str, mask: int) -> int:
    """A non-blocking inotify fd watching path for the events in mask (IN_*); readable once one happened."""
    fd = _check(_libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC), "inotify_init1")
    try:
        _check(_libc.inotify_add_watch(fd, os.fsencode(path), mask), f"inotify_add_watch {path}")
    except OSError:
        os.close(fd)
        raise
    return fd


def umount(target: str, flags: int = 0) -> None:
    _check(_libc.umount2(_b(target), ctypes.c_int(flags)), f"umount {target}")


def default_signal(sig: int) -> None:
    """Sets sig's disposition to the default through the raw system call: the C library refuses its own
    real-time signals (32 and 33), yet an ignored one survives exec like any other."""
    action = (ctypes.c_ulong * 4)()  # handler SIG_DFL, no flags, no restorer, empty mask
    nr = _SYS_RT_SIGACTION[os.uname().machine]
    _check(_libc.syscall(ctypes.c_long(nr), ctypes.c_int(sig), action, None, ctypes.c_size_t(8)), "rt_sigaction")


def pivot_root(new_root: str, put_old: str) -> None:
    nr = _SYS_PIVOT_ROOT[os.uname().machine]
    _check(_libc.syscall(ctypes.c_long(nr), _b(new_root), _b(put_old)), "pivot_root")


def prctl(option: int, arg2: int = 0, arg3: int = 0) -> int:
    return _check(_libc.prctl(ctypes.c_int(option), ctypes.c_ulong(arg2), ctypes.c_ulong(arg3),
                              ctypes.c_ulong(0), ctypes.c_ulong(0)), f"prctl {option}")


def set_name(name: str) -> None:
    """The name ps and top show for this process (at most 15 bytes)."""
    buf = ctypes.create_string_buffer(name.encode()[:15])
    _libc.prctl(ctypes.c_int(PR_SET_NAME), buf, ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0))


def capset(effective: int, permitted: int, inheritable: int) -> None:
    header = (ctypes.c_uint32 * 2)(_CAP_V3, 0)
    data = (ctypes.c_uint32 * 6)(
        effective & 0xFFFFFFFF, permitted & 0xFFFFFFFF, inheritable & 0xFFFFFFFF,
        effective >> 32, permitted >> 32, inheritable >> 32,
    )
    _check(_libc.capset(header, data), "capset")


def statfs_type(path: str) -> int:
    """f_type of the file system at path (its magic number)."""
    buf = ctypes.create_string_buffer(256)  # struct statfs is 120 bytes on 64-bit; f_type comes first
    _check(_libc.statfs(_b(path), buf), f"statfs {path}")
    return ctypes.c_long.from_buffer(buf).value
