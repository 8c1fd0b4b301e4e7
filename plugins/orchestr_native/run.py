"""A one-off container run to its end without an event loop (`orchestr run`): made, started, its output
handed on or its terminal relayed, signals to orchestr passed on, removed afterwards when asked."""

from __future__ import annotations

import functools
import os
import signal as signals
from collections.abc import Callable

from orchestr.errors import Interrupted
from orchestr.model import Container, ContainerSpec, LogLine
from orchestr.signalhold import SignalHold

from . import attach, lifecycle, steps
from .store import ContainerStore
from .supervisor import records


def run(store: ContainerStore, spec: ContainerSpec, output: Callable[[LogLine], None] | None = None,
        remove: bool = False, stdin: int | None = None, on_signal: str | None = None) -> tuple[Container, int]:
    """Creates and starts a container, hands its output to output as it comes, and returns it with its exit
    code once it has ended; removes it afterwards when remove is set, also when interrupted.

    With spec.interactive, stdin (an fd) is the container's standard input. With spec.tty, the container
    gets a terminal of its own, which this relays: stdin to it, its output to output (as stdout; a
    terminal merges the two streams), and its window size from stdin when that is a terminal too. Such a
    run's output is not logged.

    on_signal, in the main thread, takes over SIGTERM, SIGHUP and SIGINT while the container runs; those
    ignored when the run began (nohup, a shell's background job) stay ignored. "forward" passes each on to
    the container, killed if it has not ended its stop grace period later. Its init drops a signal it has
    no handler for (it is the init of a pid namespace): such a container is killed at once, and the exit
    code given is 128 + the signal, as if the signal had ended it. "leave" stops waiting and raises
    Interrupted: the container goes on running, or with remove is stopped and removed."""
    with SignalHold(on_signal) as hold:
        container = lifecycle.create(store, spec)
        try:
            return _run(store, container, spec, output, stdin, hold)
        except Interrupted as e:
            if remove:
                steps.drive_blocking(lifecycle.stop_steps(store, container.id, "SIGTERM",
                                                          spec.stop_grace_period))
            raise Interrupted.one_off(e.signal, spec.name, remove) from None
        finally:
            hold.close()
            if remove:
                steps.drive_blocking(lifecycle.delete_steps(store, container.id, True))


def _run(store: ContainerStore, container: Container, spec: ContainerSpec,
         output: Callable[[LogLine], None] | None, stdin: int | None, hold: SignalHold) -> tuple[Container, int]:
    """run(), from the container made to its end."""
    stdin = stdin if spec.interactive else None
    config, _ = store.load(container.id)
    forward = functools.partial(_forward, store, container.id, spec.stop_grace_period, hold)
    if spec.tty:
        terminal = lifecycle.start_run(store, config, attach=True, winsize=attach.winsize(stdin))
        try:
            hold.attach(forward)
        except BaseException:
            os.close(terminal)
            raise
        attach.relay(terminal, stdin, output)
    else:
        with attach.feeding(stdin) as pipe:  # fed until the container has ended
            lifecycle.start_run(store, config, pipe)
            hold.attach(forward)
            if output is not None:
                for line in steps.stream_blocking(store.log_steps(container.id, True, None)):
                    output(line)
    code = steps.drive_blocking(lifecycle.wait_steps(store, container.id))
    if hold.ended_at_once is not None and code == 128 + signals.SIGKILL:
        code = 128 + hold.ended_at_once
    return store.view(*store.load(container.id)), code


def _forward(store: ContainerStore, id: str, grace: float, hold: SignalHold, sig: int) -> None:
    """Passes sig on to the container's init and has it killed if it has not ended grace seconds later. An
    init without a handler for sig is killed at once: as the init of a pid namespace it would drop sig."""
    init = store.load(id)[1].get("init")
    if not records.alive(init):
        return
    if _catches(init["pid"], sig):
        lifecycle.kill(init, sig)
        hold.after(grace, functools.partial(lifecycle.kill, init, signals.SIGKILL))
    else:
        hold.ended_at_once = hold.ended_at_once or sig
        lifecycle.kill(init, signals.SIGKILL)


def _catches(pid: int, sig: int) -> bool:
    """Whether process pid has a handler for sig."""
    try:
        with open(f"/proc/{pid}/status") as f:
            caught = next(line.split()[1] for line in f if line.startswith("SigCgt:"))
    except (OSError, StopIteration):
        return False
    return bool(int(caught, 16) >> (sig - 1) & 1)
