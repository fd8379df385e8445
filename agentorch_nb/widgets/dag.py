"""The live DAG of a run: an anywidget whose front end (``dag.js``) draws the graph in SVG.

What crosses the wire is kept small. A view asks for the whole graph once, when it appears
(``{"kind": "sync"}``, answered with a ``snapshot``); after that every change goes out as a
``diff`` naming only the tasks and edges that changed, numbered so that a view that missed
one notices the gap and asks again. Message histories never travel with the graph.

The engine's graph is the only truth: link mode in the view asks for a dependency to be added
or removed through the same :class:`~agentorch_nb.Run` methods a cell would call, and the
view changes only when the resulting diff comes back.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import anywidget
import traitlets

from ..exceptions import AgentorchError
from ..render import PALETTE, layout

if TYPE_CHECKING:
    from ..model import Task
    from ..run import Run

_HERE = Path(__file__).parent


def _node(t: Task) -> dict[str, Any]:
    return {"id": t.id, "title": t.title, "status": t.status.value, "profile": t.profile.value}


class DagView(anywidget.AnyWidget):
    """``DagView(run)`` draws ``run``'s tasks; :meth:`refresh` sends what changed since."""

    _esm = _HERE / "dag.js"
    _css = _HERE / "dag.css"
    palette = traitlets.Dict(PALETTE).tag(sync=True)
    selected = traitlets.Unicode("").tag(sync=True)
    link_mode = traitlets.Bool(False).tag(sync=True)
    error = traitlets.Unicode("").tag(sync=True)
    height = traitlets.Int(480).tag(sync=True)

    def __init__(self, run: Run | None = None, tasks: list[Task] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.run = run
        self.version = 0
        self._nodes: dict[str, dict[str, Any]] = {}  # what the views show, by task id
        self._edges: set[tuple[str, str]] = set()  # (dependency, dependent)
        self._layout: dict[str, tuple[int, float]] = {}
        self.on_msg(self._on_msg)
        self.refresh(tasks if tasks is not None else (run.tasks if run is not None else []))

    # --------------------------------------------------------------- sending
    def snapshot(self) -> dict[str, Any]:
        """The whole graph, as a view that has nothing needs it."""
        nodes = [{**n, "layer": self._layout[i][0], "order": self._layout[i][1]}
                 for i, n in self._nodes.items()]
        return {"kind": "snapshot", "version": self.version, "nodes": nodes,
                "edges": sorted(self._edges),
                "layers": 1 + max((p[0] for p in self._layout.values()), default=-1),
                "width": 1 + max((p[1] for p in self._layout.values()), default=-1)}

    def refresh(self, tasks: list[Task]) -> dict[str, Any] | None:
        """Bring the views up to ``tasks``; returns the message sent (None: nothing changed).

        New tasks or a dependency that moves tasks between layers send a snapshot; status,
        title and dependency changes that keep the layout send a diff."""
        nodes = {t.id: _node(t) for t in tasks}
        edges = {(d, t.id) for t in tasks for d in t.depends_on}
        if nodes.keys() != self._nodes.keys() or edges != self._edges:
            new_layout = {i: tuple(p) for i, p in layout(list(nodes), sorted(edges)).items()}
            if nodes.keys() != self._nodes.keys() or new_layout != self._layout:
                self._nodes, self._edges, self._layout = nodes, edges, new_layout
                self.version += 1
                msg = self.snapshot()
                self.send(msg)
                return msg
        changed = [{"id": i, **{k: v for k, v in n.items() if self._nodes[i].get(k) != v}}
                   for i, n in nodes.items() if n != self._nodes[i]]
        added, removed = sorted(edges - self._edges), sorted(self._edges - edges)
        if not (changed or added or removed):
            return None
        self._nodes, self._edges = nodes, edges
        self.version += 1
        msg = {"kind": "diff", "version": self.version, "base": self.version - 1,
               "nodes": changed, "add_edges": added, "remove_edges": removed}
        self.send(msg)
        return msg

    # ------------------------------------------------------------- receiving
    def _on_msg(self, _widget: Any, content: dict[str, Any], _buffers: Any) -> None:
        kind = content.get("kind")
        if kind == "sync":
            self.send(self.snapshot())
        elif kind in ("add_dependency", "remove_dependency"):
            self.edit(kind, content.get("task", ""), content.get("depends_on", ""))

    def edit(self, kind: str, task_id: str, depends_on: str) -> bool:
        """Add or remove a dependency through the run, as link mode does. A refusal (a
        cycle, a task already started) is shown in the view; returns whether it was applied."""
        if self.run is None:
            self.error = "this view is not connected to a run"
            return False
        try:
            getattr(self.run, kind)(task_id, depends_on, source="widget")
        except AgentorchError as exc:
            self.error = str(exc)
            return False
        self.error = ""
        if self.run.live:
            self.refresh(self.run.tasks)
        return True
