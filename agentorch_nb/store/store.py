"""The DuckDB store: one file, reached through one thread per process.

DuckDB lets one process at a time hold a database file open, and a process that holds it
blocks every other process, readers included. So no connection here lives long: the store's
thread opens the file for a batch of work, does it in one transaction and lets go, and a
process that finds the file held retries with backoff until ``lock_timeout``. That is what
lets a second notebook, the server extension or the ``duckdb`` CLI read a live run and post
commands into it. ``docs/architecture.md`` gives the numbers behind this choice.

Writes are queued without waiting (``append``, ``upsert``, ``set_deps``) and committed in
batches; ``await store.flush()`` returns once everything queued before it is on disk.
Reads are functions run in the store's thread with a connection: ``await store.call(fn)``.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures as cf
import contextlib
import json
import logging
import os
import random
import re
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from ..exceptions import InvalidInput, StoreBusy, StoreError
from ..model import utcnow
from .migrations import migrate
from .sqlutil import dicts, transaction

log = logging.getLogger("agentorch_nb.store")
T = TypeVar("T")

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
MEMORY = ":memory:"
# While work keeps arriving the thread keeps the file: for at most HOLD_SECONDS when another
# process is waiting for it, MAX_HOLD_SECONDS otherwise; then it stays away GAP_SECONDS so
# that others get their turn. An idle file is kept IDLE_SECONDS, then let go.
HOLD_SECONDS = 0.15
MAX_HOLD_SECONDS = 1.0
GAP_SECONDS = 0.02
IDLE_SECONDS = 0.03
CHUNK_ROWS = 500
SMALL_BATCH = 40  # up to this many rows, one VALUES statement beats building a frame


def default_path(workspace: str | os.PathLike) -> Path:
    return Path(workspace) / ".agentorch" / "agentorch.duckdb"


class _Batch:
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

    def then(self, newer: _Batch) -> _Batch:
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


@dataclass(frozen=True)
class Busy:
    """Another process holds the store file: which one, and since when."""

    holder: int | None  # its pid, when DuckDB names it
    since: float  # time.time() when this process began to wait

    def describe(self) -> str:
        who = f"process {self.holder}" if self.holder else "another process"
        if self.holder:
            with contextlib.suppress(OSError):
                who += f" ({Path(f'/proc/{self.holder}/comm').read_text().strip()})"
        when = time.strftime("%H:%M:%S", time.localtime(self.since))
        return f"{who}, since {when} ({time.time() - self.since:.0f} s)"


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
            _check_file(key)
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
        self._batch = _Batch()
        self._closed = False
        self._con = None  # open connection of the store thread, while it holds the file
        self._migrated = False
        self._thread = threading.Thread(target=self._serve, name="agentorch-store", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    def __repr__(self) -> str:
        return f"Store({self.path!r})"

    # ----------------------------------------------------------------- writes
    def append(self, table: str, row: dict[str, Any]) -> None:
        """Queue one row for an append-only table; ``ts`` defaults to now."""
        if table in TIMED and row.get("ts") is None:
            row = {**row, "ts": utcnow()}
        with self._cond:
            self._batch.appends.setdefault(table, []).append(row)
            self._cond.notify()

    def upsert(self, table: str, row: dict[str, Any]) -> None:
        """Queue the whole current row of a keyed table (``KEYS``)."""
        key = tuple(row[k] for k in KEYS[table])
        with self._cond:
            self._batch.upserts.setdefault(table, {})[key] = row
            self._cond.notify()

    def set_deps(self, run_id: str, task_id: str, depends_on: list[str]) -> None:
        """Queue the full dependency list of one task."""
        with self._cond:
            self._batch.deps[(run_id, task_id)] = list(depends_on)
            self._cond.notify()

    def flush_future(self) -> cf.Future:
        fut: cf.Future = cf.Future()
        with self._cond:
            if self._closed:
                fut.set_result(None)
                return fut
            self._batch.flushes.append(fut)
            self._cond.notify()
        return fut

    async def flush(self) -> None:
        """Return once every write queued before this call is committed."""
        await asyncio.wrap_future(self.flush_future())

    def flush_sync(self, timeout: float | None = None) -> None:
        self.flush_future().result(timeout)

    # ------------------------------------------------------------------ reads
    def submit(self, fn: Callable[[Any], T]) -> cf.Future:
        """Run ``fn(connection)`` in the store thread, after the writes queued before it."""
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
        with self._cond:
            if self._closed:
                return
            done = cf.Future()
            self._batch.flushes.append(done)
            self._closed = True
            self._cond.notify()
        try:
            done.result(timeout=self.lock_timeout + 5)
        except Exception:  # noqa: BLE001 - shutting down; the error was logged by the thread
            pass
        self._thread.join(timeout=5)

    # ---------------------------------------------------------- store thread
    def _serve(self) -> None:
        # pandas comes in here, early, not at the first write: a first write at interpreter
        # exit could not import it any more (concurrent.futures refuses after shutdown).
        import pandas  # noqa: F401

        held_since = None
        while True:
            with self._cond:
                if self._batch.empty() and not self._closed and self._con is not None:
                    # Opening the file costs ~15 ms: keep it a moment in case more work
                    # follows at once (a run of checkpoint reads, a burst of events)...
                    self._cond.wait(IDLE_SECONDS)
                    if self._batch.empty() and not self._closed:
                        # ...then let other processes have it.
                        self._release()
                        held_since = None
                if self._batch.empty() and not self._closed:
                    self._cond.wait()
                # Writes alone may linger a little to travel with company; a flush or a
                # read wants them now.
                if not (self._batch.calls or self._batch.flushes or self._closed):
                    deadline = time.monotonic() + self.flush_interval
                    while (
                        not (self._batch.calls or self._batch.flushes or self._closed)
                        and self._batch.size() < 5000
                        and (left := deadline - time.monotonic()) > 0
                    ):
                        self._cond.wait(left)
                batch, self._batch = self._batch, _Batch()
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
                        _settle(fut, exc=exc)
                    for fut in batch.flushes:
                        _settle(fut, exc=exc)
            if closing:
                with self._cond:
                    leftover, self._batch = self._batch, _Batch()
                for fut in leftover.flushes + [f for _, f, _ in leftover.calls]:
                    _settle(fut, exc=InvalidInput("store closed"))
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
            if _lock_error(exc):
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

    def _contended(self, batch: _Batch, exc: BaseException) -> None:
        """The file was held by another process: put ``batch`` back, fail the reads that
        have waited lock_timeout, and back off (2 ms doubling to 50 ms, jittered)."""
        now = time.monotonic()
        if self._waiting_since is None:
            self._waiting_since, self._delay = time.time(), 0.002
        _touch(self.path + ".waiting")  # ask an agentorch holder to let go soon
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
                _settle(fut, exc=error)
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

    def _run(self, batch: _Batch) -> None:
        """Do ``batch`` on the open connection. On a lock error (``_Contended``) the batch
        keeps exactly what was not done: the writes (one transaction, rolled back whole)
        and the reads not answered yet."""
        import duckdb

        con = self._con
        if batch.has_writes():
            try:
                with transaction(con):
                    for table, rows in batch.appends.items():
                        _insert(con, table, rows)
                    for table, keyed in batch.upserts.items():
                        _upsert(con, table, list(keyed.values()))
                    if batch.deps:
                        _replace_deps(con, batch.deps)
            except duckdb.Error as exc:
                if _lock_error(exc):
                    raise _Contended() from exc
                raise
            batch.appends, batch.upserts, batch.deps = {}, {}, {}
        while batch.calls:
            fn, fut, _ = batch.calls[0]
            if not fut.cancelled():
                try:
                    fut.set_result(fn(con))
                except duckdb.Error as exc:
                    if _lock_error(exc):
                        raise _Contended() from exc
                    fut.set_exception(exc)
                except BaseException as exc:  # noqa: BLE001 - the caller gets it
                    fut.set_exception(exc)
            batch.calls.pop(0)
        for fut in batch.flushes:
            _settle(fut)
        batch.flushes = []


class _Contended(Exception):
    """Another process held the file (DuckDB's lock error is the cause)."""


def _lock_error(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "could not set lock" in text or "conflicting lock" in text


def _check_file(path: str) -> None:
    """Refuse, before anything is written, a file that is not a DuckDB database."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(12)
    except FileNotFoundError:
        return
    except IsADirectoryError:
        raise StoreError(f"store {path} is a directory: name a file, e.g. "
                         f"{os.path.join(path, 'agentorch.duckdb')}") from None
    if head[8:12] != b"DUCK":
        raise StoreError(
            f"{path} is not a DuckDB database (an agentorch store is one): point store= at an "
            "agentorch store, or at a path that does not exist yet to make a new one")


def _touch(path: str) -> None:
    try:
        with open(path, "a"):
            os.utime(path)
    except OSError:
        pass


def _replace_deps(con, deps: dict[tuple[str, str], list[str]]) -> None:
    """Replace the dependency lists of many tasks: one delete per run, one bulk insert."""
    by_run: dict[str, list[str]] = {}
    for run_id, task_id in deps:
        by_run.setdefault(run_id, []).append(task_id)
    for run_id, task_ids in by_run.items():
        con.execute("delete from task_deps where run_id = ? and list_contains(?, task_id)",
                    [run_id, task_ids])
    rows = [{"run_id": r, "task_id": t, "depends_on": d} for (r, t), ds in deps.items() for d in ds]
    if rows:
        _insert(con, "task_deps", rows)


def _settle(fut: cf.Future, exc: BaseException | None = None) -> None:
    if fut.done():
        return
    if exc is None:
        fut.set_result(None)
    else:
        fut.set_exception(exc)


def _cell(value: Any) -> Any:
    if isinstance(value, (dict, list)):
        return json.dumps(value, default=str)
    if hasattr(value, "value") and isinstance(getattr(value, "value"), str):  # StrEnum
        return value.value
    return value


def _insert(con, table: str, rows: list[dict]) -> None:
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


def _upsert(con, table: str, rows: list[dict]) -> None:
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
    _insert(con, table, rows)


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

