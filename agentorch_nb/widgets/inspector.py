"""The task inspector and the live log: what one task is, what each attempt did and said.

The task's record (title, criteria, attempts with their failure reasons, QA feedback, cost
and tokens) is a small trait. Conversations and diffs can be long, so they stay in the store
until the reader asks for one: a page of an attempt's conversation, or an attempt's diff,
read on the store's thread while the kernel goes on.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anywidget
import traitlets

from ._feed import Batch, RunFeed
from ..render import PALETTE

if TYPE_CHECKING:
    from ..model import Attempt, Task

_HERE = Path(__file__).parent
PAGE_SIZE = 40  # messages per page of a conversation
LOG_TAIL = 200  # messages the live log keeps


def _when(ts) -> str | None:
    return None if ts is None else ts.strftime("%H:%M:%S")


def _message(row: dict[str, Any]) -> dict[str, Any]:
    meta = row.get("metadata")
    if isinstance(meta, str):
        try:
            meta = json.loads(meta)
        except ValueError:
            meta = {"raw": meta}
    return {"role": row["role"], "content": row.get("content") or "", "ts": _when(row.get("ts")),
            "attempt": row.get("attempt"), "metadata": meta or {}}


def task_record(task: Task, attempts: list[Attempt], spend: dict[int, dict]) -> dict[str, Any]:
    return {
        "id": task.id, "title": task.title, "profile": task.profile.value,
        "status": task.status.value, "status_reason": task.status_reason or "",
        "description": task.description, "acceptance_criteria": list(task.acceptance_criteria),
        "depends_on": list(task.depends_on), "retries_used": task.retries_used,
        "max_retries": task.max_retries, "guidance": task.guidance or "",
        "attempts": [{
            "number": a.number, "started_at": _when(a.started_at), "finished_at": _when(a.finished_at),
            "outcome": a.outcome.value if a.outcome else "running",
            "failure_reason": a.failure_reason or "", "qa_feedback": a.qa_feedback or "",
            "summary": a.summary or "", "guidance": a.guidance or "",
            "has_diff": bool(a.diff) or a.finished_at is None,
            "tokens": spend.get(a.number, {}).get("tokens", 0),
            "cost_usd": spend.get(a.number, {}).get("cost", 0.0),
        } for a in attempts],
    }


class TaskInspector(anywidget.AnyWidget):
    """Shows the task whose id is in :attr:`task_id` (the DAG view's selection)."""

    _esm = _HERE / "task.js"
    _css = _HERE / "task.css"
    view = traitlets.Unicode("inspector").tag(sync=True)
    palette = traitlets.Dict(PALETTE).tag(sync=True)
    task = traitlets.Dict({}).tag(sync=True)
    conversation = traitlets.Dict({}).tag(sync=True)  # attempt, page, pages, total, messages
    diff = traitlets.Dict({}).tag(sync=True)  # attempt, text
    error = traitlets.Unicode("").tag(sync=True)

    def __init__(self, feed: RunFeed, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.feed = feed
        self.task_id = ""
        self._spend: dict[int, dict] = {}
        self.loading: asyncio.Task | None = None  # the newest read from the store, for tests
        self.on_msg(self._on_msg)
        feed.subscribe(self.update)

    def show(self, task_id: str) -> None:
        """Inspect ``task_id`` ("" clears)."""
        self.task_id = task_id
        self.conversation, self.diff, self.error, self._spend = {}, {}, "", {}
        self._render()
        if task_id:
            self._load(self._read_spend(task_id))

    def update(self, batch: Batch) -> None:
        if self.task_id and (batch.reloaded or self.task_id in batch.touched()):
            self._render()
            if any(e["kind"] == "attempt_finished" and e["task_id"] == self.task_id
                   for e in batch.events):
                self.feed.spawn(self._read_spend(self.task_id))  # what the attempt cost

    def _render(self) -> None:
        task = self.feed.task(self.task_id) if self.task_id else None
        self.task = {} if task is None else task_record(task, self.feed.attempts(task.id), self._spend)

    # --------------------------------------------------------------- on demand
    def _on_msg(self, _widget: Any, content: dict[str, Any], _buffers: Any) -> None:
        if content.get("kind") == "conversation":
            self.open_conversation(int(content["attempt"]), int(content.get("page", 0)))
        elif content.get("kind") == "diff":
            self.open_diff(int(content["attempt"]))

    def open_conversation(self, attempt: int, page: int = 0) -> asyncio.Task:
        return self._load(self._read_page(self.task_id, attempt, page))

    def open_diff(self, attempt: int) -> asyncio.Task:
        return self._load(self._read_diff(self.task_id, attempt))

    def _load(self, coro) -> asyncio.Task:
        self.loading = self.feed.spawn(coro)
        return self.loading

    async def _read_page(self, task_id: str, attempt: int, page: int) -> None:
        store, run_id = self.feed.run.store, self.feed.run.id
        key = [run_id, task_id, attempt]

        where = "from messages where run_id = ? and task_id = ? and attempt = ?"
        try:
            await store.flush()
            (count,) = await store.arows(f"select count(*) as n {where}", key)
            rows = await store.arows(f"select * {where} order by ts, rowid limit ? offset ?",
                                     [*key, PAGE_SIZE, page * PAGE_SIZE])
        except Exception as exc:  # noqa: BLE001 - the inspector says what failed
            self.error = f"could not read the conversation: {exc}"
            return
        if task_id == self.task_id:
            total = count["n"]
            self.conversation = {"attempt": attempt, "page": page, "total": total,
                                 "pages": max(1, -(-total // PAGE_SIZE)),
                                 "messages": [_message(r) for r in rows]}

    async def _read_diff(self, task_id: str, attempt: int) -> None:
        engine = self.feed.engine
        text = None
        if engine is not None and engine.integration is not None and task_id in engine.tasks:
            text = await engine.integration.diff(engine.tasks[task_id], attempt) or None
        if text is None:
            rows = await self.feed.run.store.arows(
                "select diff from attempts where run_id = ? and task_id = ? and attempt = ?",
                [self.feed.run.id, task_id, attempt])
            text = rows[0]["diff"] if rows else ""
        if task_id == self.task_id:
            self.diff = {"attempt": attempt, "text": text or "(this attempt changed no files)"}

    async def _read_spend(self, task_id: str) -> None:
        rows = await self.feed.run.store.arows(
            "select attempt, sum(coalesce(tokens_in, 0) + coalesce(tokens_out, 0)) as tokens, "
            "sum(coalesce(cost_usd, 0)) as cost from llm_calls where run_id = ? and task_id = ? "
            "and attempt is not null group by attempt", [self.feed.run.id, task_id])
        if task_id == self.task_id:
            self._spend = {r["attempt"]: {"tokens": int(r["tokens"]), "cost": float(r["cost"])}
                           for r in rows}
            self._render()


class LogView(anywidget.AnyWidget):
    """The conversation of one task as it happens, streamed replies included.

    The history comes from the store when a task is chosen; after that, messages and reply
    chunks arrive from the feed as custom messages (``reset``, ``append``, ``chunk``)."""

    _esm = _HERE / "task.js"
    _css = _HERE / "task.css"
    view = traitlets.Unicode("log").tag(sync=True)
    task_id = traitlets.Unicode("").tag(sync=True)

    def __init__(self, feed: RunFeed, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.feed = feed
        self.messages: list[dict[str, Any]] = []
        self.loading: asyncio.Task | None = None
        self._loading_for: str | None = None
        self._early: list[dict[str, Any]] = []  # arrived while the history was being read
        self._since = None  # the newest message of the history read from the store
        self.on_msg(self._on_msg)
        feed.subscribe(self.update)

    def show(self, task_id: str) -> None:
        self.task_id, self.messages, self._early = task_id, [], []
        self.send({"kind": "reset", "task_id": task_id, "messages": []})
        if task_id:
            self._loading_for = task_id
            self.loading = self.feed.spawn(self._read(task_id))

    async def _read(self, task_id: str) -> None:
        store, run_id = self.feed.run.store, self.feed.run.id
        await store.flush()
        rows = await store.arows(
            "select * from (select *, rowid as n from messages where run_id = ? and task_id = ? "
            "order by ts desc, n desc limit ?) order by ts, n", [run_id, task_id, LOG_TAIL])
        if task_id != self.task_id:
            return
        # The store was flushed first: what the feed brought up to the newest stored message
        # is in the history already.
        self._since = rows[-1]["ts"] if rows else None
        self.messages = [_message(r) for r in rows] + self._fresh(self._early)
        self._loading_for, self._early = None, []
        self.send({"kind": "reset", "task_id": task_id, "messages": self.messages})

    def update(self, batch: Batch) -> None:
        if not self.task_id:
            return
        mine = [m for m in batch.messages if m["task_id"] == self.task_id]
        chunks = [{"attempt": c["attempt"], "role": c["role"], "text": c["content"]}
                  for c in batch.chunks if c["task_id"] == self.task_id]
        if self._loading_for == self.task_id:
            self._early += mine
            return
        new = self._fresh(mine)
        # Chunks first: a complete message that follows replaces the reply being streamed.
        if chunks:
            self.send({"kind": "chunk", "chunks": chunks})
        if new:
            self.messages = (self.messages + new)[-LOG_TAIL:]
            self.send({"kind": "append", "messages": new})

    def _fresh(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [_message(m) for m in rows if self._since is None or m["ts"] > self._since]

    def _on_msg(self, _widget: Any, content: dict[str, Any], _buffers: Any) -> None:
        if content.get("kind") == "sync":
            self.send({"kind": "reset", "task_id": self.task_id, "messages": self.messages})

