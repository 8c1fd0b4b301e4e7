"""A minimal pid 1 for `init: true`: runs the command as its child, forwards signals to it, reaps every zombie."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

from . import linux

FORWARDED = (
    signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2,
    signal.SIGWINCH, signal.SIGCONT,
)


def exit_code(status: int) -> int:
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def run(start: Callable[[], None], report: int | None = None) -> None:
    """start() execs the command; this process stays as its parent until it exits, then exits the same way.

    report is the child's close-on-exec pipe for exec errors: closed here so its reader sees the exec.
    """
    child = 0

    def forward(sig: int, _frame) -> None:
        if child:
            os.kill(child, sig)

    # Handlers go in before the fork: pid 1 ignores a signal it has no handler for, even from the host.
    for sig in FORWARDED:
        signal.signal(sig, forward)
    child = os.fork()
    if child == 0:
        for sig in FORWARDED:
            signal.signal(sig, signal.SIG_DFL)
        start()
    if report is not None:
        os.close(report)
    linux.set_name("init")
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            os._exit(0)
        if pid == child:
            os._exit(exit_code(status))
