"""The checkpointer's queue and cache: puts join the store's batches, gets are served from memory.

One :class:`Journal` per :class:`Store` in a process, shared by every ``DuckDBSaver`` on it,
holds checkpoints as the serialised rows that go to the file (``checkpoint_sql.Raw``):

- **queue.** A put or put_writes appends its rows to the journal and returns; the first one
  since the last write queues one call in the store thread (``Store.submit``) that writes
  everything queued by then in one transaction (:func:`checkpoint_sql.write_segment`). Deletes,
  copies and prunes are queued the same way, so every operation reaches the file in the
  order it was made. Items leave the queue only once their transaction has committed: a write
  the file refuses (another process holds it: the store puts the call back and retries it) or
  that fails otherwise (logged) is done again whole, with the next one, and ``await
  store.flush()`` after a put returns once the put is on disk, since the write call was queued
  before the flush. At exit the queue is written before DuckDB's own exit handler runs.
- **read-your-writes.** Anything that reads the file through the journal writes the queue
  first, in the store thread, so it sees every put made before it; the cache sees them at once.
- **cache.** Checkpoints this process put or read are kept per (thread, namespace), with their
  values and pending writes, least recently used thread first out once they take more than
  ``max_bytes`` (then the oldest checkpoints of the one thread left, never its latest). A get
  is answered from it when it holds the checkpoint asked for (or knows the thread's latest
  one) and knows the checkpoint's writes are all there; anything else is read from the file
  and remembered. This is consistent because a thread's checkpoints are written by one
  process only (the engine that drives the run; two engines on one run are refused
  elsewhere): what another process writes to a thread this one has cached is not seen here,
  which no part of agentorch does.
- **new ids.** A checkpoint put under an id newer than the latest one known for its thread
  cannot have rows in the file yet, so its cached copy is complete at once (LangGraph makes
  time-ordered ids and reads a thread's latest before it puts). Any other put is checked in
  the store thread as it is written (did the file hold that id already? which is the thread's
  newest id?) and served from the cache only afterwards, or dropped from it if it was.
"""

from __future__ import annotations

import atexit
import collections
import concurrent.futures as cf
import json
import logging
import threading
import weakref
from collections.abc import Callable
from typing import Any

import duckdb  # noqa: F401 - imported before the exit handler below is registered

from ..exceptions import InvalidInput, StoreBusy
from . import checkpoint_sql as sql
from .batch import settle
from .sharing import lock_error
from .store import Store

log = logging.getLogger("agentorch_nb.checkpoint")

DEFAULT_CACHE_BYTES = 64 * 2**20
SEGMENT_ITEMS = 1000  # queued items per transaction: bounds how long one write holds the GIL
ROW_OVERHEAD = 200  # bytes counted per cached row or value besides its data

Key = tuple[str, str]  # (thread_id, checkpoint_ns)


class Row:
    """A cached checkpoint: its ``CP_COLS`` row, {channel: version} and its writes."""

    __slots__ = ("row", "versions", "writes", "exact", "size")

    def __init__(self, row: tuple, versions: dict[str, str], writes: dict, exact: bool) -> None:
        self.row, self.versions, self.writes, self.exact = row, versions, writes, exact
        self.size = len(row[5] or b"") + len(row[6] or "") + ROW_OVERHEAD + sum(
            len(w[4] or b"") + ROW_OVERHEAD for w in writes.values())


class Entry:
    """The cached part of one (thread, namespace)."""

    __slots__ = ("rows", "blobs", "latest", "latest_known", "max_put", "mutations", "size",
                 "foreign")

    def __init__(self) -> None:
        self.rows: dict[str, Row] = {}
        self.blobs: dict[tuple[str, str], tuple[str, bytes | None]] = {}
        self.latest: str | None = None  # newest checkpoint id, when latest_known
        self.latest_known = False
        self.max_put: str | None = None  # newest id put through this entry
        self.mutations = 0
        self.size = 0
        self.foreign: set[str] = set()  # ids that got writes while their row was not cached


class Journal:
    """The queue and cache of one store; use :func:`journal` to get the store's one."""

    def __init__(self, store: Store, max_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self._store = weakref.ref(store)  # the journal must not keep a dropped store alive
        self.max_bytes = max_bytes
        self.lock = threading.RLock()
        self.queue: collections.deque[sql.Put | sql.Writes | sql.Op] = collections.deque()
        self.entries: collections.OrderedDict[Key, Entry] = collections.OrderedDict()
        self.size = 0
        self.generation = 0  # bumped whenever entries are dropped: in-flight reads then don't cache
        self.writer: cf.Future | None = None  # the queued write call that has not started yet

    @property
    def store(self) -> Store:
        store = self._store()
        if store is None:
            raise InvalidInput("the store of this checkpointer is gone")
        return store

    # --------------------------------------------------------------- the queue
    def put(self, row: tuple, versions: dict[str, str], blobs: list[tuple]) -> None:
        """Queue a checkpoint (``CP_COLS`` row and ``BLOB_COLS`` values) and cache it."""
        key, cid = (row[0], row[1]), row[2]
        with self.lock:
            self._open()
            e = self._entry(key)
            old = e.rows.get(cid)
            new_id = e.latest_known and (e.latest is None or cid > e.latest)
            exact = (old.exact if old is not None else new_id and cid not in e.foreign)
            cached = Row(row, versions, dict(old.writes) if old is not None else {}, exact)
            self._set_row(e, cid, cached)
            for blob in blobs:
                if blob[2:4] not in e.blobs:
                    e.blobs[blob[2:4]] = blob[4:]
                    self._grow(e, len(blob[5] or b"") + ROW_OVERHEAD)
            if new_id:
                e.latest = cid
            if e.max_put is None or cid > e.max_put:
                e.max_put = cid
            self.queue.append(sql.Put(row, blobs, not exact, cached))
            self._shrink()
            self._ensure_writer()

    def put_writes(self, key: Key, cid: str, rows: list[tuple], replace: bool) -> None:
        """Queue a task's writes (``WRITE_COLS`` rows) against checkpoint ``cid``."""
        with self.lock:
            self._open()
            e = self._entry(key)
            cached = e.rows.get(cid)
            if cached is None:
                e.foreign.add(cid)
            else:
                for w in rows:
                    k = (w[3], w[4])
                    if replace or k not in cached.writes:
                        old = cached.writes.get(k)
                        cached.writes[k] = w[3:]
                        grown = len(w[7] or b"") - (len(old[4] or b"") if old else -ROW_OVERHEAD)
                        cached.size += grown
                        self._grow(e, grown)
            self.queue.append(sql.Writes(rows, replace))
            self._shrink()
            self._ensure_writer()

    def operation(self, fn: Callable[[Any], Any], threads: list[str] | None) -> cf.Future:
        """Queue ``fn(con)`` (its own transaction) after every put before it; forget the cached
        ``threads`` first (all of them for None). The future has its outcome."""
        future: cf.Future = cf.Future()
        with self.lock:
            self._open()
            doomed = list(self.entries) if threads is None else [
                k for k in self.entries if k[0] in threads]
            for k in doomed:
                self._drop(k)
            self.queue.append(sql.Op(fn, future))
            self._ensure_writer()
        return future

    def write_soon(self) -> None:
        """Make sure a write of the queue is on its way to the store thread."""
        with self.lock:
            if self.queue:
                self._ensure_writer()

    def bound(self, max_bytes: int) -> None:
        """Keep the cache within ``max_bytes`` from now on."""
        with self.lock:
            self.max_bytes = max_bytes
            self._shrink()

    def drained(self, fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
        """``fn`` preceded by writing the queue: a read that sees every put made before it."""

        def read(con) -> Any:
            self.drain(con)
            return fn(con)

        return read

    def drain(self, con) -> None:
        """Write the queue, in order, in the store thread. Items leave it once committed."""
        while True:
            with self.lock:
                if not self.queue:
                    return
                head = self.queue[0]
                segment: list[Any] = []
                if not isinstance(head, sql.Op):
                    for item in self.queue:
                        if isinstance(item, sql.Op) or len(segment) >= SEGMENT_ITEMS:
                            break
                        segment.append(item)
            if segment:
                outcome = sql.write_segment(con, segment)
                with self.lock:
                    for _ in segment:
                        self.queue.popleft()
                    self._checked(outcome)
                continue
            if not head.future.cancelled():
                try:
                    result = sql.tx(head.fn)(con)
                except Exception as exc:  # noqa: BLE001 - the caller of the operation gets it
                    if lock_error(exc):
                        raise  # the store puts the call back: the operation stays first
                    settle(head.future, exc=exc)
                else:
                    settle(head.future, result)
            with self.lock:
                self.queue.popleft()

    def _ensure_writer(self) -> None:
        """Make sure one write call is queued in the store thread (under the lock)."""
        if self.writer is None:
            self.writer = self.store.submit(self._write)
            self.writer.add_done_callback(self._written)

    def _write(self, con) -> None:
        with self.lock:
            self.writer = None  # puts from now on need a call of their own
        self.drain(con)

    def _written(self, future: cf.Future) -> None:
        if future.cancelled() or future.exception() is None:
            return
        exc = future.exception()
        with self.lock:
            if self.writer is future:
                self.writer = None  # it never started: the queue needs another call
            if not self.queue:
                return
            if isinstance(exc, StoreBusy) and not self.store.closed:
                self._ensure_writer()  # the store gave up waiting for the file; the queue does not
                return
            log.error("writing %d queued checkpoint items to %s failed (%s); they stay queued "
                      "and are written with the next checkpoint", len(self.queue), self.store, exc,
                      exc_info=exc)

    def _open(self) -> None:
        if self.store.closed:
            raise InvalidInput(f"{self.store!r} is closed: checkpoints can no longer be saved")

    # --------------------------------------------------------------- the cache
    def lookup(self, key: Key, cid: str | None) -> tuple[bool, sql.Raw | None, tuple]:
        """(found, raw checkpoint or None, stamp for :meth:`learn`) from the cache alone."""
        with self.lock:
            e = self.entries.get(key)
            stamp = (self.generation, e, e.mutations if e is not None else 0)
            if e is None:
                return False, None, stamp
            self.entries.move_to_end(key)
            if e.latest_known and (cid is None or e.latest is None or cid > e.latest):
                if cid is not None or e.latest is None:
                    return True, None, stamp  # newer than anything in the thread: absent
                cid = e.latest
            cached = e.rows.get(cid) if cid is not None else None
            if cached is None or not cached.exact:
                return False, None, stamp
            blobs = {}
            for channel_version in cached.versions.items():
                blob = e.blobs.get(channel_version)
                if blob is None:
                    return False, None, stamp
                blobs[channel_version] = blob
            return True, (cached.row, blobs, list(cached.writes.values())), stamp

    def learn(self, key: Key, cid: str | None, raw: sql.Raw | None, stamp: tuple) -> None:
        """Cache what a read of the file returned, unless the thread changed meanwhile."""
        generation, before, mutations = stamp
        with self.lock:
            e = self.entries.get(key)
            if self.generation != generation or e is not before or (
                    e is not None and e.mutations != mutations):
                return
            if e is None:
                if raw is None and cid is not None:
                    return
                e = self.entries[key] = Entry()
            if raw is not None:
                row, blobs, writes = raw
                for channel_version, blob in blobs.items():
                    old = e.blobs.get(channel_version)
                    e.blobs[channel_version] = blob
                    self._grow(e, len(blob[1] or b"") - (
                        len(old[1] or b"") if old else -ROW_OVERHEAD))
                writes_by_key = {(w[0], w[1]): w for w in writes}
                self._set_row(e, row[2], Row(row, versions(row), writes_by_key, True))
                e.foreign.discard(row[2])
            if cid is None:
                e.latest_known, e.latest = True, raw[0][2] if raw is not None else None
            self._shrink()

    def _entry(self, key: Key) -> Entry:
        e = self.entries.get(key)
        if e is None:
            e = self.entries[key] = Entry()
        else:
            self.entries.move_to_end(key)
        e.mutations += 1
        return e

    def _set_row(self, e: Entry, cid: str, cached: Row) -> None:
        old = e.rows.get(cid)
        e.rows[cid] = cached
        self._grow(e, cached.size - (old.size if old is not None else 0))

    def _grow(self, e: Entry, n: int) -> None:
        e.size += n
        self.size += n

    def _drop(self, key: Key) -> None:
        e = self.entries.pop(key)
        self.size -= e.size
        self.generation += 1

    def _checked(self, outcome: sql.Outcome) -> None:
        """The store thread's verdict on puts the cache could not vouch for; and the newest
        id of their threads, for a thread whose cached part has been there since the put."""
        for put in outcome.fresh + outcome.stale:
            key = (put.row[0], put.row[1])
            e = self.entries.get(key)
            if e is not None and not e.latest_known and e.rows.get(put.row[2]) is put.ref:
                e.latest_known = True
                e.latest = max(outcome.latest[key], e.max_put or "")
        for put in outcome.fresh:
            put.ref.exact = True
        for put in outcome.stale:
            e = self.entries.get((put.row[0], put.row[1]))
            if e is not None and e.rows.get(put.row[2]) is put.ref:
                del e.rows[put.row[2]]
                self._grow(e, -put.ref.size)

    def _shrink(self) -> None:
        """Drop least recently used threads past ``max_bytes``; if the last one alone is too
        large, its oldest checkpoints (never its latest) and the values no row uses."""
        while self.size > self.max_bytes and len(self.entries) > 1:
            self._drop(next(iter(self.entries)))
        if self.size <= self.max_bytes or not self.entries:
            return
        e = next(iter(self.entries.values()))
        keep = e.latest if e.latest_known else max(e.rows, default=None)
        for cid in sorted(e.rows):
            if self.size <= self.max_bytes:
                break
            if cid != keep:
                self._grow(e, -e.rows.pop(cid).size)
        used = {cv for cached in e.rows.values() for cv in cached.versions.items()}
        for cv in [cv for cv in e.blobs if cv not in used]:
            self._grow(e, -(len(e.blobs.pop(cv)[1] or b"") + ROW_OVERHEAD))


def versions(row: tuple) -> dict[str, str]:
    """{channel: version} of a ``CP_COLS`` row, versions as the text they are stored as."""
    return {channel: str(version) for channel, version in json.loads(row[7] or "{}").items()}


_journals: weakref.WeakKeyDictionary[Store, Journal] = weakref.WeakKeyDictionary()
_journals_lock = threading.Lock()


def journal(store: Store, max_bytes: int | None = None) -> Journal:
    """The journal of ``store`` in this process (created at first use); ``max_bytes`` sets
    its cache bound."""
    with _journals_lock:
        j = _journals.get(store)
        if j is None:
            j = _journals[store] = Journal(store)
    if max_bytes is not None:
        j.bound(max_bytes)
    return j


def _write_at_exit() -> None:
    """Write what is queued while DuckDB still works: its own exit handler interrupts the
    queries running then, and runs before the store's, which registered before DuckDB was
    imported. Registered after ``import duckdb`` above, so it runs first."""
    for j in list(_journals.values()):
        try:
            if not j.queue or j.store.closed:
                continue
            j.write_soon()
            j.store.flush_sync(timeout=j.store.lock_timeout + 5)
        except Exception:  # noqa: BLE001 - exiting: say so, go on with the other stores
            log.exception("%d checkpoint items could not be written at exit", len(j.queue))


atexit.register(_write_at_exit)
