"""Bring a run back from the store into a new engine, after a crash, a kernel restart or a
cancel.

Completed work stays completed. A merge the previous engine had started is settled from
git: if the approved commit is in the target, the task is complete (and its ``merges`` row
says which commit holds it); if not, the merge never happened. An attempt that was under
way when its process died is finished as ``interrupted`` (``engine_died``), counted, and
handed to the Phoenix policy like any failure, so it is retried with its history (or
escalated when its retries are spent).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import Config
from ..exceptions import UnknownRun
from ..model import Attempt, Interrupt, Interruption, Outcome, RunStatus, Task, TaskStatus
from ..store import Store
from ..store.records import attempt_from_row, interrupt_from_row, load_tasks
from ..store.sqlutil import select
from ..workspace import Workspace
from .dispatch import Engine
from .protocols import Agents

S = TaskStatus
# The failure reason of an attempt whose process died under it (its interruption is
# ENGINE_DIED): the next attempt may continue it (same worktree, same conversation).
ENGINE_DIED = "the engine process ended during this attempt"
LANDED = ("fast_forward", "merged", "up_to_date")


@dataclass
class StoredRun:
    """What the store holds of one run: enough to rebuild its engine."""

    run: dict[str, Any]
    tasks: list[Task]
    attempts: list[Attempt]
    interrupts: list[Interrupt]
    last_seq: int
    planned: bool
    merges: list[dict[str, Any]] = field(default_factory=list)  # the last merge of each attempt


def load_state(con, run_id: str) -> StoredRun:
    run = select(con, "select * from runs where run_id = ?", [run_id])
    if not run:
        raise UnknownRun(run_id, "the store")
    (seq,) = select(con, "select coalesce(max(seq), 0) as seq, count(*) filter "
                         "(where kind = 'planned') as planned from events where run_id = ?", [run_id])
    return StoredRun(
        run=run[0],
        tasks=load_tasks(con, run_id),
        attempts=[attempt_from_row(r) for r in select(
            con, "select * from attempts where run_id = ? order by task_id, attempt", [run_id])],
        interrupts=[interrupt_from_row(r) for r in select(
            con, "select * from interrupts where run_id = ? and resolved_at is null", [run_id])],
        last_seq=int(seq["seq"]),
        planned=bool(seq["planned"]),
        merges=select(con, "select * from merges where run_id = ?", [run_id]),
    )


def build_engine(store: Store, run_id: str, stored: StoredRun, *, agents: Agents | None,
                 config: Config | None = None) -> Engine:
    run = stored.run
    if config is None:
        config = Config.from_dict(json.loads(run["config"] or "{}"))
    engine = Engine(run_id=run_id, objective=run["objective"], store=store, config=config,
                    agents=agents, workspace=Path(run["workspace"]) if run["workspace"] else None)
    engine.restore(stored)
    return engine


def settle_merges(engine: Engine, git: Workspace, stored: StoredRun) -> None:
    """Settle from git every merge the previous engine started and never recorded the end of
    (so main never has work without its ``merges`` row); a task still awaiting_qa whose merge
    landed, even one recorded but not followed by the completion, is complete."""
    for row in stored.merges:
        task = engine.tasks.get(row["task_id"])
        if row["status"] == "started":
            landed = git.landed(row["source_sha"], row["target_sha"])
            engine.integration.record_merge(row, landed)
            engine.record_event("reconciled", row["task_id"], action=(
                f"merge of {row['source_sha'][:10]} ({row['task_id']} attempt {row['attempt']}) "
                "was cut " + (f"off after git made it: {landed.result_sha[:10]}" if landed
                              else "off before git made it")))
            if landed is None:
                continue
        elif row["status"] not in LANDED:
            continue
        if task is not None and task.status == S.AWAITING_QA and task.attempts == row["attempt"]:
            engine.complete_landed(task.id, row["attempt"])


def recover(engine: Engine) -> None:
    """Settle what the previous engine left mid-way, then queue everything for a step."""
    engine.error = None
    engine.set_run_status(RunStatus.RUNNING)
    for tid, task in engine.tasks.items():
        if task.status == S.AWAITING_QA and engine.waits_for_merge_task(tid):
            continue
        if task.status in (S.ACTIVE, S.AWAITING_QA):
            attempt = engine.attempts[tid][-1] if engine.attempts[tid] else None
            if attempt is not None and attempt.outcome is None:
                engine.finish_attempt(attempt, Outcome.INTERRUPTED, ENGINE_DIED,
                                      Interruption.ENGINE_DIED)
            engine.move(tid, S.FAILED, ENGINE_DIED)
            engine.after_failure(task, ENGINE_DIED)
        elif task.status == S.FAILED:
            engine.after_failure(task, task.status_reason or "failed before the resume")
        elif task.status == S.READY:
            engine.move(tid, S.PLANNED, "resumed")  # the ready heap is not stored: re-queue
        elif task.status == S.PLANNED:
            engine.mark_dirty(tid)
    engine.record_event("resumed", None)
