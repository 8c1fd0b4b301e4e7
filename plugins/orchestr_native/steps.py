"""Verbs that wait, written once and run two ways: on an event loop, or blocking with no loop at all.

A verb is a generator. It yields a number to sleep that many seconds, a Wake to sleep until an fd is readable
(at most a number of seconds), a callable to have it called (in a worker thread on the loop, since it may
block; its result is sent back), or anything else as an item of the verb's output (log lines). What the generator returns is the verb's result. The blocking drivers serve
`orchestr run`, which then needs no asyncio: most of a one-off container's time would be spent importing it.
"""

from __future__ import annotations

import contextlib
import select
import time
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from typing import Any, TypeVar

import anyio

T = TypeVar("T")
Steps = Generator[Any, Any, T]


class Wake:
    """A step: sleep until fd is readable, for at most delay seconds."""

    __slots__ = ("fd", "delay")

    def __init__(self, fd: int, delay: float):
        self.fd, self.delay = fd, delay


def polls(ceiling: float = 0.05) -> Iterator[float]:
    """Intervals for looking again at something that will change: a millisecond for the first ten, since
    short-lived containers end within milliseconds (and doubling from there would add up to as much again),
    then doubling up to ceiling."""
    yield from [0.001] * 10
    delay = 0.002
    while True:
        yield delay
        delay = min(delay * 2, ceiling)


async def drive(steps: Steps[T]) -> T:
    value = None
    while True:
        try:
            step = steps.send(value)
        except StopIteration as done:
            return done.value
        value = await _do(step)


def drive_blocking(steps: Steps[T]) -> T:
    value = None
    while True:
        try:
            step = steps.send(value)
        except StopIteration as done:
            return done.value
        value = _do_blocking(step)


async def stream(steps: Steps[None]) -> AsyncIterator[Any]:
    value = None
    with contextlib.closing(steps):
        while True:
            try:
                step = steps.send(value)
            except StopIteration:
                return
            if isinstance(step, (int, float, Wake)) or callable(step):
                value = await _do(step)
            else:
                value = None
                yield step


def stream_blocking(steps: Steps[None]) -> Iterator[Any]:
    value = None
    with contextlib.closing(steps):
        while True:
            try:
                step = steps.send(value)
            except StopIteration:
                return
            if isinstance(step, (int, float, Wake)) or callable(step):
                value = _do_blocking(step)
            else:
                value = None
                yield step


async def _do(step: float | Wake | Callable[[], Any]) -> Any:
    if callable(step):
        return await anyio.to_thread.run_sync(step)
    if isinstance(step, Wake):
        with anyio.move_on_after(step.delay):
            await anyio.wait_readable(step.fd)
        return None
    await anyio.sleep(step)
    return None


def _do_blocking(step: float | Wake | Callable[[], Any]) -> Any:
    if callable(step):
        return step()
    if isinstance(step, Wake):
        select.select([step.fd], [], [], step.delay)
        return None
    time.sleep(step)
    return None

