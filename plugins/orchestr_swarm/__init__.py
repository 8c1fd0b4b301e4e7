"""orchestr's Docker Swarm runtime; the engine client is imported only when the runtime is opened."""

from __future__ import annotations

from orchestr.hookspecs import hookimpl


def _open(config):
    from .runtime import SwarmRuntime

    return SwarmRuntime(config)


@hookimpl
def orchestr_runtimes():
    return {"swarm": _open}
