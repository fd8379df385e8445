"""LangGraph checkpoints kept in the agentorch store.

A graph compiled with ``checkpointer=DuckDBSaver(store)`` records its state in the same
DuckDB file as the runs it belongs to, so one file holds everything a notebook or the
``duckdb`` CLI may want to look at (``select metadata->>'step' from checkpoints``), and the
state survives the process like the rest of a run.

The saver never touches DuckDB itself. Each operation is a function run in the store's
thread (``Store.call``), so it inherits the store's rules: short-lived connections, waiting
for a file another process holds, one writer per process. Serialising and deserialising
happen in the caller's thread instead, so the file is held only for the SQL.

Channel values are stored once per channel version (``checkpoint_blobs``), not once per
checkpoint: a large channel that does not change costs nothing in later checkpoints. For
that to be safe across forks (``update_state`` on an old checkpoint starts a branch whose
versions would repeat the numbers of the old branch), versions carry a random suffix.

Table and column names are documented in ``migrations._v2_checkpoints``.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    PendingWrite,
    SerializerProtocol,
    get_checkpoint_id,
    get_serializable_checkpoint_metadata,
    writes_sort_key,
)

from ..exceptions import InvalidInput, WrongLoop
from .sqlutil import transaction
from .store import Store

__all__ = ["DuckDBSaver"]

EMPTY = "empty"  # blob type of a channel that has a version but no value
PAGE = 100  # checkpoints read per store call while listing: the file is let go between pages

_CP_COLS = (
    "thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id, type, checkpoint, "
    "metadata, channel_versions"
)
_BLOB_COLS = "thread_id, checkpoint_ns, channel, version, type, blob"
_WRITE_COLS = (
    "thread_id, checkpoint_ns, checkpoint_id, task_id, idx, channel, type, blob, task_path"
)

# A raw checkpoint as read in the store thread: its row, {(channel, version): (type, bytes)},
# and its write rows. Deserialising it is left to the caller's thread.
Raw = tuple[tuple, dict[tuple[str, str], tuple[str, bytes | None]], list[tuple]]


class DuckDBSaver(BaseCheckpointSaver[str]):
    """A LangGraph checkpointer on an agentorch :class:`Store`.

    Use the async methods (``aget_tuple``, ``alist``, ``aput``, ...) on an event loop, as
    ``graph.ainvoke`` does. The sync methods work from threads without a running loop and
    refuse on one, because they would block it (use ``await graph.ainvoke`` in a notebook).
    """

    def __init__(self, store: Store, *, serde: SerializerProtocol | None = None) -> None:
        super().__init__(serde=serde)
        self.store = store

    def __repr__(self) -> str:
        return f"DuckDBSaver({self.store!r})"

    @classmethod
    @asynccontextmanager
    async def from_path(
        cls,
        path: str | os.PathLike,
        *,
        serde: SerializerProtocol | None = None,
        lock_timeout: float = 30.0,
    ) -> AsyncIterator[DuckDBSaver]:
        """A saver on the store of ``path`` (created if missing).

        The store is shared by everything in this process that uses the file, so leaving
        the block does not close it; the store lets go of the file whenever it is idle.
        """
        yield cls(Store.open(path, lock_timeout=lock_timeout), serde=serde)

    # ------------------------------------------------------------------ async API
    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """The checkpoint named by ``config``, or the thread's latest without a checkpoint_id."""
        return self._tuple(await self.store.call(self._get_fn(config)))

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        """Matching checkpoints, newest first, read a page at a time."""
        listing = self._listing(config, filter, before, limit)
        while not listing.done:
            for tup in listing.take(await self.store.call(listing.next_page())):
                yield tup

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """Store a checkpoint and the values of its new channel versions, in one transaction."""
        fn, stored = self._put_fn(config, checkpoint, metadata, new_versions)
        await self.store.call(fn)
        return stored

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        """Store a task's writes against a checkpoint; repeating a write changes nothing."""
        await self.store.call(self._put_writes_fn(config, writes, task_id, task_path))

    async def adelete_thread(self, thread_id: str) -> None:
        """Delete every checkpoint, write and value of a thread, in all namespaces."""
        await self.store.call(_tx(_delete_threads, [str(thread_id)]))

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Delete the checkpoints (and their writes) whose metadata names one of ``run_ids``."""
        if run_ids:
            await self.store.call(_tx(_delete_for_runs, [str(r) for r in run_ids]))

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Copy a thread's whole history (all namespaces, writes and values) to another id."""
        await self.store.call(_tx(_copy_thread, str(source_thread_id), str(target_thread_id)))

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """``keep_latest``: keep each namespace's newest checkpoint; ``delete``: drop all."""
        fn = self._prune_fn(thread_ids, strategy)
        if fn is not None:
            await self.store.call(fn)

    # ------------------------------------------------------------------- sync API
    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        self._refuse_on_loop("get_tuple")
        return self._tuple(self.store.call_sync(self._get_fn(config)))

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        self._refuse_on_loop("list")  # here, not in the generator: refuse at the call
        return self._pages(self._listing(config, filter, before, limit))

    def _pages(self, listing: _Listing) -> Iterator[CheckpointTuple]:
        while not listing.done:
            yield from listing.take(self.store.call_sync(listing.next_page()))

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        self._refuse_on_loop("put")
        fn, stored = self._put_fn(config, checkpoint, metadata, new_versions)
        self.store.call_sync(fn)
        return stored

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        self._refuse_on_loop("put_writes")
        self.store.call_sync(self._put_writes_fn(config, writes, task_id, task_path))

    def delete_thread(self, thread_id: str) -> None:
        self._refuse_on_loop("delete_thread")
        self.store.call_sync(_tx(_delete_threads, [str(thread_id)]))

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        self._refuse_on_loop("delete_for_runs")
        if run_ids:
            self.store.call_sync(_tx(_delete_for_runs, [str(r) for r in run_ids]))

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        self._refuse_on_loop("copy_thread")
        self.store.call_sync(_tx(_copy_thread, str(source_thread_id), str(target_thread_id)))

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        self._refuse_on_loop("prune")
        fn = self._prune_fn(thread_ids, strategy)
        if fn is not None:
            self.store.call_sync(fn)

    def get_next_version(self, current: str | int | float | None, channel: None = None) -> str:
        """``<32-digit counter>.<16 random digits>``: ordered by the counter, and unique
        across branches, since values are stored per (channel, version)."""
        n = 0 if current is None else int(str(current).split(".")[0])
        return f"{n + 1:032d}.{secrets.randbelow(10**16):016d}"

    # ------------------------------------------------------------- preparation
    @staticmethod
    def _refuse_on_loop(name: str) -> None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return
        raise WrongLoop(
            f"DuckDBSaver.{name}() would block the running event loop: "
            f"use `await saver.a{name}(...)` (and `await graph.ainvoke(...)` rather than "
            f"graph.invoke) here, or call {name}() from a thread without a running loop"
        )

    def _get_fn(self, config: RunnableConfig) -> Callable[[Any], Raw | None]:
        conf = config["configurable"]
        thread_id, ns = str(conf["thread_id"]), conf.get("checkpoint_ns", "")
        checkpoint_id = get_checkpoint_id(config)

        def get(con) -> Raw | None:
            if checkpoint_id:
                rows = con.execute(
                    f"select {_CP_COLS} from checkpoints "
                    "where thread_id = ? and checkpoint_ns = ? and checkpoint_id = ?",
                    [thread_id, ns, checkpoint_id],
                ).fetchall()
            else:
                rows = con.execute(
                    f"select {_CP_COLS} from checkpoints where thread_id = ? and checkpoint_ns = ? "
                    "order by checkpoint_id desc limit 1",
                    [thread_id, ns],
                ).fetchall()
            return _attach(con, rows)[0] if rows else None

        return get

    def _put_fn(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> tuple[Callable[[Any], None], RunnableConfig]:
        conf = config["configurable"]
        thread_id, ns = str(conf["thread_id"]), conf.get("checkpoint_ns", "")
        values = checkpoint["channel_values"]
        blobs: list[Any] = []
        for channel, version in new_versions.items():
            type_, data = (
                self.serde.dumps_typed(values[channel]) if channel in values else (EMPTY, None)
            )
            blobs += [thread_id, ns, channel, str(version), type_, data]
        type_, data = self.serde.dumps_typed({**checkpoint, "channel_values": {}})
        row = [
            thread_id,
            ns,
            checkpoint["id"],
            conf.get("checkpoint_id"),
            type_,
            data,
            json.dumps(
                get_serializable_checkpoint_metadata(config, metadata),
                ensure_ascii=False,
                default=str,
            ),
            json.dumps(checkpoint["channel_versions"]),
        ]

        def put(con) -> None:
            if blobs:
                con.execute(
                    f"insert into checkpoint_blobs ({_BLOB_COLS}) values "
                    f"{_marks(6, len(blobs) // 6)} on conflict do nothing",
                    blobs,
                )
            # Delete-then-insert rather than "insert or replace": DuckDB's upsert costs about
            # five plain inserts (measured with DuckDB 2.0.1), and a put replaces rarely.
            con.execute(
                "delete from checkpoints where thread_id = ? and checkpoint_ns = ? "
                "and checkpoint_id = ?",
                row[:3],
            )
            con.execute(f"insert into checkpoints ({_CP_COLS}) values {_marks(8)}", row)

        stored: RunnableConfig = {
            "configurable": {
                "thread_id": thread_id, "checkpoint_ns": ns, "checkpoint_id": checkpoint["id"]
            }
        }
        return _tx(put), stored

    def _put_writes_fn(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str,
    ) -> Callable[[Any], None]:
        conf = config["configurable"]
        key = [str(conf["thread_id"]), conf.get("checkpoint_ns", ""), str(conf["checkpoint_id"])]
        params: list[Any] = []
        for i, (channel, value) in enumerate(writes):
            params += [*key, task_id, WRITES_IDX_MAP.get(channel, i), channel,
                       *self.serde.dumps_typed(value), task_path]
        # Special writes (errors, interrupts, resumes) replace their earlier selves; a task's
        # ordinary writes are stored once, so a retried put_writes leaves them as they were.
        replace = all(channel in WRITES_IDX_MAP for channel, _ in writes)
        verb, tail = ("insert or replace", "") if replace else ("insert", " on conflict do nothing")
        sql = f"{verb} into checkpoint_writes ({_WRITE_COLS}) values {_marks(9, len(writes))}{tail}"

        def put_writes(con) -> None:
            if params:
                con.execute(sql, params)

        return put_writes

    def _prune_fn(self, thread_ids: Sequence[str], strategy: str) -> Callable[[Any], None] | None:
        if strategy not in ("keep_latest", "delete"):
            raise InvalidInput(
                f"unknown prune strategy {strategy!r}: use 'keep_latest' or 'delete'"
            )
        threads = [str(t) for t in thread_ids]
        if not threads:
            return None
        return _tx(_delete_threads if strategy == "delete" else _keep_latest, threads)

    def _listing(
        self,
        config: RunnableConfig | None,
        filter: dict[str, Any] | None,
        before: RunnableConfig | None,
        limit: int | None,
    ) -> _Listing:
        where: list[str] = []
        params: list[Any] = []
        if config is not None:
            conf = config["configurable"]
            if conf.get("thread_id") is not None:
                where.append("thread_id = ?")
                params.append(str(conf["thread_id"]))
            if conf.get("checkpoint_ns") is not None:
                where.append("checkpoint_ns = ?")
                params.append(conf["checkpoint_ns"])
            if checkpoint_id := get_checkpoint_id(config):
                where.append("checkpoint_id = ?")
                params.append(checkpoint_id)
        if before is not None and (before_id := get_checkpoint_id(before)):
            where.append("checkpoint_id < ?")
            params.append(before_id)
        in_python: dict[str, Any] = {}
        for key, value in (filter or {}).items():
            clause = _metadata_clause(value)
            if clause is None:
                in_python[key] = value
            else:
                where.append(clause)
                params += [_pointer(key), _pointer(key), value]
        return _Listing(self, where, params, in_python, limit)

    def _tuple(self, raw: Raw | None) -> CheckpointTuple | None:
        if raw is None:
            return None
        row, blobs, writes = raw
        thread_id, ns, checkpoint_id, parent_id, type_, data, metadata, _ = row
        checkpoint = self.serde.loads_typed((type_, data))
        values = {}
        for channel, version in checkpoint["channel_versions"].items():
            blob = blobs.get((channel, str(version)))
            if blob is not None and blob[0] != EMPTY:
                values[channel] = self.serde.loads_typed(blob)
        checkpoint["channel_values"] = values
        pending: list[PendingWrite] = [
            (task_id, channel, self.serde.loads_typed((w_type, w_data)))
            for task_id, _idx, channel, w_type, w_data, _path in sorted(
                writes, key=lambda w: writes_sort_key(w[5], w[0], w[1])
            )
        ]
        return CheckpointTuple(
            config={"configurable": {"thread_id": thread_id, "checkpoint_ns": ns,
                                     "checkpoint_id": checkpoint_id}},
            checkpoint=checkpoint,
            metadata=json.loads(metadata) if metadata else {},
            parent_config=(
                {"configurable": {"thread_id": thread_id, "checkpoint_ns": ns,
                                  "checkpoint_id": parent_id}}
                if parent_id
                else None
            ),
            pending_writes=pending,
        )


@dataclass
class _Listing:
    """One ``list`` call as a sequence of page reads (keyset paging, newest first), so a long
    history is neither read in one go nor holds the file for long."""

    saver: DuckDBSaver
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
            f"select {_CP_COLS} from checkpoints"
            + (" where " + " and ".join(where) if where else "")
            + " order by checkpoint_id desc, thread_id desc, checkpoint_ns desc limit ?"
        )
        params.append(self.size)
        return lambda con: _attach(con, con.execute(sql, params).fetchall())

    def take(self, page: list[Raw]) -> list[CheckpointTuple]:
        if len(page) < self.size:
            self.done = True
        if page:
            last = page[-1][0]
            self.after = (last[2], last[0], last[1])
        out = []
        for raw in page:
            tup = self.saver._tuple(raw)
            if any(tup.metadata.get(k) != v for k, v in self.in_python.items()):
                continue
            out.append(tup)
            if self.left is not None:
                self.left -= 1
                if self.left <= 0:
                    self.done = True
                    break
        return out


# ------------------------------------------------------------ in the store thread
def _tx(fn: Callable[..., Any], *args: Any) -> Callable[[Any], Any]:
    """``fn(con, *args)`` as one transaction: a failed write leaves nothing behind."""

    def run(con) -> Any:
        with transaction(con):
            return fn(con, *args)

    return run


def _marks(width: int, rows: int = 1) -> str:
    one = "(" + ", ".join("?" * width) + ")"
    return ", ".join([one] * rows)


def _pointer(key: str) -> str:
    """A JSON pointer to a top-level metadata key; safe for any key, unlike '$.key'."""
    return "/" + key.replace("~", "~0").replace("/", "~1")


def _metadata_clause(value: Any) -> str | None:
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


def _attach(con, rows: list[tuple]) -> list[Raw]:
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
            f"select {', '.join('b.' + c for c in _BLOB_COLS.split(', '))} from checkpoint_blobs b "
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


def _delete_threads(con, threads: list[str]) -> None:
    for table in ("checkpoints", "checkpoint_writes", "checkpoint_blobs"):
        con.execute(
            f"delete from {table} where thread_id in (select unnest(?::varchar[]))", [threads]
        )


def _delete_for_runs(con, run_ids: list[str]) -> None:
    doomed = con.execute(
        "select thread_id, checkpoint_ns, checkpoint_id from checkpoints "
        "where json_extract_string(metadata, '/run_id') in (select unnest(?::varchar[]))",
        [run_ids],
    ).fetchall()
    if doomed:
        _delete_checkpoints(con, doomed)


def _keep_latest(con, threads: list[str]) -> None:
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


def _copy_thread(con, source: str, target: str) -> None:
    for table, columns in (
        ("checkpoint_blobs", _BLOB_COLS),
        ("checkpoint_writes", _WRITE_COLS),
        ("checkpoints", _CP_COLS),
    ):
        rest = columns.split(", ", 1)[1]  # every column but thread_id
        con.execute(
            f"insert or replace into {table} ({columns}) "
            f"select ? as thread_id, {rest} from {table} where thread_id = ?",
            [target, source],
        )
