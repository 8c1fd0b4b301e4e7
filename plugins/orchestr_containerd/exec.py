"""A command run in a running container: an exec process of its task, whose stdout and stderr come back through
FIFOs the shim writes to, read as they come; past its timeout it is killed and Timeout raised."""

from __future__ import annotations

import contextlib
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

from .client import RUNTIME, Connection, code
from .proto import tasks_pb2

READ = 1 << 16


async def run(conn: Connection, id: str, process: dict, type_url: str, root: Path, sink: ExecOutput,
              timeout: float | None) -> int:
    import json

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
