"""The engine's API over its unix socket with the standard library alone.

aiohttp, under aiodocker, takes about 0.3 s to import: more than a whole `docker run`. Every call whose
request and answer are plain JSON, and the streams of logs and events, go through here when the engine is on a
unix socket; aiodocker is left the calls that need more of HTTP (exec's hijacked stream, pulls with registry
credentials, uploads of image archives) and engines over TCP. A one-off run in the foreground needs no event loop
at all (asyncio alone takes 25 ms to import): the blocking calls below serve it.
"""

from __future__ import annotations

import contextlib
import json
import socket
import struct
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import asyncio


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
    import asyncio

    reader, writer = await asyncio.open_unix_connection(socket_path, limit=1 << 20)
    try:
        writer.write(_request(method, path, params, body))
        await writer.drain()
        status = _status(await reader.readline())
        headers: dict[str, str] = {}
        while (line := await reader.readline()) not in (b"\r\n", b""):
            _header(headers, line)
        answer = Body(reader, headers.get("transfer-encoding") == "chunked")
        if status >= 400:
            raise _error(status, await answer.read())
        yield answer
    finally:
        writer.close()


def _request(method: str, path: str, params: dict[str, str] | None, body: Any) -> bytes:
    import urllib.parse

    query = f"?{urllib.parse.urlencode(params)}" if params else ""
    payload = b"" if body is None else json.dumps(body).encode()
    head = f"{method} /{path}{query} HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n"
    if body is not None or method in ("POST", "PUT"):
        head += f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
    return head.encode() + b"\r\n" + payload


def _status(line: bytes) -> int:
    if not line:
        raise ConnectionResetError("the engine closed the connection without an answer")
    return int(line.split()[1])


def _header(headers: dict[str, str], line: bytes) -> None:
    name, _, value = line.decode("latin-1").partition(":")
    headers[name.strip().lower()] = value.strip()


def _error(status: int, data: bytes) -> EngineError:
    try:
        message = json.loads(data).get("message", "")
    except (ValueError, AttributeError):
        message = data.decode(errors="replace")
    return EngineError(status, message)


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
                import asyncio

                partial, self.buffer = bytes(self.buffer), bytearray()
                raise asyncio.IncompleteReadError(partial, n)
        data = bytes(self.buffer[:n])
        del self.buffer[:n]
        return data


# -- blocking: for a one-off run with no event loop ----------------------------------------------------------


def call(socket_path: str, method: str, path: str, params: dict[str, str] | None = None, body: Any = None) -> Any:
    """request(), blocking."""
    with open_stream(socket_path, method, path, params, body) as answer:
        data = answer.read()
    return json.loads(data) if data else None


@contextlib.contextmanager
def open_stream(socket_path: str, method: str, path: str, params: dict[str, str] | None = None,
                body: Any = None) -> Iterator[BlockingBody]:
    """stream(), blocking."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(socket_path)
        sock.sendall(_request(method, path, params, body))
        with sock.makefile("rb") as reader:
            status = _status(reader.readline())
            headers: dict[str, str] = {}
            while (line := reader.readline()) not in (b"\r\n", b""):
                _header(headers, line)
            answer = BlockingBody(reader, headers.get("transfer-encoding") == "chunked")
            if status >= 400:
                raise _error(status, answer.read())
            yield answer


class BlockingBody:
    """Body, read without an event loop."""

    def __init__(self, reader: Any, chunked: bool):
        self.reader, self.chunked = reader, chunked
        self.buffer = bytearray()
        self.done = False

    def _fill(self) -> bool:
        if self.done:
            return False
        if not self.chunked:
            data = self.reader.read1(1 << 16)
        else:
            size_line = self.reader.readline()
            size = int(size_line.split(b";")[0] or b"0", 16) if size_line.strip() else 0
            data = self.reader.read(size) if size else b""
            if size:
                self.reader.readline()
        if not data:
            self.done = True
            return False
        self.buffer += data
        return True

    def read(self) -> bytes:
        while self._fill():
            pass
        data, self.buffer = bytes(self.buffer), bytearray()
        return data

    def frames(self, tty: bool) -> Iterator[tuple[str, bytes]]:
        """streams.frames() of this body."""
        if tty:
            while True:
                while (end := self.buffer.find(b"\n")) == -1 and self._fill():
                    pass
                end = len(self.buffer) - 1 if end == -1 else end
                if end < 0:
                    return
                line = bytes(self.buffer[:end + 1])
                del self.buffer[:end + 1]
                yield "stdout", line
        while True:
            while len(self.buffer) < 8 and self._fill():
                pass
            if len(self.buffer) < 8:
                return
            stream, size = frame_header(bytes(self.buffer[:8]))
            while len(self.buffer) < 8 + size and self._fill():
                pass
            if len(self.buffer) < 8 + size:
                return
            payload = bytes(self.buffer[8:8 + size])
            del self.buffer[:8 + size]
            yield stream, payload


_STREAMS = {1: "stdout", 2: "stderr"}


def frame_header(header: bytes) -> tuple[str, int]:
    """The stream and the payload's size a log frame's 8-byte header gives."""
    return _STREAMS.get(header[0], "stdout"), struct.unpack(">BxxxL", header)[1]
