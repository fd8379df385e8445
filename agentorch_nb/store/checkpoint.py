"""LangGraph checkpoints kept in the agentorch store.

A graph compiled with ``checkpointer=DuckDBSaver(store)`` records its state in the same
DuckDB file as the runs it belongs to, so one file holds everything a notebook or the
``duckdb`` CLI may want to look at (``select metadata->>'step' from checkpoints``), and the
state survives the process like the rest of a run.

The saver never touches DuckDB itself. Each operation is a function run in the store's
thread (``Store.call``), so it inherits the store's rules: short-lived connections, waiting
for a file another process holds, one writer per process. Serialising and deserialising
happen in the caller's thread instead, so the file is held only for the SQL (most of which
is in ``checkpoint_sql.py``).

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
from . import checkpoint_sql as sql
from .store import Store

__all__ = ["DuckDBSaver"]

EMPTY = "empty"  # blob type of a channel that has a version but no value


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
        await self.store.call(sql.tx(sql.delete_threads, [str(thread_id)]))

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Delete the checkpoints (and their writes) whose metadata names one of ``run_ids``."""
        if run_ids:
            await self.store.call(sql.tx(sql.delete_for_runs, [str(r) for r in run_ids]))

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Copy a thread's whole history (all namespaces, writes and values) to another id."""
        await self.store.call(sql.tx(sql.copy_thread, str(source_thread_id), str(target_thread_id)))

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

    def _pages(self, listing: sql.Listing) -> Iterator[CheckpointTuple]:
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
        self.store.call_sync(sql.tx(sql.delete_threads, [str(thread_id)]))

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        self._refuse_on_loop("delete_for_runs")
        if run_ids:
            self.store.call_sync(sql.tx(sql.delete_for_runs, [str(r) for r in run_ids]))

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        self._refuse_on_loop("copy_thread")
        self.store.call_sync(sql.tx(sql.copy_thread, str(source_thread_id), str(target_thread_id)))

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

    def _get_fn(self, config: RunnableConfig) -> Callable[[Any], sql.Raw | None]:
        conf = config["configurable"]
        thread_id, ns = str(conf["thread_id"]), conf.get("checkpoint_ns", "")
        checkpoint_id = get_checkpoint_id(config)

        def get(con) -> sql.Raw | None:
            if checkpoint_id:
                rows = con.execute(
                    f"select {sql.CP_COLS} from checkpoints "
                    "where thread_id = ? and checkpoint_ns = ? and checkpoint_id = ?",
                    [thread_id, ns, checkpoint_id],
                ).fetchall()
            else:
                rows = con.execute(
                    f"select {sql.CP_COLS} from checkpoints "
                    "where thread_id = ? and checkpoint_ns = ? order by checkpoint_id desc limit 1",
                    [thread_id, ns],
                ).fetchall()
            return sql.attach(con, rows)[0] if rows else None

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
                    f"insert into checkpoint_blobs ({sql.BLOB_COLS}) values "
                    f"{sql.marks(6, len(blobs) // 6)} on conflict do nothing",
                    blobs,
                )
            # Delete-then-insert rather than "insert or replace": DuckDB's upsert costs about
            # five plain inserts (measured with DuckDB 2.0.1), and a put replaces rarely.
            con.execute(
                "delete from checkpoints where thread_id = ? and checkpoint_ns = ? "
                "and checkpoint_id = ?",
                row[:3],
            )
            con.execute(f"insert into checkpoints ({sql.CP_COLS}) values {sql.marks(8)}", row)

        stored: RunnableConfig = {
            "configurable": {
                "thread_id": thread_id, "checkpoint_ns": ns, "checkpoint_id": checkpoint["id"]
            }
        }
        return sql.tx(put), stored

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
        statement = (f"{verb} into checkpoint_writes ({sql.WRITE_COLS}) "
                     f"values {sql.marks(9, len(writes))}{tail}")

        def put_writes(con) -> None:
            if params:
                con.execute(statement, params)

        return put_writes

    def _prune_fn(self, thread_ids: Sequence[str], strategy: str) -> Callable[[Any], None] | None:
        if strategy not in ("keep_latest", "delete"):
            raise InvalidInput(
                f"unknown prune strategy {strategy!r}: use 'keep_latest' or 'delete'"
            )
        threads = [str(t) for t in thread_ids]
        if not threads:
            return None
        return sql.tx(sql.delete_threads if strategy == "delete" else sql.keep_latest, threads)

    def _listing(
        self,
        config: RunnableConfig | None,
        filter: dict[str, Any] | None,
        before: RunnableConfig | None,
        limit: int | None,
    ) -> sql.Listing:
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
            clause = sql.metadata_clause(value)
            if clause is None:
                in_python[key] = value
            else:
                where.append(clause)
                params += [sql.pointer(key), sql.pointer(key), value]
        return sql.Listing(self._tuple, where, params, in_python, limit)

    def _tuple(self, raw: sql.Raw | None) -> CheckpointTuple | None:
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
