"""The scenarios, in the order they run and are reported; each module has ID, TITLE, DESCRIPTION, NOTES and run(ctx)."""

from __future__ import annotations

from . import (containerd, cri, export, images, lifecycle, logs, memory, neighbour, planner, reapply, recovery,
               replicas, rollout, services, startup, swarm)

SCENARIOS = {m.ID: m for m in (lifecycle, services, replicas, reapply, planner, memory, logs, neighbour, startup,
                               images, cri, containerd, recovery, export, swarm, rollout)}
