"""Resolves a path inside a container root the way the container will see it, never leaving the root."""

from __future__ import annotations

import errno
import os
import stat

from ..process import linux

MAX_SYMLINKS = 40


def resolve(root: str, path: str, create: str | None = None) -> str:
    """The host path of path inside root, every component a real directory or file under root.

    Symlinks are followed as the container would follow them: an absolute target restarts at root and ".."
    stops at root, so no link can lead outside. Missing components are made when create is "dir" or "file"
    (the last one is made as that kind).
    """
    todo = [p for p in path.split("/") if p not in ("", ".")]
    done: list[str] = []
    links = 0
    while todo:
        name = todo.pop(0)
        if name == "..":
            if done:
                done.pop()
            continue
        here = os.path.join(root, *done, name)
        try:
            st = os.lstat(here)
        except FileNotFoundError:
            if create is None:
                raise
            if not todo and create == "file":
                os.close(os.open(here, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW, 0o644))
            else:
                os.mkdir(here, 0o755)
            done.append(name)
            continue
        if stat.S_ISLNK(st.st_mode):
            links += 1
            if links > MAX_SYMLINKS:
                raise OSError(errno.ELOOP, f"too many symbolic links resolving {path} in the container root")
            target = os.readlink(here)
            if target.startswith("/"):
                done = []
            todo = [p for p in target.split("/") if p not in ("", ".")] + todo
            continue
        if todo and not stat.S_ISDIR(st.st_mode):
            raise NotADirectoryError(errno.ENOTDIR, f"{'/'.join(done + [name])} is not a directory", path)
        done.append(name)
    return os.path.join(root, *done)


def open_beneath(dirfd: int, path: str, flags: int = 0) -> int:
    """An O_PATH fd of path under dirfd, reached through no symlink at all (ELOOP if one is on the way), so
    nothing swapped in since path was resolved can redirect it."""
    resolve = linux.RESOLVE_BENEATH | linux.RESOLVE_NO_SYMLINKS
    return linux.openat2(dirfd, path.strip("/") or ".", os.O_PATH | flags, resolve)
