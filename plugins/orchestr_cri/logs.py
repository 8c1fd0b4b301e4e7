"""The CRI log files: reading them (tail, follow) across rotations and restarts, and rotating them.

A CRI runtime writes a container's output to the file the pod's log directory and the container's log_path
name, one line per record in the kubelet's format: `<RFC 3339 time> <stdout|stderr> <P|F> <content>`, where P
marks part of a line the runtime split (a long line, or output that ended without a newline) and F the part
that ends it. Nobody else rotates these files: the kubelet does, in Kubernetes. orchestr does it the same way
(rename the file, ReopenContainerLog) whenever it lists containers or reads logs, so a log grows past its size
only while no orchestr command runs. Each restart writes a new file (<attempt>.log); logs reads them all,
oldest first, as one stream.
"""

from __future__ import annotations

import collections
import contextlib
import os
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import BinaryIO

import anyio

from orchestr.errors import TerminalFailure
from orchestr.model import LogLine
from orchestr.quantity import parse_quantity

POLL = 0.1  # seconds between looks at a followed file
REOPEN = 0.01  # seconds the runtime may still write to a rotated file once the new one is there
MAX_SIZE = 10 << 20  # the kubelet's containerLogMaxSize default
MAX_FILES = 5  # the kubelet's containerLogMaxFiles default: the current file and four before it
SIZE_ENV, FILES_ENV = "ORCHESTR_CRI_LOG_MAX_SIZE", "ORCHESTR_CRI_LOG_MAX_FILES"
MAX_LINE = 1 << 20  # bytes of a line kept while its parts come in: a container that never ends one fills no memory
_ROTATED = re.compile(r"^(\d+)\.log(?:\.(\d{8}-\d{6}\.\d{6}))?$")


def limits() -> tuple[int, int]:
    """(max size, max files) of a container's log: ORCHESTR_CRI_LOG_MAX_SIZE (a quantity) and
    ORCHESTR_CRI_LOG_MAX_FILES (at least 2: the current file and one before it), else the kubelet's defaults."""
    size, count = os.environ.get(SIZE_ENV, "").strip(), os.environ.get(FILES_ENV, "").strip()
    try:
        max_size = parse_quantity(size) if size else MAX_SIZE
    except ValueError:
        max_size = 0
    if max_size <= 0:
        raise TerminalFailure(f"{SIZE_ENV}: expected a quantity like 10Mi, got {size!r}", runtime="cri")
    max_files = int(count) if count.isdigit() else 0 if count else MAX_FILES
    if max_files < 2:
        raise TerminalFailure(f"{FILES_ENV}: expected a number of files, at least 2, got {count!r}", runtime="cri")
    return max_size, max_files


def parse(record: bytes) -> tuple[str, str, bool, bytes] | None:
    """(time, stream, full, content) of one record without its newline; None for a line not in the format."""
    parts = record.split(b" ", 3)
    if len(parts) < 3 or parts[1] not in (b"stdout", b"stderr"):
        return None
    content = parts[3] if len(parts) == 4 else b""
    tags = parts[2].split(b":")
    return parts[0].decode(errors="replace"), parts[1].decode(), b"P" not in tags, content


class Lines:
    """Joins partial records into lines, per stream, keeping the time of each line's first part."""

    def __init__(self) -> None:
        self.pending: dict[str, tuple[str, bytes]] = {}

    def add(self, record: bytes) -> LogLine | None:
        parsed = parse(record)
        if parsed is None:
            return None
        stamp, stream, full, content = parsed
        first, head = self.pending.pop(stream, (stamp, b""))
        if not full:
            if len(head) + len(content) < MAX_LINE:
                self.pending[stream] = (first, head + content)
                return None
            return LogLine(stream, head + content, first)  # handed on in pieces, as the runtime wrote them
        return LogLine(stream, head + content + b"\n", first)

    def rest(self) -> list[LogLine]:
        """What is left once the output has ended: lines that ended without a newline."""
        rest = [LogLine(stream, data, stamp) for stream, (stamp, data) in self.pending.items()]
        self.pending.clear()
        return rest


def files(current: Path) -> list[Path]:
    """Every file of the container's output in its pod, oldest first: earlier attempts' files, then rotated
    ones, the current one last."""
    found = []
    with contextlib.suppress(OSError):
        for entry in current.parent.iterdir():
            m = _ROTATED.match(entry.name)
            if m and entry.is_file():
                found.append(((int(m[1]), m[2] is None, m[2] or ""), entry))
    ordered = [path for _, path in sorted(found)]
    if current not in ordered and current.exists():
        ordered.append(current)
    return ordered


def rotate(current: Path, max_size: int = MAX_SIZE, max_files: int = MAX_FILES) -> bool:
    """Renames the current file aside when it is past max_size (the caller then has the runtime reopen it), and
    removes the oldest files past max_files; True when it renamed."""
    try:
        big = current.stat().st_size > max_size
    except OSError:
        return False
    if big:
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + f".{time.time_ns() // 1000 % 1_000_000:06d}"
        with contextlib.suppress(OSError):
            current.rename(current.with_name(f"{current.name}.{stamp}"))
    prune(current, max_files)
    return big


def prune(current: Path, max_files: int = MAX_FILES) -> None:
    """Removes the container's oldest log files past max_files (the current one is always kept)."""
    old = [p for p in files(current) if p != current]
    for path in old[: max(0, len(old) - (max_files - 1))]:
        with contextlib.suppress(OSError):
            path.unlink()


def _records(data: bytes) -> tuple[list[bytes], bytes]:
    """Complete records in data, and the unfinished rest."""
    *done, rest = data.split(b"\n")
    return done, rest


class _Seen:
    """The container's log files read, or being read, kept open and known by inode: the kernel gives no new
    file the inode of one still open, so an inode names one file for as long as it is listed here."""

    def __init__(self, current: Path) -> None:
        self.current = current
        self.files: dict[int, BinaryIO] = {}

    def unseen(self, active: BinaryIO | None = None) -> BinaryIO | None:
        """The oldest file of the container's output not read yet, opened (a rotation or a reopen made it);
        files that are gone (pruned) are let go of, except the one being read."""
        listed, found = set(), None
        for path in files(self.current):
            try:
                f = open(path, "rb")  # noqa: SIM115 - kept, or handed to the caller
            except OSError:
                continue
            inode = os.fstat(f.fileno()).st_ino
            listed.add(inode)
            if inode in self.files or found is not None:
                f.close()
            else:
                self.files[inode] = found = f
        for inode, f in list(self.files.items()):
            if inode not in listed and f is not active:
                f.close()
                del self.files[inode]
        return found

    def close(self) -> None:
        for f in self.files.values():
            f.close()


async def read(current: Path, *, tail: int | None, follow: bool,
               alive: Callable[[], Awaitable[bool]]) -> AsyncIterator[LogLine]:
    """The lines of every file of the container's output, oldest first (the last tail of them), then, with
    follow, what the runtime writes next, into the current file and those that replace it as it is rotated,
    until the container has exited (alive() says False) and its output is drained."""
    lines = Lines()
    kept: collections.deque[LogLine] | list[LogLine] = collections.deque(maxlen=tail) if tail is not None else []
    seen = _Seen(current)
    handle, unfinished = None, b""
    try:
        while (f := seen.unseen(handle)) is not None:
            handle = f
            records, unfinished = _records(f.read())
            for record in records:
                if (line := lines.add(record)) is not None:
                    kept.append(line)
        if not follow:
            kept.extend(lines.rest())  # lines the output ended in the middle of count as its last
        for line in kept:
            yield line
        if not follow:
            return
        ended = False
        while True:
            chunk = handle.read() if handle is not None else b""
            if chunk:
                records, unfinished = _records(unfinished + chunk)
                for record in records:
                    if (line := lines.add(record)) is not None:
                        yield line
                continue
            following = seen.unseen(handle)
            if following is not None:
                if handle is not None:
                    # the runtime makes the new file, then moves its writer over: what it wrote in between is
                    # in the old one
                    await anyio.sleep(REOPEN)
                    for record in _records(unfinished + handle.read())[0]:
                        if (line := lines.add(record)) is not None:
                            yield line
                handle, unfinished = following, b""
                continue
            if ended:
                break
            # once it has ended, one more look: what it wrote before its end is in the files by then
            ended = not await alive()
            if not ended:
                await anyio.sleep(POLL)
        for line in lines.rest():
            yield line
    finally:
        seen.close()
