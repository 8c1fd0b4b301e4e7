"""Crash-loop back-off: how long a container that keeps exiting waits before its next restart.

As the kubelet's: the first restart after a steady run is at once, the next after `first` seconds, doubling up to
`limit`; a run of `reset` seconds or more starts the count again. ORCHESTR_RESTART_BACKOFF sets the three as
`FIRST,LIMIT,RESET` durations (default `10s,5m,10m`), so that tests and impatient hosts can use short ones.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from .errors import OrchestrError
from .plain import Frozen, record

ENV = "ORCHESTR_RESTART_BACKOFF"


@record
class Backoff(Frozen):
    """How long a container crashing again and again waits before each restart."""

    first: float = 10.0  # seconds before the second restart in a row
    limit: float = 300.0  # the longest wait
    reset: float = 600.0  # a run this long ends the crash loop: the next restart is at once again

    def delay(self, restarts: int) -> float:
        """The wait before restart number restarts (1: the first since the container last ran steadily)."""
        if restarts <= 1:
            return 0.0
        return min(self.first * 2.0 ** min(restarts - 2, 64), self.limit)

    def as_dict(self) -> dict[str, float]:
        """What a runtime that restarts by itself keeps with the container (the native supervisor reads it)."""
        return {"first": self.first, "max": self.limit, "reset": self.reset}


def from_env(environ: Mapping[str, str] | None = None) -> Backoff:
    """The back-off ORCHESTR_RESTART_BACKOFF asks for, or Kubernetes' (10s doubling to 5m, reset after 10m)."""
    raw = (os.environ if environ is None else environ).get(ENV, "").strip()
    if not raw:
        return Backoff()
    from .quantity import parse_duration

    parts = [p.strip() for p in raw.split(",")]
    default = Backoff()
    values = [default.first, default.limit, default.reset]
    if len(parts) > 3:
        raise OrchestrError(f"{ENV}={raw!r}: expected FIRST[,LIMIT[,RESET]] durations such as 10s,5m,10m")
    for i, part in enumerate(parts):
        try:
            values[i] = parse_duration(part)
        except ValueError as e:
            raise OrchestrError(f"{ENV}={raw!r}: {e}") from None
    first, limit, reset = values
    if len(parts) == 1:
        limit = max(limit, first)
    if not 0 < first <= limit:
        raise OrchestrError(f"{ENV}={raw!r}: expected 0 < FIRST <= LIMIT")
    return Backoff(first, limit, reset)
