"""Container output as JSON lines (time, stream, log), the format every runtime that writes its own logs keeps:
written with size-based rotation, read back in order. Standard library only: supervisors and loggers that run
without orchestr's imports (`python -I -S`, orchestr registered as a bare package) use it too."""

from __future__ import annotations

import errno
import os
import time

# json's and typing's imports cost a process that runs per container (a logger, a supervisor) more than its own
# interpreter: the writer escapes with json's C encoder alone, and json is loaded by the readers that need it
try:
    from _json import encode_basestring_ascii as _escaped
except ImportError:  # an interpreter without json's C half
    from json.encoder import encode_basestring_ascii as _escaped  # type: ignore[attr-defined]

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import BinaryIO

FILE = "container.log"
MAX_LINE = 16 * 1024  # longer output without a newline is recorded in pieces of this size, as Docker does


def now(later: float = 0.0) -> str:
    """The current time (plus later seconds) in RFC 3339 with nanoseconds, UTC. The supervisor's clock: it runs
    without orchestr importable, so it cannot use orchestr.containers.rfc3339, whose format this is."""
    ns = time.time_ns() + int(later * 1e9)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 1_000_000_000)) + f".{ns % 1_000_000_000:09d}Z"


# bytes a record's text carries as they are: printable ASCII but the quote and the backslash, and the newline
_PLAIN = bytes(b for b in range(0x20, 0x7F) if b not in b'"\\') + b"\n"
_TAIL = b'\\n"}\n'  # the line's newline, escaped, then the record's end


class LogWriter:
    """Appends records to path; past max_size bytes the file becomes path.1 (path.1 becomes path.2, ...),
    keeping max_files files in all.

    A record that cannot be written (a full disk) is dropped, never half written, and counted in lost; the
    next record that can be written is preceded by one on stderr saying how many were dropped and why."""

    def __init__(self, path: str, max_size: int, max_files: int, lost: int = 0):
        self.path, self.max_size, self.max_files = path, max_size, max(1, max_files)
        self.lost = lost  # records dropped over the container's life
        self.unsaid = 0  # of those, the ones no record in the log mentions yet
        self.error = ""
        self.fd: int | None = None
        self.size = 0
        try:
            self._open()
        except OSError as e:
            self.error = e.strerror or str(e)  # tried again at the next write

    def _open(self, flags: int = 0) -> None:
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC | flags, 0o600)
        self.size = os.fstat(self.fd).st_size

    def write(self, stream: str, data: bytes) -> None:
        if not self._say_dropped():
            self.lost += 1
            self.unsaid += 1
            return
        if not self._append(stream, data):
            self.lost += 1
            self.unsaid += 1

    def _say_dropped(self) -> bool:
        """Before the next record, one on stderr saying how many were dropped and why; False if it cannot be."""
        if not self.unsaid:
            return True
        note = f"orchestr: {self.unsaid} lines of output were dropped: {self.error}\n"
        if not self._append("stderr", note.encode()):
            return False
        self.unsaid = 0
        return True

    def write_lines(self, stream: str, block: bytes) -> None:
        """Records each line of block (whole lines, each ending with a newline) as write() would one by one, at
        the time of this call. A `yes` writes hundreds of thousands of lines a second: they are made into
        records together (plain text, the usual case, with one replace) and written with one system call per
        file, so the supervisor's one thread keeps up and every other container's output still gets its turn."""
        if not self._say_dropped():
            self.lost += block.count(b"\n")
            self.unsaid += block.count(b"\n")
            return
        head = f'{{"time": "{now()}", "stream": "{stream}", "log": "'.encode()
        if not block.translate(None, _PLAIN):  # nothing to escape: each record is the same head, text, tail
            records = head + block[:-1].replace(b"\n", _TAIL + head) + _TAIL
        else:
            records = b"".join(head + _escaped(line.decode("utf-8", "surrogateescape"))[1:-1].encode() + _TAIL
                               for line in block[:-1].split(b"\n"))
        while records:
            room = self.max_size - self.size
            if len(records) <= room:
                cut = len(records)
            else:
                cut = records.rfind(b"\n", 0, max(room, 0)) + 1  # the records that fit
                if not cut and self.size:
                    if not self._rotated():
                        break
                    continue
                cut = cut or records.index(b"\n") + 1  # a record bigger than a file: alone in a new one
            if not self._put(records[:cut]):
                break
            records = records[cut:]
        if records:
            dropped = records.count(b"\n")
            self.lost += dropped
            self.unsaid += dropped

    def _rotated(self) -> bool:
        try:
            if self.fd is None:
                self._open()
            self._rotate()
            return True
        except OSError as e:
            self.error = e.strerror or str(e)
            return False

    def _append(self, stream: str, data: bytes) -> bool:
        # surrogateescape keeps bytes that are not UTF-8; json escapes them and reading reverses it
        text = _escaped(data.decode("utf-8", "surrogateescape"))  # quoted, as json.dumps writes it
        record = f'{{"time": "{now()}", "stream": "{stream}", "log": {text}}}'
        line = record.encode() + b"\n"
        try:
            if self.fd is None:
                self._open()
            if self.size and self.size + len(line) > self.max_size:
                self._rotate()
        except OSError as e:
            self.error = e.strerror or str(e)
            return False
        return self._put(line)

    def _put(self, data: bytes) -> bool:
        """Appends whole records to the current file; on failure none of them is left in it."""
        try:
            if self.fd is None:
                self._open()
            written = os.write(self.fd, data)
            if written < len(data):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError as e:
            self.error = e.strerror or str(e)
            if self.fd is not None:
                try:
                    os.ftruncate(self.fd, self.size)  # no torn record: readers would lose the next one with it
                except OSError:
                    pass
            return False
        self.size += len(data)
        return True

    def _rotate(self) -> None:
        fd, self.fd = self.fd, None
        os.close(fd)
        if self.max_files == 1:
            self._open(os.O_TRUNC)
            return
        for i in range(self.max_files - 1, 1, -1):
            if os.path.exists(f"{self.path}.{i - 1}"):
                os.replace(f"{self.path}.{i - 1}", f"{self.path}.{i}")
        os.replace(self.path, f"{self.path}.1")
        self._open()

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def files(path: str) -> list[str]:
    """The log's files, oldest first."""
    rotated = []
    i = 1
    while os.path.exists(f"{path}.{i}"):
        rotated.append(f"{path}.{i}")
        i += 1
    return [*reversed(rotated), *([path] if os.path.exists(path) else [])]


def history(path: str, tail: int | None = None) -> tuple[list[bytes], BinaryIO | None]:
    """The log's whole records so far, oldest first (the last tail of them when tail is given), and its current
    file open just past them, to follow it from there; None when it has no current file yet."""
    records: list[bytes] = []
    for old in files(path):
        if old != path:
            with open(old, "rb") as f:
                records.extend(f.read().splitlines())
    try:
        current = open(path, "rb")
    except FileNotFoundError:
        current = None
    if current is not None:
        data = current.read()
        cut = data.rfind(b"\n") + 1
        records.extend(data[:cut].splitlines())
        current.seek(cut)  # a record still being written is read whole when following
    if tail is not None:
        records = records[-tail:] if tail > 0 else []
    return records, current


def parse(line: bytes) -> tuple[str, bytes, str | None] | None:
    """(stream, data, time) of one record; None for a torn or foreign line."""
    import json

    try:
        record = json.loads(line)
        return record["stream"], record["log"].encode("utf-8", "surrogateescape"), record.get("time")
    except (ValueError, KeyError, AttributeError):
        return None
