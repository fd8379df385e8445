"""Live changes: engines' change notices, passed on to Jupyter's event bus.

An engine's store sends a UDP datagram to every listening server after each commit that
changed a run, a task or an interrupt (:mod:`agentorch_nb.store.notify`). The :class:`Feed`
is that listener: a socket on 127.0.0.1, registered in the user's Jupyter runtime folder
with a token only this user can read; a datagram without the token is dropped. For each
notice it emits one ``task`` event per changed task, one ``interrupt`` event per changed
interrupt and one ``run`` event per run touched (with the run's totals), on
``serverapp.event_logger``; the browser receives them through ``/api/events/subscribe``.

The run totals (tasks by status, open interrupts, spend) come from a cache: the first notice
of a run loads that run's state from the store once, and later notices update it. The load
runs in the store's thread; task and interrupt events go out meanwhile, the notices wait
beside the load, and those the snapshot already contains (the engine sent them before the
read held the file) are not applied twice. A run created after the feed registered, whose
engine's every datagram reached it (seq 1 on, no gap), needs no read: its state is built
from the notices alone (a read would stall a busy engine for ~0.1 s: the file is
exclusive). A datagram lost on the way (a gap in a sender's ``seq``) makes the feed read
that store's cached runs again and announce what changed. Nothing polls the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import logging
import secrets
import socket
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..store import notify
from ..store.sqlutil import select
from .queries import iso

log = logging.getLogger("agentorch_nb.server.feed")

EVENTS = Path(__file__).with_name("events")
SCHEMAS = {name: f"https://agentorch.dev/events/{name}"
           for name in ("run", "task", "interrupt", "job")}
MAX_RUNS = 2000  # cached runs (the least recently touched are forgotten first)
MAX_SENDERS = 1000
RECEIVE_BUFFER = 4 << 20  # bytes; the kernel caps it at net.core.rmem_max
YIELD_EVERY = 200  # events emitted between two turns given back to the loop
FRESH_SECONDS = 10.0  # a run first heard of this soon after its creation may be trusted


# ------------------------------------------------------------------ the bus
def register_schemas(event_logger) -> None:
    """Register the four agentorch event schemas (``events/*.yaml``) with the event bus."""
    for name, schema_id in SCHEMAS.items():
        if schema_id in event_logger.schemas.schema_ids:
            continue
        event_logger.register_event_schema(EVENTS / f"{name}.yaml")


def emit(event_logger, name: str, data: dict) -> None:
    """Emit an agentorch event (``name`` in ``SCHEMAS``); a failure is logged, never raised."""
    try:
        event_logger.emit(schema_id=SCHEMAS[name], data=data)
    except Exception:  # noqa: BLE001 - the bus must never break a caller
        log.exception("agentorch: the %s event could not be emitted: %r", name, data)


# -------------------------------------------------------------- run totals
@dataclass
class RunState:
    """What the feed knows of one run: its row's fields and totals kept from notices."""

    status: str | None = None
    objective: str = ""
    error: str | None = None
    updated_at: str | None = None
    tasks: dict[str, str] = field(default_factory=dict)  # task id -> status
    open: dict[str, dict] = field(default_factory=dict)  # unresolved interrupts by id
    cost: float = 0.0
    loading: bool = True
    pending: list[Part] = field(default_factory=list)  # notices received while loading
    # After a lost notice: the state before, so that the reload can announce what changed.
    previous: RunState | None = None

    def apply(self, part: Part) -> None:
        if part.run is not None:
            self.status = part.run.get("status") or self.status
            self.objective = part.run.get("objective") or self.objective
            self.error = part.run.get("error")
            self.updated_at = iso_text(part.run.get("updated_at"))
        for t in part.tasks:
            self.tasks[t["task_id"]] = t.get("status")
        for i in part.interrupts:
            if i.get("resolved_at") is None:
                self.open[i["interrupt_id"]] = i
            else:
                self.open.pop(i["interrupt_id"], None)
        self.cost += part.cost

    def totals(self) -> dict[str, Any]:
        return {"tasks": len(self.tasks), "counts": dict(Counter(self.tasks.values())),
                "cost_usd": float(self.cost), "waiting": len(self.open)}


@dataclass
class Part:
    """One datagram's changes to one run."""

    ts: float
    run: dict | None = None
    tasks: list[dict] = field(default_factory=list)
    interrupts: list[dict] = field(default_factory=list)
    cost: float = 0.0


def iso_text(value: str | None) -> str | None:
    """A notice's naive UTC ISO time as the REST API writes times (with +00:00)."""
    if not value:
        return None
    try:
        return iso(dt.datetime.fromisoformat(value))
    except ValueError:
        return value


def read_run(run_id: str, con) -> dict[str, Any]:
    """One run's state, read in the store's thread; ``t`` is a moment the file was held."""
    t = time.time()
    row = con.execute("select status, objective, error, updated_at from runs where run_id = ?",
                      [run_id]).fetchone()
    tasks = select(con, "select run_id, task_id, title, status, status_reason, attempts "
                        "from tasks where run_id = ?", [run_id])
    open_ = select(con, "select run_id, interrupt_id, task_id, kind, reason, resolved_at "
                        "from interrupts where run_id = ? and resolved_at is null", [run_id])
    cost = con.execute("select coalesce(sum(cost_usd), 0) from llm_calls where run_id = ?",
                       [run_id]).fetchone()[0]
    return {"t": t, "row": row, "tasks": tasks, "open": open_, "cost": float(cost or 0.0)}


# -------------------------------------------------------------------- feed
class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, feed: Feed) -> None:
        self.feed = feed

    def datagram_received(self, data: bytes, addr) -> None:
        self.feed._received(data)


class Feed:
    """The listener of engines' change notices (see the module's doc)."""

    def __init__(self, app, event_logger) -> None:
        self.app = app
        self.event_logger = event_logger
        self.token = secrets.token_hex(32)
        self._token = self.token.encode()
        self.port: int | None = None
        self.file: Path | None = None
        self._transport: asyncio.DatagramTransport | None = None
        self._queue: asyncio.Queue[dict] = asyncio.Queue()
        self._worker: asyncio.Task | None = None
        self._runs: OrderedDict[tuple[str, str], RunState] = OrderedDict()
        self._loads: set[asyncio.Task] = set()
        # sender -> (last seq, every datagram of it seen since its seq 1)
        self._senders: OrderedDict[str, tuple[int, bool]] = OrderedDict()
        self.registered_at = float("inf")  # time.time() before the registry file was written
        self._forgotten: set[tuple[str, str]] = set()  # runs whose state was dropped
        self.received = self.rejected = self.gaps = self.loads = 0  # counters

    # ------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Listen on 127.0.0.1 and register in the runtime folder (stale files pruned)."""
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
        sock.bind(("127.0.0.1", 0))
        self._transport, _ = await loop.create_datagram_endpoint(lambda: _Protocol(self),
                                                                 sock=sock)
        self.port = sock.getsockname()[1]
        # A store's thread imports duckdb and pandas when it starts; the import holds the GIL
        # for long stretches (~0.3 s here), which would stall the first run's events. Now,
        # at start, it costs nothing anyone waits for.
        await asyncio.to_thread(lambda: [__import__(m) for m in ("duckdb", "pandas")])
        self._worker = asyncio.create_task(self._consume(), name="agentorch-feed")
        try:
            folder = notify.registry_dir()
            if folder is None:
                raise OSError("jupyter_core is not importable")
            await asyncio.to_thread(notify.prune, folder)
            registered_at = time.time()
            self.file = await asyncio.to_thread(notify.register, folder, self.port, self.token)
            self.registered_at = registered_at
        except OSError:
            log.exception("agentorch: the live feed could not register; runs show changes "
                          "only when read again")
            return
        log.info("agentorch: live feed on 127.0.0.1:%d (%s)", self.port, self.file)

    def stop(self) -> None:
        """Unregister and close (idempotent)."""
        if self.file is not None:
            with contextlib.suppress(OSError):
                self.file.unlink()
            self.file = None
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        if self._worker is not None:
            self._worker.cancel()
            self._worker = None
        for task in list(self._loads):
            task.cancel()

    # -------------------------------------------------------------- reading
    def run_state(self, store_id: str, run_id: str) -> dict[str, Any] | None:
        """The cached totals of a run (``tasks``, ``counts``, ``cost_usd``, ``waiting``,
        ``status``), or None when the feed has not loaded that run."""
        state = self._runs.get((store_id, run_id))
        if state is None or state.loading:
            return None
        return {**state.totals(), "status": state.status}

    # ------------------------------------------------------------ receiving
    def _received(self, data: bytes) -> None:
        try:
            notice = notify.parse(data, self._token)
        except (ValueError, UnicodeDecodeError):
            log.debug("agentorch: a malformed change notice was dropped", exc_info=True)
            return
        if notice is None:  # not ours: a stranger's datagram is dropped unread
            self.rejected += 1
            return
        self.received += 1
        self._queue.put_nowait(notice)

    async def _consume(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._handle(batch)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the next notice gets its turn
                log.exception("agentorch: a change notice could not be handled")

    async def _handle(self, notices: list[dict]) -> None:
        touched: dict[tuple[str, str], None] = {}  # runs to announce, in order
        emitted = 0
        for notice in notices:
            ref = self.app.index.known(str(notice.get("store")))
            if ref is None:
                continue  # a store this server may not serve
            whole = self._check_seq(ref, notice)
            ts = float(notice.get("ts") or 0.0)
            parts: dict[str, Part] = {}
            for r in notice.get("runs", ()):
                parts.setdefault(r["run_id"], Part(ts)).run = r
            for t in notice.get("tasks", ()):
                parts.setdefault(t["run_id"], Part(ts)).tasks.append(t)
                self._emit_task(ref.id, t)
            for i in notice.get("interrupts", ()):
                parts.setdefault(i["run_id"], Part(ts)).interrupts.append(i)
                self._emit_interrupt(ref.id, i)
            for c in notice.get("costs", ()):
                parts.setdefault(c["run_id"], Part(ts)).cost += float(c.get("cost_usd") or 0.0)
            for run_id, part in parts.items():
                key = (ref.id, run_id)
                state = self._runs.get(key)
                if state is None and whole and key not in self._forgotten \
                        and self._born_after_start(part.run, ts):
                    # Every change of this run was announced here: no read is needed.
                    state = self._runs[key] = RunState(loading=False)
                    state.apply(part)
                    self._evict()
                    touched[key] = None
                elif state is None:
                    self._load_later(key, ref, RunState(pending=[part]))
                elif state.loading:
                    state.pending.append(part)
                else:
                    state.apply(part)
                    self._runs.move_to_end(key)
                    touched[key] = None
            emitted += len(notice.get("tasks", ())) + len(notice.get("interrupts", ()))
            if emitted >= YIELD_EVERY:  # a plan of thousands of tasks: let the loop breathe
                emitted = 0
                await asyncio.sleep(0)
        for key in touched:
            self._emit_run(key)

    def _born_after_start(self, run: dict | None, ts: float) -> bool:
        """Was this run (a notice's row) created after this feed registered, and just now?
        Then every engine that changed it, and that announces at all, announced it here."""
        try:
            c = dt.datetime.fromisoformat(run["created_at"]).replace(tzinfo=dt.UTC).timestamp()
        except (TypeError, KeyError, ValueError):
            return False
        return c > self.registered_at and c > ts - FRESH_SECONDS

    def _check_seq(self, ref, notice: dict) -> bool:
        """Has this feed seen every datagram of the notice's sender (from its seq 1, no
        gap)? A gap means a notice was lost: every cached run of that store is read again,
        and what changed since is announced."""
        sender, seq = notice.get("sender"), notice.get("seq")
        if not isinstance(sender, str) or not isinstance(seq, int):
            return False
        last, whole = self._senders.pop(sender, (None, False))
        gap = last is not None and seq != last + 1
        whole = seq == 1 if last is None else whole and not gap
        self._senders[sender] = (seq if last is None else max(last, seq), whole)
        if len(self._senders) > MAX_SENDERS:
            self._senders.popitem(last=False)
        if not gap:
            return whole
        self.gaps += 1
        log.info("agentorch: change notices of store %s were lost (seq %d after %d); its runs "
                 "are read again", ref.id, seq, last)
        for key, old in [(k, v) for k, v in self._runs.items() if k[0] == ref.id]:
            previous = old.previous if old.loading else old
            self._load_later(key, ref, RunState(previous=previous))
        return False

    # -------------------------------------------------------------- loading
    def _evict(self) -> None:
        while len(self._runs) > MAX_RUNS:
            self._forget(next(iter(self._runs)))

    def _forget(self, key: tuple[str, str]) -> None:
        """Drop a run's state; it is read again at its next notice, never trusted afresh."""
        self._runs.pop(key, None)
        self._forgotten.add(key)

    def _load_later(self, key: tuple[str, str], ref, state: RunState) -> None:
        """Cache ``state`` (loading) for ``key`` and read the run in the store's thread."""
        self._runs[key] = state
        self._runs.move_to_end(key)
        self._evict()
        self.loads += 1
        task = asyncio.create_task(self._load(key, ref, state))
        self._loads.add(task)
        task.add_done_callback(self._loads.discard)

    async def _load(self, key: tuple[str, str], ref, state: RunState) -> None:
        loop = asyncio.get_running_loop()
        try:
            # Opening a Store object touches the disk: in the executor, never on the loop.
            store = await loop.run_in_executor(self.app.executor, lambda: ref.store)
            snap = await asyncio.wrap_future(store.submit(functools.partial(read_run, key[1])))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the next notice of the run tries again
            log.warning("agentorch: run %s of store %s could not be read for the live feed: %s",
                        key[1], key[0], exc)
            if self._runs.get(key) is state:
                self._forget(key)
            return
        if self._runs.get(key) is not state:
            return  # replaced meanwhile (a lost notice): that load answers
        if snap["row"] is not None:
            status, objective, error, updated_at = snap["row"]
            state.status, state.objective, state.error = status, objective or "", error
            state.updated_at = iso(updated_at)
        state.tasks = {t["task_id"]: t["status"] for t in snap["tasks"]}
        state.open = {i["interrupt_id"]: i for i in snap["open"]}
        state.cost = snap["cost"]
        # Notices the engine sent before this read held the file are in the snapshot.
        newer = [p for p in state.pending if p.ts > snap["t"]]
        if state.previous is not None:
            self._announce_missed(key[0], state, snap, newer)
        for p in newer:
            state.apply(p)
        state.pending, state.previous, state.loading = [], None, False
        self._emit_run(key)

    def _announce_missed(self, sid: str, state: RunState, snap: dict, newer: list[Part]) -> None:
        """After a lost notice: events for what the snapshot shows changed since the state
        before, except what newer notices (already announced) changed again."""
        before, seen = state.previous, {t["task_id"] for p in newer for t in p.tasks}
        seen_i = {i["interrupt_id"] for p in newer for i in p.interrupts}
        for t in snap["tasks"]:
            if t["task_id"] not in seen and before.tasks.get(t["task_id"]) != t["status"]:
                self._emit_task(sid, t)
        for iid, i in state.open.items():
            if iid not in seen_i and iid not in before.open:
                self._emit_interrupt(sid, i)
        for iid, i in before.open.items():
            if iid not in seen_i and iid not in state.open:
                self._emit_interrupt(sid, {**i, "resolved_at": True})

    # ------------------------------------------------------------- emitting
    def _emit_task(self, sid: str, t: dict) -> None:
        emit(self.event_logger, "task", {
            "store": sid, "run_id": t["run_id"], "task_id": t["task_id"],
            "title": t.get("title") or "", "status": t.get("status") or "",
            "status_reason": t.get("status_reason"), "attempts": int(t.get("attempts") or 0),
            "updated_at": t["updated_at"] if isinstance(t.get("updated_at"), str) else iso(t.get("updated_at"))})

    def _emit_interrupt(self, sid: str, i: dict) -> None:
        emit(self.event_logger, "interrupt", {
            "store": sid, "run_id": i["run_id"], "task_id": i.get("task_id") or "",
            "interrupt_id": i["interrupt_id"], "kind": i.get("kind") or "",
            "reason": i.get("reason"), "resolved": i.get("resolved_at") is not None})

    def _emit_run(self, key: tuple[str, str]) -> None:
        state = self._runs.get(key)
        if state is None or state.loading:
            return
        emit(self.event_logger, "run", {
            "store": key[0], "run_id": key[1], "status": state.status or "unknown",
            "objective": state.objective or "", **state.totals(),
            "updated_at": state.updated_at, "error": state.error})
