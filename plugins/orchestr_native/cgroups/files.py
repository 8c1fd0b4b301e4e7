"""Reading and writing cgroup files; a write the kernel refuses says what was written where."""

from __future__ import annotations

import os


class WriteError(OSError):
    """The kernel refused a write to a cgroup file. Its errno alone (EBUSY, EINVAL) says nothing of which limit
    of which container it was, so the message names the file and the value."""

    def __init__(self, path: str, value: str, cause: OSError):
        super().__init__(cause.errno, cause.strerror, path)
        self.value = value

    def __str__(self) -> str:
        return f"cannot write {self.value} to {self.filename}: {self.strerror}"


def write(path: str, value: str) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)  # as open(path, "w")
        try:
            os.write(fd, value.encode())  # the kernel answers here
        finally:
            os.close(fd)
    except OSError as e:
        raise WriteError(path, value, e) from None


def read(path: str) -> str:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)  # bare system calls: any file object costs more than the read
    try:
        data = b""
        while chunk := os.read(fd, 1 << 16):
            data += chunk
    finally:
        os.close(fd)
    return data.decode().strip()


def read_keyed(path: str) -> dict[str, int]:
    """A flat-keyed file such as memory.events or cgroup.events: one "key value" pair a line."""
    out = {}
    with open(path) as f:
        for line in f:
            key, _, value = line.partition(" ")
            if value.strip().lstrip("-").isdigit():
                out[key] = int(value)
    return out


def read_int(path: str) -> int | None:
    """A file holding one number; None for "max" (v2's unlimited) or a missing file."""
    try:
        text = read(path)
    except FileNotFoundError:
        return None
    return int(text) if text.lstrip("-").isdigit() else None


def read_pids(path: str) -> list[int]:
    try:
        with open(path) as f:
            return [int(x) for x in f.read().split()]
    except FileNotFoundError:
        return []
