"""Resolves a user spec (name, uid, name:group, uid:gid) against the container's /etc/passwd and /etc/group."""

from __future__ import annotations

import os
import stat

MAX_SIZE = 16 << 20  # bytes; a real passwd or group file is far smaller


def _entries(path: str) -> list[list[str]]:
    """The file's entries. It belongs to the container, which may have made it anything: a FIFO or a device
    would block the read for ever (O_NONBLOCK makes only the open return), so only a regular file is read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        return []
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise LookupError(f"unable to read {path}: not a regular file")
        chunks, size = [], 0
        while chunk := os.read(fd, 65536):
            size += len(chunk)
            if size > MAX_SIZE:
                raise LookupError(f"unable to read {path}: larger than {MAX_SIZE >> 20} MiB")
            chunks.append(chunk)
    finally:
        os.close(fd)
    text = b"".join(chunks).decode("utf-8", errors="replace")
    return [line.split(":") for line in text.split("\n") if line.strip() and not line.startswith("#")]


def lookup(spec: str | None) -> tuple[int, int, list[int], str]:
    """(uid, gid, supplementary gids, home) for spec; reads /etc of the current root."""
    name, _, group = (spec or "0").partition(":")
    passwd = [e for e in _entries("/etc/passwd") if len(e) >= 7]
    entry = next((e for e in passwd if e[0] == name), None)
    if entry is None and name.isdigit():
        entry = next((e for e in passwd if e[2] == name), None)
    if entry is not None:
        user, uid, gid, home = entry[0], int(entry[2]), int(entry[3]), entry[5] or "/"
    elif name.isdigit():
        user, uid, gid, home = None, int(name), 0, "/"
    else:
        raise LookupError(f"unable to find user {name}: no matching entries in passwd file")
    groups = [e for e in _entries("/etc/group") if len(e) >= 3]
    if group:
        found = next((e for e in groups if e[0] == group), None)
        if found is not None:
            gid = int(found[2])
        elif group.isdigit():
            gid = int(group)
        else:
            raise LookupError(f"unable to find group {group}: no matching entries in group file")
    extra = {int(e[2]) for e in groups if user and len(e) > 3 and user in e[3].split(",")}
    return uid, gid, sorted(extra | {gid}), home
