"""exec: a command in a running native container, run by the supervisor's exec entry point (supervisor/enter.py)
in the container's namespaces and cgroup; with a terminal, a pty of its own relayed to the caller's."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import struct
import termios
from collections.abc import Callable, Sequence

import anyio

from orchestr.errors import Conflict, RuntimeFailure, Timeout
from orchestr.model import ExecResult, LogLine, State
from orchestr.runtime import ExecOutput

from .mapping import RUNTIME
from .store import ContainerStore
from .supervisor.client import command

GRACE = 5.0  # seconds past an exec's deadline before orchestr stops waiting for its output to end


def _execable(store: ContainerStore, id: str, argv: Sequence[str]) -> dict:
    """The container's config, once it is running and argv is a command."""
    config, state = store.load(id)
    current = store.view(config, state).state
    if current is not State.RUNNING:
        raise Conflict(f"container {config['name']} is {current}; exec needs a running container")
    if not argv:
        raise RuntimeFailure(f"container {config['name']}: exec needs a command")
    return config


async def run(
    store: ContainerStore, id: str, argv: Sequence[str], *, env: dict[str, str] | None, user: str | None,
    workdir: str | None, timeout: float | None, output: Callable[[LogLine], None] | None, output_limit: int,
) -> ExecResult:
    config = _execable(store, id, argv)
    request = {"argv": list(argv), "env": env or {}, "user": user, "cwd": workdir, "timeout": timeout}
    collected = ExecOutput(output, output_limit)  # handed on as it comes, or kept up to output_limit
    code = None
    # the helper kills the command at the deadline; past it and a grace, stop waiting for output regardless
    with anyio.move_on_after(None if timeout is None else timeout + GRACE) as backstop:
        async with await anyio.open_process(command("exec", str(store.dir / id))) as proc:
            await proc.stdin.send(json.dumps(request).encode())
            await proc.stdin.aclose()

            async def pump(stream: anyio.abc.ByteReceiveStream, name: str) -> None:
                async for data in stream:
                    collected.add(name, data)

            async with anyio.create_task_group() as tg:
                tg.start_soon(pump, proc.stdout, "stdout")
                tg.start_soon(pump, proc.stderr, "stderr")
            code = await proc.wait()
    if timeout is not None and (backstop.cancelled_caught or code == -signal.SIGALRM):
        # dying of SIGALRM is how the helper says the command ran past the deadline
        raise Timeout(f"container {config['name']}: {argv[0]} ran past its {timeout:g}s deadline and was "
                      "killed", runtime=RUNTIME, container=id)
    return collected.result(code)


async def terminal(store: ContainerStore, id: str, argv: Sequence[str], *, stdin: int | None, stdout: int,
                   env: dict[str, str] | None, user: str | None, workdir: str | None) -> int:
    """argv run with a pty of its own as its controlling terminal, relayed to stdin and stdout; its exit code."""
    from orchestr.terminal import relay  # here: apply and get load this module, and need none of it

    config = _execable(store, id, argv)
    request = {"argv": list(argv), "env": env or {}, "user": user, "cwd": workdir, "timeout": None, "tty": True}
    master, slave = os.openpty()
    try:
        os.set_blocking(master, False)
        async with await anyio.open_process(command("exec", str(store.dir / id)), stdout=slave, stderr=slave) as proc:
            os.close(slave)
            slave = -1
            await proc.stdin.send(json.dumps(request).encode())
            await proc.stdin.aclose()
            exited = anyio.Event()

            async def receive() -> bytes:
                # until the command has exited and its output is read (something it left running in the
                # background may hold the terminal open long after)
                while True:
                    try:
                        return os.read(master, 1 << 16)
                    except BlockingIOError:
                        if exited.is_set():
                            return b""
                    except OSError:  # EIO: every process has closed the terminal
                        return b""
                    async with anyio.create_task_group() as either:
                        async def readable() -> None:
                            await anyio.wait_readable(master)
                            either.cancel_scope.cancel()

                        async def ended() -> None:
                            await exited.wait()
                            either.cancel_scope.cancel()

                        either.start_soon(readable)
                        either.start_soon(ended)

            async def send(data: bytes) -> None:
                view = memoryview(data)
                while view:
                    try:
                        view = view[os.write(master, view):]
                    except BlockingIOError:
                        await anyio.wait_writable(master)

            async def end_input() -> None:  # as typing ^D would: twice after a partial line
                eof = termios.tcgetattr(master)[6][termios.VEOF]
                if eof != b"\0":
                    await send(eof)

            async def resize(rows: int, columns: int) -> None:
                fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))

            async def wait() -> None:
                await proc.wait()
                exited.set()

            async with anyio.create_task_group() as tg:
                tg.start_soon(wait)
                await relay(stdin, stdout, receive=receive, send=send, end_input=end_input, resize=resize)
            return await proc.wait()
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)
