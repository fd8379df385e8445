"""Steering and reading a run that another process drives: the sender's side of its channel.

An engine listens on a TCP port of 127.0.0.1 (``runs.engine_address``) and keeps a random
token in the store (``engine_channels``, readable by whoever can read the store). A request
is one JSON line ``{"run", "token", "op", ...}``; the engine answers one JSON line:

``command``     the engine checks and applies it (:func:`hitl.apply`), upserts its
                ``commands`` row (applied, or rejected with the error), waits until that is
                committed, and answers the outcome. The sender needs no access to the file.
``tasks``, ``interrupts``, ``summary``
                the engine's own view of the run, the same that ``run.tasks`` and
                ``run.interrupts()`` return in its process.

The address and token are looked up in the store once and cached per (store, run) in this
process. When the channel fails (nothing listens, the engine hung up, no answer) the cache is
dropped and the sender takes the store's road: reads read the file; a command becomes a
pending ``commands`` row (only if no row of that command id exists, in one transaction, so a
command whose request got through is never queued twice), and the bare run id on the port
makes the engine apply its pending rows. With no live engine a command stays pending and
``resume()`` applies it first. :mod:`agentorch_nb.engine.inbox` is the engine's side.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import json
import operator
import os
import socket
import threading
import uuid
from typing import Any

from .dag import TaskGraph
from .exceptions import CycleError, MissingDependency, ResolutionError, UnknownRun, UnknownTask
from .model import Interrupt, Profile, Task, TaskStatus, utcnow
from .store import Store
from .store.records import interrupt_from_row, load_tasks
from .store.sqlutil import select, transaction

MAX_REQUEST = 1 << 20  # bytes of one request line (a spawn's description fits many times)
COMMAND_TIMEOUT = 120.0  # an engine busy with its store on a loaded machine is slow, not dead
READ_TIMEOUT = 10.0  # past this a read goes to the store instead
PROFILES = frozenset(p.value for p in Profile)

_channels: dict[tuple[str, str], tuple[str, str]] = {}  # (store path, run id) -> (address, token)
_dead: set[tuple[str, str, tuple[str, str]]] = set()  # (store, run, channel) that failed us
_lock = threading.Lock()
# The engine's own time (ms from receipt to answer) of this thread's last answer: benchmarks.
last_answer = threading.local()


class NoAnswer(Exception):
    """The channel gave no answer; ``sent`` says whether the request may have arrived."""

    def __init__(self, sent: bool) -> None:
        super().__init__("no answer" if sent else "not delivered")
        self.sent = sent


# ------------------------------------------------------------------ commands
def send_command(store: Store, run_id: str, kind: str, payload: dict[str, Any],
                 source: str) -> str:
    """Post a command to whichever process drives the run. Returns ``"applied"``, or
    ``"pending"`` when no engine is live (a resume applies it); raises the engine's refusal."""
    command_id = f"cmd-{uuid.uuid4().hex[:10]}"
    found = channel(store, run_id)
    if found is not None:
        try:
            answer = request(found, run_id, "command", COMMAND_TIMEOUT, command_id=command_id,
                             kind=kind, payload=payload, source=source)
        except NoAnswer as exc:
            forget(store, run_id, found)
            if exc.sent:  # it may have been applied: queue it once, check nothing twice
                return _by_store(store, run_id, command_id, kind, payload, source, check=False)
        else:
            return outcome(answer, run_id)
    return _by_store(store, run_id, command_id, kind, payload, source, check=True)


def outcome(answer: dict[str, Any], run_id: str) -> str:
    """The engine's answer to a command: its status, or its refusal raised as the store-side
    check raises it (UnknownTask, CycleError, MissingDependency, ResolutionError); any other
    error is a ResolutionError naming it, as a rejected pending row always was."""
    if answer.get("status") == "applied":
        return "applied"
    kind, message = answer.get("type"), str(answer.get("message") or answer.get("error"))
    if kind == "UnknownTask" and answer.get("task_id"):
        raise UnknownTask(answer["task_id"], run_id)
    if kind == "CycleError" and isinstance(answer.get("cycle"), list):
        raise CycleError(answer["cycle"])
    if kind == "MissingDependency" and answer.get("depends_on"):
        raise MissingDependency(answer["task_id"], answer["depends_on"])
    if kind == "ResolutionError":
        raise ResolutionError(message)
    raise ResolutionError(answer.get("error") or f"{kind}: {message}")


def _by_store(store: Store, run_id: str, command_id: str, kind: str, payload: dict[str, Any],
              source: str, *, check: bool) -> str:
    """The store's road: a pending row, the engine poked, its row read back."""
    if check and "task_id" in payload:
        check_command(store, run_id, kind, payload)
    row = {"run_id": run_id, "command_id": command_id, "ts": utcnow(), "kind": kind,
           "payload": json.dumps(payload), "source": source, "status": "pending"}
    existing = store.call_sync(lambda con: queue_once(con, row))
    if existing is None or existing["status"] == "pending":
        run = run_row(store, run_id)
        if not run["engine_address"] or not poke(run["engine_address"], run_id):
            return "pending"
        (existing,) = store.rows("select status, error from commands where run_id = ? "
                                 "and command_id = ?", [run_id, command_id])
    if existing["status"] == "rejected":
        raise ResolutionError(existing["error"])
    return existing["status"]


def queue_once(con, row: dict[str, Any]) -> dict[str, Any] | None:
    """Insert the pending ``commands`` row unless one with its id exists (then return that
    one), in one transaction: an engine that got the command over the channel may have
    recorded it already."""
    with transaction(con):
        found = select(con, "select status, error from commands where run_id = ? and "
                            "command_id = ?", [row["run_id"], row["command_id"]])
        if found:
            return found[0]
        con.execute("insert into commands (run_id, command_id, ts, kind, payload, source, status) "
                    "values (?, ?, ?, ?, ?, ?, ?)", [row[k] for k in (
                        "run_id", "command_id", "ts", "kind", "payload", "source", "status")])
    return None


def check_command(store: Store, run_id: str, kind: str, payload: dict[str, Any]) -> None:
    """Refuse at once what the engine would refuse, when the store can tell: an unknown
    task, a resolution for a task that does not wait for one, a dependency edit that would
    close a cycle (:class:`CycleError` names it) or removes an edge that is not there."""
    rows = store.rows("select status from tasks where run_id = ? and task_id = ?",
                      [run_id, payload["task_id"]])
    check_status(run_id, kind, payload["task_id"], rows[0]["status"] if rows else None)
    if kind in ("add_dependency", "remove_dependency"):
        graph = TaskGraph()
        for r in store.rows("select task_id from tasks where run_id = ?", [run_id]):
            graph.add_task(r["task_id"])
        for r in store.rows("select task_id, depends_on from task_deps where run_id = ?", [run_id]):
            graph.add_dependency(r["task_id"], r["depends_on"])
        getattr(graph, kind)(payload["task_id"], payload["depends_on"])


def check_status(run_id: str, kind: str, task_id: str, status: str | None) -> None:
    """The refusals a task's status decides, worded the same wherever they are checked (the
    store here, the engine's memory on its channel)."""
    if status is None:
        raise UnknownTask(task_id, run_id)
    if kind == "resolve" and status != TaskStatus.WAITING_HUMAN:
        raise ResolutionError(
            f"cannot resolve task {task_id!r}: it is {status}, "
            "and only waiting_human tasks take a resolution")
    if kind != "resolve" and TaskStatus(status).terminal:
        raise ResolutionError(f"cannot {kind.replace('_', ' ')} task {task_id!r}: it is {status}")


# ------------------------------------------------------------------- reads
def tasks(store: Store, run_id: str) -> list[Task]:
    """Every task of the run (no particular order): the engine's view while one is live."""
    found = _read(store, run_id, "tasks")
    if found is None:
        return store.call_sync(lambda con: _with_channel(con, store, run_id, load_tasks))
    return [record_of(Task, found["fields"], values) for values in found["rows"]]


def interrupts(store: Store, run_id: str) -> list[Interrupt]:
    """The run's open interrupts: the engine's view while one is live, else oldest first."""
    found = _read(store, run_id, "interrupts")
    if found is None:
        store.flush_sync()
        rows = store.call_sync(lambda con: _with_channel(con, store, run_id, lambda c, r: select(
            c, "select * from interrupts where run_id = ? and resolved_at is null order by ts",
            [r])))
        return [interrupt_from_row(r) for r in rows]
    return [record_of(Interrupt, found["fields"], values) for values in found["rows"]]


def summary(store: Store, run_id: str) -> dict[str, Any]:
    """Status, objective, task counts and the last error of the run."""
    found = _read(store, run_id, "summary")
    if found is not None:
        return found
    store.flush_sync()
    row, counts = store.call_sync(lambda con: _with_channel(con, store, run_id, _stored_summary))
    if row is None:
        raise UnknownRun(run_id, store.path)
    return {"run_id": run_id, "status": row["status"], "objective": row["objective"],
            "tasks": sum(counts.values()), "counts": counts, "error": row["error"],
            "store_busy": None}


def _stored_summary(con, run_id: str):
    rows = select(con, "select * from runs where run_id = ?", [run_id])
    counts = {r["status"]: r["n"] for r in select(
        con, "select status, count(*) as n from tasks where run_id = ? group by status", [run_id])}
    return (rows[0] if rows else None), counts


def _read(store: Store, run_id: str, op: str) -> Any:
    """The engine's answer to a read, or None when the store must answer instead."""
    found = cached(store, run_id)
    if found is None:
        return None
    try:
        return request(found, run_id, op, READ_TIMEOUT)["data"]
    except (NoAnswer, KeyError):
        forget(store, run_id, found)
        return None


def _with_channel(con, store: Store, run_id: str, read):
    """``read(con, run_id)``, and the run's channel noted while the file is open anyway:
    the next read asks the engine."""
    remember(store, run_id, channel_of(con, run_id))
    return read(con, run_id)


def fields_of(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def values_of(record: Any, fields: list[str]) -> list[Any]:
    """A Task's or an Interrupt's fields as JSON values, copied (the engine's loop goes on
    changing the record while a thread encodes them)."""
    return [v.isoformat() if isinstance(v, dt.datetime) else v.copy()
            if isinstance(v, (list, dict)) else v for v in _getter(tuple(fields))(record)]


def record_of(cls, fields: list[str], values: list[Any]):
    """The record :func:`values_of` encoded, equal to the engine's."""
    kw = dict(zip(fields, values))
    for name in ("created_at", "updated_at"):
        if isinstance(kw.get(name), str):
            kw[name] = dt.datetime.fromisoformat(kw[name])
    if cls is Task:
        kw["status"] = TaskStatus(kw["status"])
        kw["profile"] = Profile(kw["profile"]) if kw["profile"] in PROFILES else kw["profile"]
    known = _known(cls)
    if len(kw) != len(known) or not known.issuperset(kw):
        kw = {k: v for k, v in kw.items() if k in known}
    return cls(**kw)


@functools.cache
def _getter(fields: tuple[str, ...]):
    return operator.attrgetter(*fields)


@functools.cache
def _known(cls) -> frozenset[str]:
    return frozenset(fields_of(cls))


# ----------------------------------------------------------------- channel
def channel(store: Store, run_id: str) -> tuple[str, str] | None:
    """(address, token) of the run's live engine: cached, else looked up in the store."""
    found = cached(store, run_id)
    if found is None:
        found = store.call_sync(lambda con: channel_of(con, run_id))
        remember(store, run_id, found)
        found = cached(store, run_id)
    return found


def channel_of(con, run_id: str) -> tuple[str, str] | None:
    rows = select(con, "select r.engine_address as address, c.token from runs r join "
                       "engine_channels c on c.run_id = r.run_id and c.address = r.engine_address "
                       "where r.run_id = ?", [run_id])
    return (rows[0]["address"], rows[0]["token"]) if rows else None


def cached(store: Store, run_id: str) -> tuple[str, str] | None:
    with _lock:
        return _channels.get((store.path, run_id))


def remember(store: Store, run_id: str, found: tuple[str, str] | None) -> None:
    with _lock:
        if found is not None and (store.path, run_id, found) not in _dead:
            _channels[(store.path, run_id)] = found


def forget(store: Store, run_id: str, found: tuple[str, str]) -> None:
    """The channel ``found`` failed: the store answers until the run's row names another
    (a new engine has a new token)."""
    with _lock:
        _channels.pop((store.path, run_id), None)
        _dead.add((store.path, run_id, found))


def request(found: tuple[str, str], run_id: str, op: str, timeout: float,
            **fields: Any) -> dict[str, Any]:
    """Send one request on the channel and return the engine's answer; raise
    :class:`NoAnswer` when there is none."""
    address, token = found
    host, _, port = address.rpartition(":")
    line = json.dumps({"run": run_id, "token": token, "op": op, **fields}).encode() + b"\n"
    if len(line) > MAX_REQUEST:
        raise ResolutionError(f"the command is {len(line)} bytes; at most {MAX_REQUEST} travel")
    sent = False
    try:
        with socket.create_connection((host, int(port)), timeout=5.0) as sock:
            sock.settimeout(timeout)
            sock.sendall(line)
            sent = True
            with sock.makefile("rb") as f:
                answer = f.readline()
    except (OSError, ValueError):
        raise NoAnswer(sent) from None
    if not answer.endswith(b"\n"):
        raise NoAnswer(sent)
    try:
        data = json.loads(answer)
    except ValueError:
        raise NoAnswer(sent) from None
    last_answer.engine_ms = data.get("engine_ms")
    return data


# ------------------------------------------------------------------ wake-up
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
