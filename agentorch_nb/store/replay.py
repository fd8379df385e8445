"""Rebuild a run's task statuses and dependencies from its event history alone.

The events table is the record; the tasks and task_deps tables are a cache of its fold.
``replay`` is that fold, so a post-mortem can ask what was true after any ``seq``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..model import TaskStatus


@dataclass
class ReplayState:
    status: dict[str, TaskStatus] = field(default_factory=dict)
    deps: set[tuple[str, str]] = field(default_factory=set)  # (task_id, depends_on)
    run_status: str | None = None
    last_seq: int = 0


def replay(events: Iterable[Mapping[str, Any]], upto_seq: int | None = None) -> ReplayState:
    """Fold events (dicts with seq, task_id, kind, payload) in ``seq`` order."""
    state = ReplayState()
    for ev in sorted(events, key=lambda e: e["seq"]):
        if upto_seq is not None and ev["seq"] > upto_seq:
            break
        p = ev["payload"]
        p = json.loads(p) if isinstance(p, str) else (p or {})
        kind, tid = ev["kind"], ev["task_id"]
        if kind == "task_created":
            state.status[tid] = TaskStatus.PLANNED
            state.deps.update((tid, d) for d in p.get("depends_on", []))
        elif kind == "task_status":
            state.status[tid] = TaskStatus(p["to"])
        elif kind == "dep_added":
            state.deps.add((tid, p["depends_on"]))
        elif kind == "dep_removed":
            state.deps.discard((tid, p["depends_on"]))
        elif kind == "run_status":
            state.run_status = p["to"]
        state.last_seq = ev["seq"]
    return state


def replay_run(store, run_id: str, upto_seq: int | None = None) -> ReplayState:
    rows = store.rows(
        "select seq, task_id, kind, payload from events where run_id = ? order by seq", [run_id]
    )
    return replay(rows, upto_seq)
