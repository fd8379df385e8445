"""Layered left-to-right layout of a run's DAG, shared by the live view and the static SVG.

A task's layer is the length of the longest chain of dependencies below it (0: it waits for
nothing), so every arrow points right. Within a layer, rows are ordered by the mean row of
the task's neighbours, sweeping right then left a few times: the barycenter heuristic, which
removes most crossings for the graphs planners produce at a cost linear in the edges.

>>> pos = layout(["t1", "t2", "t3"], [("t1", "t3"), ("t2", "t3")])
>>> pos["t3"].layer, sorted(p.layer for p in pos.values())
(1, [0, 0, 1])
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import NamedTuple

SWEEPS = 4


class Position(NamedTuple):
    layer: int
    order: float  # row within the layer; rows are 0..n-1, the layer's tasks centred on the widest


def layout(nodes: Sequence[str], edges: Iterable[tuple[str, str]]) -> dict[str, Position]:
    """``edges`` are ``(dependency, dependent)`` pairs; ``nodes`` in the order ties keep."""
    deps: dict[str, list[str]] = defaultdict(list)
    dependents: dict[str, list[str]] = defaultdict(list)
    for dep, task in edges:
        deps[task].append(dep)
        dependents[dep].append(task)

    # Longest-path layering in topological order (Kahn), ties in the given order.
    waiting = {n: len(deps[n]) for n in nodes}
    layer: dict[str, int] = {}
    queue = [n for n in nodes if waiting[n] == 0]
    for n in queue:  # grows while iterating
        layer[n] = max((layer[d] + 1 for d in deps[n]), default=0)
        for t in dependents[n]:
            waiting[t] -= 1
            if waiting[t] == 0:
                queue.append(t)
    if len(layer) != len(nodes):
        raise ValueError("the graph has a cycle; a run's graph never does")

    layers: list[list[str]] = [[] for _ in range(max(layer.values(), default=-1) + 1)]
    for n in nodes:
        layers[layer[n]].append(n)
    row = {n: float(i) for col in layers for i, n in enumerate(col)}

    def sweep(cols: list[list[str]], neighbours: dict[str, list[str]]) -> None:
        for col in cols:
            def key(n: str) -> float:
                near = neighbours[n]
                return sum(row[m] for m in near) / len(near) if near else row[n]
            col.sort(key=key)
            for i, n in enumerate(col):
                row[n] = float(i)

    for i in range(SWEEPS):
        if i % 2 == 0:
            sweep(layers[1:], deps)
        else:
            sweep(layers[-2::-1], dependents)

    widest = max((len(c) for c in layers), default=0)
    return {n: Position(layer[n], row[n] + (widest - len(layers[layer[n]])) / 2) for n in nodes}
