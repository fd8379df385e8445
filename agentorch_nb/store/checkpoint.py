"""LangGraph checkpoints kept in the agentorch store.

A graph compiled with ``checkpointer=DuckDBSaver(store)`` records its state in the same
DuckDB file as the runs it belongs to, so one file holds everything a notebook or the
``duckdb`` CLI may want to look at (``select metadata->>'step' from checkpoints``), and the
state survives the process like the rest of a run.

The saver never touches DuckDB itself, and a put does not wait for it: serialising happens
in the caller's thread, then the rows join the store's batches through the store's
checkpoint journal (``checkpoint_cache.py``), which writes everything queued in one
transaction per batch in the store's thread, and answers gets of what this process put or
read from memory, in LRU order within ``cache_bytes``. A get sees every put made before it
(read-your-writes), ``await store.flush()`` after a put returns once it is on disk, and what
cannot be written yet (another process holds the file) stays queued in memory until it can.
A crash loses only what was put since the last write committed. The write is queued with
the first put and runs as soon as the store's thread is free, not after the store's 50 ms
linger: at a worker's pace (one checkpoint and one task's writes per LLM round trip) that is
the step being taken, which the engine runs again anyway when it retries the attempt. Under a
flood of puts the queue trails by the time needed to write it (about 0.2 ms a graph step),
and while another process holds the file it keeps everything put since.

Channel values are stored once per channel version (``checkpoint_blobs``), not once per
checkpoint: a large channel that does not change costs nothing in later checkpoints. For
that to be safe across forks (``update_state`` on an old checkpoint starts a branch whose
versions would repeat the numbers of the old branch), versions carry a random suffix.

Table and column names are documented in ``migrations._v2_checkpoints``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
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
from .checkpoint_cache import DEFAULT_CACHE_BYTES, journal
from .store import Store

__all__ = ["DuckDBSaver", "DEFAULT_CACHE_BYTES"]

EMPTY = "empty"  # blob type of a channel that has a version but no value


class DuckDBSaver(BaseCheckpointSaver[str]):
    """A LangGraph checkpointer on an agentorch :class:`Store`.

    Use the async methods (``aget_tuple``, ``alist``, ``aput``, ...) on an event loop, as
    ``graph.ainvoke`` does. The sync methods work from threads without a running loop and
    refuse on one, because a read may have to wait for the file (use ``await graph.ainvoke``
    in a notebook). Every saver on one store shares the store's queue and cache; ``cache_bytes``
    sets the cache's bound (64 MiB unless given).
    """

    def __init__(self, store: Store, *, serde: SerializerProtocol | None = None,
                 cache_bytes: int | None = None) -> None:
        super().__init__(serde=serde)
        self.store = store
        self.journal = journal(store, cache_bytes)

    def __repr__(self) -> str:
        return f"DuckDBSaver({self.store!r})"

    @property
    def cached_bytes(self) -> int:
        """Bytes of checkpoints, values and writes the cache holds now (at most cache_bytes,
        or the newest checkpoint of one thread if that alone is larger)."""
        return self.journal.size

    @property
    def queued(self) -> int:
        """Puts, writes and other operations not committed to the file yet."""
        return len(self.journal.queue)

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
        key, cid = self._key(config), get_checkpoint_id(config)
        found, raw, stamp = self.journal.lookup(key, cid)
        if not found:
            raw = await self.store.call(self.journal.drained(self._read_fn(key, cid)))
            self.journal.learn(key, cid, raw, stamp)
        return self._tuple(raw)

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
            page = self.journal.drained(listing.next_page())
            for tup in listing.take(await self.store.call(page)):
                yield tup

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """Queue a checkpoint and the values of its new channel versions (one transaction
        with whatever else the batch holds); readable at once."""
        return self._put(config, checkpoint, metadata, new_versions)

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        """Queue a task's writes against a checkpoint; repeating a write changes nothing."""
        self._put_writes(config, writes, task_id, task_path)

    async def adelete_thread(self, thread_id: str) -> None:
        """Delete every checkpoint, write and value of a thread, in all namespaces."""
        await asyncio.wrap_future(self._delete_thread(thread_id))

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Delete the checkpoints (and their writes) whose metadata names one of ``run_ids``."""
        if run_ids:
            await asyncio.wrap_future(self._delete_for_runs(run_ids))

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Copy a thread's whole history (all namespaces, writes and values) to another id."""
        await asyncio.wrap_future(self._copy_thread(source_thread_id, target_thread_id))

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """``keep_latest``: keep each namespace's newest checkpoint; ``delete``: drop all."""
        fut = self._prune(thread_ids, strategy)
        if fut is not None:
            await asyncio.wrap_future(fut)

    # ------------------------------------------------------------------- sync API
    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        self._refuse_on_loop("get_tuple")
        key, cid = self._key(config), get_checkpoint_id(config)
        found, raw, stamp = self.journal.lookup(key, cid)
        if not found:
            raw = self.store.call_sync(self.journal.drained(self._read_fn(key, cid)))
            self.journal.learn(key, cid, raw, stamp)
        return self._tuple(raw)

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
            yield from listing.take(
                self.store.call_sync(self.journal.drained(listing.next_page())))

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        self._refuse_on_loop("put")
        return self._put(config, checkpoint, metadata, new_versions)

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        self._refuse_on_loop("put_writes")
        self._put_writes(config, writes, task_id, task_path)

    def _put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        conf = config["configurable"]
        thread_id, ns = str(conf["thread_id"]), conf.get("checkpoint_ns", "")
        values = checkpoint["channel_values"]
        blobs: list[tuple] = []
        for channel, version in new_versions.items():
            type_, data = (
                self.serde.dumps_typed(values[channel]) if channel in values else (EMPTY, None)
            )
            blobs.append((thread_id, ns, channel, str(version), type_, data))
        type_, data = self.serde.dumps_typed({**checkpoint, "channel_values": {}})
        versions = {ch: str(v) for ch, v in checkpoint["channel_versions"].items()}
        row = (
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
        )
        self.journal.put(row, versions, blobs)
        return {"configurable": {"thread_id": thread_id, "checkpoint_ns": ns,
                                 "checkpoint_id": checkpoint["id"]}}

    def _put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str,
    ) -> None:
        if not writes:
            return
        conf = config["configurable"]
        key = (str(conf["thread_id"]), conf.get("checkpoint_ns", ""))
        cid = str(conf["checkpoint_id"])
        rows = [(*key, cid, task_id, WRITES_IDX_MAP.get(channel, i), channel,
                 *self.serde.dumps_typed(value), task_path)
                for i, (channel, value) in enumerate(writes)]
        # Special writes (errors, interrupts, resumes) replace their earlier selves; a task's
        # ordinary writes are stored once, so a retried put_writes leaves them as they were.
        replace = all(channel in WRITES_IDX_MAP for channel, _ in writes)
        self.journal.put_writes(key, cid, rows, replace)

    def delete_thread(self, thread_id: str) -> None:
        self._refuse_on_loop("delete_thread")
        self._delete_thread(thread_id).result()

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        self._refuse_on_loop("delete_for_runs")
        if run_ids:
            self._delete_for_runs(run_ids).result()

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        self._refuse_on_loop("copy_thread")
        self._copy_thread(source_thread_id, target_thread_id).result()

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        self._refuse_on_loop("prune")
        fut = self._prune(thread_ids, strategy)
        if fut is not None:
            fut.result()

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

    @staticmethod
    def _key(config: RunnableConfig) -> tuple[str, str]:
        conf = config["configurable"]
        return str(conf["thread_id"]), conf.get("checkpoint_ns", "")

    @staticmethod
    def _read_fn(key: tuple[str, str], cid: str | None) -> Callable[[Any], sql.Raw | None]:
        return lambda con: sql.read(con, key[0], key[1], cid)

    def _delete_thread(self, thread_id: str) -> cf.Future:
        threads = [str(thread_id)]
        return self.journal.operation(lambda con: sql.delete_threads(con, threads), threads)

    def _delete_for_runs(self, run_ids: Sequence[str]) -> cf.Future:
        runs = [str(r) for r in run_ids]
        # Which threads the runs' checkpoints are on is in the metadata: forget every thread.
        return self.journal.operation(lambda con: sql.delete_for_runs(con, runs), None)

    def _copy_thread(self, source: str, target: str) -> cf.Future:
        s, t = str(source), str(target)
        return self.journal.operation(lambda con: sql.copy_thread(con, s, t), [t])

    def _prune(self, thread_ids: Sequence[str], strategy: str) -> cf.Future | None:
        if strategy not in ("keep_latest", "delete"):
            raise InvalidInput(
                f"unknown prune strategy {strategy!r}: use 'keep_latest' or 'delete'"
            )
        threads = [str(t) for t in thread_ids]
        if not threads:
            return None
        fn = sql.delete_threads if strategy == "delete" else sql.keep_latest
        return self.journal.operation(lambda con: fn(con, threads), threads)

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
