"""The supervisor: one process per state dir that supervises every running container of it.

It is started on demand by the first container start, listens on state_dir/native/supervisor.sock, and
exits once it supervises nothing and has been idle for a while. See the package docstring for why one
process supervises all containers.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import time

from ..process import linux
from . import records
from .monitor import Monitor
from .records import SOCKET

IDLE_EXIT = 60.0  # seconds without containers or requests before the supervisor exits
MAX_REQUEST = 1 << 16


class Supervisor:
    def __init__(self, root: str, listener: socket.socket):
        self.root, self.listener = root, listener
        self.me = records.identity(os.getpid())
        self.own_pidns = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
        self.monitors: dict[str, Monitor] = {}  # by container directory
        self.last_request = time.monotonic()

    def run(self) -> None:
        while True:
            # A fresh poll set each round: fds are closed and their numbers reused as containers restart.
            poller = select.poll()
            poller.register(self.listener, select.POLLIN)
            watched = {fd: m for m in self.monitors.values() for fd in m.fds()}
            for fd in watched:
                poller.register(fd, select.POLLIN)
            timeout = self._timeout()
            for fd, _ in poller.poll(None if timeout is None else int(timeout * 1000) + 1):
                if fd == self.listener.fileno():
                    self.last_request = time.monotonic()
                    if self._serve(self.listener.accept()[0]):
                        return
                elif watched[fd].dir in self.monitors:
                    self._guard(watched[fd], "ready", fd)
            for monitor in list(self.monitors.values()):
                self._guard(monitor, "tick")
            if not self.monitors and time.monotonic() - self.last_request >= IDLE_EXIT:
                return

    def _timeout(self) -> float | None:
        deadlines = [m.deadline for m in self.monitors.values() if m.deadline is not None]
        if not self.monitors:
            deadlines.append(self.last_request + IDLE_EXIT)
        return max(0.0, min(deadlines) - time.monotonic()) if deadlines else None

    def _guard(self, monitor: Monitor, what: str, fd: int | None = None) -> None:
        """One container's trouble must never end the supervision of the others."""
        try:
            if what == "ready":
                monitor.ready(fd)
            elif monitor.tick():
                self._drop(monitor)
        except Exception:  # noqa: BLE001 - logged; that container is ended, the others go on
            _log_exception()
            try:
                monitor.abandon()
            except Exception:  # noqa: BLE001
                _log_exception()
            self._drop(monitor)

    def _drop(self, monitor: Monitor) -> None:
        self.monitors.pop(monitor.dir, None)
        monitor.close()

    def _serve(self, conn: socket.socket) -> bool:
        """Answers one request; True when the supervisor should exit."""
        fds: list[int] = []  # passed with the request: the stdin of an interactive run
        back: int | None = None  # passed with the reply: the terminal of an attached run
        with conn:
            conn.settimeout(10)
            try:
                data = b""
                while not data.endswith(b"\n") and len(data) < MAX_REQUEST:
                    chunk, got, _, _ = socket.recv_fds(conn, 4096, 4)
                    fds += got
                    for fd in got:  # recv_fds takes no MSG_CMSG_CLOEXEC: no container may inherit them
                        os.set_inheritable(fd, False)
                    if not chunk:
                        break
                    data += chunk
                request = json.loads(data)
                reply, quit, back = self._handle(request, fds)
            except Exception as e:  # noqa: BLE001 - a bad request gets an error, the supervisor goes on
                _log_exception()
                reply, quit = {"error": f"supervisor: {e}"}, False
            finally:
                for fd in fds:
                    os.close(fd)
            try:
                payload = json.dumps(reply).encode() + b"\n"
                if back is not None:
                    payload = payload[socket.send_fds(conn, [payload], [back]):]
                conn.sendall(payload)
            except OSError:
                pass
            finally:
                if back is not None:
                    os.close(back)
        return quit

    def _handle(self, request: dict, fds: list[int]) -> tuple[dict, bool, int | None]:
        op = request.get("op")
        if op == "start":
            directory = request["dir"]
            if directory in self.monitors:
                return {"pid": self.monitors[directory].pid}, False, None
            monitor = Monitor(directory, self.me, self.own_pidns)
            stdin = fds[0] if request.get("stdin") and fds else None
            try:
                error = monitor.start(stdin, request.get("attach", False), request.get("winsize"))
            except BaseException:
                if monitor.terminal is not None:
                    os.close(monitor.terminal)
                raise
            if error:
                monitor.close()
                return {"error": error}, False, None
            self.monitors[directory] = monitor
            terminal, monitor.terminal = monitor.terminal, None
            return {"pid": monitor.pid, "io": True}, False, terminal  # io: takes stdin, gives terminals
        if op == "cancel-restart":
            monitor = self.monitors.get(request["dir"])
            if monitor is not None and monitor.phase == "backoff":
                monitor.give_up()
                self._drop(monitor)
            return {}, False, None
        quitting = op == "quit-if-idle" and not self.monitors
        return {"pid": os.getpid(), "containers": sorted(self.monitors), "quit": quitting}, quitting, None


def _log_exception() -> None:
    import traceback  # only for the log, and rarely: the supervisor starts with every CLI run that needs it

    traceback.print_exc()


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
    linux.set_name("orchestr-sup")
    # Only SIGKILL ends the supervisor: every running container's output pipes depend on it.
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    ident = os.stat(path).st_ino
    try:
        Supervisor(root, listener).run()
    except BaseException:  # noqa: BLE001 - the log is where anyone can read why supervision ended
        _log_exception()
    try:
        if os.stat(path).st_ino == ident:
            os.unlink(path)
    except FileNotFoundError:
        pass
    os._exit(0)
