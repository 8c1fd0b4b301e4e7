"""One container under supervision: starts its init, logs its output, records its exit, restarts it by policy.

A Monitor is driven by the worker's event loop (host.py): it owns no thread or process of its own, and nothing
it does waits on the container. A start forks the init and returns; the init's report pipe and pidfd join the
loop, and the start is settled when the init has exec'd its command, failed to, or run out of time.
"""

from __future__ import annotations

import fcntl
import os
import signal
import struct
import termios
import time
from typing import TYPE_CHECKING

from orchestr import logfile as logs

from .. import cgroups
from ..process import init, launch, linux
from ..rootfs import mounts  # noqa: F401 - imported once here, not again in every container's child
from . import records

if TYPE_CHECKING:
    from .host import Supervisor
    from .keeper import Run

# Crash-loop back-off, as orchestr.backoff has it (the supervisor runs without orchestr's imports): the first
# restart at once, then first seconds doubling to max; a run of reset seconds starts over. A container's config
# carries the one in force when it was created (ORCHESTR_RESTART_BACKOFF), else Kubernetes' is used.
BACKOFF = {"first": 10.0, "max": 300.0, "reset": 600.0}
ADOPTED_RESTART = 0.1  # seconds: a restart a dead worker had scheduled, taken over
UNKNOWN_EXIT = 255
DRAIN_AFTER_EXIT = 5.0  # the pid namespace dies with its init, so its pipes close almost at once
START_TIMEOUT = 30.0  # seconds for an init to exec its command, unless the container's config says otherwise
SAVE_RETRY = 1.0  # seconds between attempts to write a state that could not be written (a full disk)
MAX_REPORT = 4096
# bytes of a stream read (and logged) at once: a flood's read takes the loop about 0.6 ms, so another container's
# line waits no longer; 64 KiB reads took 5 ms each and doubled a quiet neighbour's log delivery beside `yes`
READ = 8192
# seconds a stream whose read came back full waits before its next: a flood gets a read a millisecond or two (4-8
# MB/s, several times what Docker's json-file logs here) and then blocks on its pipe, as under Docker, so the
# supervisor's loop, and the CPU it would spend on the flood, stay free for the other containers meanwhile
PACE = 0.001
RESUMED = (b"orchestr: supervision resumed after a crash; output read just before it (8 KiB per stream at most) "
           b"may be missing\n")


def describe(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror:
        return f"{e.strerror}: {e.filename}" if e.filename else e.strerror
    return str(e) or type(e).__name__


class Monitor:
    def __init__(self, directory: str, host: Supervisor):
        self.dir = directory
        self.host = host
        self.root = os.path.dirname(os.path.dirname(directory))
        self.config = records.read_json(os.path.join(directory, records.CONFIG))
        self.id = self.config["id"]
        self.cgroup = cgroups.manager(self.id, cgroup_version=self.config.get("cgroup_version"))
        self.start_timeout = float(self.config.get("start_timeout") or START_TIMEOUT)
        self.state = records.read_json(self._state_path()) or {}
        self.state["supervisor"] = host.me
        log = self.config["log"]
        self.log = logs.LogWriter(os.path.join(directory, logs.FILE), log["max_size"], log["max_files"],
                                  self.state.get("log_lines_dropped", 0))
        self.pid = self.pidfd = self.status = self.report = None
        self.ident: dict | None = None
        self.own_child = True  # False for an init adopted from a worker that died: the keeper reaps it
        self.phase = "new"  # new, starting, running, draining (init exited, output left), backoff, done, closed
        self.restarting = False  # whether the start under way is a restart by policy (no client waits for it)
        self.gated = False  # whether the client's start had the init wait for its network (a gate)
        self.outcome: dict | None = None  # the reply to the client's start, once settled
        self.failure: str | None = None  # why the start under way failed, once known
        self.report_msg = b""
        self.outputs: dict[int, str] = {}  # fd -> stream
        self.pending: dict[int, bytes] = {}  # fd -> bytes after the last newline
        self.paced: dict[int, float] = {}  # fd -> when a stream that filled its last read is read again (PACE)
        self.held = False  # whether the keeper holds copies of the outputs
        self.deadline: float | None = None  # the end of starting or draining, or the time of the next restart
        self.backoff = dict(BACKOFF, **(self.config.get("restart_backoff") or {}))
        self.started = 0.0
        self.oom_before = 0
        self.terminal: int | None = None  # an attached run's terminal, until handed to its client
        self.unsaved = False  # state.json could not be written: tried again at save_at
        self.save_at = 0.0

    def _state_path(self) -> str:
        return os.path.join(self.dir, records.STATE)

    def _event(self, action: str, **extra) -> None:
        try:
            records.append_event(self.root, dict(
                id=self.id, name=self.config["name"], namespace=self.config["namespace"], action=action, **extra))
        except OSError:
            pass  # a full disk: the event is lost, the state still tells

    def _save(self) -> None:
        """Writes state.json. When that fails (a full disk), supervision goes on and the write is tried again
        every SAVE_RETRY seconds; the monitor is not dropped before it succeeds. Readers see it at once; its
        fsync waits until the host has nothing else to do (host.py), as it takes milliseconds."""
        self.state["log_lines_dropped"] = self.log.lost
        try:
            records.write_json(self._state_path(), self.state, durable=False)
            if not self.host.unsynced:
                self.host.unsynced_since = time.monotonic()
            self.host.unsynced.add(self._state_path())
        except OSError:
            self.unsaved, self.save_at = True, time.monotonic() + SAVE_RETRY
        else:
            self.unsaved = False

    def stop_requested(self) -> bool:
        return os.path.exists(os.path.join(self.dir, records.STOP))

    # -- start --------------------------------------------------------------------------

    def start(self, stdin: int | None = None, attach: bool = False, winsize: list[int] | None = None,
              gate: int | None = None) -> None:
        """Starts the container for a client: forks its init, with stdin, when given, as its standard input;
        attach hands a tty container's terminal to the client (self.terminal) instead of logging it, with
        winsize (rows, columns) as its size. gate, when given, is what the init waits on for its network (a
        byte once it is made, see lifecycle._Attaching). self.outcome is the reply once the start is settled."""
        self.state.update(restart_count=0, error=None, crash_loop=0, next_restart=None)
        self.restarting = False
        self.gated = gate is not None
        self._launch(stdin, attach, winsize, gate)

    def _launch(self, stdin: int | None = None, attach: bool = False, winsize: list[int] | None = None,
                gate: int | None = None) -> None:
        self.outcome = self.failure = self.status = None
        self.report_msg = b""
        self.oom_before = self.cgroup.oom_kills()
        self.started = time.monotonic()
        try:
            self.pid, self.pidfd, self.outputs, self.terminal, self.report = _spawn(
                self.config, self.cgroup, self.host.own_pidns, stdin, attach, winsize, gate)
        except Exception as e:  # noqa: BLE001 - any failure to start is this container's, reported as such
            self._start_failed(describe(e))
            return
        self.ident, self.own_child = records.identity(self.pid), True
        self.pending, self.paced = {fd: b"" for fd in self.outputs}, {}
        self.phase, self.deadline = "starting", self.started + self.start_timeout
        # the keeper keeps the output readable through a crash of this process: one message, no reply
        self.held = self.host.link.send(
            {"op": "hold", "dir": self.dir, "pid": self.pid, "start": self.ident["start"],
             "streams": list(self.outputs.values())}, list(self.outputs))

    def _started(self) -> None:
        self.phase, self.deadline = "running", None
        self.state.update(status="running", supervised=True, init=self.ident, started_at=logs.now(), error=None,
                          oom_killed=False, oom_before=self.oom_before, next_restart=None)
        self._save()
        self._event("start", state="running")
        self.outcome = {"pid": self.pid, "io": True}  # io: takes stdin, gives terminals
        if self.restarting and self.stop_requested():
            self.kill()  # a stop came while it was being restarted

    def _start_failed(self, error: str) -> None:
        for fd in [*self.pending, *[fd for fd in (self.report, self.terminal, self.pidfd) if fd is not None]]:
            os.close(fd)
        self.pending, self.paced, self.report, self.terminal, self.pidfd = {}, {}, None, None, None
        self._release()
        self.outcome = {"error": error}
        if self.restarting:
            self.log.write("stderr", f"{error}\n".encode())
            self._next(launch.EXEC_FAILED)
            return
        self.state.update(status="exited", exit_code=launch.EXEC_FAILED, error=error, finished_at=logs.now(),
                          supervised=False)
        self.phase, self.deadline = "done", None
        self._save()

    # -- adoption -----------------------------------------------------------------------

    def adopt(self, run: Run | None) -> None:
        """Takes the container over from a worker that died, as its state.json and run (what the keeper held of
        its last start, if anything) tell."""
        self.restarting = True  # no client waits for any start from here on
        ident = self.state.get("init") or {}
        if run is not None and (run.pid, run.start) != (ident.get("pid"), ident.get("start")):
            end_run(run, self.cgroup)  # a start the dead worker had not settled: it failed, and is ended
            self.host.link.send({"op": "release", "dir": self.dir})
            run = None
        if self.state.get("status") != "running":  # exited, waiting to be restarted
            if run is not None:
                end_run(run, self.cgroup)
                self.host.link.send({"op": "release", "dir": self.dir})
            wait = self.state.get("next_restart_at", 0) - time.time()  # the back-off the dead worker set
            self.phase, self.deadline = "backoff", time.monotonic() + max(wait, ADOPTED_RESTART)
            return
        self.pid, self.ident, self.own_child = ident.get("pid"), ident, False
        self.oom_before = self.state.get("oom_before", 0)
        self.started = time.monotonic()
        if run is not None:
            self.outputs, self.held, self.status = dict(zip(run.fds, run.streams)), True, run.status
            self.pending, self.paced = {fd: b"" for fd in self.outputs}, {}
            # the pipes kept what was written meanwhile; only what the dead worker had read and not logged is gone
            self.log.write("stderr", RESUMED)
        if self.status is None and records.alive(ident):
            try:
                self.pidfd = os.pidfd_open(self.pid)
            except ProcessLookupError:
                pass
            if self.pidfd is not None and not records.alive(ident):  # its pid was taken meanwhile by another
                os.close(self.pidfd)
                self.pidfd = None
        if self.pidfd is not None:
            self.phase = "running"
        else:  # it ended while no worker ran: its output left is drained, its exit recorded
            self.phase, self.deadline = "draining", time.monotonic() + DRAIN_AFTER_EXIT

    def keeper_exit(self, pid: int, status: int) -> None:
        """The keeper reaped this adopted init (its parent since the worker that started it died)."""
        if not self.own_child and pid == self.pid and self.status is None:
            self.status = status

    def supervisor_changed(self, me: dict) -> None:
        """The keeper is gone: this worker is the supervisor now, and the records say so."""
        self.state["supervisor"] = me
        if self.phase not in ("new", "starting", "closed"):
            self._save()

    # -- while it runs ------------------------------------------------------------------

    def fds(self) -> list[int]:
        if self.paced:  # those whose pause is over are watched again
            now = time.monotonic()
            self.paced = {fd: until for fd, until in self.paced.items() if until > now}
        watched = [fd for fd in self.pending if fd not in self.paced]
        if self.pidfd is not None:
            watched.append(self.pidfd)
        if self.report is not None:
            watched.append(self.report)
        return watched

    def ready(self, fd: int) -> None:
        if fd not in self.fds():
            return  # closed earlier in this round, its number perhaps reused
        if fd == self.report:
            self._read_report()
        elif fd == self.pidfd:
            self._ended()
        else:
            self._drain(fd)

    def _read_report(self) -> None:
        """The init writes why it failed to the report pipe; its exec closes it, which is success."""
        try:
            data = os.read(self.report, MAX_REPORT)
        except BlockingIOError:
            return
        if data:
            self.report_msg = (self.report_msg + data)[:MAX_REPORT]
            return
        os.close(self.report)
        self.report = None
        if self.report_msg:
            self.failure = self.failure or self.report_msg.decode(errors="replace")
            self.deadline = None
            self.kill()  # it exits by itself after the report; this makes sure
        elif self.failure is None:
            self._started()

    def _read_report_rest(self) -> None:
        """Reads what the report pipe still holds, without waiting for more, and closes it."""
        try:
            while len(self.report_msg) < MAX_REPORT and (data := os.read(self.report, MAX_REPORT)):
                self.report_msg += data
        except BlockingIOError:
            pass
        os.close(self.report)
        self.report = None

    def _ended(self) -> None:
        os.close(self.pidfd)
        self.pidfd = None
        if self.own_child:
            self.status = os.waitpid(self.pid, 0)[1]
            self.host.link.send({"op": "exited", "dir": self.dir, "pid": self.pid, "status": self.status})
        # else: the keeper reaps it, and tells (keeper_exit)
        if self.phase == "starting":  # it ended before its report was read to the end
            if self.report is not None:
                self._read_report_rest()  # no writer is left: the pid namespace died with its init
            failure = self.failure or (self.report_msg[:MAX_REPORT].decode(errors="replace") or None)
            if failure is not None:
                self._start_failed(failure)
                return
            self._started()
        self.phase, self.deadline = "draining", time.monotonic() + DRAIN_AFTER_EXIT

    def _drain(self, fd: int) -> None:
        try:
            data = os.read(fd, READ)
        except OSError:
            data = b""  # a pty master reads EIO once the last slave is closed
        stream = self.outputs[fd]
        buffered = self.pending[fd] + data
        cut = buffered.rfind(b"\n") + 1
        if cut:
            self.log.write_lines(stream, buffered[:cut])
        rest = buffered[cut:]
        while len(rest) >= logs.MAX_LINE:
            self.log.write(stream, rest[: logs.MAX_LINE])
            rest = rest[logs.MAX_LINE:]
        if data:
            self.pending[fd] = rest
            if len(data) == READ:
                self.paced[fd] = time.monotonic() + PACE
            else:
                self.paced.pop(fd, None)
            return
        if rest:
            self.log.write(stream, rest)
        del self.pending[fd]
        self.paced.pop(fd, None)
        os.close(fd)

    def kill(self) -> None:
        if self.pidfd is not None:
            try:
                signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def wake_at(self) -> float | None:
        """When tick() has something to do next, if it has."""
        times = [] if self.deadline is None else [self.deadline]
        if self.unsaved or self.log.lost != self.state.get("log_lines_dropped", 0):
            times.append(self.save_at)
        times += self.paced.values()  # the ends of pauses (fds() dropped those over)
        return min(times) if times else None

    def tick(self) -> bool:
        """Moves on when a deadline or the end of output allows; True once supervision is over."""
        now = time.monotonic()
        if self.phase == "starting" and self.failure is None and now >= self.deadline:
            self.failure = f"its first process did not start within {self.start_timeout:g}s"
            self.kill()
            if self.cgroup.frozen():
                self.cgroup.thaw()  # a frozen process cannot die
            self.deadline = None
        elif self.phase == "draining":
            exited = self.status is not None or not self.host.link.alive  # an adopted init's status comes late
            if (not self.pending and exited) or now >= self.deadline:
                self._finish_run()
        elif self.phase == "backoff" and now >= self.deadline:
            if self.stop_requested():
                self.give_up()
            else:
                self.restarting = True
                self._launch()
        if (self.unsaved or self.log.lost != self.state.get("log_lines_dropped", 0)) and now >= self.save_at:
            self._save()
            self.save_at = max(self.save_at, now + SAVE_RETRY)  # a count of dropped lines: once a second at most
        return self.phase == "done" and not self.unsaved

    def _finish_run(self) -> None:
        for fd in self.pending:
            os.close(fd)
        self.pending, self.paced = {}, {}
        code = UNKNOWN_EXIT if self.status is None else init.exit_code(self.status)
        oom = self.cgroup.oom_kills() > self.oom_before
        self.state.update(status="exited", exit_code=code, oom_killed=oom, finished_at=logs.now())
        self._next(code)
        # after the state is written: whoever acts on the event finds the container exited
        if oom:
            self._event("oom")
        self._event("die", state="exited", exit_code=code)
        self._release()  # after the state too: a crash in between leaves the keeper's copy, not a gap

    def _next(self, code: int) -> bool:
        """Records the exit and decides on a restart by policy; True when one is scheduled."""
        policy = self.config["restart_policy"]
        restart = (policy == "Always" or (policy == "OnFailure" and code != 0)) and not self.stop_requested()
        if restart:
            loop = 1 if time.monotonic() - self.started >= self.backoff["reset"] else self.state.get("crash_loop", 0) + 1
            delay = 0.0 if loop <= 1 else min(self.backoff["first"] * 2.0 ** min(loop - 2, 64), self.backoff["max"])
            self.phase, self.deadline = "backoff", time.monotonic() + delay
            count = self.state.get("restart_count", 0) + 1
            self.state.update(restart_count=count, crash_loop=loop, next_restart_at=time.time() + delay,
                              next_restart=logs.now(delay))
        else:
            self.phase, self.deadline = "done", None
            self.state["next_restart"] = None
        self.state["supervised"] = restart
        self._save()
        if restart:
            self._event("restart", restarts=loop, delay=delay)
        return restart

    def give_up(self) -> None:
        """Ends supervision while waiting to restart (a stop arrived)."""
        self.phase, self.deadline = "done", None
        self.state.update(supervised=False, next_restart=None)
        self._save()

    def abandon(self) -> None:
        """After an internal error: ends the container rather than leave it running with no one reading its
        output or recording its exit."""
        try:
            self.cgroup.kill_all(5.0)
            if self.phase in ("starting", "running") and self.own_child:
                os.waitpid(self.pid, 0)
        finally:
            if self.phase in ("starting", "running", "draining"):
                self.state.update(status="exited", exit_code=UNKNOWN_EXIT, finished_at=logs.now())
            self.state["supervised"] = False
            self.phase = "done"
            self._save()

    def _release(self) -> None:
        if self.held:
            self.held = False
            self.host.link.send({"op": "release", "dir": self.dir})

    def close(self) -> None:
        if self.phase == "closed":
            return
        self.phase = "closed"
        for fd in [*self.pending, *[fd for fd in (self.pidfd, self.report, self.terminal) if fd is not None]]:
            os.close(fd)
        self.pending, self.paced, self.pidfd, self.report, self.terminal = {}, {}, None, None, None
        self._release()
        self.log.close()


def end_run(run: Run, cgroup: cgroups.Manager | None) -> None:
    """Kills what a start left that no one will settle, when it is still that process, and closes its outputs."""
    if run.status is None:
        try:
            pidfd = os.pidfd_open(run.pid)
        except ProcessLookupError:
            pidfd = None
        if pidfd is not None:
            try:
                if records.start_time(run.pid) == run.start:
                    signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                    if cgroup is not None and cgroup.frozen():
                        cgroup.thaw()  # a frozen process cannot die
            except ProcessLookupError:
                pass
            finally:
                os.close(pidfd)
    for fd in run.fds:
        os.close(fd)
    run.fds = []


def _spawn(config: dict, cgroup, own_pidns: int, stdin: int | None = None, attach: bool = False,
           winsize: list[int] | None = None,
           gate: int | None = None) -> tuple[int, int, dict[int, str], int | None, int]:
    """Forks the container's init as pid 1 of a new pid namespace; returns its pid, a pidfd of it, the fds of its
    output to log, its terminal when attach is set, and the read end of its report pipe (non-blocking): the
    init writes why it failed there, or its exec closes it. With gate, the init first waits for its network:
    a byte read from gate, which an end of file instead makes a failure."""
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
    report_r, report_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
    os.set_blocking(report_w, True)  # O_NONBLOCK is per open file: pipe2 set it on both ends
    # unshare(CLONE_NEWPID) works once per pid namespace of children: going back to our own allows a new one
    linux.setns(own_pidns, linux.CLONE_NEWPID)
    linux.unshare(linux.CLONE_NEWPID)
    pid = os.fork()
    if pid == 0:
        try:
            if gate is not None and os.read(gate, 1) != b"1":
                raise launch.LaunchError("its network could not be set up")
            _child_stdio(child_fds, bool(config.get("tty")), report_w)
            launch.start(config, cgroup, report_w)
        except BaseException as e:  # noqa: BLE001 - the child reports every failure and exits
            os.write(report_w, describe(e).encode())
        os._exit(launch.EXEC_FAILED)
    os.close(report_w)
    for fd in set(child_fds) - {None, stdin}:  # stdin belongs to the request, closed by the host
        os.close(fd)
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        for fd in [*outputs, report_r, *([terminal] if terminal is not None else [])]:
            os.close(fd)
        raise
    return pid, pidfd, outputs, terminal, report_r


def _child_stdio(fds: tuple, tty: bool, report: int) -> None:
    null = os.open("/dev/null", os.O_RDWR)
    if tty:
        os.setsid()
        fcntl.ioctl(fds[0], termios.TIOCSCTTY, 0)
    for target, fd in enumerate(fds):
        os.dup2(null if fd is None else fd, target)  # dup2 clears close-on-exec on the copy
    # everything but 0, 1, 2 and report, in at most two close_range calls
    if report > 3:
        os.closerange(3, report)
    os.closerange(max(3, report + 1), os.sysconf("SC_OPEN_MAX"))
