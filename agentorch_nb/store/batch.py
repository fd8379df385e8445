"""A batch of queued writes, and how it reaches DuckDB in one transaction.

Rows are inserted a column at a time: as list parameters unnested side by side, or as NumPy
object columns DuckDB scans (either is two orders of magnitude faster than executemany, and
several times faster than a multi-row VALUES list or a pandas frame); upserts are delete +
insert (INSERT OR REPLACE costs several times as much).
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import datetime
import itertools
import json
import operator
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

CHUNK_ROWS = 2000
UNNEST_ROWS = 200  # up to this many rows, list parameters beat registering arrays


class Batch:
    def __init__(self) -> None:
        self.appends: dict[str, list[dict]] = {}
        self.upserts: dict[str, dict[tuple, dict]] = {}
        self.deps: dict[tuple[str, str], list[str]] = {}
        self.calls: list[tuple[Callable, cf.Future, float]] = []  # fn, future, monotonic submit time
        self.flushes: list[cf.Future] = []
        # Settled with the commit, like flushes, but without asking for it early: the store
        # commits on its own schedule (within flush_interval).
        self.waiters: list[cf.Future] = []
        self.since: float | None = None  # time.monotonic() of the first write queued

    def written(self) -> None:
        """A write was queued: the batch is as old as its first one."""
        if self.since is None:
            self.since = time.monotonic()

    def has_writes(self) -> bool:
        return bool(self.appends or self.upserts or self.deps)

    def empty(self) -> bool:
        return not (self.has_writes() or self.calls or self.flushes or self.waiters)

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
        self.waiters.extend(newer.waiters)
        if self.since is None or (newer.since is not None and newer.since < self.since):
            self.since = newer.since
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


_PLAIN = frozenset({str, int, float, bool, type(None), datetime.datetime})
_JSON = json.JSONEncoder(default=str).encode  # one encoder, not one per value


def _cell(value: Any) -> Any:
    kind = type(value)
    if kind in _PLAIN:
        return value
    if kind is dict or kind is list or isinstance(value, (dict, list)):
        return _JSON(value)
    if hasattr(value, "value") and isinstance(getattr(value, "value"), str):  # StrEnum
        return value.value
    return value


def _column(values: list) -> list:
    """A column's values as DuckDB takes them: JSON text for dicts and lists, enums by
    value; a column of plain values (the usual case) is passed through as it is."""
    if all(kind in _PLAIN or issubclass(kind, str) for kind in set(map(type, values))):
        return values
    return [_cell(v) for v in values]


def _columns(rows: list[dict], cols: list[str]) -> list[list]:
    """``rows`` turned into one list per column (a missing key is NULL)."""
    if len(cols) > 1 and all(len(r) == len(cols) for r in rows):  # every row has every column
        return [list(values) for values in zip(*map(operator.itemgetter(*cols), rows))]
    return [[r.get(c) for r in rows] for c in cols]


def insert_rows(con, table: str, rows: list[dict]) -> None:
    """Insert rows column by column: up to UNNEST_ROWS as list parameters unnested side by
    side (one statement whatever the count; a multi-row VALUES list costs ~0.08 ms a row to
    bind), more as NumPy object columns DuckDB scans. Chunks bound how long a scan holds the
    GIL (it reads Python objects), so the event loop keeps its turns."""
    cols = list(dict.fromkeys(itertools.chain.from_iterable(rows)))
    names = ", ".join(cols)
    for start in range(0, len(rows), CHUNK_ROWS):
        chunk = rows[start:start + CHUNK_ROWS]
        columns = [_column(values) for values in _columns(chunk, cols)]
        if len(chunk) <= UNNEST_ROWS:
            con.execute(f"insert into {table} ({names}) select "
                        + ", ".join(["unnest(?)"] * len(cols)), columns)
        else:
            with _registered(con, cols, columns) as view:
                con.execute(f"insert into {table} ({names}) select {names} from {view}")
        if start + CHUNK_ROWS < len(rows):
            time.sleep(0)  # hand the GIL to the loop between chunks


def upsert_rows(con, table: str, rows: list[dict]) -> None:
    """Replace rows by primary key: delete, then insert (DuckDB's INSERT OR REPLACE costs
    several times as much)."""
    keys = KEYS[table]
    picked = " and ".join(f"{table}.{k} = v.{k}" for k in keys)
    con.execute(f"delete from {table} using (select "
                + ", ".join(f"unnest(?) as {k}" for k in keys) + f") v where {picked}",
                [[r[k] for r in rows] for k in keys])
    insert_rows(con, table, rows)


@contextlib.contextmanager
def _registered(con, cols: list[str], columns: list[list]):
    """``columns`` as NumPy object arrays registered under a view name, for one statement."""
    import numpy as np

    arrays = {}
    for c, values in zip(cols, columns):
        arrays[c] = np.empty(len(values), dtype=object)
        arrays[c][:] = values
    con.register("_agentorch_rows", arrays)
    try:
        yield "_agentorch_rows"
    finally:
        try:
            con.unregister("_agentorch_rows")
        except Exception:  # noqa: BLE001 - an aborted transaction refuses it; the statement's error matters
            pass


def settle(future: cf.Future, result: Any = None, exc: BaseException | None = None) -> None:
    """Complete ``future`` with ``result`` or ``exc`` unless it is done already."""
    if future.done():
        return
    if exc is None:
        future.set_result(result)
    else:
        future.set_exception(exc)
