"""Commands and reads from other processes: the engine's side of its channel.

The engine listens on a TCP port of 127.0.0.1 (its address is in the run's row) and keeps a
random token (``secrets.token_hex``) in the store's ``engine_channels`` table, where only
those who can read the store find it. Two kinds of line arrive (the sender's side is
:mod:`agentorch_nb.remote`):

- the bare run id: a poke. The engine reads its pending ``commands`` rows, applies each
  through :func:`hitl.apply`, marks it applied or rejected, and answers once committed.
- a JSON request ``{"run", "token", "op", ...}``. ``command`` is checked and applied the
  same way, its ``commands`` row (the sender's command id and source) is upserted and
  committed (``await store.flush()``), then the outcome is answered: an acknowledged command
  is on disk. ``tasks``, ``interrupts`` and ``summary`` answer from the engine's memory, the
  view ``run.tasks`` and ``run.interrupts()`` give in its own process; rows are copied on the
  loop and a large answer is encoded to JSON in a thread. Every answer carries
  ``engine_ms``, the engine's own time from receipt to answer.

The engine remembers the outcome of every command id it applied, so one command never
applies twice, whether it comes back as a pending row (its sender lost the connection and
took the store's road) or again on the channel.

Anything else (a wrong token, a line that is neither, one longer than ``MAX_REQUEST``, a
connection that says nothing for 5 s) is closed without an answer and changes nothing.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import secrets
import time
from typing import Any

from ..dag import natural_key
from ..model import Interrupt, Task, utcnow
from ..remote import MAX_REQUEST, check_status, fields_of, values_of
from ..store.sqlutil import select, transaction
from . import hitl
from .dispatch import Engine

log = logging.getLogger("agentorch_nb.inbox")
BIG = 200  # rows in an answer past which it is encoded off the loop
READ_SECONDS = 5.0  # for the request line to arrive
TASK_FIELDS, INTERRUPT_FIELDS = fields_of(Task), fields_of(Interrupt)


class Inbox:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.server: asyncio.base_events.Server | None = None
        self.address: str | None = None
        self.token = secrets.token_hex(32)
        self.outcomes: dict[str, tuple[str, str | None]] = {}  # command id -> status, error
        self._lock = asyncio.Lock()

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._on_connect, "127.0.0.1", 0,
                                                 limit=MAX_REQUEST)
        host, port = self.server.sockets[0].getsockname()[:2]
        self.address = f"{host}:{port}"
        row = [self.engine.run_id, self.address, self.token, os.getpid(), utcnow()]

        def record(con) -> None:
            with transaction(con):
                con.execute("delete from engine_channels where run_id = ?", [row[0]])
                con.execute("insert into engine_channels values (?, ?, ?, ?, ?)", row)

        await self.engine.store.call(record)
        return self.address

    def close(self) -> None:
        if self.server is None:
            return
        self.server.close()
        self.server = None
        run_id, address = self.engine.run_id, self.address
        try:  # the token dies with the engine; a crash leaves it behind, useless
            self.engine.store.submit(lambda con: con.execute(
                "delete from engine_channels where run_id = ? and address = ?", [run_id, address]))
        except Exception:  # noqa: BLE001 - a store closed at exit: nothing to tidy
            log.debug("run %s: channel row left behind", run_id)

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), READ_SECONDS)
            received = time.perf_counter()
            if not line.endswith(b"\n"):
                return
            if line.strip() == self.engine.run_id.encode():
                applied = await self.drain()
                writer.write(f"{applied}\n".encode())
                await writer.drain()
                return
            request = self._authentic(line)
            if request is None:
                return  # not a sender of ours: say nothing
            answer, rows = await self.serve(request)
            if rows > BIG:
                data = await asyncio.to_thread(json.dumps, answer, default=_jsonable)
            else:
                data = json.dumps(answer, default=_jsonable)
            ms = (time.perf_counter() - received) * 1000
            writer.write(data[:-1].encode() + f', "engine_ms": {ms:.3f}}}\n'.encode())
            await writer.drain()
        except (TimeoutError, ConnectionError, ValueError, asyncio.LimitOverrunError,
                asyncio.IncompleteReadError):
            pass
        except Exception:  # noqa: BLE001 - the sender takes the store's road
            log.exception("run %s: a request on the channel failed", self.engine.run_id)
        finally:
            writer.close()

    def _authentic(self, line: bytes) -> dict[str, Any] | None:
        try:
            request = json.loads(line)
        except ValueError:
            return None
        if not (isinstance(request, dict) and isinstance(request.get("token"), str)
                and request.get("run") == self.engine.run_id):
            return None
        if not hmac.compare_digest(request["token"].encode(), self.token.encode()):
            return None
        return request

    async def serve(self, request: dict[str, Any]) -> tuple[dict[str, Any], int]:
        """The answer to an authentic request, and how many rows it holds."""
        e, op = self.engine, request.get("op")
        if op == "command":
            return await self.command(request), 0
        if op == "tasks":
            rows = [values_of(e.tasks[t], TASK_FIELDS) for t in sorted(e.tasks, key=natural_key)]
            return {"data": {"fields": TASK_FIELDS, "rows": rows}}, len(rows)
        if op == "interrupts":
            rows = [values_of(i, INTERRUPT_FIELDS) for i in e.open_interrupts.values()]
            return {"data": {"fields": INTERRUPT_FIELDS, "rows": rows}}, len(rows)
        if op == "summary":
            return {"data": {
                "run_id": e.run_id, "status": e.status.value, "objective": e.objective,
                "tasks": len(e.tasks), "counts": e.counts(), "error": e.error,
                "store_busy": e.store_busy.describe() if e.store_busy else None}}, 0
        return {"status": "rejected", "type": "InvalidInput",
                "error": f"InvalidInput: unknown request {op!r}"}, 0

    async def command(self, request: dict[str, Any]) -> dict[str, Any]:
        """Check and apply one command; answer once its row is committed."""
        cid, kind = request.get("command_id"), request.get("kind")
        payload, source = request.get("payload"), request.get("source") or "channel"
        if not (isinstance(cid, str) and isinstance(kind, str) and isinstance(payload, dict)
                and isinstance(source, str)):
            return {"status": "rejected", "type": "InvalidInput",
                    "error": "InvalidInput: a command needs command_id, kind and payload"}
        if cid not in self.outcomes and isinstance(payload.get("task_id"), str):
            task = self.engine.tasks.get(payload["task_id"])
            try:  # refused as the store-side check would: nothing recorded
                check_status(self.engine.run_id, kind, payload["task_id"],
                             task.status.value if task else None)
            except Exception as exc:  # noqa: BLE001 - answered to the sender
                return refusal(exc)
        exc = self.apply({"run_id": self.engine.run_id, "command_id": cid, "ts": utcnow(),
                          "kind": kind, "payload": payload, "source": source})
        await self.engine.store.flush()
        status, error = self.outcomes[cid]
        if exc is not None:
            return refusal(exc)
        return {"status": status, "error": error}

    def apply(self, row: dict[str, Any]) -> Exception | None:
        """Apply one command unless its id was applied before, and queue its row; return
        the refusal, if it was refused now."""
        cid, refused = row["command_id"], None
        if cid not in self.outcomes:
            payload = row["payload"]
            status, error = "applied", None
            try:
                hitl.apply(self.engine, row["kind"], payload, row["source"] or "inbox")
            except Exception as exc:  # noqa: BLE001 - recorded for the sender
                refused, status, error = exc, "rejected", f"{type(exc).__name__}: {exc}"
                self.engine.record_event("command_rejected", payload.get("task_id"),
                                         command_id=cid, error=error)
            self.outcomes[cid] = (status, error)
        status, error = self.outcomes[cid]
        self.engine.store.upsert("commands", {**row, "status": status, "error": error,
                                              "applied_at": utcnow()})
        return refused

    async def drain(self) -> int:
        """Apply every pending command of this run, oldest first; return how many."""
        engine = self.engine
        async with self._lock:
            rows = await engine.store.call(lambda con: select(
                con, "select * from commands where run_id = ? and status = 'pending' "
                     "order by ts, command_id", [engine.run_id]))
            for row in rows:
                self.apply({**row, "payload": json.loads(row["payload"] or "{}")})
            if rows:
                await engine.store.flush()
            return len(rows)


def refusal(exc: Exception) -> dict[str, Any]:
    """A refused command as the sender raises it again (:func:`remote.outcome`)."""
    answer = {"status": "rejected", "type": type(exc).__name__, "message": str(exc),
              "error": f"{type(exc).__name__}: {exc}"}
    for name in ("cycle", "task_id", "depends_on"):
        if hasattr(exc, name):
            answer[name] = getattr(exc, name)
    return answer


def _jsonable(value: Any) -> Any:
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)
