"""A terminal exec's relay, for every runtime: the caller's terminal (two file descriptors) on one side, the
container's terminal on the other, whatever carries it (a pty, FIFOs, a hijacked HTTP connection, a websocket)."""

from __future__ import annotations

import os
import signal
import stat
import threading
from collections.abc import Awaitable, Callable

import anyio

READ = 1 << 16


def size(fd: int | None) -> tuple[int, int] | None:
    """(rows, columns) of the terminal fd; None when fd is no terminal."""
    if fd is None or not os.isatty(fd):
        return None
    rows_cols = os.get_terminal_size(fd)
    return rows_cols.lines, rows_cols.columns


async def relay(
    stdin: int | None,
    stdout: int,
    *,
    receive: Callable[[], Awaitable[bytes]],
    send: Callable[[bytes], Awaitable[None]],
    end_input: Callable[[], Awaitable[None]],
    resize: Callable[[int, int], Awaitable[None]] | None = None,
) -> None:
    """Writes what receive gives to stdout until it gives b"" (the container's terminal is done), meanwhile sending
    what comes on stdin (end_input at its end) and the window size of stdin's terminal (else stdout's) to resize:
    once at the start and at each SIGWINCH (heard only in the main thread, as signals are)."""
    async with anyio.create_task_group() as tg:
        if stdin is not None:
            tg.start_soon(_typing, stdin, send, end_input)
        shown = stdin if size(stdin) else stdout if size(stdout) else None  # the terminal whose size is followed
        if resize is not None and shown is not None and threading.current_thread() is threading.main_thread():
            await _push_size(shown, resize)
            tg.start_soon(_window, shown, resize)
        while data := await receive():
            view = memoryview(data)
            while view:
                view = view[os.write(stdout, view):]
        tg.cancel_scope.cancel()


async def _typing(stdin: int, send: Callable[[bytes], Awaitable[None]],
                  end_input: Callable[[], Awaitable[None]]) -> None:
    regular = stat.S_ISREG(os.fstat(stdin).st_mode)  # a file is always readable, and epoll refuses one
    while True:
        if not regular:
            await anyio.wait_readable(stdin)
        try:
            data = os.read(stdin, READ)
        except BlockingIOError:
            continue
        except OSError:
            data = b""
        if not data:
            await end_input()
            return
        await send(data)


async def _push_size(fd: int, resize: Callable[[int, int], Awaitable[None]]) -> None:
    if (rows_cols := size(fd)) is not None:
        await resize(*rows_cols)


async def _window(fd: int, resize: Callable[[int, int], Awaitable[None]]) -> None:
    with anyio.open_signal_receiver(signal.SIGWINCH) as signals:
        async for _ in signals:
            await _push_size(fd, resize)
