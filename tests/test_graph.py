"""The depth-first walk the planner orders with and the spec checks find dependency cycles with."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from orchestr.graph import depth_first

graphs = st.integers(1, 8).flatmap(
    lambda n: st.dictionaries(st.integers(0, n - 1), st.lists(st.integers(0, n - 1), unique=True), min_size=n)
)


def has_path(graph: dict[int, list[int]], start: int, end: int) -> bool:
    todo, seen = [start], set()
    while todo:
        node = todo.pop()
        if node == end:
            return True
        if node not in seen:
            seen.add(node)
            todo.extend(graph.get(node, ()))
    return False


@settings(max_examples=300, deadline=None)
@given(graphs)
def test_each_node_comes_after_what_it_needs_unless_in_a_cycle_and_every_cycle_is_real(graph):
    order, cycles = depth_first(sorted(graph), lambda n: graph.get(n, []))
    assert sorted(order) == sorted(graph)
    place = {n: i for i, n in enumerate(order)}
    for node, targets in graph.items():
        for target in targets:
            # an edge points back only where the nodes are in a cycle: the edge that closes it
            assert place[target] < place[node] or has_path(graph, target, node)
    for cycle in cycles:
        assert all(b in graph[a] for a, b in zip(cycle, [*cycle[1:], cycle[0]])), cycle
    assert bool(cycles) == any(has_path(graph, t, n) for n, ts in graph.items() for t in ts)


def test_a_long_chain_needs_no_recursion():
    n = 50_000
    order, cycles = depth_first([n - 1], lambda i: [i - 1] if i else [])
    assert order == list(range(n)) and cycles == []


def test_a_cycle_is_the_path_from_where_it_closes():
    graph = {"web": ["db", "cache"], "db": ["disk"], "disk": ["web"], "cache": []}
    order, cycles = depth_first(graph, graph.__getitem__)
    assert cycles == [["web", "db", "disk"]]
    assert order == ["disk", "db", "cache", "web"]
