"""Locks that serialise work on one digest across tasks (an anyio lock) and processes (flock)."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio


@contextlib.contextmanager
def flocked(path: Path, mode: int = fcntl.LOCK_EX) -> Iterator[int]:
    """Hold flock(mode) on path, blocking; flock belongs to the open file, so it also excludes this process."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, mode)
        yield fd
    finally:
        os.close(fd)


def try_flock(path: Path) -> int | None:
    """An fd holding an exclusive flock on path, or None when someone else holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


class Locks:
    """Named locks under one directory: one file per name."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._local: dict[str, tuple[anyio.Lock, int]] = {}

    def path(self, name: str) -> Path:
        return self.directory / f"{name}.lock"

    @contextlib.asynccontextmanager
    async def hold(self, name: str, mode: int = fcntl.LOCK_EX) -> AsyncIterator[None]:
        """Exclusive (or, with LOCK_SH, shared) across processes; exclusive within this one only when LOCK_EX."""
        if mode == fcntl.LOCK_SH:
            async with self._flock(name, mode):
                yield
            return
        lock, users = self._local.get(name) or (anyio.Lock(), 0)
        self._local[name] = (lock, users + 1)
        try:
            async with lock, self._flock(name, mode):
                yield
        finally:
            lock, users = self._local[name]
            if users == 1:
                del self._local[name]
            else:
                self._local[name] = (lock, users - 1)

    @contextlib.asynccontextmanager
    async def _flock(self, name: str, mode: int) -> AsyncIterator[None]:
        fd = os.open(self.path(name), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            await anyio.to_thread.run_sync(fcntl.flock, fd, mode)
            yield
        finally:
            os.close(fd)
