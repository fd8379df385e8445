"""Bring a run back from the store into a new engine, after a crash, a kernel restart or a
cancel.

Completed work stays completed. An attempt that was under way when its process died is
finished as ``interrupted``, counted, and handed to the Phoenix policy like any failure,
so it is retried with its history (or escalated when its retries are spent).
"""

from __future__ import annotations

import json
from pathlib import Path

from ..config import Config
from ..dag import _natural
from ..exceptions import UnknownRun
from ..model import Outcome, Profile, RunStatus, TaskStatus
from ..store import Store
from ..store.records import attempt_from_row, interrupt_from_row, task_from_row
from .dispatch import Engine
from .protocols import Agents

S = TaskStatus
# The failure reason of an attempt whose process died under it: the next attempt may
# continue it (same worktree, same conversation) instead of starting over.
ENGINE_DIED = "the engine process ended during this attempt"


def load_state(con, run_id: str) -> dict:
    def rows(sql: str) -> list[dict]:
        cur = con.execute(sql, [run_id])
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r)) for r in cur.fetchall()]

    return {
        "run": rows("select * from runs where run_id = ?"),
        "tasks": rows("select * from tasks where run_id = ?"),
        "deps": rows("select task_id, depends_on from task_deps where run_id = ?"),
        "attempts": rows("select * from attempts where run_id = ? order by task_id, attempt"),
        "interrupts": rows("select * from interrupts where run_id = ? and resolved_at is null"),
        "seq": rows("select coalesce(max(seq), 0) as seq, count(*) filter (where kind = 'planned') as planned from events where run_id = ?"),
    }


def build_engine(store: Store, run_id: str, data: dict, *, agents: Agents,
                 config: Config | None = None) -> Engine:
    if not data["run"]:
        raise UnknownRun(run_id, store.path)
    run = data["run"][0]
    if config is None:
        config = Config.from_dict(json.loads(run["config"] or "{}"))
    engine = Engine(run_id=run_id, objective=run["objective"], store=store, config=config,
                    agents=agents, workspace=Path(run["workspace"]) if run["workspace"] else None)
    engine.created_at = run["created_at"]
    engine.status = RunStatus(run["status"])
    deps: dict[str, list[str]] = {}
    for d in data["deps"]:
        deps.setdefault(d["task_id"], []).append(d["depends_on"])
    for row in sorted(data["tasks"], key=lambda r: _natural(r["task_id"])):
        task = task_from_row(row, deps.get(row["task_id"], []))
        engine.tasks[task.id] = task
        engine.attempts[task.id] = []
        engine.graph.add_task(task.id)
        engine._counts[task.status] += 1
        if task.profile == Profile.PLAN:
            engine._plan_counts[task.status] += 1
    for tid, task in engine.tasks.items():
        for dep in task.depends_on:
            engine.graph.add_dependency(tid, dep)
    for row in data["attempts"]:
        engine.attempts[row["task_id"]].append(attempt_from_row(row))
    for row in data["interrupts"]:
        it = interrupt_from_row(row)
        engine.open_interrupts[it.task_id] = it
    engine._review_wanted = engine._plans_open() > 0
    engine._seq = int(data["seq"][0]["seq"])
    engine.planned = bool(data["seq"][0]["planned"])
    engine._next_task = 1 + max((int(t[1:]) for t in engine.tasks if t[1:].isdigit()), default=0)
    recover(engine)
    return engine


def recover(engine: Engine) -> None:
    """Settle what the previous engine left mid-way, then queue everything for a step."""
    engine.error = None
    engine._set_run_status(RunStatus.RUNNING)
    merges = {t.created_by.split(":", 1)[1]: t.id for t in engine.tasks.values()
              if t.created_by and t.created_by.startswith("merge:") and not t.status.terminal}
    for tid, task in engine.tasks.items():
        if task.status == S.AWAITING_QA and tid in merges:
            engine._merging[tid] = merges[tid]  # still waits for its merge task
        elif task.status in (S.ACTIVE, S.AWAITING_QA):
            attempt = engine.attempts[tid][-1] if engine.attempts[tid] else None
            reason = ENGINE_DIED
            if attempt is not None and attempt.outcome is None:
                engine._finish_attempt(attempt, Outcome.INTERRUPTED, reason)
            engine.move(tid, S.FAILED, reason)
            engine.after_failure(task, reason)
        elif task.status == S.FAILED:
            engine.after_failure(task, task.status_reason or "failed before the resume")
        elif task.status == S.READY:
            # Re-queue: the ready heap is not stored.
            engine.move(tid, S.PLANNED, "resumed")
        elif task.status == S.PLANNED:
            engine._dirty.add(tid)
    engine._emit("resumed", None)
