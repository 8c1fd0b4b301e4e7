"""Reads the engine's streams: JSON messages one per line, and log frames with the lines they carry."""

from __future__ import annotations

import asyncio
import json
import struct
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import aiohttp

from orchestr.model import LogLine

_STREAMS = {1: "stdout", 2: "stderr"}


async def messages(content: aiohttp.StreamReader) -> AsyncIterator[dict]:
    """The JSON objects of an events, pull or load stream."""
    while line := await content.readline():
        if line.strip():
            yield json.loads(line)


async def frames(content: aiohttp.StreamReader, tty: bool) -> AsyncIterator[tuple[str, bytes]]:
    """(stream, payload) pairs; the engine frames stdout and stderr apart unless the container has a TTY."""
    if tty:
        # a TTY merges both streams and nothing frames the messages: each line is one, so output that
        # ends without a newline runs into the next message's timestamp
        while line := await content.readline():
            yield "stdout", line
        return
    while True:
        try:
            header = await content.readexactly(8)
            payload = await content.readexactly(struct.unpack(">BxxxL", header)[1])
        except asyncio.IncompleteReadError:
            return
        yield _STREAMS.get(header[0], "stdout"), payload


async def log_lines(source: AsyncIterator[tuple[str, bytes]]) -> AsyncIterator[LogLine]:
    """One LogLine per line. Each payload starts with the engine's timestamp and a space, and may stop
    mid-line (the engine splits long lines): the rest of the line follows in the stream's next payload."""
    pending: dict[str, tuple[str, bytes]] = {}
    async for stream, payload in source:
        stamp, _, data = payload.partition(b" ")
        time, head = pending.pop(stream, (stamp.decode(), b""))
        data = head + data
        start = 0
        while (end := data.find(b"\n", start)) != -1:
            yield LogLine(stream, data[start : end + 1], time)
            start = end + 1
        if start < len(data):
            pending[stream] = (time, data[start:])
    for stream, (time, data) in pending.items():
        yield LogLine(stream, data, time)
