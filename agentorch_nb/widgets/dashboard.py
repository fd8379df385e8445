"""The dashboards: one run's (header, DAG, inspector, live log, HITL panel), and a store's
(its runs, a New Run form, the human queue across runs).

A run has one dashboard per kernel: displaying the run again shows the same widgets, so any
number of cells can show it and one feed serves them all.
"""

from __future__ import annotations

import asyncio
import dataclasses
import html
from pathlib import Path
from typing import TYPE_CHECKING

import ipywidgets as ipw

from ..exceptions import AgentorchError, failure_reason
from ..run import Run
from ._feed import Batch, RunFeed
from .actions import button, perform
from .controls import HitlPanel, RunHeader
from .dag import DagView
from .inspector import LogView, TaskInspector

if TYPE_CHECKING:
    from ..orchestrator import Orchestrator

_DASHBOARDS: dict[tuple[str, str], RunDashboard] = {}


class RunDashboard(ipw.VBox):
    """Everything about one run, live while an engine in this kernel drives it."""

    def __init__(self, run: Run, *, interval: float = 0.1) -> None:
        self.run = run
        self.feed = RunFeed(run, interval=interval)
        self.header = RunHeader(run, self.feed, on_restart=self.feed.reload)
        self.dag = DagView(run, tasks=self.feed.tasks())
        self.inspector = TaskInspector(self.feed)
        self.live_log = LogView(self.feed)
        self.hitl = HitlPanel(run, self.feed)
        self.problems = ipw.HTML()
        self.problems.add_class("ao-problems")
        tabs = ipw.Tab([self.inspector, self.live_log], layout=ipw.Layout(width="40%"))
        tabs.set_title(0, "Task")
        tabs.set_title(1, "Live log")
        self.dag.layout = ipw.Layout(width="60%")
        self.dag.observe(lambda change: self.select(change["new"]), "selected")
        self.feed.subscribe(self._update)
        super().__init__([self.header, self.problems, ipw.HBox([self.dag, tabs]), self.hitl])
        self.add_class("ao-dashboard")
        self._update(Batch(reloaded=True))

    def select(self, task_id: str) -> None:
        """Show ``task_id`` in the inspector and the live log (what a click on a node does)."""
        if self.dag.selected != task_id:
            self.dag.selected = task_id  # comes back here through the observer
            return
        self.inspector.show(task_id)
        self.live_log.show(task_id)

    def _update(self, batch: Batch) -> None:
        if batch.tasks_changed:
            self.dag.refresh(self.feed.tasks())
        self._show_problems()

    def _show_problems(self) -> None:
        """The run's own error and any failure to update a widget: on the page, not in a log."""
        error = failure_reason(self.feed.summary().get("error"))  # the traceback stays in the store
        lines = ([f"run error: {error}"] if error else []) + self.feed.errors[-5:]
        self.problems.value = "".join(f"<div class='ao-error'>{html.escape(x)}</div>" for x in lines)

    def close(self) -> None:
        self.feed.close()
        _DASHBOARDS.pop((self.run.store.path, self.run.id), None)
        super().close()


def dashboard_for(run: Run) -> RunDashboard:
    """The dashboard of ``run`` in this kernel, made on first use."""
    key = (run.store.path, run.id)
    board = _DASHBOARDS.get(key)
    if board is None or board.comm is None:
        board = _DASHBOARDS[key] = RunDashboard(run)
    elif board.feed.attach():  # restarted since: follow the new engine
        board.feed.publish(Batch(reloaded=True))
    return board


# ---------------------------------------------------------------- a store's dashboard
QUEUE_SQL = """
select i.run_id, i.task_id, i.kind, i.reason, i.ts, t.title, r.objective
from interrupts i
join tasks t on t.run_id = i.run_id and t.task_id = i.task_id
join runs r on r.run_id = i.run_id
where i.resolved_at is null and t.status = 'waiting_human'
order by i.ts
"""
RUNS_SQL = """
select r.run_id, r.status, r.objective, r.created_at,
       count(t.task_id) as tasks,
       count(t.task_id) filter (where t.status in ('complete', 'abandoned')) as done
from runs r left join tasks t on t.run_id = r.run_id
group by all order by r.created_at desc
"""
REFRESH_EVERY = 2.0  # seconds, while a run of this store is live in this kernel


class OrchestratorDashboard(ipw.VBox):
    """``orch.dashboard()``: the runs of the store, a New Run form, the human queue."""

    def __init__(self, orch: Orchestrator) -> None:
        self.orch = orch
        self.runs_box = ipw.VBox()
        self.queue_box = ipw.VBox()
        self.opened = ipw.VBox()  # the dashboard of the run last opened
        self.message = ipw.Label()
        self.message.add_class("ao-dashboard-message")
        refresh = button("Refresh", "ao-refresh")
        refresh.on_click(lambda _: self.refresh())
        self.form = self._new_run_form()
        self._timer: asyncio.TimerHandle | None = None
        super().__init__([
            ipw.HTML(f"<b>agentorch_nb</b> · store {html.escape(str(orch.store.path))}"),
            ipw.HBox([refresh, self.message]),
            ipw.HTML("<b>Runs</b>"), self.runs_box,
            ipw.HTML("<b>Human queue</b> (every run of this store)"), self.queue_box,
            ipw.HTML("<b>New run</b>"), self.form,
            self.opened,
        ])
        self.add_class("ao-orch-dashboard")
        self.refresh()

    # --------------------------------------------------------------- contents
    def refresh(self) -> None:
        """Read the runs and the queue again (on the store's thread; the kernel goes on)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._show(self.orch.store.rows(RUNS_SQL), self.orch.store.rows(QUEUE_SQL))
            return
        loop.create_task(self._refresh()).add_done_callback(self._refreshed)

    def _refreshed(self, task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:
            self.message.value = f"reading the store failed: {task.exception()}"

    async def _refresh(self) -> None:
        store = self.orch.store
        await store.flush()
        runs, queue = await store.arows(RUNS_SQL), await store.arows(QUEUE_SQL)
        self._show(runs, queue)
        if self._timer is None and any(Run(self.orch, r["run_id"]).live for r in runs):
            self._timer = asyncio.get_running_loop().call_later(REFRESH_EVERY, self._again)

    def _again(self) -> None:
        self._timer = None
        if self.comm is not None:
            self.refresh()

    def _show(self, runs: list[dict], queue: list[dict]) -> None:
        self.runs_box.children = [self._run_row(r) for r in runs] or [ipw.Label("No runs yet.")]
        self.queue_box.children = [self._queue_row(q) for q in queue] or [
            ipw.Label("Nobody is needed: no task waits for a human.")]

    def _run_row(self, r: dict) -> ipw.Widget:
        open_ = button("Open", "ao-open-run")
        open_.on_click(lambda _: self.open_run(r["run_id"]))
        bar = ipw.IntProgress(value=int(r["done"]), min=0, max=max(int(r["tasks"]), 1),
                              layout=ipw.Layout(width="120px"))
        row = ipw.HBox([open_, ipw.Label(r["run_id"]), ipw.Label(r["status"]), bar,
                        ipw.Label(f"{r['done']}/{r['tasks']}"), ipw.Label(r["objective"][:80])])
        row.add_class("ao-run-row")
        return row

    def _queue_row(self, q: dict) -> ipw.Widget:
        open_ = button("Open run", "ao-open-run")
        retry = button("Retry", "ao-retry", "success")
        open_.on_click(lambda _: self.open_run(q["run_id"]))
        retry.on_click(lambda _: perform(self.message, lambda: self.orch.run(q["run_id"]).resolve(
            q["task_id"], "retry", source="widget"), f"{q['task_id']} of {q['run_id']}: retrying")
            and self.refresh())
        row = ipw.HBox([open_, retry, ipw.Label(f"{q['run_id']} {q['task_id']}: {q['title'][:60]}"),
                        ipw.Label(f"({q['kind']}) {q['reason'][:120]}")])
        row.add_class("ao-queue-row")
        return row

    def open_run(self, run_id: str) -> RunDashboard | None:
        try:
            board = dashboard_for(self.orch.run(run_id))
        except AgentorchError as exc:
            self.message.value = f"refused: {exc}"
            return None
        self.opened.children = [board]
        return board

    # --------------------------------------------------------------- new run
    def _new_run_form(self) -> ipw.Widget:
        wide = ipw.Layout(width="98%")
        self.objective = ipw.Textarea(placeholder="what should the run achieve?",
                                      description="Objective", layout=wide)
        self.workspace = ipw.Text(str(self.orch.workspace), description="Workspace", layout=wide)
        self.model = ipw.Combobox(
            value=self.orch.config.models.worker_model, description="Model",
            placeholder="a litellm model string, or 'demo' for the offline scripted model",
            options=["demo", "openai/gpt-4o-mini", "anthropic/claude-sonnet-4-5",
                     "ollama/llama3.1"], ensure_option=False, layout=wide)
        self.concurrency = ipw.BoundedIntText(self.orch.config.max_concurrent_workers, min=1,
                                              max=64, description="Workers")
        start = button("Start", "ao-start", "primary")
        start.on_click(lambda _: self.start())
        return ipw.VBox([self.objective, self.workspace, self.model, ipw.HBox([self.concurrency, start])])

    def start(self) -> Run | None:
        """Start a run from the form's values and open its dashboard."""
        from ..agents import LLMTeam, demo_models
        from ..orchestrator import Orchestrator

        model = self.model.value.strip()
        config = self.orch.config
        models = demo_models() if model == "demo" else (
            dataclasses.replace(config.models, worker_model=model) if model else config.models)
        config = dataclasses.replace(config, max_concurrent_workers=int(self.concurrency.value),
                                     models=models)
        run = None

        def go() -> None:
            nonlocal run
            orch = self.orch
            if Path(self.workspace.value).expanduser().resolve() != Path(orch.workspace).resolve():
                orch = Orchestrator(self.workspace.value, store=orch.store.path, config=config)
            # The form's model is an LLM team's: whatever agents the orchestrator was given
            # (scripted test agents, say) do not apply.
            run = orch.start(self.objective.value, config=config, agents=LLMTeam())

        if perform(self.message, go) and run is not None:
            self.message.value = f"started {run.id}"
            self.open_run(run.id)
            self.refresh()
        return run

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        super().close()

