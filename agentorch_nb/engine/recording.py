"""Recording: every event, row, message and streamed chunk of a run, queued for the store
and handed to the observers (the dashboard) as it happens.

This module is part of :class:`agentorch_nb.engine.dispatch.Engine`: ``Recording`` is one of
its base classes, not a collaborator, and shares the engine's private state.
"""

from __future__ import annotations

import logging
from typing import Any

from ..model import Attempt, Task, utcnow
from ..store.records import attempt_row, task_row

log = logging.getLogger("agentorch_nb.engine")


class Recording:
    def record_event(self, kind: str, task_id: str | None = None, /, **payload: Any) -> None:
        """Append one event (the run's record) and tell the observers."""
        self._seq += 1
        row = {"run_id": self.run_id, "seq": self._seq, "ts": utcnow(), "task_id": task_id,
               "kind": kind, "payload": payload}
        self.store.append("events", row)
        self._publish("event", row)

    def _publish(self, channel: str, row: dict[str, Any]) -> None:
        """Tell the observers. They must be quick (they queue, they do not draw), and one
        that fails is logged and dropped: watching a run must never break it."""
        for fn in list(self.observers):
            try:
                fn({"channel": channel, **row})
            except Exception:
                log.exception("run %s: observer %r failed and was removed", self.run_id, fn)
                self.observers.remove(fn)

    def save_task(self, task: Task) -> None:
        """Write the task's current row (queued; on disk at the next flush)."""
        task.updated_at = utcnow()
        self.store.upsert_later("tasks", (self.run_id, task.id), lambda: task_row(task))

    def save_attempt(self, a: Attempt) -> None:
        self.store.upsert("attempts", attempt_row(a))

    def save_run(self) -> None:
        now = utcnow()
        self.store.upsert(
            "runs",
            {"run_id": self.run_id, "objective": self.objective,
             "workspace": str(self.workspace) if self.workspace else None,
             "status": self.status, "config": self.config.to_dict(), "error": self.error,
             "engine_pid": self.engine_pid, "engine_host": self.engine_host,
             "engine_address": self.engine_address, "created_at": self.created_at,
             "updated_at": now, "finished_at": now if self.status.finished else None},
        )

    def record_message(self, task_id, attempt, role, content, metadata) -> None:
        row = {"run_id": self.run_id, "task_id": task_id, "attempt": attempt, "role": role,
               "content": content, "metadata": metadata or None, "ts": utcnow()}
        self.store.append("messages", row)
        self._publish("message", row)

    def stream_chunk(self, task_id: str | None, attempt: int, role: str, text: str) -> None:
        """Part of a model reply still arriving: shown live, never stored (the whole reply
        is recorded as a message when it is complete)."""
        self._publish("chunk", {"run_id": self.run_id, "task_id": task_id, "attempt": attempt,
                                "role": role, "content": text})
