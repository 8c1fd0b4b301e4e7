"""A command run in a running container: an exec process of its task, whose stdout and stderr come back through
FIFOs the shim writes to, read as they come; past its timeout it is killed and Timeout raised. With a terminal, the
shim makes the console; its input goes through a third FIFO, and its size follows the caller's."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
from pathlib import Path

import anyio
import grpc

from orchestr.config import private_dir
from orchestr.errors import Timeout
from orchestr.runtime import ExecOutput
from orchestr.terminal import relay, size

from .client import RUNTIME, Connection, code
from .proto import tasks_pb2

READ = 1 << 16


async def run(conn: Connection, id: str, process: dict, type_url: str, root: Path, sink: ExecOutput,
              timeout: float | None) -> int:
    exec_id = f"orchestr-exec-{secrets.token_hex(6)}"
    directory = private_dir(root / exec_id)
    fifos = {name: str(directory / name) for name in ("stdout", "stderr")}
    fds: dict[str, int] = {}
    try:
        for name, path in fifos.items():
            os.mkfifo(path, 0o600)
            fds[name] = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # before the shim opens it
        request = tasks_pb2.ExecProcessRequest(container_id=id, exec_id=exec_id, stdout=fifos["stdout"],
                                               stderr=fifos["stderr"],
                                               spec={"type_url": type_url, "value": json.dumps(process).encode()})
        with conn.errors(f"exec in container {id}", id):
            await conn.tasks.Exec(request, metadata=conn.metadata, timeout=60)
        try:
            with conn.errors(f"exec in container {id}", id):
                await conn.tasks.Start(tasks_pb2.StartRequest(container_id=id, exec_id=exec_id),
                                       metadata=conn.metadata, timeout=60)
            for fd in fds.values():
                os.set_blocking(fd, True)

            async def drain(stream: str) -> None:
                fd = fds[stream]
                while data := await anyio.to_thread.run_sync(os.read, fd, READ, abandon_on_cancel=True):
                    sink.add(stream, data)

            # The deadline is the call's own: an anyio cancel scope around a grpc.aio call leaks its CancelledError.
            exit_code: int | None = None
            async with anyio.create_task_group() as group:
                group.start_soon(drain, "stdout")
                group.start_soon(drain, "stderr")
                try:
                    exit_code = (await conn.tasks.Wait(tasks_pb2.WaitRequest(container_id=id, exec_id=exec_id),
                                                       metadata=conn.metadata, timeout=timeout)).exit_status
                except grpc.RpcError as e:
                    if code(e) != grpc.StatusCode.DEADLINE_EXCEEDED:
                        raise conn.translate(e, f"exec in container {id}", id) from None
                    with anyio.CancelScope(shield=True), contextlib.suppress(grpc.RpcError):
                        await conn.tasks.Kill(tasks_pb2.KillRequest(container_id=id, exec_id=exec_id,
                                                                    signal=signal.SIGKILL), metadata=conn.metadata,
                                              timeout=60)
                        await conn.tasks.Wait(tasks_pb2.WaitRequest(container_id=id, exec_id=exec_id),
                                              metadata=conn.metadata, timeout=60)
            if exit_code is None:
                raise Timeout(f"exec in container {id} ran past its timeout of {timeout:g}s and was killed",
                              runtime=RUNTIME, container=id)
            assert exit_code is not None
            return exit_code
        finally:
            with anyio.CancelScope(shield=True):
                try:
                    await conn.tasks.DeleteProcess(tasks_pb2.DeleteProcessRequest(container_id=id, exec_id=exec_id),
                                                   metadata=conn.metadata, timeout=60)
                except grpc.RpcError as e:
                    if code(e) not in (grpc.StatusCode.NOT_FOUND,):
                        pass
    finally:
        for fd in fds.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        shutil.rmtree(directory, ignore_errors=True)


async def terminal(conn: Connection, id: str, process: dict, type_url: str, root: Path, stdin: int | None,
                   stdout: int) -> int:
    """process (with terminal set) run with a console the shim makes, relayed to stdin and stdout; its exit code."""
    exec_id = f"orchestr-exec-{secrets.token_hex(6)}"
    directory = private_dir(root / exec_id)
    fifos = {name: str(directory / name) for name in ("stdin", "stdout")}
    fds: dict[str, int] = {}
    if (rows_cols := size(stdin) or size(stdout)) is not None:  # the console's first size: no resize race
        process = dict(process, consoleSize={"height": rows_cols[0], "width": rows_cols[1]})
    try:
        for name, path in fifos.items():
            os.mkfifo(path, 0o600)
        # read-write: opening neither end waits for the shim, and the console never reads an end of file from it
        fds["stdin"] = os.open(fifos["stdin"], os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        fds["stdout"] = os.open(fifos["stdout"], os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        request = tasks_pb2.ExecProcessRequest(container_id=id, exec_id=exec_id, terminal=True,
                                               stdin=fifos["stdin"] if stdin is not None else "",
                                               stdout=fifos["stdout"],
                                               spec={"type_url": type_url, "value": json.dumps(process).encode()})
        with conn.errors(f"exec in container {id}", id):
            await conn.tasks.Exec(request, metadata=conn.metadata, timeout=60)
        try:
            with conn.errors(f"exec in container {id}", id):
                await conn.tasks.Start(tasks_pb2.StartRequest(container_id=id, exec_id=exec_id),
                                       metadata=conn.metadata, timeout=60)

            async def receive() -> bytes:
                while True:
                    await anyio.wait_readable(fds["stdout"])
                    try:
                        return os.read(fds["stdout"], READ)  # b"": the shim closed it, the command is done
                    except BlockingIOError:
                        continue

            async def send(data: bytes) -> None:
                view = memoryview(data)
                while view:
                    try:
                        view = view[os.write(fds["stdin"], view):]
                    except BlockingIOError:
                        await anyio.wait_writable(fds["stdin"])

            async def end_input() -> None:  # the console's end-of-file character, as ^D typed
                await send(b"\x04")

            async def resize(rows: int, columns: int) -> None:
                with conn.errors(f"exec in container {id}", id):
                    await conn.tasks.ResizePty(tasks_pb2.ResizePtyRequest(
                        container_id=id, exec_id=exec_id, width=columns, height=rows), metadata=conn.metadata,
                        timeout=60)

            await relay(stdin, stdout, receive=receive, send=send, end_input=end_input, resize=resize)
            with conn.errors(f"exec in container {id}", id):
                return (await conn.tasks.Wait(tasks_pb2.WaitRequest(container_id=id, exec_id=exec_id),
                                              metadata=conn.metadata)).exit_status
        finally:
            with anyio.CancelScope(shield=True):
                with contextlib.suppress(grpc.RpcError):  # an exec left behind by an interrupted relay
                    await conn.tasks.Kill(tasks_pb2.KillRequest(container_id=id, exec_id=exec_id,
                                                                signal=signal.SIGKILL), metadata=conn.metadata,
                                          timeout=60)
                with contextlib.suppress(grpc.RpcError):
                    await conn.tasks.DeleteProcess(tasks_pb2.DeleteProcessRequest(container_id=id, exec_id=exec_id),
                                                   metadata=conn.metadata, timeout=60)
    finally:
        for fd in fds.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        shutil.rmtree(directory, ignore_errors=True)
