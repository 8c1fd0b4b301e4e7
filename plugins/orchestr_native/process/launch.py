"""Turns a process into a container's process: fresh namespaces and root for start, joined ones for exec."""

from __future__ import annotations

import fcntl
import os
import resource
import select
import signal
import socket
import struct
import termios
import warnings  # noqa: F401 - os.execvpe imports it lazily, and after pivot_root the stdlib is out of reach

from . import caps, init, linux, seccomp, users

NOFILE = 1048576
EXEC_FAILED = 127


class LaunchError(Exception):
    """Setting up the container's process failed; str() is the one line to show."""


class Deadline(Exception):
    """An exec'd command ran past its deadline and was killed, with what it started."""


_PYTHON_SIGNALS = tuple(signal.valid_signals() - {signal.SIGKILL, signal.SIGSTOP})
_C_SIGNALS = tuple(set(range(1, signal.NSIG)) - signal.valid_signals())  # the C library's own, unknown to Python


def _default_signals() -> None:
    # An ignored signal survives exec and would surprise the command: Python ignores SIGPIPE and SIGXFSZ, the
    # supervisor SIGTERM, SIGINT and SIGHUP (a container that ignores SIGTERM can only be killed), and whatever
    # started orchestr may have ignored others. Python knows each signal's disposition from its start on, so
    # only those that are not the default already need a system call.
    for sig in _PYTHON_SIGNALS:
        if signal.getsignal(sig) is not signal.SIG_DFL:
            signal.signal(sig, signal.SIG_DFL)
    for sig in _C_SIGNALS:
        linux.default_signal(sig)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])


def _rlimits() -> None:
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, NOFILE))
    except (ValueError, OSError):
        pass  # without CAP_SYS_RESOURCE the host's limit stays, as the brief of the runtime allows


def _exec(argv: list[str], env: dict[str, str], report: int | None) -> None:
    try:
        os.execvpe(argv[0], argv, env)
    except OSError as e:
        if isinstance(e, FileNotFoundError) and "/" not in argv[0]:
            msg = f'exec: "{argv[0]}": executable file not found in $PATH'
        else:
            msg = f'exec: "{argv[0]}": {e.strerror}'
        if report is not None:
            os.write(report, msg.encode())
        else:
            os.write(2, msg.encode() + b"\n")
        os._exit(EXEC_FAILED)


def become(proc: dict, report: int | None = None) -> None:
    """Switches to proc's user, capabilities and limits, then execs proc's argv (never returns).

    report, when given, is a close-on-exec pipe: an exec failure is written to it, success closes it.
    """
    try:
        uid, gid, groups, home = users.lookup(proc.get("user"))
    except LookupError as e:
        raise LaunchError(str(e)) from None
    env = dict(proc["env"])
    env.setdefault("HOME", home)
    cwd = proc.get("cwd") or "/"
    try:
        os.chdir(cwd)
    except OSError as e:
        raise LaunchError(f"chdir to working directory {cwd}: {e.strerror}") from None
    _rlimits()
    keep = caps.mask()
    caps.drop_bounding(keep)
    linux.prctl(linux.PR_SET_KEEPCAPS, 1)
    os.setgroups(groups)
    os.setgid(gid)
    os.setuid(uid)
    caps.limit(keep)
    linux.prctl(linux.PR_SET_NO_NEW_PRIVS, 1)
    _default_signals()
    if proc.get("seccomp", True) and seccomp.SUPPORTED:
        seccomp.install()
    argv = list(proc["argv"])
    if proc.get("init"):
        def start() -> None:
            _exec(argv, env, report)

        init.run(start, report)
    _exec(argv, env, report)


def _loopback_up() -> None:
    SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sh14x", b"lo", 0)
        flags = struct.unpack("16sh14x", fcntl.ioctl(s, SIOCGIFFLAGS, req))[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sh14x", b"lo", flags | IFF_UP))


def _undumpable() -> None:
    # This is the host's python until it execs the command, and init (init: true) stays it: non-dumpable, the
    # container's processes can neither ptrace it nor open its /proc/<pid>/exe, the host's interpreter
    # (CVE-2019-5736). The command's execve makes it dumpable again; forks inherit it.
    linux.prctl(linux.PR_SET_DUMPABLE, 0)


def start(config: dict, cgroup, report: int) -> None:
    """In a fresh child that is pid 1 of a new pid namespace: joins the cgroup, unshares, mounts, execs."""
    from ..rootfs import mounts

    _undumpable()
    cgroup.join()
    flags = linux.CLONE_NEWNS | linux.CLONE_NEWUTS | linux.CLONE_NEWIPC | linux.CLONE_NEWCGROUP
    if config["network"] == "none":
        flags |= linux.CLONE_NEWNET
    elif config["network"] == "bridge":  # made and set up at create; every start joins the same one
        fd = os.open(config["net"]["netns"], os.O_RDONLY | os.O_CLOEXEC)
        linux.setns(fd, linux.CLONE_NEWNET)
        os.close(fd)
    linux.unshare(flags)
    socket.sethostname(config["hostname"])
    if config["network"] == "none":
        _loopback_up()
    mounts.setup(config)
    become(config["process"], report)


NAMESPACES = ("ipc", "uts", "net", "cgroup", "pid", "mnt")


def enter(config: dict, pid: int, cgroup, proc: dict, timeout: float | None = None, tty: bool = False) -> int:
    """Runs proc inside the running container whose init is pid; returns its exit code. Past timeout seconds
    the command and its process group are killed and Deadline raised. With tty, standard input is a terminal,
    which becomes the command's controlling terminal."""
    _undumpable()
    cgroup.join()
    fds = [os.open(f"/proc/{pid}/ns/{ns}", os.O_RDONLY | os.O_CLOEXEC) for ns in NAMESPACES]
    root = os.open(f"/proc/{pid}/root", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    for fd in fds:
        linux.setns(fd)
        os.close(fd)
    os.fchdir(root)
    os.chroot(".")
    os.close(root)
    # A pid namespace applies to children only: the command runs in a child, this process waits for it.
    child = os.fork()
    if child == 0:
        try:
            if tty:  # a session of its own, for a terminal of its own; its group is its own too
                os.setsid()
                fcntl.ioctl(0, termios.TIOCSCTTY, 0)
            else:
                os.setpgid(0, 0)  # a group of its own: at a deadline, what the command started goes with it
            become(proc)
        except BaseException as e:  # noqa: BLE001 - anything here must end the child, not return
            os.write(2, f"{e}\n".encode())
            os._exit(126)
    if timeout is not None:
        pidfd = os.pidfd_open(child)
        try:
            ended = select.select([pidfd], [], [], max(0.0, timeout))[0]
        finally:
            os.close(pidfd)
        if not ended:
            os.killpg(child, signal.SIGKILL)
            os.waitpid(child, 0)
            raise Deadline(f"killed after {timeout:g}s")
    _, status = os.waitpid(child, 0)
    return init.exit_code(status)
