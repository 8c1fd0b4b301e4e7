"""Named network namespaces: a bind mount at /run/orchestr/netns/<id> keeps one alive with no process in it."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from typing import TypeVar

from ..process import linux

DIR = "/run/orchestr/netns"
NSFS_MAGIC = 0x6E736673
T = TypeVar("T")


def path(id: str) -> str:
    return os.path.join(DIR, id)


def mounted(where: str) -> bool:
    """Whether where is a network namespace (and not the empty file a reboot leaves behind)."""
    try:
        return linux.statfs_type(where) == NSFS_MAGIC
    except OSError:
        return False


def inside(where: str, fn: Callable[[], T], *, create: bool) -> T:
    """Runs fn in a thread of its own that is in the namespace at where, made first when create is set.

    unshare and setns move only the calling thread, so the thread is thrown away afterwards rather than moved
    back: the caller's threads never change namespace, and netlink sockets fn opens stay bound to this one.
    """
    result: list = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            if create:
                os.makedirs(DIR, exist_ok=True)
                linux.unshare(linux.CLONE_NEWNET)
                os.close(os.open(where, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o444))
                linux.mount("/proc/thread-self/ns/net", where, None, linux.MS_BIND)
            else:
                fd = os.open(where, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    linux.setns(fd, linux.CLONE_NEWNET)
                finally:
                    os.close(fd)
            result.append(fn())
        except BaseException as e:  # noqa: BLE001 - handed to the caller's thread
            failure.append(e)

    thread = threading.Thread(target=run, name="orchestr-netns")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return result[0]


def remove(where: str) -> None:
    """Unmounts and deletes where; the kernel frees the namespace, and its veth, once nothing holds it."""
    while mounted(where):
        linux.umount(where, linux.MNT_DETACH)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(where)


def counters(pid: int) -> tuple[int, int] | None:
    """(bytes received, bytes sent) over every link but lo of pid's network namespace; None when it has none."""
    try:
        with open(f"/proc/{pid}/net/dev") as f:
            lines = f.read().splitlines()[2:]  # two header lines
    except OSError:
        return None
    rx = tx = 0
    links = 0
    for line in lines:
        name, _, fields = line.partition(":")
        if name.strip() == "lo":
            continue
        values = fields.split()  # receive: bytes packets errs drop fifo frame compressed multicast; transmit: ...
        rx, tx, links = rx + int(values[0]), tx + int(values[8]), links + 1
    return (rx, tx) if links else None
