"""A container's records on disk: config.json (fixed at create), state.json (replaced atomically), events."""

from __future__ import annotations

import functools
import json
import os

from orchestr.logfile import now

CONFIG = "config.json"
STATE = "state.json"
STOP = "stop-requested"  # present while a stop is under way: the monitor must not restart the container
EVENTS = "events.jsonl"
SOCKET = "supervisor.sock"  # the host's socket, in the state root
EVENTS_MAX = 1 << 20

_decode = json.JSONDecoder().decode


def write_json(path: str, data: dict, durable: bool = True) -> None:
    """Replaces the record at path at once, as a whole. durable: on disk before it replaces the old one; else
    the caller makes it durable with sync() when no one waits on it any more (an empty file, all a crash can
    leave in between, reads as no record)."""
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "w", opener=private) as f:
            json.dump(data, f)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)  # a full disk must not also collect half-written copies
        except OSError:
            pass
        raise


def sync(path: str) -> None:
    """Makes what write_json(durable=False) wrote at path durable."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return  # removed meanwhile: nothing to keep
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def private(path: str, flags: int) -> int:
    """An opener for open(): records are the owner's only (a container's config holds its env, secrets
    included). orchestr.config has the same, but the supervisor runs without orchestr's imports."""
    return os.open(path, flags | os.O_CLOEXEC, 0o600)


def read_json(path: str) -> dict | None:
    """The record at path, None when there is none. Read with bare system calls: a text file object costs more
    than the read, and `orchestr get` reads two records of every container."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
    finally:
        os.close(fd)
    data = b"".join(chunks)
    return _decode(data.decode()) if data else None  # json.loads would first guess the bytes' encoding: ours is UTF-8


@functools.cache  # fixed for the life of any process
def boot_id() -> str:
    with open("/proc/sys/kernel/random/boot_id") as f:
        return f.read().strip()


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot, None when it is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rpartition(b")")[2].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    if fields[0] in (b"Z", b"X"):
        return None
    return int(fields[19])


def identity(pid: int) -> dict:
    return {"pid": pid, "start": start_time(pid), "boot": boot_id()}


def alive(ident: dict | None) -> bool:
    """Whether the process recorded by identity() still runs (not a later process that reuses its pid)."""
    if not ident or not ident.get("pid"):
        return False
    return ident.get("boot") == boot_id() and start_time(ident["pid"]) == ident.get("start")


def append_event(root: str, event: dict) -> None:
    """Appends one event line to root's event log; O_APPEND keeps concurrent writers' lines whole."""
    path = os.path.join(root, EVENTS)
    line = json.dumps(dict(event, time=now())).encode() + b"\n"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    try:
        if os.fstat(fd).st_size > EVENTS_MAX:
            os.replace(path, path + ".1")
        os.write(fd, line)
    finally:
        os.close(fd)
