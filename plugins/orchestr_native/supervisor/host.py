"""The supervisor's worker: the process that supervises every running container of a state dir.

The keeper (keeper.py) forks it and starts another when it dies; it listens on the keeper's socket,
state_dir/native/supervisor.sock, and returns once it supervises nothing and has been idle for a while. See the
package docstring for the design.
"""

from __future__ import annotations

import json
import os
import select
import socket
import time
from collections.abc import Sequence

from .. import cgroups
from . import records
from .monitor import Monitor, end_run
from .records import SOCKET

IDLE_EXIT = 60.0  # seconds without containers or requests before the supervisor exits
MAX_REQUEST = 1 << 16
SYNC_AFTER = 0.1  # seconds: the longest a written state.json waits for its fsync while the supervisor is busy


class Link:
    """The worker's end of its socketpair with the keeper: messages of one JSON object, fds alongside."""

    def __init__(self, fd: int | None):
        self.sock = None if fd is None else socket.socket(fileno=fd)
        if self.sock is not None:
            self.sock.setblocking(False)  # the keeper reads at once; were it stopped, the worker must not wait

    @property
    def alive(self) -> bool:
        return self.sock is not None

    def send(self, message: dict, fds: Sequence[int] = ()) -> bool:
        """True when the keeper got it."""
        if self.sock is None:
            return False
        try:
            socket.send_fds(self.sock, [json.dumps(message).encode()], list(fds))
        except OSError:  # the keeper is gone (receive() tells the loop), or not keeping up
            return False
        return True

    def receive(self) -> list[dict] | None:
        """The keeper's messages waiting; None once it is gone."""
        messages = []
        while True:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                return messages
            except OSError:
                data = b""
            if not data:
                self.sock.close()
                self.sock = None
                return None
            messages.append(json.loads(data))


class Supervisor:
    def __init__(self, root: str, listener: socket.socket, link: Link, keeper: dict | None):
        self.root, self.listener, self.link = root, listener, link
        # what state.json records as the supervisor: the keeper, which outlives a crash of this worker
        self.me = keeper if keeper is not None and link.alive else records.identity(os.getpid())
        self.own_pidns = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
        self.monitors: dict[str, Monitor] = {}  # by container directory
        self.waiting: list[tuple[Monitor, socket.socket]] = []  # clients whose start is not settled yet
        self.last_request = time.monotonic()
        self.unsynced: set[str] = set()  # state.json files written, fsynced when nothing else is to be done (_poll)
        self.unsynced_since: float | None = None  # when the first of them was written

    def adopt(self, runs: dict) -> None:
        """Takes over what a worker that died left: every container whose records say this keeper supervises
        it. runs are what the keeper held of each container's last start, by container directory."""
        directory = os.path.join(self.root, "containers")
        try:
            names = sorted(os.listdir(directory))
        except FileNotFoundError:
            names = []
        for name in names:
            d = os.path.join(directory, name)
            try:
                state = records.read_json(os.path.join(d, records.STATE))
            except (OSError, ValueError):
                continue
            if not state or not state.get("supervised") or state.get("supervisor") != self.me:
                continue
            run, monitor = runs.pop(d, None), None
            try:
                monitor = Monitor(d, self)
                monitor.adopt(run)
            except Exception:  # noqa: BLE001 - one container's trouble must not keep the others unsupervised
                _log_exception()
                if monitor is not None:
                    self._abandon(monitor)  # as after any internal error: ended, not left running unwatched
                for fd in run.fds if run is not None else ():
                    if monitor is None or fd not in monitor.outputs:
                        os.close(fd)
                self.link.send({"op": "release", "dir": d})
                continue
            self.monitors[d] = monitor
        for d, run in runs.items():  # starts no record speaks of: their clients were told they failed
            try:
                config = records.read_json(os.path.join(d, records.CONFIG))
                cgroup = cgroups.manager(config["id"], cgroup_version=config.get("cgroup_version"))
            except (OSError, ValueError, KeyError, TypeError):
                cgroup = None
            end_run(run, cgroup)
            self.link.send({"op": "release", "dir": d})

    def run(self) -> None:
        while True:
            # A fresh poll set each round: fds are closed and their numbers reused as containers restart.
            poller = select.poll()
            poller.register(self.listener, select.POLLIN)
            if self.link.alive:
                poller.register(self.link.sock, select.POLLIN)
            watched = {fd: m for m in self.monitors.values() for fd in m.fds()}
            for fd in watched:
                poller.register(fd, select.POLLIN)
            timeout = self._timeout()
            for fd, _ in self._poll(poller, None if timeout is None else int(timeout * 1000) + 1):
                if fd == self.listener.fileno():
                    self.last_request = time.monotonic()
                    if self._serve(self.listener.accept()[0]):
                        return
                elif self.link.alive and fd == self.link.sock.fileno():
                    self._from_keeper()
                elif self.monitors.get(watched[fd].dir) is watched[fd]:
                    self._guard(watched[fd], "ready", fd)
            for monitor in list(self.monitors.values()):
                self._guard(monitor, "tick")
            self._answer()
            if not self.monitors and time.monotonic() - self.last_request >= IDLE_EXIT:
                return

    def _poll(self, poller: select.poll, timeout: int | None) -> list[tuple[int, int]]:
        """poller's events. The state.json files written meanwhile are fsynced while nothing else is to be done
        (each takes milliseconds, which the end of a container just started would otherwise wait for), and at
        the latest SYNC_AFTER seconds after they were written."""
        if not self.unsynced:
            return poller.poll(timeout)
        events = poller.poll(0)
        if not events or time.monotonic() - self.unsynced_since >= SYNC_AFTER:
            self._sync()
        return events or poller.poll(timeout)

    def _sync(self) -> None:
        for path in self.unsynced:
            try:
                records.sync(path)
            except OSError:
                pass  # a full disk or a failing one: the record is there to read all the same
        self.unsynced.clear()
        self.unsynced_since = None

    def _timeout(self) -> float | None:
        deadlines = [t for m in self.monitors.values() if (t := m.wake_at()) is not None]
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
            self._abandon(monitor)

    def _abandon(self, monitor: Monitor) -> None:
        try:
            monitor.abandon()
        except Exception:  # noqa: BLE001
            _log_exception()
        self._drop(monitor)

    def _drop(self, monitor: Monitor) -> None:
        if self.monitors.get(monitor.dir) is monitor:
            del self.monitors[monitor.dir]
        monitor.close()

    def _from_keeper(self) -> None:
        messages = self.link.receive()
        if messages is None:  # the keeper is gone: this worker goes on alone, and says so in the records
            self.me = records.identity(os.getpid())
            for monitor in self.monitors.values():
                monitor.supervisor_changed(self.me)
            return
        for message in messages:
            monitor = self.monitors.get(message.get("dir"))
            if message.get("op") == "exited" and monitor is not None:
                monitor.keeper_exit(message["pid"], message["status"])

    def _answer(self) -> None:
        """Replies to the clients whose start is settled."""
        for monitor, conn in list(self.waiting):
            if monitor.phase == "starting" and self.monitors.get(monitor.dir) is monitor:
                continue
            self.waiting.remove((monitor, conn))
            reply = monitor.outcome or {"error": f"supervisor: the start was abandoned; see {self.root}/supervisor.log"}
            if monitor.gated:
                reply = {**reply, "gate": True}  # its init waited for the network (lifecycle.start_run)
            terminal = None
            if "pid" in reply:
                terminal, monitor.terminal = monitor.terminal, None
            self._reply(conn, reply, terminal)

    def _serve(self, conn: socket.socket) -> bool:
        """Takes one request; True when the supervisor should exit."""
        fds: list[int] = []  # passed with the request: the stdin of an interactive run
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
            answer = self._handle(json.loads(data), fds, conn)
        except Exception as e:  # noqa: BLE001 - a bad request gets an error, the supervisor goes on
            _log_exception()
            answer = {"error": f"supervisor: {e}"}, False, None
        finally:
            for fd in fds:
                os.close(fd)
        if answer is None:
            return False  # a start: answered once it is settled (_answer)
        reply, quit, back = answer
        self._reply(conn, reply, back)
        return quit

    def _reply(self, conn: socket.socket, reply: dict, back: int | None) -> None:
        """Sends reply, and back (a terminal) with it, and closes conn and back."""
        with conn:
            try:
                payload = json.dumps(reply).encode() + b"\n"
                if back is not None:
                    payload = payload[socket.send_fds(conn, [payload], [back]):]
                conn.sendall(payload)
            except OSError:
                pass  # the client gave up
            finally:
                if back is not None:
                    os.close(back)

    def _handle(self, request: dict, fds: list[int], conn: socket.socket) -> tuple[dict, bool, int | None] | None:
        op = request.get("op")
        if op == "start":
            directory = request["dir"]
            monitor = self.monitors.get(directory)
            if monitor is not None and monitor.phase == "done":  # kept only until its end is written
                return {"error": "its last exit is not recorded yet (is the disk full?); try again"}, False, None
            if monitor is not None and monitor.phase != "starting":
                return {"pid": monitor.pid}, False, None
            if monitor is None:
                monitor = Monitor(directory, self)
                stdin = fds[0] if request.get("stdin") and fds else None
                gate = fds[-1] if request.get("gate") and fds else None  # after stdin, when both come
                try:
                    monitor.start(stdin, request.get("attach", False), request.get("winsize"), gate)
                except BaseException:
                    if monitor.phase == "starting":
                        monitor.kill()
                    monitor.close()
                    raise
                self.monitors[directory] = monitor
            self.waiting.append((monitor, conn))
            return None
        if op == "cancel-restart":
            monitor = self.monitors.get(request["dir"])
            if monitor is not None and monitor.phase == "backoff":
                monitor.give_up()
                if not monitor.unsaved:
                    self._drop(monitor)
            elif monitor is not None and monitor.phase == "starting" and monitor.restarting:
                monitor.kill()  # the stop file is there: its end is recorded, and it is not restarted again
            return {}, False, None
        quitting = op == "quit-if-idle" and not self.monitors
        keeper = self.me["pid"] if self.link.alive else None
        return {"pid": os.getpid(), "keeper": keeper, "containers": sorted(self.monitors), "quit": quitting}, \
            quitting, None


def _log_exception() -> None:
    import traceback  # only for the log, and rarely

    try:
        traceback.print_exc()
    except OSError:
        pass  # a full disk: the log of the supervisor is the one thing that may go


def work(root: str, listener: socket.socket, link_fd: int, keeper: dict, runs: dict, socket_ino: int) -> None:
    """The worker's life, in the process the keeper forked: takes over what an earlier worker left, supervises,
    and returns once idle, having removed the socket so that the next client starts a new supervisor."""
    supervisor = Supervisor(root, listener, Link(link_fd), keeper)
    supervisor.adopt(runs)
    try:
        supervisor.run()
    finally:
        supervisor._sync()
    path = os.path.join(root, SOCKET)
    try:
        if os.stat(path).st_ino == socket_ino:
            os.unlink(path)
    except FileNotFoundError:
        pass
