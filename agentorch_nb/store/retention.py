"""Retention: remove old finished runs with every row they have, then shrink the file.

A run's rows are those of every table with a ``run_id`` column (tables of your own made
with ``ao.sql(..., write=True)`` included) and its LangGraph checkpoints, whose threads are
named ``<run_id>/<task>/a<n>`` (``agents/worker.py``).

Deleting rows does not make a DuckDB file smaller (measured on DuckDB 2.0.1: deleting 90 %
of a 120 MB store and ``CHECKPOINT`` leave 96 MB, ``VACUUM`` changes nothing; copying every
table back inside one transaction leaves the old and the new copy side by side, about twice
the data). What shrinks it is a fresh copy: :func:`rewrite` makes one in the store's own
thread while it holds the file and puts it in place atomically without letting go, so no
other process can have the file meanwhile nor be left holding the replaced one. A crash
before the rename leaves the store as it was and a scratch file
``<store>.prune-<pid>-<id>.tmp`` to delete; after it, the new file is complete.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..exceptions import InvalidInput
from ..model import RunStatus, utcnow
from .snapshot import quote_path
from .sqlutil import transaction
from .store import MEMORY, Store

FINISHED = tuple(s.value for s in RunStatus if s.finished)
CHECKPOINT_TABLES = ("checkpoints", "checkpoint_blobs", "checkpoint_writes")
_AGE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_age(value: dt.timedelta | str | None) -> dt.timedelta | None:
    """``"30d"``, ``"12h"``, ``"90m"``, ``"45s"``, ``"2w"`` or a timedelta."""
    if value is None or isinstance(value, dt.timedelta):
        return value
    match = _AGE.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise InvalidInput(f"older_than={value!r} is not an age: give a datetime.timedelta or "
                           "a number and a unit (s, m, h, d, w), e.g. '30d' or '12h'")
    return dt.timedelta(**{_UNITS[match.group(2)]: float(match.group(1))})


def candidates(store: Store, older_than: dt.timedelta | str | None = None,
               keep_last: int | None = None) -> list[dict[str, Any]]:
    """Rows of the finished runs that ``older_than`` / ``keep_last`` would remove, oldest
    first: finished before ``now - older_than`` (if given) and not among the ``keep_last``
    newest runs of the store (if given; runs of every status count among the newest)."""
    age = parse_age(older_than)
    if age is None and keep_last is None:
        raise InvalidInput("say which runs to remove: older_than (e.g. '30d'), keep_last "
                           "(the number of newest runs to keep), or both")
    if keep_last is not None and (isinstance(keep_last, bool) or not isinstance(keep_last, int)
                                  or keep_last < 0):
        raise InvalidInput(f"keep_last={keep_last!r} is not a number of runs (0 or more)")
    if age is not None and age < dt.timedelta(0):
        raise InvalidInput(f"older_than={older_than!r} is negative")
    rows = store.rows("select run_id, status, engine_pid, engine_host, engine_address, "
                      "created_at, coalesce(finished_at, updated_at) as ended_at "
                      "from runs order by created_at desc, run_id desc")
    kept = rows[:keep_last] if keep_last is not None else []
    keep = {r["run_id"] for r in kept}
    cutoff = utcnow() - age if age is not None else None
    found = [r for r in rows if r["status"] in FINISHED and r["run_id"] not in keep
             and (cutoff is None or r["ended_at"] < cutoff)]
    return found[::-1]


def delete_runs(store: Store, run_ids: Iterable[str], *, compact: bool = True) -> list[str]:
    """Delete every row of those ``run_ids`` that are still finished (checked again inside
    the deleting transaction: a run resumed meanwhile is kept), then rewrite the file to
    shrink it (``compact``). Returns the runs deleted. The caller makes sure no engine
    drives them (``Orchestrator.prune``)."""
    wanted = sorted(set(run_ids))
    if not wanted:
        return []
    scratch = None if store.path == MEMORY else \
        f"{store.path}.prune-{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp"

    def work(con) -> list[str]:
        with transaction(con):
            gone = delete_rows(con, wanted)
        if gone and compact and scratch is not None:
            rewrite(con, scratch, store.path)
        return gone

    try:
        return store.call_sync(work)
    finally:
        # Still there: the copy was not put in place (and is detached). Once it is, its
        # name is the store's and its log, scratch + ".wal", the store thread's: left alone.
        if scratch is not None and os.path.exists(scratch):
            for name in (scratch, scratch + ".wal"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(name)


def delete_rows(con, run_ids: list[str]) -> list[str]:
    """Delete the rows of those ``run_ids`` whose run is finished; return those runs."""
    gone = [r for (r,) in con.execute(
        "select run_id from runs where run_id in (select unnest(?::varchar[])) "
        "and status in (select unnest(?::varchar[])) "
        "order by run_id", [run_ids, list(FINISHED)]).fetchall()]
    if not gone:
        return []
    for table in run_tables(con):
        con.execute(f'delete from "{table}" where run_id in (select unnest(?::varchar[]))', [gone])
    present = {t for (t,) in con.execute(
        "select table_name from duckdb_tables() where database_name = current_database() "
        "and schema_name = 'main'").fetchall()}
    for table in CHECKPOINT_TABLES:
        if table in present:
            con.execute(f"delete from {table} where split_part(thread_id, '/', 1) "
                        "in (select unnest(?::varchar[]))", [gone])
    return gone


def run_tables(con) -> list[str]:
    """The base tables of the main schema that have a ``run_id`` column (``runs`` last)."""
    names = [t for (t,) in con.execute(
        "select c.table_name from information_schema.columns c "
        "join information_schema.tables t on t.table_catalog = c.table_catalog "
        " and t.table_schema = c.table_schema and t.table_name = c.table_name "
        "where c.table_catalog = current_database() and c.table_schema = 'main' "
        " and c.column_name = 'run_id' and t.table_type = 'BASE TABLE' "
        "order by c.table_name").fetchall()]
    return sorted(names, key=lambda t: t == "runs")


def rewrite(con, scratch: str, path: str) -> None:
    """Replace the file ``path`` that ``con`` has open by a fresh copy of it, without ever
    letting go of it: the copy is made at ``scratch`` and attached (so DuckDB's lock holds
    it too), renamed over ``path`` while the old file is still held, and only then made the
    connection's database and the old one detached. A process that tries ``path`` meanwhile
    finds it held, as at any batch, then opens the new file. Until the store thread lets go
    of the file, every commit is checkpointed at once (``checkpoint_threshold`` 0): the
    attached file's write-ahead log is named after ``scratch``, so none may be left in it."""
    (name,) = con.execute("select current_database()").fetchone()
    alias = f"agentorch_compacted_{uuid.uuid4().hex[:8]}"
    con.execute("checkpoint")  # nothing left in path's log: it must not outlive the file
    con.execute(f"attach {quote_path(scratch)} as {alias}")
    try:
        con.execute(f'copy from database "{name}" to {alias}')
        con.execute(f"checkpoint {alias}")
        os.chmod(scratch, 0o600)
        con.execute("set checkpoint_threshold = '0b'")
        con.execute(f"use {alias}")
    except BaseException:
        con.execute(f'use "{name}"')
        con.execute(f"detach {alias}")
        raise
    try:
        os.replace(scratch, path)
    except BaseException:
        con.execute(f'use "{name}"')
        con.execute(f"detach {alias}")
        raise
    con.execute(f'detach "{name}"')


def file_size(path: str | os.PathLike) -> int:
    """Bytes of a store on disk: its file and its write-ahead log."""
    return sum(Path(p).stat().st_size for p in (str(path), f"{path}.wal") if Path(p).exists())
