"""The scenarios, in the order they run and are reported; each module has ID, TITLE, DESCRIPTION, NOTES and run(ctx)."""

from __future__ import annotations

from . import cri, export, images, lifecycle, memory, planner, reapply, services, startup, swarm

SCENARIOS = {m.ID: m for m in (lifecycle, services, reapply, planner, memory, startup, images, cri, export, swarm)}
