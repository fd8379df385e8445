"""Steering a run that another process drives: the sender's side of the command inbox.

A command becomes a ``commands`` row (pending) in the store; then the sender connects to
the engine's wake-up port on 127.0.0.1 (its address is in the run's row) and sends the run
id. The engine (:mod:`agentorch_nb.engine.inbox`) applies its pending commands, marks each
applied or rejected, and answers, so the sender learns the outcome without polling. With
no live engine the command stays pending and ``resume()`` applies it first.
"""

from __future__ import annotations

import os
import socket
import uuid
from typing import Any

from .dag import TaskGraph
from .exceptions import ResolutionError, UnknownRun, UnknownTask
from .model import TaskStatus, utcnow
from .store import Store


def send_command(store: Store, run_id: str, kind: str, payload: dict[str, Any],
                 source: str) -> str:
    """Post a command to whichever process drives the run. Returns ``"applied"``, or
    ``"pending"`` when no engine is live (a resume applies it); raises the engine's refusal."""
    if "task_id" in payload:
        check_command(store, run_id, kind, payload)
    command_id = f"cmd-{uuid.uuid4().hex[:10]}"
    store.upsert("commands", {
        "run_id": run_id, "command_id": command_id, "ts": utcnow(), "kind": kind,
        "payload": payload, "source": source, "status": "pending"})
    row = run_row(store, run_id)  # flushes the command first
    if not row["engine_address"] or not poke(row["engine_address"], run_id):
        return "pending"
    (cmd,) = store.rows("select status, error from commands where run_id = ? and command_id = ?",
                        [run_id, command_id])
    if cmd["status"] == "rejected":
        raise ResolutionError(cmd["error"])
    return cmd["status"]


def check_command(store: Store, run_id: str, kind: str, payload: dict[str, Any]) -> None:
    """Refuse at once what the engine would refuse, when the store can tell: an unknown
    task, a resolution for a task that does not wait for one, a dependency edit that would
    close a cycle (:class:`CycleError` names it) or removes an edge that is not there."""
    rows = store.rows("select status from tasks where run_id = ? and task_id = ?",
                      [run_id, payload["task_id"]])
    if not rows:
        raise UnknownTask(payload["task_id"], run_id)
    if kind == "resolve" and rows[0]["status"] != TaskStatus.WAITING_HUMAN:
        raise ResolutionError(
            f"cannot resolve task {payload['task_id']!r}: it is {rows[0]['status']}, "
            "and only waiting_human tasks take a resolution")
    if kind != "resolve" and TaskStatus(rows[0]["status"]).terminal:
        raise ResolutionError(f"cannot {kind.replace('_', ' ')} task {payload['task_id']!r}: "
                              f"it is {rows[0]['status']}")
    if kind in ("add_dependency", "remove_dependency"):
        graph = TaskGraph()
        for r in store.rows("select task_id from tasks where run_id = ?", [run_id]):
            graph.add_task(r["task_id"])
        for r in store.rows("select task_id, depends_on from task_deps where run_id = ?", [run_id]):
            graph.add_dependency(r["task_id"], r["depends_on"])
        getattr(graph, kind)(payload["task_id"], payload["depends_on"])


def run_row(store: Store, run_id: str) -> dict[str, Any]:
    """The run's row as stored, after this process's queued writes."""
    store.flush_sync()
    rows = store.rows("select * from runs where run_id = ?", [run_id])
    if not rows:
        raise UnknownRun(run_id, store.path)
    return rows[0]


def default_source() -> str:
    return f"process:{os.getpid()}@{socket.gethostname()}"


def ask(address: str, run_id: str, *, connect_timeout: float = 5.0,
        answer_timeout: float = 120.0) -> bool | None:
    """Wake the engine at ``address`` and wait until it has applied its inbox: True when it
    answered; False when nothing listens there, or something that is not the run's engine
    hung up; None when it took the connection but gave no answer within ``answer_timeout``
    (an engine busy with its store on a loaded machine)."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=connect_timeout) as sock:
            sock.settimeout(answer_timeout)
            sock.sendall(f"{run_id}\n".encode())
            return sock.makefile().readline() != ""
    except TimeoutError:
        return None
    except OSError:
        return False


def poke(address: str, run_id: str) -> bool:
    """Did an engine apply its inbox? False sends the command to wait for a resume, so an
    engine that took the connection is waited for long ("pending" would tell the caller,
    wrongly, that nothing drives the run)."""
    return ask(address, run_id) is True


def engine_alive(row: dict[str, Any], answer_timeout: float = 30.0) -> bool:
    """Is the process recorded as driving a run still there? Only a process that is gone, or
    a port where nothing (or something else) answers, counts as dead: an engine too busy to
    answer in time is alive, and resuming beside it would put two engines on one run."""
    if not row["engine_address"] or engine_gone(row):
        return False
    return ask(row["engine_address"], row["run_id"], answer_timeout=answer_timeout) is not False


def engine_gone(row: dict[str, Any]) -> bool:
    """Is the process a run's row names as its engine known to be gone? Only a process of
    this host can be looked up; one elsewhere is taken at its word."""
    if row["engine_host"] != socket.gethostname():
        return False
    try:
        os.kill(int(row["engine_pid"]), 0)
    except (ProcessLookupError, ValueError, TypeError):
        return True
    except PermissionError:
        pass
    return False
