"""Commands from other processes, and the wake-up call that brings them in at once.

Another process never touches the engine's memory: it writes a ``commands`` row (pending)
to the store, then connects to the engine's wake-up port on 127.0.0.1 (its address is in
the run's row) and sends the run id (the sender's side is :mod:`agentorch_nb.remote`). The
engine reads its pending commands, applies each through :func:`hitl.apply`, marks it
applied or rejected with the error, and answers the connection, so the sender learns the
outcome without polling. A command sent while no engine is live stays pending and is
applied when the run is resumed.

The port carries no data but the run id, so it can do nothing but make the engine look at
its own store. Anything else (a line that is not the run id, one longer than a run id can
be, a connection that says nothing) is closed without an answer.
"""

from __future__ import annotations

import asyncio
import json
import logging

from ..model import utcnow
from ..store.sqlutil import select
from . import hitl
from .dispatch import Engine

log = logging.getLogger("agentorch_nb.inbox")
MAX_LINE = 256  # a run id is a few dozen characters


class Inbox:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.server: asyncio.base_events.Server | None = None
        self._lock = asyncio.Lock()

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._on_connect, "127.0.0.1", 0,
                                                 limit=MAX_LINE)
        host, port = self.server.sockets[0].getsockname()[:2]
        return f"{host}:{port}"

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 5)
            if line.decode(errors="replace").strip() == self.engine.run_id:
                applied = await self.drain()
                writer.write(f"{applied}\n".encode())
                await writer.drain()
        except (TimeoutError, ConnectionError, ValueError, asyncio.LimitOverrunError,
                asyncio.IncompleteReadError):
            pass  # not a sender of ours: say nothing
        finally:
            writer.close()

    async def drain(self) -> int:
        """Apply every pending command of this run, oldest first; return how many."""
        engine = self.engine
        async with self._lock:
            rows = await engine.store.call(lambda con: select(
                con, "select * from commands where run_id = ? and status = 'pending' "
                     "order by ts, command_id", [engine.run_id]))
            for row in rows:
                payload = json.loads(row["payload"] or "{}")
                status, error = "applied", None
                try:
                    hitl.apply(engine, row["kind"], payload, row["source"] or "inbox")
                except Exception as exc:  # noqa: BLE001 - recorded for the sender
                    status, error = "rejected", f"{type(exc).__name__}: {exc}"
                    engine.record_event("command_rejected", payload.get("task_id"),
                                        command_id=row["command_id"], error=error)
                engine.store.upsert("commands", {**row, "status": status, "error": error,
                                                 "applied_at": utcnow()})
            if rows:
                await engine.store.flush()
            return len(rows)
