"""Charts of one run for post-mortems, drawn from the store's views with Altair (Vega-Lite v5).

Each function takes a store (an :class:`~agentorch_nb.Orchestrator`, a ``Store`` or the path
of a DuckDB file) and a run (its id or a ``Run``; ``""``: the store's newest run) and returns
a :class:`Chart`. A Chart displays as both the interactive Vega-Lite chart (JupyterLab's own
renderer draws it, offline) and a static PNG made by ``vl-convert`` (no browser, no network),
which is what GitHub, nbconvert and a papermill output show.

>>> sorted(SQL)
['costs', 'critical_path', 'dag_edges', 'gantt', 'human_waits', 'retries', 'slowest_tools']

The SQL behind each chart is in :data:`SQL` (``$run_id`` is the run); ``Chart.data`` is the
DataFrame it drew, and ``Chart.altair`` the Altair chart, to restyle or save.
"""

from __future__ import annotations

import base64
import os
from typing import Any

from .render import PALETTE, STATUS_ORDER, layout

__all__ = ["Chart", "SQL", "VEGALITE_MIME", "costs", "critical_path", "gantt", "human_waits",
           "query", "retries", "run_id_of", "slowest_tools", "sql_markdown"]

VEGALITE_MIME = "application/vnd.vegalite.v5+json"

SQL: dict[str, str] = {
    # Every status each task was in, on the run's clock; a task's final complete/abandoned
    # status has no end and is left out, any other open status runs to the run's end (or now).
    "gantt": """
select l.task_id, l.task_id || ' ' || t.title as task, l.status, coalesce(l.reason, '') as reason,
       epoch(l.started_at - r.created_at) as start_s,
       epoch(coalesce(l.ended_at, r.finished_at, greatest(r.updated_at, l.started_at))
             - r.created_at) as end_s,
       coalesce(l.seconds, epoch(coalesce(r.finished_at, greatest(r.updated_at, l.started_at))
                                 - l.started_at)) as seconds
from task_timeline l
join runs r on r.run_id = l.run_id
join tasks t on t.run_id = l.run_id and t.task_id = l.task_id
where l.run_id = $run_id
  and not (l.ended_at is null and l.status in ('complete', 'abandoned'))
order by l.task_id, l.started_at""",
    # Model calls by task and role; the Director's calls belong to no task.
    "costs": """
select coalesce(task_id, '(run)') as task_id, role, model, calls, tokens_in, tokens_out,
       tokens_in + tokens_out as tokens, cost_usd
from llm_costs
where run_id = $run_id
order by task_id, role""",
    # Every attempt of each task that had one not approved, with why it ended so.
    "retries": """
select task_id, task_id || ' #' || attempt as attempt_label, title, attempt, outcome,
       coalesce(seconds, 0) as seconds,
       coalesce(failure_reason || coalesce(': ' || split_part(qa_feedback, chr(10), 1), ''),
                interruption, summary, '') as why,
       coalesce(guidance, '') as guidance
from attempt_outcomes
where run_id = $run_id
  and task_id in (select task_id from attempt_outcomes
                  where run_id = $run_id and outcome is distinct from 'approved')
order by task_id, attempt""",
    "slowest_tools": """
select tool, calls, errors, error_rate, p50_ms, p95_ms, max_ms, total_ms
from tool_stats
where run_id = $run_id
order by p95_ms desc
limit 10""",
    # Each escalation on the run's clock, from when it was raised to its answer (or now).
    "human_waits": """
select w.task_id, w.task_id || ' ' || w.title as task, w.kind, w.reason,
       coalesce(w.action, 'still waiting') as answer, coalesce(w.source, '') as source,
       epoch(w.raised_at - r.created_at) as start_s,
       epoch(coalesce(w.resolved_at, r.finished_at, greatest(r.updated_at, w.raised_at))
             - r.created_at) as end_s,
       coalesce(w.seconds, epoch(coalesce(r.finished_at, greatest(r.updated_at, w.raised_at))
                                 - w.raised_at)) as seconds
from human_waits w
join runs r on r.run_id = w.run_id
where w.run_id = $run_id
order by w.raised_at""",
    # Every task with its place on the critical path (null: not on it).
    "critical_path": """
select t.task_id, t.title, t.status, c.position, c.seconds, c.cumulative_seconds
from tasks t
left join critical_path c on c.run_id = t.run_id and c.task_id = t.task_id
where t.run_id = $run_id
order by t.created_at, t.task_id""",
    "dag_edges": """
select depends_on, task_id from task_deps where run_id = $run_id order by task_id, depends_on""",
}


class Chart:
    """An Altair chart that displays as interactive Vega-Lite plus a static PNG."""

    def __init__(self, chart: Any, data: Any, name: str) -> None:
        self.altair = chart
        self.data = data
        self.name = name

    def spec(self) -> dict:
        return self.altair.to_dict()

    def png(self, scale: float = 1.5) -> bytes:
        import vl_convert

        return vl_convert.vegalite_to_png(self.spec(), scale=scale, vl_version=_vl_version())

    def svg(self) -> str:
        import vl_convert

        return vl_convert.vegalite_to_svg(self.spec(), vl_version=_vl_version())

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict:
        return {VEGALITE_MIME: self.spec(), "image/png": base64.b64encode(self.png()).decode(),
                "text/plain": repr(self)}

    def __repr__(self) -> str:
        return f"<Chart {self.name}: {len(self.data)} rows>"


def _vl_version() -> str:
    import altair as alt

    return ".".join(alt.SCHEMA_VERSION.lstrip("v").split(".")[:2])


# ------------------------------------------------------------ data
def run_id_of(store: Any, run: Any = "") -> str:
    """The id of ``run`` (a Run or an id); ``""`` or None: the store's newest run."""
    rid = getattr(run, "id", run)
    if rid:
        return str(rid)
    frame = query(store, "select run_id from runs order by created_at desc limit 1")
    if not len(frame):
        from .exceptions import UnknownRun

        raise UnknownRun("the store has no run yet: start one, or pass another store")
    return str(frame.run_id[0])


def query(store: Any, sql: str, params: dict | list | None = None):
    """``sql`` over ``store`` (Orchestrator, Store or path) as a DataFrame, read-only."""
    from .orchestrator import check_read_only
    from .orchestrator import sql as store_sql
    from .store.store import Store

    if isinstance(store, Store):
        check_read_only(sql, False)
        return store.query(sql, params)
    if hasattr(store, "sql") and not isinstance(store, (str, os.PathLike)):
        return store.sql(sql, params)
    return store_sql(sql, params, store=store)


def _frame(name: str, store: Any, run: Any):
    return query(store, SQL[name], {"run_id": run_id_of(store, run)})


def sql_markdown(name: str):
    """The SQL behind chart ``name`` as a Markdown code block, for a notebook."""
    from IPython.display import Markdown

    return Markdown(f"```sql\n{SQL[name].strip()}\n```")


# ------------------------------------------------------------ charts
def _alt():
    import altair as alt

    return alt


def _status_scale():
    alt = _alt()
    return alt.Scale(domain=STATUS_ORDER, range=[PALETTE[s] for s in STATUS_ORDER])


def _empty(name: str, message: str, data) -> Chart:
    alt = _alt()
    chart = (alt.Chart(alt.Data(values=[{"text": message}])).mark_text(size=14, color="#4b5563")
             .encode(text="text:N").properties(width=420, height=40, title=name))
    return Chart(chart, data, name)


def gantt(store: Any, run: Any = "") -> Chart:
    """Tasks over the run's time, coloured by status (the palette of the dashboard)."""
    alt = _alt()
    data = _frame("gantt", store, run)
    if not len(data):
        return _empty("gantt", "No task has started yet.", data)
    order = sorted(data.task.unique(), key=_natural)
    chart = alt.Chart(data).mark_bar(height={"band": 0.7}).encode(
        y=alt.Y("task:N", sort=order, title=None),
        x=alt.X("start_s:Q", title="seconds since the run started"),
        x2="end_s:Q",
        color=alt.Color("status:N", scale=_status_scale(), title="status"),
        tooltip=["task:N", "status:N", alt.Tooltip("seconds:Q", format=".2f"), "reason:N"],
    ).properties(width=560, height=max(120, 26 * len(order)),
                 title="Task statuses over the run")
    return Chart(chart, data, "gantt")


def costs(store: Any, run: Any = "") -> Chart:
    """Tokens and cost of the model calls per task, stacked by role."""
    alt = _alt()
    data = _frame("costs", store, run)
    if not len(data):
        return _empty("costs", "No model call was made.", data)
    base = alt.Chart(data).encode(
        y=alt.Y("task_id:N", sort=sorted(data.task_id.unique(), key=_natural), title="task"),
        color=alt.Color("role:N", title="role"),
        tooltip=["task_id:N", "role:N", "model:N", "calls:Q", "tokens_in:Q", "tokens_out:Q",
                 alt.Tooltip("cost_usd:Q", format="$.4f")])
    tokens = base.mark_bar().encode(x=alt.X("sum(tokens):Q", title="tokens (in + out)")) \
        .properties(width=300, title="Tokens per task and role")
    spent = float(data.cost_usd.sum())
    dollars = base.mark_bar().encode(x=alt.X("sum(cost_usd):Q", title="cost (USD)")).properties(
        width=220, title=f"Cost per task and role (${spent:.4f} in all)")
    return Chart(alt.hconcat(tokens, dollars), data, "costs")


OUTCOME_COLOURS = {"approved": PALETTE["complete"], "rejected": PALETTE["awaiting_qa"],
                   "error": PALETTE["failed"], "timeout": "#a855f7", "interrupted": PALETTE["ready"]}


def retries(store: Any, run: Any = "") -> Chart:
    """Every attempt of the tasks that were retried, by outcome, labelled with why it failed."""
    alt = _alt()
    data = _frame("retries", store, run)
    if not len(data):
        return _empty("retries", "Every attempt was approved the first time.", data)
    data = data.assign(label=[(w if len(w) <= 70 else w[:69] + "…") for w in data.why])
    data.loc[data.outcome == "approved", "label"] = "approved"
    order = list(data.attempt_label)
    base = alt.Chart(data).encode(y=alt.Y("attempt_label:N", sort=order, title="task #attempt"))
    bars = base.mark_bar(height={"band": 0.7}).encode(
        x=alt.X("seconds:Q", title="attempt duration (s)"),
        color=alt.Color("outcome:N", title="outcome", legend=alt.Legend(orient="bottom"),
                        scale=alt.Scale(domain=list(OUTCOME_COLOURS),
                                        range=list(OUTCOME_COLOURS.values()))),
        tooltip=["task_id:N", "title:N", "attempt:Q", "outcome:N", "why:N", "guidance:N",
                 alt.Tooltip("seconds:Q", format=".2f")])
    height = max(80, 30 * len(order))
    why = base.mark_text(align="left", fontSize=11).encode(
        x=alt.value(0), y=alt.Y("attempt_label:N", sort=order, axis=None), text="label:N",
        tooltip=["why:N", "guidance:N"]).properties(
            width=440, height=height, title=alt.TitleParams("why", anchor="start"))
    chart = alt.hconcat(bars.properties(width=240, height=height), why,
                        title="Retries and why").configure_view(stroke=None)
    return Chart(chart, data, "retries")


def slowest_tools(store: Any, run: Any = "") -> Chart:
    """The ten slowest tools by p95 duration, with their median and maximum."""
    alt = _alt()
    data = _frame("slowest_tools", store, run)
    if not len(data):
        return _empty("slowest_tools", "No tool was called.", data)
    order = list(data.tool)
    tooltip = ["tool:N", "calls:Q", "errors:Q", alt.Tooltip("error_rate:Q", format=".0%"),
               alt.Tooltip("p50_ms:Q", format=".1f"), alt.Tooltip("p95_ms:Q", format=".1f"),
               alt.Tooltip("max_ms:Q", format=".1f")]
    base = alt.Chart(data).encode(y=alt.Y("tool:N", sort=order, title=None), tooltip=tooltip)
    bars = base.mark_bar(color=PALETTE["active"]).encode(
        x=alt.X("p95_ms:Q", title="p95 duration (ms); ticks: median and max"))
    p50 = base.mark_tick(color="#111827", thickness=2).encode(x="p50_ms:Q")
    worst = base.mark_tick(color=PALETTE["failed"], thickness=2).encode(x="max_ms:Q")
    chart = (bars + p50 + worst).properties(width=420, height=max(80, 28 * len(order)),
                                            title="Slowest tools")
    return Chart(chart, data, "slowest_tools")


def human_waits(store: Any, run: Any = "") -> Chart:
    """Each escalation on the run's clock: how long its task waited for a person."""
    alt = _alt()
    data = _frame("human_waits", store, run)
    if not len(data):
        return _empty("human_waits", "No task waited for a human.", data)
    data = data.assign(label=[f"{s:.1f} s, then {a}" for s, a in zip(data.seconds, data.answer)])
    base = alt.Chart(data).encode(y=alt.Y("task:N", title=None))
    bars = base.mark_bar(height={"band": 0.6}, color=PALETTE["waiting_human"]).encode(
        x=alt.X("start_s:Q", title="seconds since the run started"), x2="end_s:Q",
        tooltip=["task:N", "kind:N", "reason:N", alt.Tooltip("seconds:Q", format=".2f"),
                 "answer:N", "source:N"])
    text = base.mark_text(align="left", dx=4).encode(x="end_s:Q", text="label:N")
    chart = (bars + text).properties(width=480, height=max(60, 34 * data.task.nunique()),
                                     title="Time waiting for a human")
    return Chart(chart, data, "human_waits")


def critical_path(store: Any, run: Any = "") -> Chart:
    """The run's DAG, laid out as the dashboard lays it out, with the critical path drawn
    thick and dark over it (boxes coloured by the tasks' status)."""
    import pandas as pd

    alt = _alt()
    rid = run_id_of(store, run)
    nodes = query(store, SQL["critical_path"], {"run_id": rid})
    edges = query(store, SQL["dag_edges"], {"run_id": rid})
    if not len(nodes):
        return _empty("critical_path", "The run has no task yet.", nodes)
    pos = layout(list(nodes.task_id), list(zip(edges.depends_on, edges.task_id)))
    path = list(nodes.dropna(subset=["position"]).sort_values("position").task_id)
    on_path = set(zip(path, path[1:]))
    nodes = nodes.assign(
        x=[pos[t].layer * 3.0 for t in nodes.task_id], y=[pos[t].order for t in nodes.task_id],
        critical=nodes.position.notna(),
        label=[f"{t} {title}"[:24] for t, title in zip(nodes.task_id, nodes.title)])
    nodes = nodes.assign(x2=nodes.x + 2.4, y2=nodes.y + 0.7)
    edge_rows = [{"from": d, "to": t, "x": pos[d].layer * 3.0 + 2.4, "y": pos[d].order + 0.35,
                  "x2": pos[t].layer * 3.0, "y2": pos[t].order + 0.35,
                  "critical": (d, t) in on_path}
                 for d, t in zip(edges.depends_on, edges.task_id)]
    edge_data = pd.DataFrame(edge_rows, columns=["from", "to", "x", "y", "x2", "y2", "critical"])
    layers = max(p.layer for p in pos.values()) + 1
    rows = max(p.order for p in pos.values()) + 1
    xs = alt.Scale(domain=[-0.2, layers * 3.0 - 0.4], nice=False, zero=False)
    ys = alt.Scale(domain=[-0.2, rows + 0.1], nice=False, zero=False, reverse=True)
    hidden = dict(axis=None)
    lines = alt.Chart(edge_data).mark_rule().encode(
        x=alt.X("x:Q", scale=xs, **hidden), y=alt.Y("y:Q", scale=ys, **hidden), x2="x2:Q", y2="y2:Q",
        color=alt.condition("datum.critical", alt.value("#111827"), alt.value("#cbd5e1")),
        strokeWidth=alt.condition("datum.critical", alt.value(3.5), alt.value(1.2)))
    boxes = alt.Chart(nodes).mark_rect(cornerRadius=5).encode(
        x=alt.X("x:Q", scale=xs, **hidden), y=alt.Y("y:Q", scale=ys, **hidden), x2="x2:Q", y2="y2:Q",
        color=alt.Color("status:N", scale=_status_scale(), title="status"),
        stroke=alt.condition("datum.critical", alt.value("#111827"), alt.value(None)),
        strokeWidth=alt.condition("datum.critical", alt.value(3), alt.value(0)),
        tooltip=["task_id:N", "title:N", "status:N", "position:Q",
                 alt.Tooltip("seconds:Q", format=".2f", title="span (s)"),
                 alt.Tooltip("cumulative_seconds:Q", format=".2f", title="cumulative (s)")])
    labels = alt.Chart(nodes).mark_text(align="left", dx=6, fontSize=11, color="#111827").encode(
        x=alt.X("x:Q", scale=xs, **hidden), y=alt.Y("mid:Q", scale=ys, **hidden), text="label:N"
    ).transform_calculate(mid="datum.y + 0.35")
    total = float(nodes.seconds.dropna().sum())
    title = f"Critical path: {' → '.join(path)} ({total:.1f} s)" if path else "Critical path"
    chart = (lines + boxes + labels).properties(
        width=170 * layers, height=44 * rows, title=title).configure_view(stroke=None)
    return Chart(chart, nodes, "critical_path")


def _natural(label: str) -> tuple:
    from .dag import natural_key

    return natural_key(label.split(" ", 1)[0])
