"""A one-off run's standard input and terminal: stdin fed to the container through a pipe of its own, or
relayed to and from the terminal the supervisor passed back, with its window size followed."""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import signal as signals
import struct
import termios
import threading
from collections.abc import Callable, Iterator

from orchestr.model import LogLine


def winsize(fd: int | None) -> list[int] | None:
    """(rows, columns) of the terminal fd, None when it is none."""
    if fd is None or not os.isatty(fd):
        return None
    size = os.get_terminal_size(fd)
    return [size.lines, size.columns]


@contextlib.contextmanager
def feeding(stdin: int | None) -> Iterator[int | None]:
    """The read end of a pipe that a thread fills from stdin, for the container's standard input; None for
    None. The container never holds the caller's own file: through /proc/self/fd/0 it could reopen it for
    writing, and a terminal would stay readable to it after the run."""
    if stdin is None:
        yield None
        return
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    stop_r, stop_w = os.pipe2(os.O_CLOEXEC)

    def feed() -> None:
        poller = select.poll()
        poller.register(stdin, select.POLLIN)
        poller.register(stop_r, select.POLLIN)
        try:
            while stop_r not in {fd for fd, _ in poller.poll()}:
                data = os.read(stdin, 65536)
                if not data:
                    return
                view = memoryview(data)
                while view:
                    view = view[os.write(write_end, view):]
        except OSError:  # EPIPE: the container is gone, or closed its stdin
            return
        finally:
            os.close(write_end)
            os.close(stop_r)

    feeder = threading.Thread(target=feed, name="orchestr-stdin", daemon=True)
    feeder.start()
    try:
        yield read_end
    finally:
        os.close(read_end)  # the container's copies are gone with it: a write blocked on a full pipe ends
        with contextlib.suppress(BrokenPipeError):  # the feeder has ended already, at the end of stdin
            os.write(stop_w, b"x")
        feeder.join(timeout=5)
        os.close(stop_w)


def relay(terminal: int, stdin: int | None, output: Callable[[LogLine], None] | None) -> None:
    """Copies stdin to the container's terminal and the terminal's output to output, until the container
    has closed it; follows stdin's window size meanwhile. Input waits in a queue while the terminal takes
    none, so a container that neither reads nor has its output read cannot stall the relay. The end of
    stdin is passed on as the terminal's end-of-file character (twice after a partial line, as typing it
    would need). Closes terminal."""

    def resized(*_) -> None:
        if (size := winsize(stdin)) is not None:
            fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", size[0], size[1], 0, 0))

    watching = stdin is not None and os.isatty(stdin)
    previous = signals.signal(signals.SIGWINCH, resized) if watching else None
    os.set_blocking(terminal, False)
    pending, last = b"", b"\n"
    reading = stdin is not None
    poller = select.poll()
    try:
        while True:
            room = len(pending) < (1 << 20)  # past that, stdin waits until the terminal takes some
            poller.register(terminal, select.POLLIN | (select.POLLOUT if pending else 0))
            if reading:
                poller.register(stdin, select.POLLIN if room else 0)
            events = dict(poller.poll())
            if events.get(terminal, 0) & select.POLLOUT:
                try:
                    pending = pending[os.write(terminal, pending):]
                except BlockingIOError:
                    pass
            if reading and room and events.get(stdin, 0):
                try:
                    data = os.read(stdin, 65536)
                except OSError:
                    data = b""
                if data:
                    pending, last = pending + data, data[-1:]
                else:  # the end of input: end-of-file for whatever reads the terminal
                    reading = False
                    poller.unregister(stdin)
                    eof = termios.tcgetattr(terminal)[6][termios.VEOF]
                    if eof != b"\0":
                        pending += eof if last in (b"\n", eof) else eof * 2
            if events.get(terminal, 0) & (select.POLLIN | select.POLLHUP | select.POLLERR):
                try:
                    data = os.read(terminal, 65536)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""  # EIO: every process of the container has closed it
                if not data:
                    return
                if output is not None:
                    output(LogLine(stream="stdout", data=data))
    finally:
        if watching:
            signals.signal(signals.SIGWINCH, previous)
        os.close(terminal)
