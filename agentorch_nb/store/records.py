"""Rows <-> records: how a Task, an Attempt and an Interrupt look in the store."""

from __future__ import annotations

import json
from typing import Any

from ..model import Attempt, Interrupt, Interruption, Outcome, Profile, Task, TaskStatus
from .sqlutil import select


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def task_row(t: Task) -> dict[str, Any]:
    return {
        "run_id": t.run_id,
        "task_id": t.id,
        "title": t.title,
        "description": t.description,
        "acceptance_criteria": list(t.acceptance_criteria),
        "profile": t.profile,
        "phase": t.phase,
        "status": t.status,
        "status_reason": t.status_reason,
        "attempts": t.attempts,
        "retries_used": t.retries_used,
        "max_retries": t.max_retries,
        "branch": t.branch,
        "worktree": t.worktree,
        "result_summary": t.result_summary,
        "qa_verdict": t.qa_verdict,
        "qa_feedback": t.qa_feedback,
        "guidance": t.guidance,
        "created_by": t.created_by,
        "merge_source": t.merge_source,
        "created_at": t.created_at,
        "updated_at": t.updated_at,
    }


def task_from_row(row: dict[str, Any], depends_on: list[str]) -> Task:
    return Task(
        id=row["task_id"],
        run_id=row["run_id"],
        title=row["title"],
        description=row["description"] or "",
        acceptance_criteria=_json(row["acceptance_criteria"]) or [],
        profile=Profile(row["profile"]),
        phase=row["phase"] or "",
        depends_on=sorted(depends_on),
        status=TaskStatus(row["status"]),
        status_reason=row["status_reason"],
        attempts=row["attempts"],
        retries_used=row["retries_used"],
        max_retries=row["max_retries"],
        branch=row["branch"],
        worktree=row["worktree"],
        result_summary=row["result_summary"],
        qa_verdict=row["qa_verdict"],
        qa_feedback=row["qa_feedback"],
        guidance=row["guidance"],
        created_by=row["created_by"],
        merge_source=row.get("merge_source"),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def attempt_row(a: Attempt) -> dict[str, Any]:
    return {
        "run_id": a.run_id,
        "task_id": a.task_id,
        "attempt": a.number,
        "started_at": a.started_at,
        "finished_at": a.finished_at,
        "outcome": a.outcome,
        "failure_reason": a.failure_reason,
        "interruption": a.interruption,
        "summary": a.summary,
        "qa_feedback": a.qa_feedback,
        "guidance": a.guidance,
        "commit_sha": a.commit_sha,
        "diff": a.diff,
        "branch": a.branch,
        "base_sha": a.base_sha,
        "node": a.node,
    }


def attempt_from_row(row: dict[str, Any]) -> Attempt:
    return Attempt(
        run_id=row["run_id"],
        task_id=row["task_id"],
        number=row["attempt"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        outcome=Outcome(row["outcome"]) if row["outcome"] else None,
        failure_reason=row["failure_reason"],
        interruption=Interruption(row["interruption"]) if row.get("interruption") else None,
        summary=row["summary"],
        qa_feedback=row["qa_feedback"],
        guidance=row["guidance"],
        commit_sha=row.get("commit_sha"),
        diff=row.get("diff"),
        branch=row.get("branch"),
        base_sha=row.get("base_sha"),
        node=row.get("node"),
    )


def interrupt_row(i: Interrupt, resolved_at=None) -> dict[str, Any]:
    return {
        "run_id": i.run_id,
        "interrupt_id": i.id,
        "task_id": i.task_id,
        "ts": i.created_at,
        "kind": i.kind,
        "reason": i.reason,
        "context": i.context,
        "resolved_at": resolved_at,
        "resolution_id": i.resolved_by,
    }


def interrupt_from_row(row: dict[str, Any]) -> Interrupt:
    return Interrupt(
        id=row["interrupt_id"],
        run_id=row["run_id"],
        task_id=row["task_id"],
        reason=row["reason"] or "",
        kind=row["kind"],
        created_at=row["ts"],
        context=_json(row["context"]) or {},
        resolved_by=row["resolution_id"],
    )


def load_tasks(con, run_id: str) -> list[Task]:
    """Every task of a run with its dependencies, as stored (no particular order)."""
    deps: dict[str, list[str]] = {}
    for d in select(con, "select task_id, depends_on from task_deps where run_id = ?", [run_id]):
        deps.setdefault(d["task_id"], []).append(d["depends_on"])
    return [task_from_row(r, deps.get(r["task_id"], []))
            for r in select(con, "select * from tasks where run_id = ?", [run_id])]
