"""What a run looks like where widgets cannot render (nbconvert, GitHub, papermill output):
a status table and the DAG as a static SVG, both plain text in the notebook file.

The colours are the live DAG view's (one palette, sent to the view as a trait).
"""

from __future__ import annotations

import html
from collections import Counter
from collections.abc import Sequence

from ..model import Task, TaskStatus
from ._layout import layout

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
    error = f"<p><b>error:</b> {html.escape(summary['error'])}</p>" if summary.get("error") else ""
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
