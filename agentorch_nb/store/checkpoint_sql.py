"""The SQL of the LangGraph checkpointer (``checkpoint.py``: ``DuckDBSaver``).

The functions here run in the store's thread (``Store.call``) on the connection it hands
them, and do nothing but SQL: serialising and deserialising stay in the caller's thread, so
the file is held only for the queries. :func:`write_segment` writes many queued puts and
writes (:class:`Put`, :class:`Writes`) in one transaction, a few statements whatever their
number; :class:`Listing` reads one page per store call and leaves decoding the page to the
saver. Table and column names are documented in ``migrations._v2_checkpoints``.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import duckdb
from langgraph.checkpoint.base import CheckpointTuple

from ..exceptions import InvalidInput
from .sqlutil import transaction

PAGE = 100  # checkpoints read per store call while listing: the file is let go between pages

CP_COLS = (
    "thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id, type, checkpoint, "
    "metadata, channel_versions"
)
BLOB_COLS = "thread_id, checkpoint_ns, channel, version, type, blob"
WRITE_COLS = (
    "thread_id, checkpoint_ns, checkpoint_id, task_id, idx, channel, type, blob, task_path"
)
TYPES = {"idx": "integer", "blob": "blob", "checkpoint": "blob", "metadata": "json",
         "channel_versions": "json"}  # of the columns above; the others are varchar

# A raw checkpoint as read in the store thread: its row, {(channel, version): (type, bytes)},
# and its write rows. Deserialising it is left to the caller's thread.
Raw = tuple[tuple, dict[tuple[str, str], tuple[str, bytes | None]], list[tuple]]


@dataclass
class Listing:
    """One ``list`` call as a sequence of page reads (keyset paging, newest first), so a long
    history is neither read in one go nor holds the file for long."""

    decode: Callable[[Raw], CheckpointTuple]  # the saver's, run in the caller's thread
    where: list[str]
    params: list[Any]
    in_python: dict[str, Any]  # metadata filters SQL cannot compare exactly (None, dict, list)
    left: int | None
    done: bool = False
    after: tuple[str, str, str] | None = None  # (checkpoint_id, thread_id, ns) of the last row
    size: int = field(default=PAGE)

    def __post_init__(self) -> None:
        if self.left is not None and self.left <= 0:
            self.done = True

    def next_page(self) -> Callable[[Any], list[Raw]]:
        where, params = list(self.where), list(self.params)
        if self.after is not None:
            where.append("(checkpoint_id, thread_id, checkpoint_ns) < (?, ?, ?)")
            params += list(self.after)
        if self.left is not None and not self.in_python:
            self.size = min(PAGE, self.left)
        sql = (
            f"select {CP_COLS} from checkpoints"
            + (" where " + " and ".join(where) if where else "")
            + " order by checkpoint_id desc, thread_id desc, checkpoint_ns desc limit ?"
        )
        params.append(self.size)
        return lambda con: attach(con, con.execute(sql, params).fetchall())

    def take(self, page: list[Raw]) -> list[CheckpointTuple]:
        if len(page) < self.size:
            self.done = True
        if page:
            last = page[-1][0]
            self.after = (last[2], last[0], last[1])
        out = []
        for raw in page:
            tup = self.decode(raw)
            if any(tup.metadata.get(k) != v for k, v in self.in_python.items()):
                continue
            out.append(tup)
            if self.left is not None:
                self.left -= 1
                if self.left <= 0:
                    self.done = True
                    break
        return out


@dataclass(slots=True)
class Put:
    """One queued checkpoint: its row (``CP_COLS``) and its new values (``BLOB_COLS``)."""

    row: tuple
    blobs: list[tuple]
    verify: bool  # the saver could not tell that the id is new: check the file before writing
    ref: Any = None  # the saver's cached copy of the row, told the outcome of the check


@dataclass(slots=True)
class Writes:
    """One queued ``put_writes``: rows of ``WRITE_COLS``; ``replace`` for special writes."""

    rows: list[tuple]
    replace: bool


@dataclass(slots=True)
class Op:
    """A queued operation that is not a put (delete, copy, prune): run alone, in order."""

    fn: Callable[[Any], Any]
    future: cf.Future


# ------------------------------------------------------------ in the store thread
@dataclass(slots=True)
class Outcome:
    """What writing a segment found out about the puts the saver asked to ``verify``."""

    fresh: list[Put]  # their checkpoint id was new to the file: the cached copy is complete
    stale: list[Put]  # the file (or the segment, before the put) had rows of that id already
    latest: dict[tuple[str, str], str]  # (thread, ns) of those puts: newest id after the segment


def write_segment(con, items: Sequence[Put | Writes]) -> Outcome:
    """Write queued puts and writes (in queue order, no ``Op`` among them) in one transaction
    of a few bulk statements, and check the puts to ``verify`` (:class:`Outcome`).

    Values and writes are inserted plainly first: their keys are new but for a repeated put or
    put_writes, and skipping existing keys (an anti join) costs DuckDB three times as much. A
    key that exists fails the transaction, which is then done again skipping them."""
    try:
        with transaction(con):
            return _write_segment(con, items, careful=False)
    except duckdb.ConstraintException:
        with transaction(con):
            return _write_segment(con, items, careful=True)


def _write_segment(con, items: Sequence[Put | Writes], careful: bool) -> Outcome:
    checked = {p.row[:3] for p in items if isinstance(p, Put) and p.verify}
    existing: set[tuple] = set()
    latest: dict[tuple[str, str], str] = {}
    threads_checked = {k[:2] for k in checked}
    if checked:
        threads = [list(col) for col in zip(*threads_checked)]
        latest = {(t, n): c for t, n, c in con.execute(
            "select x.thread_id, x.checkpoint_ns, max(x.checkpoint_id) from checkpoints x "
            "join (select unnest(?::varchar[]) as t, unnest(?::varchar[]) as n) k "
            "on x.thread_id = k.t and x.checkpoint_ns = k.n group by all", threads).fetchall()}
        key, params = _source("thread_id, checkpoint_ns, checkpoint_id", list(checked))
        existing = set(con.execute(
            f"select * from {key} intersect (select thread_id, checkpoint_ns, checkpoint_id "
            "from checkpoints union select thread_id, checkpoint_ns, checkpoint_id "
            "from checkpoint_writes)", params).fetchall())
    fresh: list[Put] = []
    stale: list[Put] = []
    seen: set[tuple] = set()
    blobs: dict[tuple, tuple] = {}  # first value of a version wins, as "on conflict do nothing"
    rows: dict[tuple, tuple] = {}  # the last put of a checkpoint id wins
    writes: dict[tuple, tuple[tuple, bool]] = {}
    for item in items:
        if isinstance(item, Put):
            key = item.row[:3]
            if item.verify:
                (stale if key in existing or key in seen else fresh).append(item)
            if key[:2] in threads_checked and key[2] > latest.get(key[:2], ""):
                latest[key[:2]] = key[2]
            seen.add(key)
            rows[key] = item.row
            for blob in item.blobs:
                blobs.setdefault(blob[:4], blob)
        else:
            for w in item.rows:
                seen.add(w[:3])
                if item.replace or w[:5] not in writes:
                    writes[w[:5]] = (w, item.replace)
    add = (lambda t, c, w, r: _insert_new(con, t, c, w, r)) if careful else (
        lambda t, c, w, r: _insert(con, t, c, r))
    if blobs:
        add("checkpoint_blobs", BLOB_COLS, 4, list(blobs.values()))
    if rows:
        _delete(con, "checkpoints", CP_COLS, 3, list(rows))
        _insert(con, "checkpoints", CP_COLS, list(rows.values()))
    replaced = [w for w, replace in writes.values() if replace]
    if replaced:
        _delete(con, "checkpoint_writes", WRITE_COLS, 5, [w[:5] for w in replaced])
        _insert(con, "checkpoint_writes", WRITE_COLS, replaced)
    kept = [w for w, replace in writes.values() if not replace]
    if kept:
        add("checkpoint_writes", WRITE_COLS, 5, kept)
    return Outcome(fresh, stale, latest)


def _source(columns: str, rows: list[tuple]) -> tuple[str, list[list]]:
    """``rows`` as a select of one list parameter per column. Not a pandas frame, although
    DuckDB scans one faster: scanning Python objects is refused while the interpreter shuts
    down, which is when the last checkpoints of a process are written."""
    names = columns.split(", ")
    select = ", ".join(f"unnest(?::{TYPES.get(n, 'varchar')}[]) as {n}" for n in names)
    return f"(select {select})", [list(col) for col in zip(*rows)]


def _insert(con, table: str, columns: str, rows: list[tuple]) -> None:
    source, params = _source(columns, rows)
    con.execute(f"insert into {table} ({columns}) select {columns} from {source}", params)


def _insert_new(con, table: str, columns: str, width: int, rows: list[tuple]) -> None:
    """Rows whose key (the first ``width`` columns) is not in ``table`` yet: an anti join,
    cheaper in DuckDB than ``on conflict do nothing``."""
    on = " and ".join(f"t.{c} = f.{c}" for c in columns.split(", ")[:width])
    source, params = _source(columns, rows)
    con.execute(f"insert into {table} ({columns}) select f.* from {source} f "
                f"anti join {table} t on {on}", params)


def _delete(con, table: str, columns: str, width: int, keys: list[tuple]) -> None:
    names = ", ".join(columns.split(", ")[:width])
    source, params = _source(names, keys)
    on = " and ".join(f"{table}.{n} = k.{n}" for n in names.split(", "))
    con.execute(f"delete from {table} using {source} k where {on}", params)


def read(con, thread_id: str, ns: str, checkpoint_id: str | None) -> Raw | None:
    """One checkpoint with its values and writes; the thread's latest without an id."""
    where, params = "thread_id = ? and checkpoint_ns = ?", [thread_id, ns]
    if checkpoint_id:
        where, params = where + " and checkpoint_id = ?", params + [checkpoint_id]
    rows = con.execute(f"select {CP_COLS} from checkpoints where {where} "
                       "order by checkpoint_id desc limit 1", params).fetchall()
    return attach(con, rows)[0] if rows else None


def tx(fn: Callable[..., Any], *args: Any) -> Callable[[Any], Any]:
    """``fn(con, *args)`` as one transaction: a failed write leaves nothing behind."""

    def run(con) -> Any:
        with transaction(con):
            return fn(con, *args)

    return run


def marks(width: int, rows: int = 1) -> str:
    one = "(" + ", ".join("?" * width) + ")"
    return ", ".join([one] * rows)


def pointer(key: str) -> str:
    """A JSON pointer to a top-level metadata key; safe for any key, unlike '$.key'."""
    return "/" + key.replace("~", "~0").replace("/", "~1")


def metadata_clause(value: Any) -> str | None:
    """A typed SQL comparison of one metadata key with ``value`` (parameters: pointer,
    pointer, value), or None when only Python compares it the way LangGraph means."""
    if isinstance(value, bool):
        return "(json_type(metadata, ?) = 'BOOLEAN' and json_extract(metadata, ?)::boolean = ?)"
    if isinstance(value, (int, float)):
        return (
            "(json_type(metadata, ?) in ('BIGINT', 'UBIGINT', 'DOUBLE') "
            "and json_extract(metadata, ?)::double = ?)"
        )
    if isinstance(value, str):
        return "(json_type(metadata, ?) = 'VARCHAR' and json_extract_string(metadata, ?) = ?)"
    return None


def attach(con, rows: list[tuple]) -> list[Raw]:
    """Join the channel values and pending writes of ``rows`` (checkpoint rows), in two
    queries whatever the number of rows."""
    if not rows:
        return []
    keys = sorted(
        {(r[0], r[1], channel, str(version))
         for r in rows for channel, version in json.loads(r[7] or "{}").items()}
    )
    blobs: dict[tuple[str, str], dict] = {}
    if keys:
        t, n, c, v = (list(col) for col in zip(*keys))
        for thread_id, ns, channel, version, type_, data in con.execute(
            f"select {', '.join('b.' + c for c in BLOB_COLS.split(', '))} from checkpoint_blobs b "
            "join (select unnest(?::varchar[]) as t, unnest(?::varchar[]) as n, "
            "unnest(?::varchar[]) as c, unnest(?::varchar[]) as v) k "
            "on b.thread_id = k.t and b.checkpoint_ns = k.n "
            "and b.channel = k.c and b.version = k.v",
            [t, n, c, v],
        ).fetchall():
            blobs.setdefault((thread_id, ns), {})[(channel, version)] = (type_, data)
    writes: dict[tuple[str, str, str], list[tuple]] = {}
    t, n, c = ([r[i] for r in rows] for i in range(3))
    for thread_id, ns, checkpoint_id, *rest in con.execute(
        "select w.thread_id, w.checkpoint_ns, w.checkpoint_id, w.task_id, w.idx, w.channel, "
        "w.type, w.blob, w.task_path from checkpoint_writes w "
        "join (select unnest(?::varchar[]) as t, unnest(?::varchar[]) as n, "
        "unnest(?::varchar[]) as c) k "
        "on w.thread_id = k.t and w.checkpoint_ns = k.n and w.checkpoint_id = k.c",
        [t, n, c],
    ).fetchall():
        writes.setdefault((thread_id, ns, checkpoint_id), []).append(tuple(rest))
    return [(r, blobs.get((r[0], r[1]), {}), writes.get((r[0], r[1], r[2]), [])) for r in rows]


def delete_threads(con, threads: list[str]) -> None:
    for table in ("checkpoints", "checkpoint_writes", "checkpoint_blobs"):
        con.execute(
            f"delete from {table} where thread_id in (select unnest(?::varchar[]))", [threads]
        )


def delete_for_runs(con, run_ids: list[str]) -> None:
    doomed = con.execute(
        "select thread_id, checkpoint_ns, checkpoint_id from checkpoints "
        "where json_extract_string(metadata, '/run_id') in (select unnest(?::varchar[]))",
        [run_ids],
    ).fetchall()
    if doomed:
        _delete_checkpoints(con, doomed)


def keep_latest(con, threads: list[str]) -> None:
    latest = con.execute(
        "select thread_id, checkpoint_ns, max(checkpoint_id) from checkpoints "
        "where thread_id in (select unnest(?::varchar[])) group by thread_id, checkpoint_ns",
        [threads],
    ).fetchall()
    if not latest:
        return
    # A DeltaChannel rebuilds its value from the writes of the ancestors since its last
    # snapshot: dropping those ancestors would silently empty it. Refuse before deleting.
    t, n, c = ([r[i] for r in latest] for i in range(3))
    for thread_id, counters in con.execute(
        "select c.thread_id, c.metadata->'counters_since_delta_snapshot' from checkpoints c "
        "join (select unnest(?::varchar[]) as t, unnest(?::varchar[]) as n, "
        "unnest(?::varchar[]) as c) k "
        "on c.thread_id = k.t and c.checkpoint_ns = k.n and c.checkpoint_id = k.c",
        [t, n, c],
    ).fetchall():
        if counters and json.loads(counters):
            raise InvalidInput(
                f"prune(keep_latest) refused: the latest checkpoint of thread {thread_id!r} "
                "has delta channels that depend on older checkpoints; nothing was deleted. "
                "Use strategy='delete', or prune after the channels' next snapshot."
            )
    doomed = con.execute(
        "select c.thread_id, c.checkpoint_ns, c.checkpoint_id from checkpoints c "
        "join (select unnest(?::varchar[]) as t, unnest(?::varchar[]) as n, "
        "unnest(?::varchar[]) as c) k "
        "on c.thread_id = k.t and c.checkpoint_ns = k.n and c.checkpoint_id < k.c",
        [t, n, c],
    ).fetchall()
    if doomed:
        _delete_checkpoints(con, doomed)


def _delete_checkpoints(con, keys: list[tuple[str, str, str]]) -> None:
    """Delete checkpoints and their writes, then the values no remaining checkpoint uses."""
    t, n, c = ([k[i] for k in keys] for i in range(3))
    for table in ("checkpoints", "checkpoint_writes"):
        con.execute(
            f"delete from {table} using (select unnest(?::varchar[]) as t, "
            "unnest(?::varchar[]) as n, unnest(?::varchar[]) as c) k "
            f"where {table}.thread_id = k.t and {table}.checkpoint_ns = k.n "
            f"and {table}.checkpoint_id = k.c",
            [t, n, c],
        )
    threads = sorted(set(t))
    used = {
        (thread_id, ns, channel, str(version))
        for thread_id, ns, versions in con.execute(
            "select thread_id, checkpoint_ns, channel_versions from checkpoints "
            "where thread_id in (select unnest(?::varchar[]))",
            [threads],
        ).fetchall()
        for channel, version in json.loads(versions or "{}").items()
    }
    unused = [
        key
        for key in con.execute(
            "select thread_id, checkpoint_ns, channel, version from checkpoint_blobs "
            "where thread_id in (select unnest(?::varchar[]))",
            [threads],
        ).fetchall()
        if key not in used
    ]
    if unused:
        columns = [list(col) for col in zip(*unused)]
        con.execute(
            "delete from checkpoint_blobs using (select unnest(?::varchar[]) as t, "
            "unnest(?::varchar[]) as n, unnest(?::varchar[]) as c, unnest(?::varchar[]) as v) k "
            "where checkpoint_blobs.thread_id = k.t and checkpoint_blobs.checkpoint_ns = k.n "
            "and checkpoint_blobs.channel = k.c and checkpoint_blobs.version = k.v",
            columns,
        )


def copy_thread(con, source: str, target: str) -> None:
    for table, columns in (
        ("checkpoint_blobs", BLOB_COLS),
        ("checkpoint_writes", WRITE_COLS),
        ("checkpoints", CP_COLS),
    ):
        rest = columns.split(", ", 1)[1]  # every column but thread_id
        con.execute(
            f"insert or replace into {table} ({columns}) "
            f"select ? as thread_id, {rest} from {table} where thread_id = ?",
            [target, source],
        )
