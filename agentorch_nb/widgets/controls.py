"""The run header and the human-in-the-loop panel: plain ipywidgets controls.

Every button calls the same public :class:`~agentorch_nb.Run` method a cell would, with
``source="widget"``; a refusal is shown next to the buttons, never swallowed.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import html
from collections.abc import Callable
from typing import TYPE_CHECKING

import ipywidgets as ipw

from ..exceptions import failure_reason
from ..model import Interrupt, RunStatus, Task, TaskStatus, utcnow
from ..render import counts_line
from ._feed import Batch, RunFeed
from .actions import button, perform

if TYPE_CHECKING:
    from ..run import Run

SPEND_EVERY = 2.0  # seconds between reads of what the run's LLM calls cost


def _elapsed(start: _dt.datetime | None, end: _dt.datetime | None) -> str:
    if start is None:
        return ""
    seconds = int(((end or utcnow()) - start).total_seconds())
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 \
        else f"{seconds // 60}:{seconds % 60:02d}"


class RunHeader(ipw.VBox):
    """Status, counts, progress, elapsed time, tokens and cost against the budget, the models
    per role, and Cancel / Restart / Replan."""

    def __init__(self, run: Run, feed: RunFeed, on_restart: Callable[[], None] | None = None) -> None:
        self.run, self.feed, self.on_restart = run, feed, on_restart
        self.title = ipw.HTML()
        self.title.add_class("ao-run-title")
        self.status = ipw.Label()
        self.status.add_class("ao-run-status")
        self.progress = ipw.IntProgress(min=0, max=1, layout=ipw.Layout(width="100%"))
        self.spend = ipw.Label()
        self.models = ipw.Label()
        self.message = ipw.Label()
        self.cancel = button("Cancel", "ao-cancel", "danger", "stop every attempt and end the run")
        self.restart = button("Restart", "ao-restart", "", "continue the run from the store")
        self.replan = button("Replan", "ao-replan", "", "ask the Director to plan the objective again")
        self.reload = button("Reload", "ao-reload", "", "read the run again from the store "
                              "(for a run another process drives)")
        self.reload.on_click(lambda _: perform(self.message, self.feed.reload, "reloading from the store"))
        self.cancel.on_click(lambda _: perform(self.message, self.run.cancel, "cancel requested"))
        self.replan.on_click(lambda _: perform(self.message, self.run.replan, "replanning"))
        self.restart.on_click(lambda _: self.do_restart())
        self._spent = {"tokens": 0, "cost": 0.0}
        self._spend_read: asyncio.Task | None = None
        self._last_spend_read = 0.0
        self._ticker: asyncio.TimerHandle | None = None
        super().__init__([self.title, ipw.HBox([self.status]), self.progress,
                          ipw.HBox([self.spend]), self.models,
                          ipw.HBox([self.cancel, self.restart, self.replan, self.reload,
                                    self.message])])
        self.add_class("ao-run-header")
        feed.subscribe(self.update)
        self.update(Batch(reloaded=True))

    def do_restart(self) -> None:
        if perform(self.message, self.run.restart, "restarted") and self.on_restart is not None:
            self.on_restart()

    def update(self, batch: Batch) -> None:
        s = self.feed.summary()
        config = self.feed.config()
        total = s["tasks"]
        done = sum(s["counts"].get(k, 0) for k in ("complete", "abandoned"))
        self.title.value = f"<b>Run {s['run_id']}</b>: {html.escape(s['objective'])}"
        error = f" · error: {failure_reason(s['error'])}" if s.get("error") else ""
        if s.get("store_busy"):  # the run waits for another process to let go of its store
            error += f" · store held by {s['store_busy']}: no new attempt starts"
        self.status.value = (f"{s['status']} · {done}/{total} done · {counts_line(s['counts'])}"
                             f" · {_elapsed(self.feed.created_at(), self.feed.finished_at())}{error}")
        self.progress.max, self.progress.value = max(total, 1), done
        self.progress.bar_style = {"completed": "success", "failed": "danger",
                                   "cancelled": "warning"}.get(s["status"], "info")
        live = self.feed.live and not RunStatus(s["status"]).finished
        self.cancel.disabled, self.restart.disabled = not live, live
        self.replan.disabled = not live
        self.reload.layout.display = "none" if self.feed.live else None
        m = config.models
        roles = {"director": m.model_for("director"), "worker": m.model_for("worker"),
                 "strategist": m.model_for("strategist")}
        self.models.value = "models: " + " · ".join(f"{r} {v}" for r, v in roles.items())
        self._show_spend()
        self._read_spend(force=batch.reloaded or batch.run_changed)
        if live and self._ticker is None:
            self._ticker = asyncio.get_running_loop().call_later(1.0, self._tick)

    def _tick(self) -> None:
        """Elapsed time moves on between events: redraw the line once a second while live."""
        self._ticker = None
        if self.comm is not None:
            self.update(Batch())

    def _show_spend(self) -> None:
        m = self.feed.config().models
        parts = [f"{self._spent['tokens']:,} tokens"]
        if m.budget_tokens is not None:
            parts[0] += f" of {m.budget_tokens:,}"
        parts.append(f"${self._spent['cost']:.4f}" + (f" of ${m.budget_usd:.2f}" if m.budget_usd else ""))
        self.spend.value = "LLM: " + " · ".join(parts)

    def _read_spend(self, force: bool = False) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        if (self._spend_read is not None and not self._spend_read.done()) or (
                not force and loop.time() - self._last_spend_read < SPEND_EVERY):
            return
        self._last_spend_read = loop.time()
        self._spend_read = self.feed.spawn(self._spend_now())

    async def _spend_now(self) -> None:
        store, run_id = self.run.store, self.run.id
        (row,) = await store.arows(
            "select coalesce(sum(coalesce(tokens_in, 0) + coalesce(tokens_out, 0)), 0) as tokens, "
            "coalesce(sum(cost_usd), 0) as cost from llm_calls where run_id = ?", [run_id])
        self._spent = {"tokens": int(row["tokens"]), "cost": float(row["cost"])}
        self._show_spend()


class HitlPanel(ipw.VBox):
    """Every task of the run that waits for a human, with Retry (edit description, criteria,
    guidance), Abandon and Spawn; and Force interrupt for active tasks."""

    def __init__(self, run: Run, feed: RunFeed) -> None:
        self.run, self.feed = run, feed
        self.heading = ipw.HTML()
        self.cards = ipw.VBox()
        self.active = ipw.Dropdown(description="Active task", options=[])
        self.interrupt = button("Force interrupt", "ao-interrupt", "warning",
                                 "stop the attempt now and hand the task to a human")
        self.message = ipw.Label()
        self.message.add_class("ao-hitl-message")
        self.interrupt.on_click(lambda _: self.force_interrupt(self.active.value))
        self._shown: tuple = ()
        self.forms: dict[str, dict[str, ipw.Widget]] = {}  # task id -> its controls
        super().__init__([self.heading, self.cards, ipw.HBox([self.active, self.interrupt]), self.message])
        self.add_class("ao-hitl")
        feed.subscribe(self.update)
        self.update(Batch(reloaded=True))

    def update(self, batch: Batch) -> None:
        if not batch.tasks_changed:
            return
        waiting = sorted(self.feed.interrupts(), key=lambda i: i.created_at)
        active = [t.id for t in self.feed.tasks() if t.status == TaskStatus.ACTIVE]
        shown = (tuple(i.id for i in waiting), tuple(active))
        if shown == self._shown:
            return  # rebuilding would throw away what a person is typing
        self._shown = shown
        self.heading.value = (f"<b>Waiting for a human: {len(waiting)}</b>" if waiting
                              else "<b>Nothing waits for a human.</b>")
        self.forms = {}
        self.cards.children = [self._card(i) for i in waiting
                               if (task := self.feed.task(i.task_id)) is not None]
        keep = self.active.value
        self.active.options = active
        self.active.value = keep if keep in active else (active[0] if active else None)
        self.interrupt.disabled = not active

    def _card(self, it: Interrupt) -> ipw.Widget:
        task: Task = self.feed.task(it.task_id)
        wide = ipw.Layout(width="98%")
        f = {
            "description": ipw.Textarea(task.description, description="Description", layout=wide),
            "criteria": ipw.Textarea("\n".join(task.acceptance_criteria),
                                     description="Criteria", placeholder="one per line", layout=wide),
            "guidance": ipw.Textarea("", description="Guidance", layout=wide,
                                     placeholder="what the next attempt should know"),
            "cascade": ipw.Checkbox(False, description="abandon its dependents too", indent=False),
            "spawn_title": ipw.Text("", description="New title", layout=wide),
            "spawn_description": ipw.Textarea("", description="New desc.", layout=wide),
            "spawn_deps": ipw.Text(", ".join(task.depends_on), description="Depends on", layout=wide),
            "spawn_replace": ipw.Checkbox(True, description="replaces this task", indent=False),
        }
        retry = button("Retry", "ao-retry", "success", "try again with these changes")
        abandon = button("Abandon", "ao-abandon", "danger", "give the task up")
        spawn = button("Spawn", "ao-spawn", "info", "create a new task instead")
        retry.on_click(lambda _: self.retry(task.id))
        abandon.on_click(lambda _: self.abandon(task.id))
        spawn.on_click(lambda _: self.spawn(task.id))
        self.forms[task.id] = f
        context = "; ".join(f"{k}: {v}" for k, v in (it.context or {}).items() if v)[:600]
        card = ipw.VBox([
            ipw.HTML(f"<b>{task.id}: {html.escape(task.title)}</b> ({it.kind})"),
            ipw.Label(it.reason),
            *([ipw.Label(context)] if context else []),
            f["description"], f["criteria"], f["guidance"],
            ipw.HBox([retry, abandon, f["cascade"]]),
            ipw.HTML("<i>or spawn a new task:</i>"),
            f["spawn_title"], f["spawn_description"], f["spawn_deps"],
            ipw.HBox([spawn, f["spawn_replace"]]),
        ], layout=ipw.Layout(border="1px solid #eab308", padding="4px", margin="4px 0"))
        card.add_class("ao-hitl-card")
        return card

    # The actions: what the buttons do, callable from code (and tests) too.
    def retry(self, task_id: str) -> bool:
        f = self.forms[task_id]
        criteria = [c.strip() for c in f["criteria"].value.splitlines() if c.strip()]
        changes = {"description": f["description"].value, "acceptance_criteria": criteria}
        if f["guidance"].value.strip():
            changes["guidance"] = f["guidance"].value.strip()
        return perform(self.message, lambda: self.run.resolve(task_id, "retry", source="widget", **changes),
                    f"{task_id}: retrying")

    def abandon(self, task_id: str) -> bool:
        cascade = self.forms[task_id]["cascade"].value
        return perform(self.message, lambda: self.run.resolve(task_id, "abandon", source="widget",
                                                           cascade=cascade), f"{task_id}: abandoned")

    def spawn(self, task_id: str) -> bool:
        f = self.forms[task_id]
        deps = [d.strip() for d in f["spawn_deps"].value.split(",") if d.strip()]
        return perform(self.message, lambda: self.run.resolve(
            task_id, "spawn", source="widget", title=f["spawn_title"].value,
            description=f["spawn_description"].value, depends_on=deps,
            replace=f["spawn_replace"].value), f"{task_id}: new task spawned")

    def force_interrupt(self, task_id: str | None) -> bool:
        if not task_id:
            self.message.value = "no active task to interrupt"
            return False
        return perform(self.message, lambda: self.run.interrupt(task_id, source="widget"),
                    f"{task_id}: interrupted")
