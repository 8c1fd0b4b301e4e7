"""Running jobs concurrently, so that a failed one is reported as its own one-line error."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable

import anyio

from orchestr.errors import OrchestrError


async def run_all(jobs: Iterable[Callable[[], Awaitable[object]]]) -> None:
    """Run every job at once; when some fail, the others are cancelled and the first orchestr error raised."""
    try:
        async with anyio.create_task_group() as tg:
            for job in jobs:
                tg.start_soon(job)
    except BaseExceptionGroup as group:
        found = _first(group)
        if found is None:
            raise
        raise found from None


def _first(group: BaseExceptionGroup) -> OrchestrError | None:
    for e in group.exceptions:
        if isinstance(e, OrchestrError):
            return e
        if isinstance(e, BaseExceptionGroup) and (inner := _first(e)):
            return inner
    return None
