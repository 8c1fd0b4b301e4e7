"""The planner: a pure function from desired services and actual containers to an ordered plan.

No I/O, no clock, no randomness: the same inputs always give the same plan.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Kind(enum.StrEnum):
    CREATE = "create"  # make a new container and bring it to its desired state (running, or paused)
    START = "start"  # start an existing created/exited container
    STOP = "stop"
    DELETE = "delete"  # stop (with the grace period) and remove
    RECREATE = "recreate"  # delete the existing container, then CREATE its replacement
    PAUSE = "pause"
    UNPAUSE = "unpause"


@dataclass(frozen=True, slots=True)
class Action:
    kind: Kind
    namespace: str
    service: str
    replica: int
    name: str  # the container's orchestr name, <service>-<replica>
    runtime: str
    container_id: str | None  # the existing container acted on; None for CREATE
    reason: str  # for people: "missing", "spec changed", "scaled down", "exited (Always)", ...
    after: tuple[int, ...] = ()  # indexes of actions in the same plan that must succeed first


@dataclass(frozen=True, slots=True)
class Plan:
    actions: tuple[Action, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.actions)

    def __len__(self) -> int:
        return len(self.actions)

    def __iter__(self):
        return iter(self.actions)
