"""The depth-first walk over dependencies: an order that puts each node after what it needs, and the cycles met."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from typing import TypeVar

K = TypeVar("K", bound=Hashable)


def depth_first(nodes: Iterable[K], edges: Callable[[K], Iterable[K]]) -> tuple[list[K], list[list[K]]]:
    """Walks from each of nodes in turn along edges(node). Returns every node reached, each after the nodes its
    edges point to, and every cycle met, as the path from the node an edge leads back to up to that edge's start.

    An edge that closes a cycle is left out of the order, so a caller never waits on a node not yet placed.
    Iterative: a long chain is fine."""
    order: list[K] = []
    cycles: list[list[K]] = []
    done: set[K] = set()
    for root in nodes:
        if root in done:
            continue
        path, on_path, todo = [root], {root}, [iter(edges(root))]
        while todo:
            for nxt in todo[-1]:
                if nxt in on_path:
                    cycles.append(path[path.index(nxt):])
                elif nxt not in done:
                    path.append(nxt)
                    on_path.add(nxt)
                    todo.append(iter(edges(nxt)))
                    break
            else:
                todo.pop()
                node = path.pop()
                on_path.discard(node)
                done.add(node)
                order.append(node)
    return order, cycles
