"""The container's logger: the process containerd's shim starts for a task whose output goes to `binary://`, so the
output is logged while no orchestr process runs, in the JSON-lines format and rotation of every orchestr runtime.

The shim hands it the container's stdout on fd 3 and stderr on fd 4, and waits for fd 5 to close before it starts
the container. Its environment names only the container and its containerd namespace; its arguments (the task's
URI) are the log's directory and how big the log may grow and whether a restart may be due, which the directory's
logger.json says too. It runs as `python -IS` with orchestr and this package registered as bare packages (no
orchestr imports, no grpc, not even json, typing or enum): one per running container, so small.
The shim keeps its own ends of the output pipes until the task is deleted, so the end of the output does not say
the container ended: the logger watches the container's first process instead (its pid is in the bundle's init.pid,
the shim's working directory and so the logger's), drains what is left in the pipes once it has ended, and exits.
While it runs it holds logger.lock, so a reader of an ended container's log knows when the last line is in. If the
container's restart policy may ask for a restart, and orchestr did not stop it (the file STOPPED), it then starts
orchestr's restarter, detached (see restart.py).
"""

from __future__ import annotations

import fcntl
import os
import sys

try:  # signal's own module loads enum, which would cost this process more than its interpreter does
    import _signal as signal
except ImportError:
    import signal  # type: ignore[no-redef]

CONFIG = "logger.json"
STOPPED = "stopped"  # a file orchestr makes here before it stops the container: not to be restarted
READ = 1 << 16


def wait_done(directory: str, within: float = 15.0) -> None:
    """Waits (within seconds at most) until the logger of a task that ended has written all its output: it holds
    logger.lock while it runs."""
    import time

    try:
        fd = os.open(os.path.join(directory, "logger.lock"), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        deadline = time.monotonic() + within
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    return
                time.sleep(0.005)
    finally:
        os.close(fd)


def main(args: list[str]) -> None:
    """args: the log's directory, then "max_size,max_files,restart" from the task's URI (see settings), or nothing
    when logger.json is to be read for them."""
    directory = args[0]
    lock = os.open(os.path.join(directory, "logger.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    fcntl.flock(lock, fcntl.LOCK_EX)
    stopping = []

    def stop(*_: object) -> None:  # the task's delete: drain, then exit
        stopping.append(True)
        raise _Stop

    signal.signal(signal.SIGTERM, stop)
    try:
        os.close(5)  # ready, with the lock held: the shim starts the container now, its output waits in the pipes
    except OSError:
        pass
    import select  # the rest after the ready: the task's start does not wait for them

    from orchestr import logfile

    config = _config(directory, args[1] if len(args) > 1 else "")
    log = logfile.LogWriter(os.path.join(directory, logfile.FILE), config["max_size"], config["max_files"])
    streams = {fd: name for fd, name in ((3, "stdout"), (4, "stderr")) if _open(fd)}
    partial = {fd: b"" for fd in streams}
    pidfd = None
    ended = False
    while streams and not ended:
        if pidfd is None:
            pidfd = _watch()
            if pidfd == -1:  # it has ended already
                pidfd, ended = None, True
                for fd in list(streams):
                    _drain(fd, streams, partial, log, once=False)
                break
        watched = [*streams, *([pidfd] if pidfd is not None else [])]
        try:
            readable, _, _ = select.select(watched, [], [], 0.01 if pidfd is None else None)
        except _Stop:
            readable = []
        if stopping:
            readable, ended = list(streams), True
        if pidfd is not None and pidfd in readable:
            readable, ended = list(streams), True
        for fd in readable:
            if _drain(fd, streams, partial, log, once=not ended):
                if partial[fd]:
                    log.write(streams[fd], partial.pop(fd))
                del streams[fd]
    for fd, name in streams.items():
        if partial.get(fd):
            log.write(name, partial[fd])
    log.close()
    os.close(lock)
    if config.get("restarter") and not stopping and not os.path.exists(os.path.join(directory, STOPPED)):
        _restart(config["restarter"], directory)


class _Stop(Exception):
    pass


def settings(config: dict) -> str:
    """What of logger.json's config the logger takes from its arguments (see main), sparing it json's imports."""
    return f"{int(config['max_size'])},{int(config['max_files'])},{1 if config.get('restarter') else 0}"


def _config(directory: str, given: str) -> dict:
    parts = given.split(",")
    if len(parts) == 3 and all(p.isdigit() for p in parts):
        restarter = [sys.executable, "-I", os.path.join(os.path.dirname(os.path.abspath(__file__)), "restart.py")]
        return {"max_size": int(parts[0]), "max_files": int(parts[1]),
                "restarter": restarter if parts[2] == "1" else None}
    import json

    with open(os.path.join(directory, CONFIG)) as f:
        return json.load(f)


def _drain(fd: int, streams: dict[int, str], partial: dict[int, bytes], log: logfile.LogWriter, once: bool) -> bool:
    """Logs what fd has: one read, or (once the container ended) everything left, without waiting for more; True at
    the end of the stream."""
    from orchestr import logfile

    if not once:
        os.set_blocking(fd, False)
    while True:
        try:
            data = os.read(fd, READ)
        except BlockingIOError:
            return False
        if not data:
            return True
        rest = partial[fd] + data
        while (cut := rest.find(b"\n")) >= 0:
            log.write(streams[fd], rest[: cut + 1])
            rest = rest[cut + 1:]
        while len(rest) >= logfile.MAX_LINE:
            log.write(streams[fd], rest[: logfile.MAX_LINE])
            rest = rest[logfile.MAX_LINE:]
        partial[fd] = rest
        if once:
            return False


def _watch() -> int | None:
    """A pidfd of the container's first process, once the shim has written its pid; -1 when it has ended."""
    try:
        with open("init.pid") as f:
            pid = int(f.read().strip() or 0)
    except (OSError, ValueError):
        return None
    if not pid:
        return None
    try:
        return os.pidfd_open(pid)
    except ProcessLookupError:
        return -1
    except OSError:
        return None


def _open(fd: int) -> bool:
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False


def _restart(argv: list[str], directory: str) -> None:
    """Starts the restarter in a session of its own, so that it outlives this process and the task's shim."""
    if os.fork() == 0:
        try:
            os.setsid()
            if os.fork() == 0:
                null = os.open(os.devnull, os.O_RDWR)
                for fd in (0, 1, 2):
                    os.dup2(null, fd)
                os.execve(argv[0], [*argv, directory, os.environ.get("CONTAINER_ID", "")], {
                    "CONTAINER_ID": os.environ.get("CONTAINER_ID", ""),
                    "CONTAINER_NAMESPACE": os.environ.get("CONTAINER_NAMESPACE", "")})
        finally:
            os._exit(0)
    os.wait()


if __name__ == "__main__":
    main(sys.argv[1:])
