"""The dependency graph of a run: an acyclic networkx ``DiGraph`` with an edge from each
dependency to its dependent (the way the arrows are drawn).

>>> g = TaskGraph()
>>> for t in ("t1", "t2", "t3"): g.add_task(t)
>>> g.add_dependency("t2", "t1"); g.add_dependency("t3", "t2")
>>> g.topological_order()
['t1', 't2', 't3']
>>> g.add_dependency("t1", "t3")
Traceback (most recent call last):
...
agentorch_nb.exceptions.CycleError: refused: this dependency would close the cycle t1 -> t3 -> t2 -> t1
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import networkx as nx

from .exceptions import CycleError, MissingDependency, UnknownTask
from .model import TaskStatus


class TaskGraph:
    def __init__(self) -> None:
        self._g = nx.DiGraph()

    def __contains__(self, task_id: str) -> bool:
        return task_id in self._g

    def __len__(self) -> int:
        return len(self._g)

    def add_task(self, task_id: str) -> None:
        self._g.add_node(task_id)

    def remove_task(self, task_id: str) -> None:
        """Take a task out with its edges (undoing a batch that was refused)."""
        self._g.remove_node(task_id)

    def _known(self, *task_ids: str) -> None:
        for t in task_ids:
            if t not in self._g:
                raise UnknownTask(t)

    def add_dependency(self, task_id: str, depends_on: str) -> None:
        """``task_id`` waits for ``depends_on``. Refuses self-loops and cycles, naming them."""
        self._known(task_id, depends_on)
        if task_id == depends_on:
            raise CycleError([task_id, task_id])
        if nx.has_path(self._g, task_id, depends_on):
            # depends_on already waits (transitively) for task_id; name the loop in
            # "depends on" order, starting and ending at task_id.
            path = nx.shortest_path(self._g, task_id, depends_on)
            raise CycleError([task_id] + list(reversed(path)))
        self._g.add_edge(depends_on, task_id)

    def add_new(self, deps: Mapping[str, Iterable[str]]) -> None:
        """Add new tasks with their dependencies, all or none. The dependencies of tasks
        already in the graph do not change, so a cycle can only run through new tasks: one
        check of those, instead of a path search per edge."""
        waits = {t: 0 for t in deps}
        unlocks: dict[str, list[str]] = {t: [] for t in deps}
        for t, ds in deps.items():
            for d in ds:
                if d in waits:
                    waits[t] += 1
                    unlocks[d].append(t)
                elif d not in self._g:
                    raise UnknownTask(d)
        free = [t for t, n in waits.items() if n == 0]
        while free:  # Kahn's algorithm: what never frees up sits on a cycle
            for t in unlocks[free.pop()]:
                waits[t] -= 1
                if waits[t] == 0:
                    free.append(t)
        stuck = [t for t, n in waits.items() if n > 0]
        if stuck:
            sub = nx.DiGraph((d, t) for t in stuck for d in deps[t] if d in waits)
            loop = [u for u, _ in nx.find_cycle(sub)]
            # in "depends on" order, starting and ending at the same task
            raise CycleError([loop[0], *reversed(loop[1:]), loop[0]])
        self._g.add_nodes_from(deps)
        self._g.add_edges_from((d, t) for t, ds in deps.items() for d in ds)

    def remove_dependency(self, task_id: str, depends_on: str) -> None:
        self._known(task_id, depends_on)
        if not self._g.has_edge(depends_on, task_id):
            raise MissingDependency(task_id, depends_on)
        self._g.remove_edge(depends_on, task_id)

    def dependencies(self, task_id: str) -> list[str]:
        self._known(task_id)
        return sorted(self._g.predecessors(task_id))

    def dependents(self, task_id: str) -> list[str]:
        self._known(task_id)
        return sorted(self._g.successors(task_id))

    def descendants(self, task_id: str) -> set[str]:
        self._known(task_id)
        return nx.descendants(self._g, task_id)

    def edges(self) -> list[tuple[str, str]]:
        """``(task_id, depends_on)`` pairs."""
        return [(b, a) for a, b in self._g.edges]

    def topological_order(self) -> list[str]:
        return list(nx.lexicographical_topological_sort(self._g))

    def heights(self) -> dict[str, int]:
        """Tasks on the longest chain from each task to the end, itself included."""
        height: dict[str, int] = {}
        succ = self._g.succ
        for t in reversed(list(nx.topological_sort(self._g))):
            height[t] = 1 + max((height[d] for d in succ[t]), default=0)
        return height

    def critical_path(self, duration: Callable[[str], float] | Mapping[str, float]) -> tuple[float, list[str]]:
        """Longest chain by summed task ``duration``: the makespan no scheduler can beat."""
        dur = duration.get if isinstance(duration, Mapping) else duration
        best: dict[str, tuple[float, str | None]] = {}
        for t in self.topological_order():
            preds = [(best[p][0], p) for p in self._g.predecessors(t)]
            start, via = max(preds, default=(0.0, None))
            best[t] = (start + float(dur(t) or 0.0), via)
        if not best:
            return 0.0, []
        end = max(best, key=lambda t: best[t][0])
        length, path, cur = best[end][0], [], end
        while cur is not None:
            path.append(cur)
            cur = best[cur][1]
        return length, path[::-1]

    def blocked_by(self, task_id: str, status: Mapping[str, TaskStatus]) -> list[str]:
        """Dependencies of ``task_id`` that are not complete yet."""
        return [d for d in self.dependencies(task_id) if status[d] != TaskStatus.COMPLETE]

    def readiness(self, status: Mapping[str, TaskStatus] | Callable[[str], TaskStatus],
                  candidates: Iterable[str] | None = None):
        """Split ``planned`` tasks into those whose dependencies are all complete and those
        with an abandoned dependency: ``(ready, [(task, abandoned_deps)])``. ``status``
        maps, or is a function from, a task id to its status."""
        if isinstance(status, Mapping):
            status = status.__getitem__
        ready, orphaned = [], []
        for t in candidates if candidates is not None else self._g.nodes:
            if status(t) != TaskStatus.PLANNED:
                continue
            deps = list(self._g.predecessors(t))
            gone = sorted(d for d in deps if status(d) == TaskStatus.ABANDONED)
            if gone:
                orphaned.append((t, gone))
            elif all(status(d) == TaskStatus.COMPLETE for d in deps):
                ready.append(t)
        return sorted(ready, key=natural_key), orphaned


def natural_key(task_id: str) -> tuple:
    """t2 before t10."""
    head = task_id.rstrip("0123456789")
    tail = task_id[len(head):]
    return (head, int(tail) if tail else -1, task_id)
