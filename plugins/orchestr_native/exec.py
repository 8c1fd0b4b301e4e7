"""exec: a command in a running native container, run by the supervisor's exec entry point (supervisor/enter.py)
in the container's namespaces and cgroup."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable, Sequence

import anyio

from orchestr.errors import Conflict, RuntimeFailure, Timeout
from orchestr.model import ExecResult, LogLine, State
from orchestr.runtime import ExecOutput

from .mapping import RUNTIME
from .store import ContainerStore
from .supervisor.client import command

GRACE = 5.0  # seconds past an exec's deadline before orchestr stops waiting for its output to end


async def run(
    store: ContainerStore, id: str, argv: Sequence[str], *, env: dict[str, str] | None, user: str | None,
    workdir: str | None, timeout: float | None, output: Callable[[LogLine], None] | None, output_limit: int,
) -> ExecResult:
    config, state = store.load(id)
    current = store.view(config, state).state
    if current is not State.RUNNING:
        raise Conflict(f"container {config['name']} is {current}; exec needs a running container")
    if not argv:
        raise RuntimeFailure(f"container {config['name']}: exec needs a command")
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
