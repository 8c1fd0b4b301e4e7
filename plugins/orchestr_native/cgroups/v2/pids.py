"""cgroup v2 pids: the same files as v1's pids controller (pids.max, pids.current), so the same code."""

from __future__ import annotations

from ..v1.pids import apply, current

__all__ = ["apply", "current"]
