"""The controller's journal: what it did (reconcile passes with their plans, restarts it delayed), one JSON line
each in the state dir's events.jsonl, which `orchestr events` follows beside the runtimes' own events."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import anyio

from .containers import rfc3339

FILE = "events.jsonl"
MAX_SIZE = 1 << 20  # bytes; then the file becomes events.jsonl.1
POLL = 0.2  # seconds between two looks at the file while following it


class Journal:
    def __init__(self, state_dir: str | Path):
        self.path = Path(state_dir) / FILE

    def write(self, entry: dict) -> None:
        """Appends entry, with its time; O_APPEND keeps lines whole. A full disk loses the entry, nothing else."""
        line = json.dumps({"time": rfc3339(), **entry}, separators=(",", ":")).encode() + b"\n"
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
            try:
                if os.fstat(fd).st_size > MAX_SIZE:
                    os.replace(self.path, f"{self.path}.1")
                os.write(fd, line)
            finally:
                os.close(fd)
        except OSError:
            pass

    def follow(self) -> AsyncIterator[dict]:
        """Entries written from this call on, until cancelled (across the file's rotation)."""
        try:
            st = os.stat(self.path)
            start = (st.st_ino, st.st_size)
        except FileNotFoundError:
            start = (None, 0)
        return self._follow(*start)

    async def _follow(self, inode: int | None, offset: int) -> AsyncIterator[dict]:
        pending = b""
        while True:
            try:
                st = os.stat(self.path)
            except FileNotFoundError:
                await anyio.sleep(POLL)
                continue
            if st.st_ino != inode:  # rotated (or made): the new file is all news
                inode, offset, pending = st.st_ino, 0, b""
            if st.st_size > offset:
                with open(self.path, "rb") as f:
                    f.seek(offset)
                    data = f.read(st.st_size - offset)
                offset += len(data)
                *lines, pending = (pending + data).split(b"\n")
                for line in lines:
                    try:
                        yield json.loads(line)
                    except ValueError:
                        continue
            else:
                await anyio.sleep(POLL)



def touches(entry: dict, namespace: str) -> bool:
    """Whether a journal entry is about namespace: a restart of one of its containers, or a pass that planned
    something there."""
    if entry.get("namespace") == namespace:
        return True
    return any(a.get("namespace") == namespace for a in entry.get("plan") or ())
