"""stats: what a running native container uses, from its cgroup and its network namespace's link."""

from __future__ import annotations

from orchestr.containers import rfc3339
from orchestr.errors import Conflict
from orchestr.model import State, Stats

from .store import ContainerStore


def read(store: ContainerStore, id: str) -> Stats:
    config, state = store.load(id)
    current = store.view(config, state)
    if current.state not in (State.RUNNING, State.PAUSED):
        raise Conflict(f"container {config['name']} is {current.state}; stats need a running container")
    try:
        usage = store.cgroup(id).usage()
    except FileNotFoundError:  # ended and cleaned meanwhile
        raise Conflict(f"container {config['name']} is no longer running") from None
    net = None
    if config["network"] == "bridge" and current.pid:  # a namespace of its own, with a link to count
        from .network import netns

        net = netns.counters(current.pid)
    return Stats(
        cpu_seconds=usage["cpu_ns"] / 1e9 if usage["cpu_ns"] is not None else None,
        memory=usage["memory"], memory_limit=usage["memory_limit"], pids=usage["pids"],
        net_rx=net[0] if net else None, net_tx=net[1] if net else None,
        block_read=usage["block_read"], block_write=usage["block_write"], time=rfc3339(),
    )
