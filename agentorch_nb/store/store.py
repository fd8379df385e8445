"""The DuckDB store: one file, reached through one thread per process.

(This is kept in one module: the write queue, the thread that drains it and the handling of a file
another process holds are one piece of concurrency, easier to check read together.)

DuckDB lets one process at a time hold a database file open, and a process that holds it
blocks every other process, readers included. So no connection here lives long: the store's
thread opens the file for a batch of work, does it in one transaction and lets go, and a
process that finds the file held retries with backoff until ``lock_timeout``. That is what
lets a second notebook, the server extension or the ``duckdb`` CLI read a live run and post
commands into it. ``docs/architecture.md`` gives the numbers behind this choice.

Writes are queued without waiting (``append``, ``upsert``, ``set_deps``) and committed in
batches; ``await store.flush()`` returns once everything queued before it is on disk, and
``await store.committed()`` once it is committed on the store's own schedule. Writes made on
an engine's loop (``bind``) travel per turn of the loop (``store/turns.py``). Reads are
functions run in the store's thread with a connection: ``await store.call(fn)``.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures as cf
import contextlib
import logging
import os
import random
import re
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from ..exceptions import InvalidInput, StoreBusy, StoreError
from ..model import utcnow
from .migrations import migrate
from .notify import Notifier
from .batch import KEYS, TIMED, Batch, settle
from .sharing import Busy, check_file, lock_error, touch
from .sqlutil import dicts, transaction
from .turns import LoopTurns

log = logging.getLogger("agentorch_nb.store")
T = TypeVar("T")

MEMORY = ":memory:"
# While work keeps arriving the thread keeps the file: for at most HOLD_SECONDS when another
# process is waiting for it, MAX_HOLD_SECONDS otherwise; then it stays away GAP_SECONDS so
# that others get their turn. An idle file is kept IDLE_SECONDS, then let go.
HOLD_SECONDS = 0.15
MAX_HOLD_SECONDS = 2.0
GAP_SECONDS = 0.02
IDLE_SECONDS = 0.03


def default_path(workspace: str | os.PathLike) -> Path:
    return Path(workspace) / ".agentorch" / "agentorch.duckdb"


class Store:
    """A DuckDB file shared safely by the threads of this process and by other processes.

    >>> s = Store.open(":memory:")
    >>> s.append("insights", {"run_id": "r1", "content": "hello"})
    >>> s.flush_sync()
    >>> s.query("select content from insights").content.tolist()
    ['hello']
    """

    _open: dict[str, weakref.ref[Store]] = {}
    _open_lock = threading.Lock()

    @classmethod
    def open(
        cls,
        path: str | os.PathLike = MEMORY,
        *,
        create: bool = True,
        lock_timeout: float = 30.0,
        flush_interval: float = 0.05,
    ) -> Store:
        """The store of ``path`` in this process (one per file, shared), opened if needed."""
        key = MEMORY if str(path) == MEMORY else str(Path(path).expanduser().resolve())
        if key != MEMORY and not create and not Path(key).exists():
            raise InvalidInput(f"there is no agentorch store at {key}")
        if key != MEMORY:
            check_file(key)
        with cls._open_lock:
            existing = cls._open.get(key)
            store = existing() if existing else None
            if store is None or store._closed:
                store = cls(key, lock_timeout=lock_timeout, flush_interval=flush_interval)
                if key != MEMORY:
                    cls._open[key] = weakref.ref(store)
            return store

    def __init__(self, path: str, *, lock_timeout: float, flush_interval: float) -> None:
        self.path = path
        self.lock_timeout = lock_timeout
        self.flush_interval = flush_interval
        if path != MEMORY:
            # Conversations and tool output live here: readable by their owner alone.
            Path(path).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._cond = threading.Condition()
        self.busy: Busy | None = None  # set while another process keeps the file from us
        # Called (from the store's thread) with a Busy when the file stays held past
        # lock_timeout, and with None when it is ours again.
        self.busy_listeners: list[Callable[[Busy | None], None]] = []
        self._waiting_since: float | None = None  # time.time() this process began to wait
        self._delay = 0.002
        self._batch = Batch()
        self._closed = False
        self._con = None  # open connection of the store thread, while it holds the file
        self._migrated = False
        # Tells listening Jupyter servers what each commit changed (store/notify.py).
        self.notifier = Notifier(path) if path != MEMORY else None
        self._turns = LoopTurns(self._enqueue)
        self._waiting: dict[tuple, asyncio.Future] = {}  # committed(): one per commit and loop
        self._thread = threading.Thread(target=self._serve, name="agentorch-store", daemon=True)
        self._thread.start()
        # atexit runs handlers last-registered first: DuckDB's own (registered on import)
        # would interrupt the final flush if it were registered after ours.
        import duckdb  # noqa: F401
        atexit.register(self.close)

    def __repr__(self) -> str:
        return f"Store({self.path!r})"

    @property
    def closed(self) -> bool:
        return self._closed

    # ----------------------------------------------------------------- writes
    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Writes made on ``loop`` reach the store a whole turn of the loop at a time, so a
        batch never holds half of what one engine step wrote (``store/turns.py``)."""
        self._turns.bind(loop)

    def one_unit(self):
        """Context manager, on a bound loop: what is written inside reaches the store as one
        unit however many turns of the loop it spans (a big plan, added in slices)."""
        return self._turns.one_unit()

    def append(self, table: str, row: dict[str, Any]) -> None:
        """Queue one row for an append-only table; ``ts`` defaults to now."""
        if table in TIMED and row.get("ts") is None:
            row = {**row, "ts": utcnow()}
        turn = self._turns.current()
        if turn is not None:
            turn.appends.setdefault(table, []).append(row)
            return
        with self._cond:
            self._batch.appends.setdefault(table, []).append(row)
            self._batch.written()
            self._cond.notify()

    def upsert(self, table: str, row: dict[str, Any]) -> None:
        """Queue the whole current row of a keyed table (``KEYS``)."""
        key = tuple(row[k] for k in KEYS[table])
        turn = self._turns.current()
        if turn is not None:
            turn.upserts.setdefault(table, {})[key] = row
            return
        with self._cond:
            self._batch.upserts.setdefault(table, {})[key] = row
            self._batch.written()
            self._cond.notify()

    def upsert_later(self, table: str, key: tuple, build: Callable[[], dict[str, Any]]) -> None:
        """Queue the row ``build()`` returns; on a bound loop it is built once per turn."""
        if not self._turns.upsert_later(table, key, build):
            self.upsert(table, build())

    def set_deps(self, run_id: str, task_id: str, depends_on: list[str]) -> None:
        """Queue the full dependency list of one task."""
        turn = self._turns.current()
        if turn is not None:
            turn.deps[(run_id, task_id)] = list(depends_on)
            return
        with self._cond:
            self._batch.deps[(run_id, task_id)] = list(depends_on)
            self._batch.written()
            self._cond.notify()

    def _enqueue(self, turn: Batch) -> None:
        with self._cond:
            self._batch.then(turn)
            self._batch.written()
            self._cond.notify()

    def flush_future(self, *, early: bool = True) -> cf.Future:
        """Settled once everything queued before is committed; ``early=False`` waits for the
        store's own schedule instead of asking for a commit now."""
        self._turns.hand_over()
        fut: cf.Future = cf.Future()
        with self._cond:
            if self._closed:
                fut.set_result(None)
                return fut
            if early:
                self._batch.flushes.append(fut)
            elif self._batch.waiters:  # the same commit settles them all: share one
                return self._batch.waiters[-1]
            else:
                self._batch.waiters.append(fut)
            self._cond.notify()
        return fut

    async def flush(self) -> None:
        """Return once every write queued before this call is committed."""
        await asyncio.wrap_future(self.flush_future())

    def committed(self) -> asyncio.Future:
        """Awaitable: done once every write queued before this call is committed, at the
        store's next batch (within ``flush_interval``) rather than in a commit of its own.
        Callers on one loop waiting for the same commit share one future (one wake-up from
        the store's thread); shield it to cancel a wait without cancelling it for others."""
        key = (self.flush_future(early=False), asyncio.get_running_loop())
        waiting = self._waiting.get(key)
        if waiting is None:
            waiting = self._waiting[key] = asyncio.wrap_future(key[0])
            waiting.add_done_callback(lambda _: self._waiting.pop(key, None))
        return waiting

    def flush_sync(self, timeout: float | None = None) -> None:
        self.flush_future().result(timeout)

    # ------------------------------------------------------------------ reads
    def submit(self, fn: Callable[[Any], T]) -> cf.Future:
        """Run ``fn(connection)`` in the store thread, after the writes queued before it."""
        self._turns.hand_over()
        fut: cf.Future = cf.Future()
        with self._cond:
            if self._closed:
                raise InvalidInput(f"{self!r} is closed")
            self._batch.calls.append((fn, fut, time.monotonic()))
            self._cond.notify()
        return fut

    async def call(self, fn: Callable[[Any], T]) -> T:
        return await asyncio.wrap_future(self.submit(fn))

    def call_sync(self, fn: Callable[[Any], T]) -> T:
        return self.submit(fn).result()

    def query(self, sql: str, params: list | dict | None = None):
        """Run one SQL statement and return a pandas DataFrame (blocking)."""
        return self.call_sync(lambda con: con.execute(sql, params or []).df())

    def rows(self, sql: str, params: list | None = None) -> list[dict[str, Any]]:
        return self.call_sync(lambda con: dicts(con.execute(sql, params or [])))

    async def arows(self, sql: str, params: list | None = None) -> list[dict[str, Any]]:
        """:meth:`rows` for a coroutine: the loop goes on while the store thread reads."""
        return await self.call(lambda con: dicts(con.execute(sql, params or [])))

    # -------------------------------------------------------------- lifecycle
    def close(self) -> None:
        self._turns.hand_over_all()
        with self._cond:
            if self._closed:
                return
            done = cf.Future()
            self._batch.flushes.append(done)
            self._closed = True
            self._cond.notify()
        deadline = time.monotonic() + self.lock_timeout + 5
        # Wait for the last flush, but not for a thread that is gone.
        while not done.done() and self._thread.is_alive() and time.monotonic() < deadline:
            cf.wait([done], timeout=0.1)
        self._thread.join(timeout=5)

    # ---------------------------------------------------------- store thread
    def _serve(self) -> None:
        # pandas comes in here, early, not at the first write: a first write at interpreter
        # exit could not import it any more (concurrent.futures refuses after shutdown). A
        # process that exits at once may already be past that point: then the thread goes on
        # without it (small batches never need it), and close() is not kept waiting.
        try:
            import pandas  # noqa: F401
        except Exception:  # noqa: BLE001 - RuntimeError: can't register atexit after shutdown
            log.debug("pandas could not be imported while the interpreter shuts down")

        held_since = None
        while True:
            with self._cond:
                idle = self._batch.empty() and not self._closed and self._con is not None
                if idle:
                    # Opening the file costs ~15 ms: keep it a moment in case more work
                    # follows at once (a run of checkpoint reads, a burst of events)...
                    self._cond.wait(IDLE_SECONDS)
                    idle = self._batch.empty() and not self._closed
            if idle:
                # ...then let other processes have it. Closing (DuckDB checkpoints) takes
                # tens of ms: never while holding the queue's lock, which writers take.
                self._release()
                held_since = None
            with self._cond:
                if self._batch.empty() and not self._closed:
                    self._cond.wait()
                # Writes alone may linger a little to travel with company; a flush or a
                # read wants them now.
                if not (self._batch.calls or self._batch.flushes or self._closed):
                    # counted from the batch's first write: under a steady stream of writes
                    # the next batch is often due by the time the last one is committed
                    deadline = (self._batch.since or time.monotonic()) + self.flush_interval
                    while (
                        not (self._batch.calls or self._batch.flushes or self._closed)
                        and self._batch.size() < 5000
                        and (left := deadline - time.monotonic()) > 0
                    ):
                        self._cond.wait(left)
                batch, self._batch = self._batch, Batch()
                closing = self._closed
            if not batch.empty():
                if held_since is not None and self._should_yield(held_since):
                    self._release()
                    time.sleep(GAP_SECONDS)
                    held_since = None
                try:
                    if self._con is None:
                        self._con = self._connect()
                        held_since = time.monotonic()
                    self._run(batch)
                    self._contention_over()
                except _Contended as exc:
                    # Another process holds the file. Nothing is dropped: what was not done
                    # goes back in front of the queue and is tried again; only a read that
                    # has waited lock_timeout fails (StoreBusy, naming the holder).
                    self._release()
                    held_since = None
                    self._contended(batch, exc.__cause__ or exc)
                    if not closing or self.busy is None:
                        continue
                    log.error("%s: closing while %s holds it; %d queued rows are not written",
                              self.path, self.busy.describe(), batch.size())
                except BaseException as exc:  # noqa: BLE001 - handed to every waiter
                    log.exception("store batch failed")
                    self._release()
                    held_since = None
                    for _, fut, _ in batch.calls:
                        settle(fut, exc=exc)
                    for fut in batch.flushes + batch.waiters:
                        settle(fut, exc=exc)
            if closing:
                with self._cond:
                    leftover, self._batch = self._batch, Batch()
                for fut in leftover.flushes + leftover.waiters + [f for _, f, _ in leftover.calls]:
                    settle(fut, exc=InvalidInput("store closed"))
                self._release(final=True)
                return

    def _should_yield(self, held_since: float) -> bool:
        """Give the file up after HOLD_SECONDS of continuous work if another agentorch
        process has asked for it (it touches the ``.waiting`` file), and after
        MAX_HOLD_SECONDS in any case (other DuckDB clients cannot ask)."""
        held = time.monotonic() - held_since
        if held > MAX_HOLD_SECONDS:
            return True
        if held <= HOLD_SECONDS:
            return False
        try:
            asked = os.stat(self.path + ".waiting").st_mtime
        except OSError:
            return False
        return asked >= time.time() - held

    def _release(self, final: bool = False) -> None:
        if self._con is not None and (self.path != MEMORY or final):
            try:
                self._con.close()
            finally:
                self._con = None

    def _connect(self):
        import duckdb

        fresh = self.path != MEMORY and not os.path.exists(self.path)
        try:
            con = duckdb.connect(self.path)
        except duckdb.Error as exc:
            if lock_error(exc):
                raise _Contended() from exc
            raise StoreError(f"{self.path} cannot be opened as a DuckDB database: {exc}") from exc
        if fresh:
            for name in (self.path, self.path + ".wal"):
                with contextlib.suppress(OSError):
                    os.chmod(name, 0o600)
        if not self._migrated:
            try:
                migrate(con)
            except BaseException:
                con.close()  # a store we may not write (a newer schema) is let go at once
                raise
            self._migrated = True
        return con

    def _contended(self, batch: Batch, exc: BaseException) -> None:
        """The file was held by another process: put ``batch`` back, fail the reads that
        have waited lock_timeout, and back off (2 ms doubling to 50 ms, jittered)."""
        now = time.monotonic()
        if self._waiting_since is None:
            self._waiting_since, self._delay = time.time(), 0.002
        touch(self.path + ".waiting")  # ask an agentorch holder to let go soon
        pid = re.search(r"PID (\d+)", str(exc))
        busy = Busy(int(pid.group(1)) if pid else None, self._waiting_since)
        if time.time() - self._waiting_since >= self.lock_timeout:
            self._set_busy(busy)
        late = [c for c in batch.calls if now - c[2] >= self.lock_timeout]
        if late:
            error = StoreBusy(f"{self.path} stayed locked by {busy.describe()} for at least "
                              f"{self.lock_timeout:g} s. "
                              "Close long-lived DuckDB connections to it (agentorch_nb.sql() "
                              "lets go after each query); the run's own writes wait for it.")
            for _, fut, _ in late:
                settle(fut, exc=error)
            batch.calls = [c for c in batch.calls if c not in late]
        with self._cond:
            self._batch = batch.then(self._batch)
        time.sleep(self._delay * (0.5 + random.random()))
        self._delay = min(self._delay * 2, 0.05)

    def _contention_over(self) -> None:
        if self._waiting_since is not None:
            self._waiting_since = None
            self._set_busy(None)

    def _set_busy(self, busy: Busy | None) -> None:
        if (busy is None) == (self.busy is None):
            self.busy = busy
            return
        self.busy = busy
        if busy is not None:
            log.warning("%s is held by %s: writes wait for it", self.path, busy.describe())
        for fn in list(self.busy_listeners):
            try:
                fn(busy)
            except Exception:  # noqa: BLE001 - a listener's bug must not stop the store
                log.exception("store busy listener %r failed", fn)

    def _run(self, batch: Batch) -> None:
        """Do ``batch`` on the open connection. On a lock error (``_Contended``) the batch
        keeps exactly what was not done: the writes (one transaction, rolled back whole)
        and the reads not answered yet."""
        import duckdb

        con = self._con
        if batch.has_writes():
            try:
                with transaction(con):
                    batch.write(con)
            except duckdb.Error as exc:
                if lock_error(exc):
                    raise _Contended() from exc
                raise
            if self.notifier is not None:  # committed: now it may be announced
                self.notifier.committed(batch.upserts, batch.appends)
            batch.appends, batch.upserts, batch.deps = {}, {}, {}
        while batch.calls:
            fn, fut, _ = batch.calls[0]
            if not fut.cancelled():
                try:
                    fut.set_result(fn(con))
                except duckdb.Error as exc:
                    if lock_error(exc):
                        raise _Contended() from exc
                    fut.set_exception(exc)
                except BaseException as exc:  # noqa: BLE001 - the caller gets it
                    fut.set_exception(exc)
            batch.calls.pop(0)
        for fut in batch.flushes + batch.waiters:
            settle(fut)
        batch.flushes, batch.waiters = [], []


class _Contended(Exception):
    """Another process held the file (DuckDB's lock error is the cause)."""
