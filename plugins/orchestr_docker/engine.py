"""The engine's calls that answer at once, over its unix socket with the standard library alone.

Listing and inspecting are what a no-op apply or `orchestr get` needs, and swarm's service verbs return at once
too; answering them without aiohttp (about 0.3 s to import) keeps those commands quick. Streams and everything
else go through aiodocker.
"""

from __future__ import annotations

import asyncio
import json
import urllib.parse
from typing import Any


class EngineError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


async def get_json(socket_path: str, path: str, params: dict[str, str] | None = None) -> Any:
    """GET path from the engine at socket_path; EngineError for an error answer, OSError if unreachable."""
    return await call_json(socket_path, "GET", path, params)


async def call_json(socket_path: str, method: str, path: str, params: dict[str, str] | None = None,
                    body: Any = None) -> Any:
    """method path, with body as JSON if given, on the engine at socket_path; its JSON answer, if any. Calls that
    return at once (swarm's service verbs) need no streaming client."""
    query = f"?{urllib.parse.urlencode(params)}" if params else ""
    payload = b"" if body is None else json.dumps(body).encode()
    head = f"{method} /{path}{query} HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n"
    if body is not None:
        head += f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
    reader, writer = await asyncio.open_unix_connection(socket_path)
    try:
        writer.write(head.encode() + b"\r\n" + payload)
        await writer.drain()
        status = int((await reader.readline()).split()[1])
        headers = {}
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        body = await _chunked(reader) if headers.get("transfer-encoding") == "chunked" else await reader.read()
    finally:
        writer.close()
    data = json.loads(body) if body else None
    if status >= 400:
        message = data.get("message", "") if isinstance(data, dict) else body.decode(errors="replace")
        raise EngineError(status, message)
    return data


async def _chunked(reader: asyncio.StreamReader) -> bytes:
    parts = []
    while size := int((await reader.readline()).split(b";")[0], 16):
        parts.append(await reader.readexactly(size))
        await reader.readline()
    return b"".join(parts)
