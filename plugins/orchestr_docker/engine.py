"""The engine's API over its unix socket with the standard library alone.

aiohttp, under aiodocker, takes about 0.3 s to import: more than a whole `docker run`. Every call whose
request and answer are plain JSON, and the streams of logs and events, go through here when the engine is on a
unix socket; aiodocker is left the calls that need more of HTTP (exec's hijacked stream, pulls with registry
credentials, uploads of image archives) and engines over TCP.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import urllib.parse
from collections.abc import AsyncIterator
from typing import Any


class EngineError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


async def request(socket_path: str, method: str, path: str, params: dict[str, str] | None = None,
                  body: Any = None) -> Any:
    """method path at the engine on socket_path with body as JSON; the answer's JSON (None when empty).
    EngineError for an error answer, OSError when the engine cannot be reached."""
    async with stream(socket_path, method, path, params, body) as answer:
        data = await answer.read()
    return json.loads(data) if data else None


async def get_json(socket_path: str, path: str, params: dict[str, str] | None = None) -> Any:
    return await request(socket_path, "GET", path, params)


@contextlib.asynccontextmanager
async def stream(socket_path: str, method: str, path: str, params: dict[str, str] | None = None,
                 body: Any = None) -> AsyncIterator[Body]:
    """The answer's body, read as it comes (logs, events); the connection is closed when left."""
    query = f"?{urllib.parse.urlencode(params)}" if params else ""
    payload = b"" if body is None else json.dumps(body).encode()
    head = f"{method} /{path}{query} HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n"
    if body is not None or method in ("POST", "PUT"):
        head += f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
    reader, writer = await asyncio.open_unix_connection(socket_path, limit=1 << 20)
    try:
        writer.write(head.encode() + b"\r\n" + payload)
        await writer.drain()
        status_line = await reader.readline()
        if not status_line:
            raise ConnectionResetError("the engine closed the connection without an answer")
        status = int(status_line.split()[1])
        headers = {}
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        answer = Body(reader, headers.get("transfer-encoding") == "chunked")
        if status >= 400:
            data = await answer.read()
            try:
                message = json.loads(data).get("message", "")
            except (ValueError, AttributeError):
                message = data.decode(errors="replace")
            raise EngineError(status, message)
        yield answer
    finally:
        writer.close()


class Body:
    """An answer's body, de-chunked: the reads streams.py makes of aiohttp's StreamReader."""

    def __init__(self, reader: asyncio.StreamReader, chunked: bool):
        self.reader, self.chunked = reader, chunked
        self.buffer = bytearray()
        self.done = False

    async def _fill(self) -> bool:
        """Appends what comes next to the buffer; False at the end."""
        if self.done:
            return False
        if not self.chunked:
            data = await self.reader.read(1 << 16)
        else:
            size_line = await self.reader.readline()
            size = int(size_line.split(b";")[0] or b"0", 16) if size_line.strip() else 0
            data = await self.reader.readexactly(size) if size else b""
            if size:
                await self.reader.readline()
        if not data:
            self.done = True
            return False
        self.buffer += data
        return True

    async def read(self) -> bytes:
        while await self._fill():
            pass
        data, self.buffer = bytes(self.buffer), bytearray()
        return data

    async def readline(self) -> bytes:
        while (end := self.buffer.find(b"\n")) == -1:
            if not await self._fill():
                data, self.buffer = bytes(self.buffer), bytearray()
                return data
        data = bytes(self.buffer[:end + 1])
        del self.buffer[:end + 1]
        return data

    async def readexactly(self, n: int) -> bytes:
        while len(self.buffer) < n:
            if not await self._fill():
                partial, self.buffer = bytes(self.buffer), bytearray()
                raise asyncio.IncompleteReadError(partial, n)
        data = bytes(self.buffer[:n])
        del self.buffer[:n]
        return data
