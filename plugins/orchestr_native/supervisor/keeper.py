"""The keeper: the supervisor's long-lived process, which forks the worker and forks another when one dies.

It holds the listening socket, a copy of every container's output read ends (sent by the worker at each start),
and, as a child subreaper, becomes the parent of the containers' inits when their worker dies: it reaps them
and keeps their wait status for the next worker. It runs no code a container controls, and does almost nothing.
"""

from __future__ import annotations

import gc
import json
import os
import select
import signal
import socket
import time

from ..process import linux
from . import host, records
from .records import SOCKET

OOM_SCORE_ADJ = -999  # the OOM killer should pick a worker (which costs nothing now) or a container, not this
BACKOFF_FIRST, BACKOFF_MAX, STEADY = 0.5, 5.0, 60.0  # seconds between workers that keep dying; a steady life


class Run:
    """What the keeper holds of a container's last start: its init, the read ends of its output (the worker's
    copies are the ones read) and, once the keeper reaped the init or the worker said, its wait status."""

    __slots__ = ("pid", "start", "streams", "fds", "status")

    def __init__(self, pid: int, start: int | None, streams: list[str], fds: list[int]):
        self.pid, self.start, self.streams, self.fds, self.status = pid, start, streams, fds, None


class Keeper:
    def __init__(self, root: str, listener: socket.socket, socket_ino: int, oom_score_adj: str | None):
        self.root, self.listener, self.socket_ino = root, listener, socket_ino
        self.oom_score_adj = oom_score_adj  # what the workers, and so the containers, get back
        self.me = records.identity(os.getpid())
        self.runs: dict[str, Run] = {}  # by container directory
        self.worker: int | None = None
        self.link: socket.socket | None = None  # to the worker
        self.spawned = 0.0
        self.backoff = 0.0
        self.respawn_at: float | None = None

    def run(self) -> None:
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)  # the wakeup fd does the work
        self._spawn(wake_r, wake_w)
        while True:
            poller = select.poll()
            poller.register(wake_r, select.POLLIN)
            if self.link is not None:
                poller.register(self.link, select.POLLIN)
            timeout = None if self.respawn_at is None else max(0, int((self.respawn_at - time.monotonic()) * 1000) + 1)
            for fd, _ in poller.poll(timeout):
                if fd == wake_r:
                    while True:
                        try:
                            if not os.read(wake_r, 512):
                                break
                        except BlockingIOError:
                            break
                elif self.link is not None and fd == self.link.fileno():
                    self._receive()
            if self._reap():
                return
            if self.worker is None and self.respawn_at is not None and time.monotonic() >= self.respawn_at:
                try:
                    self._spawn(wake_r, wake_w)
                except OSError as e:  # no memory or no fds to fork with: try again later
                    _log(f"orchestr-keeper: cannot start a worker: {e}")
                    self.respawn_at = time.monotonic() + max(self.backoff, BACKOFF_FIRST)

    def _spawn(self, *own: int) -> None:
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        gc.collect()
        gc.freeze()  # what the worker inherits stays shared: no collection of the worker's writes to it
        try:
            pid = os.fork()
        except OSError:
            mine.close()
            theirs.close()
            raise
        if pid == 0:
            code = 1
            try:
                mine.close()
                signal.set_wakeup_fd(-1)
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                for fd in own:
                    os.close(fd)
                _set_oom_score_adj(self.oom_score_adj)
                linux.set_name("orchestr-sup")
                host.work(self.root, self.listener, theirs.detach(), self.me, self.runs, self.socket_ino)
                code = 0
            except BaseException:  # noqa: BLE001 - the keeper starts another worker; the log says why
                _log_exception()
            finally:
                os._exit(code)
        theirs.close()
        mine.setblocking(False)
        self.link, self.worker, self.spawned, self.respawn_at = mine, pid, time.monotonic(), None

    def _receive(self) -> None:
        while True:
            try:
                data, fds, _, _ = socket.recv_fds(self.link, 65536, 16)
            except BlockingIOError:
                return
            except OSError:
                data, fds = b"", []
            if not data:
                for fd in fds:
                    os.close(fd)
                self.link.close()  # the worker is gone; _reap starts another
                self.link = None
                return
            try:
                message = json.loads(data)
                op, directory = message["op"], message["dir"]
                if op == "hold":
                    run = Run(message["pid"], message["start"], message["streams"], fds)
                    self._release(directory)
                    self.runs[directory], fds = run, []
                elif op == "release":
                    self._release(directory)
                elif op == "exited" and (run := self.runs.get(directory)) is not None and run.pid == message["pid"]:
                    run.status = message["status"]  # the worker reaped it itself, and may die before recording it
            except (ValueError, KeyError, TypeError):
                _log("orchestr-keeper: ignored a malformed message from the worker")
            for fd in fds:
                os.close(fd)

    def _release(self, directory: str) -> None:
        run = self.runs.pop(directory, None)
        for fd in run.fds if run is not None else ():
            os.close(fd)

    def _reap(self) -> bool:
        """Reaps every child that ended; True when the worker ended its work for good."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return False
            if pid == 0:
                return False
            if pid == self.worker:
                if self._worker_ended(pid, status):
                    return True
                continue
            for directory, run in self.runs.items():  # an init whose worker died: the keeper is its parent now
                if run.pid == pid and run.status is None:
                    run.status = status
                    if self.link is not None:
                        try:
                            self.link.send(json.dumps(
                                {"op": "exited", "dir": directory, "pid": pid, "status": status}).encode())
                        except OSError:
                            pass  # the next worker finds the status in runs

    def _worker_ended(self, pid: int, status: int) -> bool:
        self.worker = None
        if self.link is not None:
            self._receive()  # what it sent before it died, up to the end of the link
        if self.link is not None:  # a child of it not yet past closing its inherited fds holds the other end
            self.link.close()
            self.link = None
        if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
            return True  # idle: it removed the socket, so the next client starts a new supervisor
        if time.monotonic() - self.spawned >= STEADY:
            self.backoff = 0.0
        self.respawn_at = time.monotonic() + self.backoff
        why = f"signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status) else f"exit {os.WEXITSTATUS(status)}"
        _log(f"orchestr-keeper: the worker {pid} ended ({why}); starting another in {self.backoff:g}s")
        self.backoff = min(max(self.backoff * 2, BACKOFF_FIRST), BACKOFF_MAX)
        return False


def _set_oom_score_adj(value: str | None) -> None:
    if value is None:
        return
    try:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write(value)
    except OSError:
        pass


def _oom_score_adj() -> str | None:
    try:
        with open("/proc/self/oom_score_adj") as f:
            return f.read().strip()
    except OSError:
        return None


def _log(line: str) -> None:
    try:
        os.write(2, f"{line}\n".encode())
    except OSError:
        pass


def _log_exception() -> None:
    import traceback

    try:
        traceback.print_exc()
    except OSError:
        pass


def serve(root: str) -> None:
    path = os.path.join(root, SOCKET)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        os.unlink(path)  # only called when nothing answers on it (the client holds the spawn lock)
    except FileNotFoundError:
        pass
    old_umask = os.umask(0o077)
    listener.bind(path)
    os.umask(old_umask)
    listener.listen(64)
    # The process orchestr started exits as soon as the socket accepts: its caller only waits for that.
    if os.fork():
        os._exit(0)
    os.setsid()
    os.chdir("/")
    linux.set_name("orchestr-keeper")
    linux.prctl(linux.PR_SET_CHILD_SUBREAPER, 1)
    oom_score_adj = _oom_score_adj()
    _set_oom_score_adj(str(OOM_SCORE_ADJ))
    # Only SIGKILL ends the keeper: every running container's output pipes depend on it and its worker.
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    try:
        Keeper(root, listener, os.stat(path).st_ino, oom_score_adj).run()
    except BaseException:  # noqa: BLE001 - the log is where anyone can read why the keeper ended
        _log_exception()
    os._exit(0)
