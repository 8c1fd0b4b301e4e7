"""The container's /dev: a tmpfs with the standard device nodes, ptys, shm, mqueue and the usual links.

Device nodes are bind mounts of the host's and /dev itself is nodev, so a node the container makes with
mknod cannot be opened: without a device cgroup that is what keeps raw disks out of reach.
"""

from __future__ import annotations

import os

from ..process import linux

DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
LINKS = {"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1",
         "stderr": "/proc/self/fd/2", "ptmx": "pts/ptmx"}
NOSUID, NODEV, NOEXEC = linux.MS_NOSUID, linux.MS_NODEV, linux.MS_NOEXEC


def populate(root: str, dev_fd: int) -> None:
    """Mounts a tmpfs on dev_fd, the directory root/dev (never an image's symlink), and fills it."""
    linux.mount_at(dev_fd, "/dev", "tmpfs", "tmpfs", NOSUID | NODEV, "mode=755,size=65536k")
    dev = os.path.join(root, "dev")  # the tmpfs just mounted: nothing in it comes from the image
    for name in DEVICES:
        node = os.path.join(dev, name)
        os.close(os.open(node, os.O_CREAT | os.O_WRONLY, 0o666))
        linux.mount(f"/dev/{name}", node, None, linux.MS_BIND)
    for name, fstype, flags, data in (
        ("pts", "devpts", NOSUID | NOEXEC, "newinstance,ptmxmode=0666,mode=0620,gid=5"),
        ("shm", "tmpfs", NOSUID | NODEV | NOEXEC, "mode=1777,size=65536k"),
        ("mqueue", "mqueue", NOSUID | NODEV | NOEXEC, None),
    ):
        os.mkdir(os.path.join(dev, name), 0o755)
        linux.mount(fstype, os.path.join(dev, name), fstype, flags, data)
    for name, target in LINKS.items():
        os.symlink(target, os.path.join(dev, name))
