"""The public face: an :class:`Orchestrator` per workspace, a :class:`Run` per objective.

    import agentorch_nb as ao
    orch = ao.Orchestrator(workspace="path/to/repo")
    run = orch.start("Add a --json flag to the CLI")
    await run.wait()
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from typing import Any

from . import _loop
from .config import Config
from .dag import _natural
from .engine import hitl
from .engine.dispatch import Engine
from .engine.inbox import Inbox, poke
from .engine.integration import Integration
from .engine.protocols import Agents
from .engine.resume import build_engine, load_state
from .exceptions import (
    InvalidInput,
    ResolutionError,
    RunBusyElsewhere,
    UnknownRun,
    UnknownTask,
    WrongLoop,
)
from .model import Interrupt, RunStatus, Task, TaskStatus, utcnow
from .store import Store, default_path
from .store.records import interrupt_from_row, task_from_row
from .workspace import Workspace

log = logging.getLogger("agentorch_nb")
# Engines driven by this process, by (store path, run id).
_LIVE: dict[tuple[str, str], Engine] = {}
_last_store: Store | None = None


def _agents_for(engine: Engine, agents) -> Agents:
    """``agents`` may be a ready Agents, a team that builds them per run (``for_run``), or
    None: the LLM team with the run's ``Config.models``."""
    if agents is None:
        from .agents import LLMTeam

        agents = LLMTeam()
    return agents.for_run(engine) if hasattr(agents, "for_run") else agents


class Orchestrator:
    """Runs objectives on one git workspace, recording everything in one DuckDB store.

    ``store`` defaults to ``<workspace>/.agentorch/agentorch.duckdb`` (kept out of git
    through ``.git/info/exclude``); ``":memory:"`` keeps nothing after the process.
    """

    def __init__(self, workspace: str | os.PathLike, store: str | os.PathLike | None = None,
                 config: Config | None = None, agents: Agents | None = None) -> None:
        global _last_store
        self.git = Workspace(workspace)
        self.workspace = self.git.root
        self.config = config or Config()
        self.agents = agents
        if store is None:
            store = default_path(self.workspace)
        self.store = Store.open(store, lock_timeout=self.config.lock_timeout,
                                flush_interval=self.config.flush_interval)
        _last_store = self.store

    def __repr__(self) -> str:
        return f"Orchestrator(workspace={str(self.workspace)!r}, store={self.store.path!r})"

    # ------------------------------------------------------------------ runs
    def start(self, objective: str, *, config: Config | None = None,
              agents: Agents | None = None) -> Run:
        """Start a run and return at once; the dispatch loop runs in the background."""
        if not isinstance(objective, str) or not objective.strip():
            raise InvalidInput("the objective is empty: say in a sentence what the run should achieve")
        self.git.require_clean()
        engine = Engine(run_id=f"run-{uuid.uuid4().hex[:8]}", objective=objective.strip(),
                        store=self.store, config=config or self.config, agents=None,
                        workspace=self.workspace)
        engine.agents = _agents_for(engine, agents or self.agents)
        engine.created_at = utcnow()
        engine._emit("run_created", None, objective=engine.objective)
        return self._drive(engine)

    def resume(self, run_id: str, *, config: Config | None = None,
               agents: Agents | None = None) -> Run:
        """Continue a run from the store in this process. Completed tasks stay done; attempts
        cut off by a dead process are counted and retried (Phoenix)."""
        live = _LIVE.get((self.store.path, run_id))
        if live is not None and not _ended(live):
            return Run(self, run_id)
        row = self._run_row(run_id)
        if row["engine_address"] and row["engine_pid"] != os.getpid() and _alive(row):
            raise RunBusyElsewhere(
                f"run {run_id} is being driven by process {row['engine_pid']} on "
                f"{row['engine_host']}: steer it from here with orch.run({run_id!r}), "
                "or stop that process first"
            )
        data = self.store.call_sync(lambda con: load_state(con, run_id))
        engine = build_engine(self.store, run_id, data, agents=None, config=config)
        engine.agents = _agents_for(engine, agents or self.agents)
        known = {self.git.worktree_for(run_id, tid, a.number).branch
                 for tid, attempts in engine.attempts.items() for a in attempts}
        for line in self.git.reconcile(run_id, known):
            engine._emit("reconciled", None, action=line)
            log.warning("resume %s: %s", run_id, line)
        return self._drive(engine)

    def _drive(self, engine: Engine, loop: asyncio.AbstractEventLoop | None = None) -> Run:
        loop = loop or _loop.running_loop() or _loop.background_loop()
        inbox = Inbox(engine)

        async def on_start(e: Engine) -> None:
            e.engine_address = await inbox.start()
            e.save_run()
            await e.store.flush()
            await inbox.drain()  # commands sent while no engine was live

        def on_stop(e: Engine) -> None:
            inbox.close()
            e.engine_pid = e.engine_address = None
            e.save_run()
            # A finished run is read from the store like any other; the engine can go.
            if _LIVE.get(key) is e:
                del _LIVE[key]

        engine.integration = Integration(engine, self.git, engine.config.keep_failed_worktrees,
                                         engine.config.keep_worktrees)
        engine.engine_pid, engine.engine_host = os.getpid(), socket.gethostname()
        engine.on_start.append(on_start)
        engine.on_stop.append(on_stop)
        engine.save_run()
        key = (self.store.path, engine.run_id)
        for stale in [k for k, e in _LIVE.items() if _ended(e)]:
            del _LIVE[stale]  # engines whose loop is gone; their runs read from the store
        _LIVE[key] = engine
        _loop.call_on(loop, engine.start, loop)
        return Run(self, engine.run_id)

    def cleanup(self, run_id: str | None = None) -> list[str]:
        """Remove the worktrees and branches runs left behind (of one run, or of every run
        no engine in this process drives) and prune git's worktree list."""
        live = {rid for (path, rid), e in _LIVE.items() if path == self.store.path and not _ended(e)}
        if run_id in live:
            raise ResolutionError(f"run {run_id} is live: cancel it before cleaning up after it")
        if run_id is not None:
            return self.git.cleanup(run_id)
        return [b for b in self.git.cleanup(None, keep=frozenset(
            b for rid in live for b in (w.branch for w in self.git.run_worktrees(rid))))]

    def run(self, run_id: str) -> Run:
        """A handle on a run of this store, live in this process or not."""
        if (self.store.path, run_id) not in _LIVE:
            self._run_row(run_id)
        return Run(self, run_id)

    def runs(self) -> list[Run]:
        """Every run in the store, newest first."""
        rows = self.store.rows("select run_id from runs order by created_at desc")
        return [Run(self, r["run_id"]) for r in rows]

    def dashboard(self):
        """The store's dashboard widget: its runs with their progress, a New Run form, and
        the human queue (every task of every run that waits for a person)."""
        from .widgets import OrchestratorDashboard

        return OrchestratorDashboard(self)

    def sql(self, query: str, params: list | None = None):
        """A pandas DataFrame of ``query`` over this orchestrator's store."""
        return self.store.query(query, params)

    def _run_row(self, run_id: str) -> dict[str, Any]:
        self.store.flush_sync()
        rows = self.store.rows("select * from runs where run_id = ?", [run_id])
        if not rows:
            raise UnknownRun(run_id, self.store.path)
        return rows[0]


class Run:
    """One run: live in this process (an engine drives it here) or a view of the store."""

    def __init__(self, orchestrator: Orchestrator, run_id: str) -> None:
        self.orchestrator = orchestrator
        self.store = orchestrator.store
        self.id = run_id

    def __repr__(self) -> str:
        s = self.summary()
        done = s["counts"].get("complete", 0)
        return f"<Run {self.id} {s['status']} {done}/{s['tasks']} complete: {s['objective'][:60]!r}>"

    # ------------------------------------------------------------- display
    def dashboard(self):
        """This run's dashboard widget (what displaying the run shows in a notebook)."""
        from .widgets import dashboard_for

        return dashboard_for(self)

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict[str, Any]:
        """The live dashboard where widgets render; a status table and a static SVG of the
        DAG (and Markdown) for nbconvert, GitHub and papermill output."""
        from .widgets._static import run_html, run_markdown

        summary, tasks = self.summary(), self.tasks
        bundle = self.dashboard()._repr_mimebundle_(include=include, exclude=exclude) \
            if _in_kernel() else {}
        bundle.update({"text/plain": repr(self), "text/html": run_html(summary, tasks),
                       "text/markdown": run_markdown(summary, tasks)})
        return bundle

    def _repr_html_(self) -> str:
        from .widgets._static import run_html

        return run_html(self.summary(), self.tasks)

    def _repr_markdown_(self) -> str:
        from .widgets._static import run_markdown

        return run_markdown(self.summary(), self.tasks)

    @property
    def _engine(self) -> Engine | None:
        e = _LIVE.get((self.store.path, self.id))
        return None if e is None or (e.loop is not None and e.loop.is_closed()) else e

    @property
    def live(self) -> bool:
        """True while an engine in this process drives the run."""
        e = self._engine
        return e is not None and not _ended(e)

    def _on_engine(self, fn, *args, **kwargs):
        e = self._engine
        return _loop.call_on(e.loop, fn, *args, **kwargs)

    # ------------------------------------------------------------- reading
    @property
    def status(self) -> RunStatus:
        if self._engine is not None:
            return self._engine.status
        return RunStatus(self.orchestrator._run_row(self.id)["status"])

    @property
    def tasks(self) -> list[Task]:
        """Every task, in id order (t1, t2, ..., t10)."""
        e = self._engine
        if e is not None:
            return self._on_engine(lambda: [e.tasks[t].copy() for t in sorted(e.tasks, key=_natural)])
        rows = self.store.rows("select * from tasks where run_id = ?", [self.id])
        deps: dict[str, list[str]] = {}
        for d in self.store.rows("select task_id, depends_on from task_deps where run_id = ?", [self.id]):
            deps.setdefault(d["task_id"], []).append(d["depends_on"])
        return sorted((task_from_row(r, deps.get(r["task_id"], [])) for r in rows),
                      key=lambda t: _natural(t.id))

    def task(self, task_id: str) -> Task:
        for t in self.tasks:
            if t.id == task_id:
                return t
        raise UnknownTask(task_id, self.id)

    def events(self):
        """The run's event history as a DataFrame, in ``seq`` order."""
        self.store.flush_sync()
        return self.store.query("select * from events where run_id = ? order by seq", [self.id])

    def messages(self, task_id: str | None = None):
        self.store.flush_sync()
        if task_id is None:
            return self.store.query("select * from messages where run_id = ? order by ts", [self.id])
        return self.store.query(
            "select * from messages where run_id = ? and task_id = ? order by ts", [self.id, task_id])

    def interrupts(self) -> list[Interrupt]:
        """Tasks waiting for a human, with the reason."""
        e = self._engine
        if e is not None:
            return self._on_engine(lambda: list(e.open_interrupts.values()))
        self.store.flush_sync()
        return [interrupt_from_row(r) for r in self.store.rows(
            "select * from interrupts where run_id = ? and resolved_at is null order by ts", [self.id])]

    def summary(self) -> dict[str, Any]:
        e = self._engine
        if e is not None:
            return self._on_engine(lambda: {
                "run_id": self.id, "status": e.status.value, "objective": e.objective,
                "tasks": len(e.tasks), "counts": e.counts(), "error": e.error})
        row = self.orchestrator._run_row(self.id)
        counts = {r["status"]: r["n"] for r in self.store.rows(
            "select status, count(*) as n from tasks where run_id = ? group by status", [self.id])}
        return {"run_id": self.id, "status": row["status"], "objective": row["objective"],
                "tasks": sum(counts.values()), "counts": counts, "error": row["error"]}

    # ------------------------------------------------------------- waiting
    async def wait(self, timeout: float | None = None, *, stop_on_pause: bool = True) -> RunStatus:
        """Wait until the run finishes, or (by default) pauses for a human."""
        e = self._engine
        if e is None and self.status.finished:
            return self.status
        e = self._require_live("wait for")
        if not _loop.on_loop(e.loop):
            fut = asyncio.run_coroutine_threadsafe(e.wait(stop_on_pause), e.loop)
            return await asyncio.wait_for(asyncio.wrap_future(fut), timeout)
        return await asyncio.wait_for(e.wait(stop_on_pause), timeout)

    def wait_sync(self, timeout: float | None = None, *, stop_on_pause: bool = True) -> RunStatus:
        """:meth:`wait` for plain Python. Refused on the loop the run lives on (it would
        block the run itself): in a notebook cell use ``await run.wait()``."""
        e = self._engine
        if e is None and self.status.finished:
            return self.status
        e = self._require_live("wait for")
        if _loop.on_loop(e.loop):
            raise WrongLoop("run.wait_sync() would block the event loop this run lives on; "
                            "use `await run.wait()` instead")
        fut = asyncio.run_coroutine_threadsafe(e.wait(stop_on_pause), e.loop)
        try:
            return fut.result(timeout)
        except TimeoutError:
            fut.cancel()
            raise

    def _require_live(self, doing: str) -> Engine:
        e = self._engine
        if e is None:
            raise ResolutionError(
                f"cannot {doing} run {self.id} here: no engine in this process drives it; "
                f"orch.resume({self.id!r}) continues it here")
        return e

    # ------------------------------------------------------------ steering
    def resolve(self, task_id: str, action: str, *, source: str | None = None, **changes: Any):
        """Answer a task that waits for a human: ``"retry"`` (optionally with ``description``,
        ``acceptance_criteria``, ``guidance``), ``"abandon"`` (``drop_dependency``,
        ``cascade``) or ``"spawn"`` (``title``, ``description``, ``acceptance_criteria``,
        ``profile``, ``depends_on``, ``replace``)."""
        return self._command("resolve", source, task_id=task_id, action=action, **changes)

    def interrupt(self, task_id: str, *, source: str | None = None) -> None:
        """Stop an active task's attempt (its subprocesses too) and hand it to a human."""
        return self._command("interrupt", source, task_id=task_id)

    def abandon_task(self, task_id: str, *, drop_dependency: bool = False, cascade: bool = False,
                     source: str | None = None) -> None:
        return self._command("abandon_task", source, task_id=task_id,
                             drop_dependency=drop_dependency, cascade=cascade)

    def add_dependency(self, task_id: str, depends_on: str, *, source: str | None = None) -> None:
        """``task_id`` will wait for ``depends_on``; a cycle is refused with the cycle named."""
        return self._command("add_dependency", source, task_id=task_id, depends_on=depends_on)

    def remove_dependency(self, task_id: str, depends_on: str, *, source: str | None = None) -> None:
        return self._command("remove_dependency", source, task_id=task_id, depends_on=depends_on)

    def replan(self, *, source: str | None = None) -> None:
        return self._command("replan", source)

    def cancel(self, *, source: str | None = None) -> None:
        """Stop the run: every attempt is cancelled and its subprocesses killed. ``await
        run.wait()`` returns once all of it has stopped."""
        return self._command("cancel", source)

    def restart(self) -> Run:
        """Continue a finished, cancelled or crashed run from the store."""
        if self.live:
            return self
        return self.orchestrator.resume(self.id)

    def _command(self, kind: str, source: str | None, **payload: Any):
        e = self._engine
        if e is not None and not _ended(e):
            return self._on_engine(hitl.apply, e, kind, payload, source or "api")
        return self._send(kind, payload, source or f"process:{os.getpid()}@{socket.gethostname()}")

    def _send(self, kind: str, payload: dict[str, Any], source: str) -> str:
        """Post a command to whichever process drives the run, through the store's inbox.
        Returns ``"applied"``, or ``"pending"`` when no engine is live (a resume applies it);
        raises the engine's refusal."""
        if "task_id" in payload:
            self._check_remote(kind, payload)
        command_id = f"cmd-{uuid.uuid4().hex[:10]}"
        self.store.upsert("commands", {
            "run_id": self.id, "command_id": command_id, "ts": utcnow(), "kind": kind,
            "payload": payload, "source": source, "status": "pending"})
        row = self.orchestrator._run_row(self.id)  # flushes the command first
        if not row["engine_address"] or not poke(row["engine_address"], self.id):
            return "pending"
        (cmd,) = self.store.rows(
            "select status, error from commands where run_id = ? and command_id = ?",
            [self.id, command_id])
        if cmd["status"] == "rejected":
            raise ResolutionError(cmd["error"])
        return cmd["status"]

    def _check_remote(self, kind: str, payload: dict[str, Any]) -> None:
        """Refuse at once what the engine would refuse, when the store can tell."""
        rows = self.store.rows("select status from tasks where run_id = ? and task_id = ?",
                               [self.id, payload["task_id"]])
        if not rows:
            raise UnknownTask(payload["task_id"], self.id)
        if kind == "resolve" and rows[0]["status"] != TaskStatus.WAITING_HUMAN:
            raise ResolutionError(
                f"cannot resolve task {payload['task_id']!r}: it is {rows[0]['status']}, "
                "and only waiting_human tasks take a resolution")


def _in_kernel() -> bool:
    """Is this a Jupyter kernel, where a widget has a front end to talk to?"""
    import sys

    if "ipykernel" not in sys.modules:
        return False
    from ipykernel.kernelapp import IPKernelApp

    return IPKernelApp.initialized()


def _ended(engine: Engine) -> bool:
    """The engine's loop finished it, or is gone (``asyncio.run`` returned, a kernel restarted
    its loop): either way nothing will drive the run here any more."""
    if engine.loop is not None and engine.loop.is_closed():
        return True
    return engine._main_task is not None and engine._main_task.done()


def _alive(row: dict[str, Any]) -> bool:
    """Is the process recorded as driving a run still there and answering?"""
    if row["engine_host"] == socket.gethostname():
        try:
            os.kill(int(row["engine_pid"]), 0)
        except (ProcessLookupError, ValueError, TypeError):
            return False
        except PermissionError:
            pass
    return poke(row["engine_address"], row["run_id"], timeout=2.0)


def sql(query: str, params: list | None = None, *, store: str | os.PathLike | None = None):
    """Run SQL over a store and return a pandas DataFrame.

        ao.sql("select status, count(*) from tasks group by status",
               store="ws/.agentorch/agentorch.duckdb")
    """
    if store is None:
        if _last_store is None:
            raise InvalidInput("no store to query: pass store='path/to/agentorch.duckdb'")
        target = _last_store
    else:
        target = Store.open(store, create=False)
    return target.query(query, params)
