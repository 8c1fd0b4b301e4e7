"""Reads the engine's streams: JSON messages one per line, and log frames with the lines they carry."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import aiohttp

from orchestr.model import LogLine

from .engine import frame_header


async def messages(content: aiohttp.StreamReader) -> AsyncIterator[dict]:
    """The JSON objects of an events, pull or load stream."""
    while line := await content.readline():
        if line.strip():
            yield json.loads(line)


async def frames(content: aiohttp.StreamReader, tty: bool) -> AsyncIterator[tuple[str, bytes]]:
    """(stream, payload) pairs; the engine frames stdout and stderr apart unless the container has a TTY."""
    import asyncio  # loaded already by whoever awaits this

    if tty:
        # a TTY merges both streams and nothing frames the messages: each line is one, so output that
        # ends without a newline runs into the next message's timestamp
        while line := await content.readline():
            yield "stdout", line
        return
    while True:
        try:
            stream, size = frame_header(await content.readexactly(8))
            payload = await content.readexactly(size)
        except asyncio.IncompleteReadError:
            return
        yield stream, payload


async def log_lines(source: AsyncIterator[tuple[str, bytes]]) -> AsyncIterator[LogLine]:
    """One LogLine per line (see Lines)."""
    lines = Lines()
    async for stream, payload in source:
        for line in lines.feed(stream, payload):
            yield line
    for line in lines.rest():
        yield line


def log_lines_blocking(source: Iterable[tuple[str, bytes]]) -> Iterator[LogLine]:
    """log_lines() without an event loop."""
    lines = Lines()
    for stream, payload in source:
        yield from lines.feed(stream, payload)
    yield from lines.rest()


class Lines:
    """Log frames into lines. Each payload starts with the engine's timestamp and a space, and may stop mid-line
    (the engine splits long lines): the rest of the line follows in the stream's next payload."""

    def __init__(self) -> None:
        self.pending: dict[str, tuple[str, bytes]] = {}

    def feed(self, stream: str, payload: bytes) -> Iterator[LogLine]:
        stamp, _, data = payload.partition(b" ")
        time, head = self.pending.pop(stream, (stamp.decode(), b""))
        data = head + data
        start = 0
        while (end := data.find(b"\n", start)) != -1:
            yield LogLine(stream, data[start : end + 1], time)
            start = end + 1
        if start < len(data):
            self.pending[stream] = (time, data[start:])

    def rest(self) -> Iterator[LogLine]:
        """What is left of lines that never ended, once the stream has."""
        for stream, (time, data) in self.pending.items():
            yield LogLine(stream, data, time)
        self.pending = {}
