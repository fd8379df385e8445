"""What the REST API reads from a store: each function takes a DuckDB connection (it runs
in the store's thread) and returns plain JSON-ready dicts. Nothing here takes SQL from a
request: run and task ids are bound parameters."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from ..dag import natural_key
from ..remote import engine_gone
from ..store.sqlutil import select

RUN_COLUMNS = ("run_id, objective, workspace, status, error, engine_pid, engine_host, "
               "engine_address, created_at, updated_at, finished_at")


def iso(value: Any) -> str | None:
    """A stored (naive UTC) timestamp as ISO 8601 with its zone."""
    if value is None:
        return None
    if isinstance(value, dt.datetime) and value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.isoformat()


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def runs(con, run_id: str | None = None) -> list[dict[str, Any]]:
    """Summaries of every run of the store (or of one), newest first."""
    where, params = ("where run_id = ?", [run_id]) if run_id else ("", [])
    rows = select(con, f"select {RUN_COLUMNS} from runs {where} order by created_at desc", params)
    if not rows:
        return []
    counts: dict[str, dict[str, int]] = {}
    for r in select(con, f"select run_id, status, count(*) as n from tasks {where} "
                         "group by run_id, status", params):
        counts.setdefault(r["run_id"], {})[r["status"]] = r["n"]
    cost = {r["run_id"]: r["cost"] for r in select(
        con, f"select run_id, coalesce(sum(cost_usd), 0) as cost from llm_calls {where} "
             "group by run_id", params)}
    waiting = {r["run_id"]: r["n"] for r in select(
        con, "select run_id, count(*) as n from interrupts where resolved_at is null "
             + ("and run_id = ? " if run_id else "") + "group by run_id", params)}
    return [{
        "id": r["run_id"], "objective": r["objective"], "workspace": r["workspace"],
        "status": r["status"], "created_at": iso(r["created_at"]),
        "updated_at": iso(r["updated_at"]), "finished_at": iso(r["finished_at"]),
        "tasks": sum(counts.get(r["run_id"], {}).values()), "counts": counts.get(r["run_id"], {}),
        "cost_usd": float(cost.get(r["run_id"], 0.0)), "waiting": waiting.get(r["run_id"], 0),
        "live": r["engine_address"] is not None and not engine_gone(r), "error": r["error"],
    } for r in rows]


def task_json(r: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": r["task_id"], "title": r["title"], "description": r["description"],
        "acceptance_criteria": _json(r["acceptance_criteria"]) or [], "profile": r["profile"],
        "status": r["status"], "status_reason": r["status_reason"], "attempts": r["attempts"],
        "retries_used": r["retries_used"], "max_retries": r["max_retries"],
        "qa_feedback": r["qa_feedback"], "guidance": r["guidance"],
        "result_summary": r["result_summary"], "updated_at": iso(r["updated_at"]),
    }


def run_detail(con, run_id: str) -> dict[str, Any] | None:
    """The run, its tasks (in id order) and its dependency edges; None if unknown."""
    found = runs(con, run_id)
    if not found:
        return None
    tasks = sorted(select(con, "select * from tasks where run_id = ?", [run_id]),
                   key=lambda r: natural_key(r["task_id"]))
    deps = select(con, "select task_id, depends_on from task_deps where run_id = ? "
                       "order by task_id, depends_on", [run_id])
    return {"run": found[0], "tasks": [task_json(t) for t in tasks], "dependencies": deps}


def has_task(con, run_id: str, task_id: str) -> bool:
    return bool(select(con, "select 1 from tasks where run_id = ? and task_id = ?",
                       [run_id, task_id]))


def interrupts(con, run_id: str | None = None) -> list[dict[str, Any]]:
    """Open interrupts (tasks waiting for a human), oldest first, with what a person needs
    to answer them: the task's description and criteria and its last QA feedback."""
    rows = select(con, """
        select i.run_id, i.interrupt_id, i.task_id, i.kind, i.reason, i.ts, i.context,
               t.title, t.description, t.acceptance_criteria, t.qa_feedback, t.attempts,
               r.objective
        from interrupts i
        join tasks t on t.run_id = i.run_id and t.task_id = i.task_id
        join runs r on r.run_id = i.run_id
        where i.resolved_at is null""" + (" and i.run_id = ?" if run_id else "")
        + " order by i.ts", [run_id] if run_id else [])
    return [{
        "id": r["interrupt_id"], "run_id": r["run_id"], "task_id": r["task_id"],
        "task_title": r["title"], "objective": r["objective"], "kind": r["kind"],
        "reason": r["reason"], "ts": iso(r["ts"]), "qa_feedback": r["qa_feedback"],
        "description": r["description"],
        "acceptance_criteria": _json(r["acceptance_criteria"]) or [],
        "attempts": r["attempts"], "context": _json(r["context"]) or {},
    } for r in rows]


def messages(con, run_id: str, task_id: str, offset: int, limit: int,
             attempt: int | None = None) -> dict[str, Any]:
    """One page of a task's conversation, oldest first."""
    where = "run_id = ? and task_id = ?" + (" and attempt = ?" if attempt is not None else "")
    params: list[Any] = [run_id, task_id] + ([attempt] if attempt is not None else [])
    (total,) = con.execute(f"select count(*) from messages where {where}", params).fetchone()
    rows = select(con, f"select attempt, ts, role, name, content, tool_call_id from messages "
                       f"where {where} order by ts, attempt limit ? offset ?",
                  params + [limit, offset])
    for r in rows:
        r["ts"] = iso(r["ts"])
    return {"messages": rows, "total": total, "offset": offset, "limit": limit}


def attempt_diff(con, run_id: str, task_id: str, attempt: int) -> dict[str, Any] | None:
    rows = select(con, "select outcome, commit_sha, diff from attempts "
                       "where run_id = ? and task_id = ? and attempt = ?",
                  [run_id, task_id, attempt])
    if not rows:
        return None
    r = rows[0]
    return {"run_id": run_id, "task_id": task_id, "attempt": attempt, "outcome": r["outcome"],
            "commit_sha": r["commit_sha"], "diff": r["diff"]}
