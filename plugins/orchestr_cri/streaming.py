"""A CRI exec with a terminal: the runtime's Exec call answers a URL on its streaming server, which speaks the
Kubernetes channel protocol (v4.channel.k8s.io) over a websocket. Each binary message starts with its channel:
0 stdin, 1 stdout, 2 stderr, 3 the command's end as a JSON Status (its exit code for a failure), 4 window sizes
as JSON."""

from __future__ import annotations

import json
from typing import Any

from orchestr.errors import RuntimeFailure
from orchestr.terminal import relay

from .client import RUNTIME

PROTOCOL = "v4.channel.k8s.io"
STDIN, STDOUT, STDERR, ERROR, RESIZE = range(5)


async def terminal(url: str, stdin: int | None, stdout: int, what: str) -> int:
    """Relays the exec at url to stdin and stdout until it ends; returns its exit code."""
    import aiohttp  # here: only an exec with a terminal needs it

    async with aiohttp.ClientSession() as session, session.ws_connect(url, protocols=(PROTOCOL,), max_msg_size=0) as ws:
        if ws.protocol != PROTOCOL:
            raise RuntimeFailure(f"{what}: the runtime's streaming server speaks no {PROTOCOL}", runtime=RUNTIME)
        status: dict[str, Any] | None = None

        async def receive() -> bytes:
            nonlocal status
            async for message in ws:
                if message.type != aiohttp.WSMsgType.BINARY or not message.data:
                    continue
                channel, data = message.data[0], message.data[1:]
                if channel in (STDOUT, STDERR) and data:
                    return bytes(data)
                if channel == ERROR and data:
                    status = json.loads(data)
            return b""

        async def send(data: bytes) -> None:
            await ws.send_bytes(bytes([STDIN]) + data)

        async def end_input() -> None:  # the terminal's end-of-file character, as ^D typed
            await send(b"\x04")

        async def resize(rows: int, columns: int) -> None:
            await ws.send_bytes(bytes([RESIZE]) + json.dumps({"Width": columns, "Height": rows}).encode())

        await relay(stdin, stdout, receive=receive, send=send, end_input=end_input, resize=resize)
    return exit_code(status, what)


def exit_code(status: dict[str, Any] | None, what: str) -> int:
    """The command's exit code from the Status the error channel ended with (none, or Success: 0)."""
    if status is None or status.get("status") == "Success":
        return 0
    if status.get("reason") == "NonZeroExitCode":
        for cause in (status.get("details") or {}).get("causes") or []:
            if cause.get("reason") == "ExitCode":
                return int(cause["message"])
    raise RuntimeFailure(f"{what}: {status.get('message') or status}", runtime=RUNTIME)
