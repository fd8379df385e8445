"""One run's state for its widgets, live or from the store.

A live run's engine tells its observers about every event, message and streamed chunk as it
happens, on the engine's loop (the kernel's, in a notebook). The feed only queues them and
hands a :class:`Batch` to the widgets at most every ``interval`` seconds, so a burst of a
thousand status changes costs the front end one update, and a run that nobody watches pays
for nothing. Widgets then read the engine's in-memory state (no store round trip); a run no
engine drives here is read from the store once, and again on :meth:`RunFeed.reload`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..config import Config
from ..model import Attempt, Interrupt, Task

if TYPE_CHECKING:
    from ..engine.dispatch import Engine
    from ..run import Run

log = logging.getLogger("agentorch_nb.widgets")

# Events that change what the DAG, the header or the HITL panel show.
_TASK_EVENTS = {"task_status", "task_created", "task_edited", "dep_added", "dep_removed",
                "reviewed", "interrupt", "resolution", "attempt_started", "attempt_finished",
                "merge_task", "planned"}


@dataclass
class Batch:
    """What happened since the last batch."""

    events: list[dict[str, Any]] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)
    chunks: list[dict[str, Any]] = field(default_factory=list)
    reloaded: bool = False  # the state was read anew (first load, restart, reload)

    @property
    def tasks_changed(self) -> bool:
        return self.reloaded or any(e["kind"] in _TASK_EVENTS for e in self.events)

    @property
    def run_changed(self) -> bool:
        return self.reloaded or any(e["kind"] == "run_status" for e in self.events)

    def touched(self) -> set[str]:
        return {e["task_id"] for e in self.events if e.get("task_id")}


class RunFeed:
    """Watches ``run`` for its widgets; ``subscribe(fn)`` gets every :class:`Batch`."""

    def __init__(self, run: Run, interval: float = 0.1) -> None:
        self.run = run
        self.interval = interval
        self._engine: Engine | None = None
        self._pending = Batch()
        self._timer: asyncio.TimerHandle | None = None
        self._subscribers: list[Callable[[Batch], None]] = []
        self._stored: dict[str, Any] | None = None  # the store's view, when no engine is live
        self._finished_at = None
        self.errors: list[str] = []  # what went wrong while updating the widgets
        self.attach()

    # -------------------------------------------------------------- watching
    @property
    def engine(self) -> Engine | None:
        return self._engine

    def attach(self) -> bool:
        """Follow the engine that drives the run in this process now (after a restart, a new
        one). Once an engine has finished, its memory stays the state shown: it is final.
        Returns True when the feed now follows another source."""
        engine = self.run.engine
        if engine is None:
            if self._engine is not None or self._stored is not None:
                return False
            self._stored = self._load()
            return True
        if engine is self._engine:
            return False
        self._drop_engine()
        self._engine, self._stored = engine, None
        engine.observers.append(self._observe)
        return True

    def _drop_engine(self) -> None:
        if self._engine is not None and self._observe in self._engine.observers:
            self._engine.observers.remove(self._observe)
        self._engine = None

    def close(self) -> None:
        self._drop_engine()
        if self._timer is not None:
            self._timer.cancel()
        self._subscribers.clear()

    def subscribe(self, fn: Callable[[Batch], None]) -> None:
        self._subscribers.append(fn)

    def _observe(self, item: dict[str, Any]) -> None:
        channel = item["channel"]
        target = {"event": self._pending.events, "message": self._pending.messages,
                  "chunk": self._pending.chunks}[channel]
        target.append(item)
        if channel == "event" and item["kind"] == "run_status":
            self._finished_at = item["ts"]
        if self._timer is None:  # observers are called on the engine's loop
            self._timer = asyncio.get_running_loop().call_later(self.interval, self.flush)

    def flush(self) -> None:
        """Hand what is pending to the widgets now."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._pending = self._pending, Batch()
        self.publish(batch)

    def reload(self) -> asyncio.Task | None:
        """Read the state anew: after a restart in this process (follow the new engine), or
        to see what another process did to a run it drives (read on a thread: the store may
        be busy, and the loop serves other runs and cells meanwhile)."""
        if self.run.engine is not None:
            self.attach()
            self.publish(Batch(reloaded=True))
            return None

        async def read() -> None:
            stored = await asyncio.to_thread(self._load)
            self._drop_engine()
            self._stored = stored
            self.publish(Batch(reloaded=True))

        return self.spawn(read())

    def publish(self, batch: Batch) -> None:
        for fn in list(self._subscribers):
            try:
                fn(batch)
            except Exception as exc:  # noqa: BLE001 - shown and stored, not lost in a log
                self.report("updating a widget", exc)

    def spawn(self, coro) -> asyncio.Task:
        """Run a widget's background read on the loop; its failure is reported, not lost."""
        task = asyncio.get_running_loop().create_task(coro)

        def done(t: asyncio.Task) -> None:
            if not t.cancelled() and t.exception() is not None:
                self.report("reading the store for a widget", t.exception())
                self.publish(Batch())  # let the dashboard show it

        task.add_done_callback(done)
        return task

    def report(self, doing: str, exc: BaseException) -> None:
        """A failure behind the widgets: shown at the top of the dashboard, and stored as a
        ``dashboard_error`` event of the run while an engine here drives it."""
        text = f"{doing} failed: {type(exc).__name__}: {exc}"
        self.errors.append(text)
        log.error("run %s: %s\n%s", self.run.id, text,
                  "".join(traceback.format_exception(exc)))
        if self.live:
            self._engine.record_event("dashboard_error", None, error=text)

    # --------------------------------------------------------------- reading
    def _load(self) -> dict[str, Any]:
        run = self.run
        return {"summary": run.summary(), "tasks": run.tasks, "interrupts": run.interrupts(),
                "attempts": _attempts_from_store(run), "row": run.orchestrator.run_row(run.id)}

    def tasks(self) -> list[Task]:
        """Every task in id order: the engine's own objects when live (read, never change)."""
        if self._engine is not None:
            return list(self._engine.tasks.values())  # created in id order
        return self._stored["tasks"]

    def task(self, task_id: str) -> Task | None:
        if self._engine is not None:
            return self._engine.tasks.get(task_id)
        return next((t for t in self._stored["tasks"] if t.id == task_id), None)

    def attempts(self, task_id: str) -> list[Attempt]:
        if self._engine is not None:
            return list(self._engine.attempts.get(task_id, []))
        return self._stored["attempts"].get(task_id, [])

    def interrupts(self) -> list[Interrupt]:
        if self._engine is not None:
            return list(self._engine.open_interrupts.values())
        return self._stored["interrupts"]

    def summary(self) -> dict[str, Any]:
        e = self._engine
        if e is None:
            return self._stored["summary"]
        return {"run_id": e.run_id, "status": e.status.value, "objective": e.objective,
                "tasks": len(e.tasks), "counts": e.counts(), "error": e.error,
                "store_busy": e.store_busy.describe() if e.store_busy else None}

    def created_at(self):
        return self._engine.created_at if self._engine is not None else self._stored["row"]["created_at"]

    def finished_at(self):
        if self._engine is None:
            return self._stored["row"]["finished_at"]
        return self._finished_at if self._engine.status.finished else None

    def config(self) -> Config:
        if self._engine is not None:
            return self._engine.config
        return Config.from_dict(json.loads(self._stored["row"]["config"] or "{}"))

    @property
    def live(self) -> bool:
        """An engine in this process drives the run now."""
        return self._engine is not None and self.run.engine is self._engine and self.run.live


def _attempts_from_store(run: Run) -> dict[str, list[Attempt]]:
    from ..store.records import attempt_from_row

    out: dict[str, list[Attempt]] = {}
    for row in run.store.rows("select * from attempts where run_id = ? order by attempt", [run.id]):
        out.setdefault(row["task_id"], []).append(attempt_from_row(row))
    return out
