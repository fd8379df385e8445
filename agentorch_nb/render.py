"""What a run and a task look like without widgets: the status palette, the layered layout
of the DAG, the DAG as a static SVG, and status tables as HTML and Markdown.

These are plain text in the notebook file, so they render where widgets cannot (nbconvert,
GitHub, papermill output), and this module imports neither ipywidgets nor anywidget: a
Task's or a Run's repr costs no widget machinery. The live views take their colours
(:data:`PALETTE`) and their layout (:func:`layout`) from here, so both pictures agree.

Layout: a task's layer is the length of the longest chain of dependencies below it (0: it
waits for nothing), so every arrow points right. Within a layer, rows are ordered by the
mean row of the task's neighbours, sweeping right then left a few times: the barycenter
heuristic, which removes most crossings for the graphs planners produce at a cost linear in
the edges.

>>> pos = layout(["t1", "t2", "t3"], [("t1", "t3"), ("t2", "t3")])
>>> pos["t3"].layer, sorted(p.layer for p in pos.values())
(1, [0, 0, 1])
"""

from __future__ import annotations

import html
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from .exceptions import failure_reason
from .model import Task, TaskStatus

PALETTE: dict[str, str] = {
    TaskStatus.PLANNED.value: "#9ca3af",
    TaskStatus.READY.value: "#64748b",
    TaskStatus.ACTIVE.value: "#3b82f6",
    TaskStatus.AWAITING_QA.value: "#f97316",
    TaskStatus.COMPLETE.value: "#22c55e",
    TaskStatus.FAILED.value: "#ef4444",
    TaskStatus.WAITING_HUMAN.value: "#eab308",
    TaskStatus.ABANDONED.value: "#d1d5db",
}
STATUS_ORDER = list(PALETTE)

# Above this many tasks the static picture is unreadable and heavy; the table says it all.
SVG_MAX_TASKS = 400
_COL, _ROW, _W, _H = 170, 44, 140, 30


# ------------------------------------------------------------ layout
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


# ------------------------------------------------------------ static views
def counts_line(counts: Counter | dict) -> str:
    return ", ".join(f"{counts[s]} {s}" for s in STATUS_ORDER if counts.get(s))


def dag_svg(tasks: Sequence[Task]) -> str:
    """The DAG as an SVG: boxes coloured by status, arrows from dependency to dependent."""
    if not tasks:
        return ""
    pos = layout([t.id for t in tasks], [(d, t.id) for t in tasks for d in t.depends_on])
    width = (max(p.layer for p in pos.values()) + 1) * _COL
    height = (max(p.order for p in pos.values()) + 1) * _ROW

    def box(tid: str) -> tuple[float, float]:
        p = pos[tid]
        return 10 + p.layer * _COL, 8 + p.order * _ROW

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width + 20:.0f}" '
             f'height="{height + 16:.0f}" font-family="sans-serif" font-size="11">',
             '<defs><marker id="ao-arrow" viewBox="0 0 10 10" refX="10" refY="5" '
             'markerWidth="7" markerHeight="7" orient="auto-start-reverse">'
             '<path d="M0,0 L10,5 L0,10 z" fill="#6b7280"/></marker></defs>']
    for t in tasks:
        x2, y2 = box(t.id)
        for d in t.depends_on:
            x1, y1 = box(d)
            x1, y1, y2m = x1 + _W, y1 + _H / 2, y2 + _H / 2
            mid = (x1 + x2) / 2
            parts.append(f'<path d="M{x1:.0f},{y1:.0f} C{mid:.0f},{y1:.0f} {mid:.0f},{y2m:.0f} '
                         f'{x2:.0f},{y2m:.0f}" fill="none" stroke="#9ca3af" '
                         'marker-end="url(#ao-arrow)"/>')
    for t in tasks:
        x, y = box(t.id)
        status = t.status.value
        dim = ' opacity="0.45"' if t.status == TaskStatus.ABANDONED else ""
        label = html.escape(f"{t.id} {t.title}"[:24])
        parts.append(f'<g{dim}><title>{html.escape(f"{t.id} {t.title}: {status}")}</title>'
                     f'<rect x="{x:.0f}" y="{y:.0f}" width="{_W}" height="{_H}" rx="5" '
                     f'fill="{PALETTE[status]}"/><text x="{x + 6:.0f}" y="{y + 19:.0f}" '
                     f'fill="#111827">{label}</text></g>')
    parts.append("</svg>")
    return "".join(parts)


def run_html(summary: dict, tasks: Sequence[Task]) -> str:
    """A run as static HTML: its header, the DAG picture, one row per task."""
    rows = "".join(
        f"<tr><td>{t.id}</td><td>{html.escape(t.title)}</td>"
        f'<td><span style="background:{PALETTE[t.status.value]};padding:0 6px;border-radius:3px">'
        f"{t.status.value}</span></td><td>{', '.join(t.depends_on)}</td><td>{t.attempts}</td>"
        f"<td>{html.escape(t.status_reason or '')}</td></tr>"
        for t in tasks)
    picture = dag_svg(tasks) if len(tasks) <= SVG_MAX_TASKS else (
        f"<p><i>{len(tasks)} tasks: the picture is drawn only up to {SVG_MAX_TASKS}.</i></p>")
    error = (f"<p><b>error:</b> {html.escape(failure_reason(summary['error']))}</p>"
             if summary.get("error") else "")
    return (f"<div class='ao-static'><h4>Run {html.escape(summary['run_id'])}: "
            f"{summary['status']}</h4><p>{html.escape(summary['objective'])}</p>"
            f"<p>{summary['tasks']} tasks: {counts_line(summary['counts'])}</p>{error}{picture}"
            "<table><thead><tr><th>task</th><th>title</th><th>status</th><th>depends on</th>"
            f"<th>attempts</th><th>why</th></tr></thead><tbody>{rows}</tbody></table></div>")


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def run_markdown(summary: dict, tasks: Sequence[Task]) -> str:
    lines = [f"**Run {summary['run_id']}: {summary['status']}**: {_md(summary['objective'])}", "",
             f"{summary['tasks']} tasks: {counts_line(summary['counts'])}", "",
             "| task | title | status | depends on | attempts |", "|---|---|---|---|---|"]
    lines += [f"| {t.id} | {_md(t.title)} | {t.status.value} | {', '.join(t.depends_on)} | "
              f"{t.attempts} |" for t in tasks]
    return "\n".join(lines)


def task_html(task: Task) -> str:
    criteria = "".join(f"<li>{html.escape(c)}</li>" for c in task.acceptance_criteria)
    reason = f"<p><i>{html.escape(task.status_reason)}</i></p>" if task.status_reason else ""
    return (f"<div class='ao-static'><h4>{task.id}: {html.escape(task.title)} "
            f'<span style="background:{PALETTE[task.status.value]};padding:0 6px;'
            f'border-radius:3px">{task.status.value}</span></h4>{reason}'
            f"<p>{task.profile.value}; {task.attempts} attempt(s), {task.retries_used} of "
            f"{task.max_retries} retries used; depends on "
            f"{', '.join(task.depends_on) or 'nothing'}</p>"
            f"<p>{html.escape(task.description)}</p><ul>{criteria}</ul></div>")


def task_markdown(task: Task) -> str:
    lines = [f"**{task.id}: {_md(task.title)}** ({task.status.value}, {task.profile.value})", ""]
    if task.status_reason:
        lines += [f"_{_md(task.status_reason)}_", ""]
    if task.description:
        lines += [task.description, ""]
    lines += [f"- {c}" for c in task.acceptance_criteria]
    return "\n".join(lines)
