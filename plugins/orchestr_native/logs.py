"""Container output as JSON lines (time, stream, log): written with size-based rotation, read back in order."""

from __future__ import annotations

import json
import os
import time

FILE = "container.log"
MAX_LINE = 16 * 1024  # longer output without a newline is recorded in pieces of this size, as Docker does


def now() -> str:
    """The current time in RFC 3339 with nanoseconds, UTC. The supervisor's clock: it runs without orchestr
    importable, so it cannot use orchestr.containers.rfc3339, whose format this is."""
    ns = time.time_ns()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 1_000_000_000)) + f".{ns % 1_000_000_000:09d}Z"


class LogWriter:
    """Appends records to path; past max_size bytes the file becomes path.1 (path.1 becomes path.2, ...),
    keeping max_files files in all."""

    def __init__(self, path: str, max_size: int, max_files: int):
        self.path, self.max_size, self.max_files = path, max_size, max(1, max_files)
        self._open()

    def _open(self, flags: int = 0) -> None:
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC | flags, 0o640)
        self.size = os.fstat(self.fd).st_size

    def write(self, stream: str, data: bytes) -> None:
        # surrogateescape keeps bytes that are not UTF-8; json escapes them and reading reverses it
        record = json.dumps({"time": now(), "stream": stream, "log": data.decode("utf-8", "surrogateescape")})
        line = record.encode() + b"\n"
        if self.size and self.size + len(line) > self.max_size:
            self._rotate()
        os.write(self.fd, line)
        self.size += len(line)

    def _rotate(self) -> None:
        os.close(self.fd)
        if self.max_files == 1:
            self._open(os.O_TRUNC)
            return
        for i in range(self.max_files - 1, 1, -1):
            if os.path.exists(f"{self.path}.{i - 1}"):
                os.replace(f"{self.path}.{i - 1}", f"{self.path}.{i}")
        os.replace(self.path, f"{self.path}.1")
        self._open()

    def close(self) -> None:
        os.close(self.fd)


def files(path: str) -> list[str]:
    """The log's files, oldest first."""
    rotated = []
    i = 1
    while os.path.exists(f"{path}.{i}"):
        rotated.append(f"{path}.{i}")
        i += 1
    return [*reversed(rotated), *([path] if os.path.exists(path) else [])]


def parse(line: bytes) -> tuple[str, bytes, str | None] | None:
    """(stream, data, time) of one record; None for a torn or foreign line."""
    try:
        record = json.loads(line)
        return record["stream"], record["log"].encode("utf-8", "surrogateescape"), record.get("time")
    except (ValueError, KeyError, AttributeError):
        return None
