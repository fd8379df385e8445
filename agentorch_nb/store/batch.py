"""A batch of queued writes, and how it reaches DuckDB in one transaction.

Rows are inserted a few through one multi-row VALUES statement and many through pandas
frames (DuckDB scans a frame two orders of magnitude faster than executemany); upserts are
delete + insert (INSERT OR REPLACE costs several times as much).
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import json
import time
from collections.abc import Callable
from typing import Any

# Primary keys of the tables that take upserts: rows with the same key in one batch
# collapse to the last one.
KEYS: dict[str, tuple[str, ...]] = {
    "runs": ("run_id",),
    "tasks": ("run_id", "task_id"),
    "attempts": ("run_id", "task_id", "attempt"),
    "interrupts": ("run_id", "interrupt_id"),
    "resolutions": ("run_id", "resolution_id"),
    "commands": ("run_id", "command_id"),
    # One merge per attempt: written as 'started' before git merges, then with its outcome.
    "merges": ("run_id", "task_id", "attempt"),
}
TIMED = {"events", "messages", "tool_calls", "llm_calls", "insights", "design_decisions"}

CHUNK_ROWS = 500
SMALL_BATCH = 40  # up to this many rows, one VALUES statement beats building a frame


class Batch:
    def __init__(self) -> None:
        self.appends: dict[str, list[dict]] = {}
        self.upserts: dict[str, dict[tuple, dict]] = {}
        self.deps: dict[tuple[str, str], list[str]] = {}
        self.calls: list[tuple[Callable, cf.Future, float]] = []  # fn, future, monotonic submit time
        self.flushes: list[cf.Future] = []

    def has_writes(self) -> bool:
        return bool(self.appends or self.upserts or self.deps)

    def empty(self) -> bool:
        return not (self.has_writes() or self.calls or self.flushes)

    def size(self) -> int:
        return sum(map(len, self.appends.values())) + sum(map(len, self.upserts.values()))

    def write(self, con) -> None:
        """Write every queued row on ``con`` (inside the caller's transaction)."""
        for table, rows in self.appends.items():
            insert_rows(con, table, rows)
        for table, keyed in self.upserts.items():
            upsert_rows(con, table, list(keyed.values()))
        if self.deps:
            replace_deps(con, self.deps)

    def then(self, newer: Batch) -> Batch:
        """This batch (which could not be written) followed by what was queued since: rows
        keep their order, and a newer upsert of a key wins."""
        for table, rows in newer.appends.items():
            self.appends.setdefault(table, []).extend(rows)
        for table, keyed in newer.upserts.items():
            self.upserts.setdefault(table, {}).update(keyed)
        self.deps.update(newer.deps)
        self.calls.extend(newer.calls)
        self.flushes.extend(newer.flushes)
        return self


def replace_deps(con, deps: dict[tuple[str, str], list[str]]) -> None:
    """Replace the dependency lists of many tasks: one delete per run, one bulk insert."""
    by_run: dict[str, list[str]] = {}
    for run_id, task_id in deps:
        by_run.setdefault(run_id, []).append(task_id)
    for run_id, task_ids in by_run.items():
        con.execute("delete from task_deps where run_id = ? and list_contains(?, task_id)",
                    [run_id, task_ids])
    rows = [{"run_id": r, "task_id": t, "depends_on": d} for (r, t), ds in deps.items() for d in ds]
    if rows:
        insert_rows(con, "task_deps", rows)


def _cell(value: Any) -> Any:
    if isinstance(value, (dict, list)):
        return json.dumps(value, default=str)
    if hasattr(value, "value") and isinstance(getattr(value, "value"), str):  # StrEnum
        return value.value
    return value


def insert_rows(con, table: str, rows: list[dict]) -> None:
    """Insert rows: a few through one multi-row VALUES statement, many through pandas frames
    (DuckDB scans a frame two orders of magnitude faster than executemany). Chunks bound how
    long a scan holds the GIL (it reads Python objects), so the event loop keeps its turns."""
    cols = list(dict.fromkeys(c for r in rows for c in r))
    names = ", ".join(cols)
    if len(rows) <= SMALL_BATCH:
        one = "(" + ", ".join("?" * len(cols)) + ")"
        con.execute(f"insert into {table} ({names}) values " + ", ".join([one] * len(rows)),
                    [_cell(r.get(c)) for r in rows for c in cols])
        return
    for start in range(0, len(rows), CHUNK_ROWS):
        with _frame(con, [{c: r.get(c) for c in cols} for r in rows[start:start + CHUNK_ROWS]]) as view:
            con.execute(f"insert into {table} ({names}) select {names} from {view}")
        if start + CHUNK_ROWS < len(rows):
            time.sleep(0)  # hand the GIL to the loop between chunks


def upsert_rows(con, table: str, rows: list[dict]) -> None:
    """Replace rows by primary key: delete, then insert (DuckDB's INSERT OR REPLACE costs
    several times as much)."""
    keys = KEYS[table]
    if len(rows) <= SMALL_BATCH:
        match = "(" + " and ".join(f"{k} = ?" for k in keys) + ")"
        con.execute(f"delete from {table} where " + " or ".join([match] * len(rows)),
                    [r[k] for r in rows for k in keys])
    else:
        with _frame(con, [{k: r[k] for k in keys} for r in rows]) as view:
            on = " and ".join(f"{table}.{k} = {view}.{k}" for k in keys)
            con.execute(f"delete from {table} using {view} where {on}")
    insert_rows(con, table, rows)


@contextlib.contextmanager
def _frame(con, rows: list[dict]):
    """``rows`` as a pandas frame registered under a view name, for one statement."""
    import pandas as pd

    cols = list(rows[0])
    frame = pd.DataFrame({c: pd.Series([_cell(r[c]) for r in rows], dtype=object) for c in cols})
    con.register("_agentorch_rows", frame)
    try:
        yield "_agentorch_rows"
    finally:
        try:
            con.unregister("_agentorch_rows")
        except Exception:  # noqa: BLE001 - an aborted transaction refuses it; the statement's error matters
            pass

