"""One container under supervision: starts its init, logs its output, records its exit, restarts it by policy.

A Monitor is driven by the supervisor host's event loop (host.py): it owns no thread or process of its own.
"""

from __future__ import annotations

import fcntl
import os
import struct
import termios
import time

from .. import cgroups, logs
from ..process import init, launch, linux
from ..rootfs import mounts  # noqa: F401 - imported once here, not again in every container's child
from . import records

BACKOFF_FIRST, BACKOFF_MAX, STEADY = 0.1, 10.0, 10.0  # seconds; a run longer than STEADY resets the backoff
UNKNOWN_EXIT = 255
DRAIN_AFTER_EXIT = 5.0  # the pid namespace dies with its init, so its pipes close almost at once


def describe(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror:
        return f"{e.strerror}: {e.filename}" if e.filename else e.strerror
    return str(e) or type(e).__name__


class Monitor:
    def __init__(self, directory: str, supervisor: dict, own_pidns: int):
        self.dir = directory
        self.root = os.path.dirname(os.path.dirname(directory))
        self.config = records.read_json(os.path.join(directory, records.CONFIG))
        self.id = self.config["id"]
        self.cgroup = cgroups.manager(self.id, cgroup_version=self.config.get("cgroup_version"))
        log = self.config["log"]
        self.log = logs.LogWriter(os.path.join(directory, logs.FILE), log["max_size"], log["max_files"])
        self.own_pidns = own_pidns
        self.state = records.read_json(self._state_path()) or {}
        self.state.update(supervisor=supervisor, supervised=True, restart_count=0, error=None)
        self.pid = self.pidfd = self.status = None
        self.phase = "new"  # new, running, draining (init exited, output left), backoff, done
        self.outputs: dict[int, str] = {}  # fd -> stream
        self.pending: dict[int, bytes] = {}  # fd -> bytes after the last newline
        self.deadline: float | None = None  # the end of draining, or the time of the next restart
        self.backoff = BACKOFF_FIRST
        self.started = 0.0
        self.oom_before = 0
        self.terminal: int | None = None  # an attached run's terminal, until handed to its client

    def _state_path(self) -> str:
        return os.path.join(self.dir, records.STATE)

    def _event(self, action: str, **extra) -> None:
        records.append_event(self.root, dict(
            id=self.id, name=self.config["name"], namespace=self.config["namespace"], action=action, **extra))

    def stop_requested(self) -> bool:
        return os.path.exists(os.path.join(self.dir, records.STOP))

    # -- start --------------------------------------------------------------------------

    def start(self, stdin: int | None = None, attach: bool = False, winsize: list[int] | None = None) -> str | None:
        """Starts the container's init; returns the error, if any, as one line. stdin, when given, is its
        standard input; attach hands a tty container's terminal to whoever asked (self.terminal) instead of
        logging it, with winsize (rows, columns) as its size."""
        self.deadline = None
        self.oom_before = self.cgroup.oom_kills()
        self.started = time.monotonic()
        try:
            self.pid, self.outputs, self.terminal = _spawn(
                self.config, self.cgroup, self.own_pidns, stdin, attach, winsize)
        except Exception as e:  # noqa: BLE001 - any failure to start is this container's, reported as such
            error = describe(e)
            self.state.update(status="exited", exit_code=launch.EXEC_FAILED, error=error, finished_at=logs.now(),
                              supervised=False)
            records.write_json(self._state_path(), self.state)
            return error
        self.pidfd = os.pidfd_open(self.pid)
        self.pending = {fd: b"" for fd in self.outputs}
        self.status, self.phase = None, "running"
        self.state.update(status="running", supervised=True, init=records.identity(self.pid),
                          started_at=logs.now(), error=None, oom_killed=False)
        records.write_json(self._state_path(), self.state)
        self._event("start", state="running")
        return None

    # -- while it runs ------------------------------------------------------------------

    def fds(self) -> list[int]:
        return list(self.pending) + ([self.pidfd] if self.phase == "running" else [])

    def ready(self, fd: int) -> None:
        if fd == self.pidfd:
            self.status = os.waitpid(self.pid, 0)[1]
            os.close(self.pidfd)
            self.pidfd = None
            self.phase, self.deadline = "draining", time.monotonic() + DRAIN_AFTER_EXIT
            return
        try:
            data = os.read(fd, 65536)
        except OSError:
            data = b""  # a pty master reads EIO once the last slave is closed
        stream = self.outputs[fd]
        *lines, rest = (self.pending[fd] + data).split(b"\n")
        for line in lines:
            self.log.write(stream, line + b"\n")
        while len(rest) >= logs.MAX_LINE:
            self.log.write(stream, rest[: logs.MAX_LINE])
            rest = rest[logs.MAX_LINE:]
        if data:
            self.pending[fd] = rest
            return
        if rest:
            self.log.write(stream, rest)
        del self.pending[fd]
        os.close(fd)

    def tick(self) -> bool:
        """Moves on when a deadline or the end of output allows; True once supervision is over."""
        now = time.monotonic()
        if self.phase == "draining" and (not self.pending or now >= self.deadline):
            return not self._finish_run()
        if self.phase == "backoff" and now >= self.deadline:
            if self.stop_requested():
                self.give_up()
                return True
            error = self.start()
            if error:
                self.log.write("stderr", f"{error}\n".encode())
                return not self._next(launch.EXEC_FAILED)
        return False

    def _finish_run(self) -> bool:
        for fd in self.pending:
            os.close(fd)
        self.pending = {}
        code = init.exit_code(self.status)
        oom = self.cgroup.oom_kills() > self.oom_before
        self.state.update(status="exited", exit_code=code, oom_killed=oom, finished_at=logs.now())
        if oom:
            self._event("oom")
        self._event("die", state="exited", exit_code=code)
        return self._next(code)

    def _next(self, code: int) -> bool:
        """Records the exit and decides on a restart by policy; True when one is scheduled."""
        policy = self.config["restart_policy"]
        restart = (policy == "Always" or (policy == "OnFailure" and code != 0)) and not self.stop_requested()
        if restart:
            if time.monotonic() - self.started > STEADY:
                self.backoff = BACKOFF_FIRST
            self.phase, self.deadline = "backoff", time.monotonic() + self.backoff
            self.backoff = min(self.backoff * 2, BACKOFF_MAX)
            self.state["restart_count"] += 1
        else:
            self.phase, self.deadline = "done", None
        self.state["supervised"] = restart
        records.write_json(self._state_path(), self.state)
        return restart

    def give_up(self) -> None:
        """Ends supervision while waiting to restart (a stop arrived)."""
        self.phase, self.deadline = "done", None
        self.state["supervised"] = False
        records.write_json(self._state_path(), self.state)

    def abandon(self) -> None:
        """After an internal error: ends the container rather than leave it running with no one reading its
        output or recording its exit."""
        try:
            self.cgroup.kill_all(5.0)
            if self.phase == "running":
                os.waitpid(self.pid, 0)
        finally:
            if self.phase in ("running", "draining"):
                self.state.update(status="exited", exit_code=UNKNOWN_EXIT, finished_at=logs.now())
            self.state["supervised"] = False
            records.write_json(self._state_path(), self.state)

    def close(self) -> None:
        if self.phase == "closed":
            return
        self.phase = "closed"
        for fd in self.pending:
            os.close(fd)
        self.pending = {}
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None
        self.log.close()


def _spawn(config: dict, cgroup, own_pidns: int, stdin: int | None = None, attach: bool = False,
           winsize: list[int] | None = None) -> tuple[int, dict[int, str], int | None]:
    """Forks the container's init as pid 1 of a new pid namespace; returns its pid once it has exec'd, the
    fds of its output to log, and its terminal when attach is set."""
    terminal = None
    if config.get("tty"):
        master, slave = os.openpty()
        os.set_inheritable(master, False)
        if winsize:
            fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", winsize[0], winsize[1], 0, 0))
        child_fds, outputs = (slave, slave, slave), {master: "stdout"}
        if attach:
            terminal, outputs = master, {}
    else:
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        child_fds, outputs = (stdin, out_w, err_w), {out_r: "stdout", err_r: "stderr"}
    report_r, report_w = os.pipe2(os.O_CLOEXEC)
    # unshare(CLONE_NEWPID) works once per pid namespace of children: going back to our own allows a new one
    linux.setns(own_pidns, linux.CLONE_NEWPID)
    linux.unshare(linux.CLONE_NEWPID)
    pid = os.fork()
    if pid == 0:
        try:
            _child_stdio(child_fds, bool(config.get("tty")), report_w)
            launch.start(config, cgroup, report_w)
        except BaseException as e:  # noqa: BLE001 - the child reports every failure and exits
            os.write(report_w, describe(e).encode())
        os._exit(launch.EXEC_FAILED)
    os.close(report_w)
    for fd in set(child_fds) - {None, stdin}:  # stdin belongs to the request, closed by the host
        os.close(fd)
    message = b""
    while chunk := os.read(report_r, 4096):
        message += chunk
    os.close(report_r)
    if message:
        os.waitpid(pid, 0)
        for fd in [*outputs, *([terminal] if terminal is not None else [])]:
            os.close(fd)
        raise launch.LaunchError(message.decode(errors="replace"))
    return pid, outputs, terminal


def _child_stdio(fds: tuple, tty: bool, report: int) -> None:
    null = os.open("/dev/null", os.O_RDWR)
    if tty:
        os.setsid()
        fcntl.ioctl(fds[0], termios.TIOCSCTTY, 0)
    for target, fd in enumerate(fds):
        os.dup2(null if fd is None else fd, target)  # dup2 clears close-on-exec on the copy
    keep = {0, 1, 2, report}
    for name in os.listdir("/proc/self/fd"):
        if int(name) not in keep:
            try:
                os.close(int(name))
            except OSError:
                pass
