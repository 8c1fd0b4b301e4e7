"""Reads a file that others append lines to, as it grows and across its rotation: container logs, the event log."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import BinaryIO, TypeVar

from .process import linux
from .steps import Steps, Wake, polls

T = TypeVar("T")
# Looks at the file (a millisecond apart, see steps.polls) before an inotify watch is taken: closing an inotify
# instance waits out an SRCU grace period in the kernel (up to 17 ms measured here), which the follower of a
# container that ends at once (`orchestr run`) would otherwise pay on top of the container's whole life.
EAGER_LOOKS = 10


def lines(path: str, file: BinaryIO | None, parse: Callable[[bytes], T | None],
          ended: Callable[[], bool] = lambda: False) -> Steps[None]:
    """Yields parse(line) for each whole line written to the file at path from file's position on (file None:
    from the start of the file once there is one), leaving out the Nones. When path names a new file (the
    writer rotated the old one away) the rest of the old one is read first, then the new one from its start.
    Once there is nothing to read and ended() says nothing more will be written, the rest is yielded, a last
    line without its newline included, and the steps end. Between looks it sleeps (yields delays, see steps),
    shorter while lines keep coming, and after its first EAGER_LOOKS is woken by any change in the file's
    directory (a write, a rotation, a record of the writer's end) when the kernel lets it watch that. Closes
    file."""
    partial = b""
    delays = polls(0.1)
    watch: int | None = None
    looks = 0
    try:
        while True:
            if watch is not None:
                _drain(watch)  # before the read: a write after it wakes the next wait
            renewed = _renewed(path, file)  # before the read: that read then drains the old file
            data = file.read() if file is not None else b""
            if data:
                delays = polls(0.1)  # more, or the end, tends to follow soon
                data, partial = partial + data, b""
                cut = data.rfind(b"\n") + 1
                partial = data[cut:]
                yield from _parsed(data[:cut], parse)
            elif renewed:
                try:
                    new = open(path, "rb")
                except FileNotFoundError:
                    continue  # rotated again meanwhile: look again
                if file is not None:
                    file.close()
                file, partial = new, b""
            elif ended():
                if file is not None:
                    yield from _parsed(partial + file.read(), parse)
                return
            else:
                looks += 1
                if looks == EAGER_LOOKS:
                    watch = _watch(os.path.dirname(path))
                    if watch is not None:
                        continue  # looks again first: what came before the watch wakes nothing
                yield next(delays) if watch is None else Wake(watch, next(delays))
    finally:
        if file is not None:
            file.close()
        if watch is not None:
            os.close(watch)


def _watch(directory: str) -> int | None:
    """An inotify fd woken by changes in directory; None when there is none to have (the polls then do)."""
    try:
        return linux.inotify(directory, linux.IN_MODIFY | linux.IN_CREATE | linux.IN_MOVED_TO)
    except OSError:  # no such directory yet, or the user's inotify instances are used up
        return None


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass


def _renewed(path: str, file: BinaryIO | None) -> bool:
    """Whether path names another file than file: a rotation, or the first file at path."""
    try:
        inode = os.stat(path).st_ino
    except FileNotFoundError:
        return False  # between a rotation and the first write after it
    return file is None or inode != os.fstat(file.fileno()).st_ino


def _parsed(data: bytes, parse: Callable[[bytes], T | None]) -> list[T]:
    return [item for raw in data.splitlines() if (item := parse(raw)) is not None]
