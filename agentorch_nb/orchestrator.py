"""The public face: an :class:`Orchestrator` per workspace, a :class:`~agentorch_nb.Run` per
objective, and :func:`sql` over a store.

    import agentorch_nb as ao
    orch = ao.Orchestrator(workspace="path/to/repo")
    run = orch.start("Add a --json flag to the CLI")
    await run.wait()
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
import pathlib
import re
import socket
import uuid

from . import _loop, live, remote
from .config import Config
from .engine.dispatch import Engine
from .engine.inbox import Inbox
from .engine.integration import Integration
from .engine.protocols import Agents
from .engine.resume import build_engine, load_state, recover, settle_merges
from .exceptions import InvalidInput, ResolutionError, RunBusyElsewhere, StoreBusy
from .llm.preflight import preflight
from .llm.settings import Models
from .model import utcnow
from .run import Run
from .store import Store, default_path, retention
from .store.snapshot import snapshot as store_snapshot
from .workspace import Workspace

log = logging.getLogger("agentorch_nb")
_last_store: Store | None = None
# Statements ao.sql() runs unless asked to write: queries, never a change to the record.
READ_ONLY = frozenset({"SELECT", "EXPLAIN"})
RUN_ID = re.compile(r"run-[A-Za-z0-9_-]{1,40}")


def _agents_for(engine: Engine, agents) -> Agents:
    """``agents`` may be a ready Agents, a team that builds them per run (``for_run``), or
    None: the LLM team with the run's ``Config.models``."""
    if agents is None:
        from .agents import LLMTeam

        agents = LLMTeam()
    engine.team = agents  # an executor that runs attempts elsewhere builds them there
    return agents.for_run(engine) if hasattr(agents, "for_run") else agents


def models_called(agents, config: Config) -> Models | None:
    """The models a run's agents will call: the LLM team's (``LLMTeam.models``, else
    ``config.models``), or None for agents of your own (ready ``Agents`` or another team),
    whose model calls, if any, are theirs to check."""
    if agents is None:
        return config.models
    if isinstance(agents, Agents):
        return None
    from .agents import LLMTeam

    return (agents.models or config.models) if isinstance(agents, LLMTeam) else None


class Orchestrator:
    """Runs objectives on one git workspace, recording everything in one DuckDB store.

    ``store`` defaults to ``<workspace>/.agentorch/agentorch.duckdb`` (kept out of git
    through ``.git/info/exclude``); ``":memory:"`` keeps nothing after the process.
    """

    def __init__(self, workspace: str | os.PathLike, store: str | os.PathLike | None = None,
                 config: Config | None = None, agents: Agents | None = None) -> None:
        global _last_store
        if config is not None and not isinstance(config, Config):
            raise InvalidInput(f"config must be an agentorch_nb.Config, not {type(config).__name__}")
        self.git = Workspace(workspace)
        self.workspace = self.git.root
        self.config = config or Config()
        self.agents = agents
        if store is None:
            store = default_path(self.workspace)
        self.store = Store.open(store, lock_timeout=self.config.lock_timeout,
                                flush_interval=self.config.flush_interval)
        self.store.flush_future()  # opens (creates, migrates) the file in its thread meanwhile
        _last_store = self.store

    def __repr__(self) -> str:
        return f"Orchestrator(workspace={str(self.workspace)!r}, store={self.store.path!r})"

    # ------------------------------------------------------------------ runs
    def start(self, objective: str, *, config: Config | None = None,
              agents: Agents | None = None, run_id: str | None = None) -> Run:
        """Start a run and return at once; the dispatch loop runs in the background. The
        run is on disk when this returns: its id can be resumed whatever happens next.
        ``run_id`` (``run-`` and up to 40 letters, digits, ``-`` or ``_``) names the run in
        advance, as a batch job started by the Jupyter server does; by default it is new."""
        if not isinstance(objective, str) or not objective.strip():
            raise InvalidInput("the objective is empty: say in a sentence what the run should achieve")
        if run_id is None:
            run_id = f"run-{uuid.uuid4().hex[:8]}"
        elif not isinstance(run_id, str) or not RUN_ID.fullmatch(run_id):
            raise InvalidInput(f"run_id {run_id!r} is not a run id: 'run-' and up to 40 "
                               "letters, digits, '-' or '_'")
        elif self.store.rows("select 1 from runs where run_id = ?", [run_id]):
            raise InvalidInput(f"run_id {run_id!r} is taken in {self.store.path}")
        self.git.require_clean()
        config = config or self.config
        self._preflight(config, agents or self.agents, self.workspace, "started")
        engine = Engine(run_id=run_id, objective=objective.strip(),
                        store=self.store, config=config, agents=None,
                        workspace=self.workspace)
        engine.agents = _agents_for(engine, agents or self.agents)
        engine.created_at = utcnow()
        engine.record_event("run_created", None, objective=engine.objective)
        return self._drive(engine)

    def resume(self, run_id: str, *, config: Config | None = None,
               agents: Agents | None = None) -> Run:
        """Continue a run from the store in this process. The repository is repaired first
        (what a crash left: stale git locks, a merge cut off, worktrees no attempt recorded
        whole); a merge the dead engine had started is settled from git; completed tasks stay
        done; attempts cut off by the dead process are counted and retried (Phoenix)."""
        engine = live.engine_for(self.store.path, run_id)
        if engine is not None and not engine.ended:
            return Run(self, run_id)
        row = remote.run_row(self.store, run_id)
        if row["engine_pid"] != os.getpid() and remote.engine_alive(row):
            raise RunBusyElsewhere(
                f"run {run_id} is being driven by process {row['engine_pid']} on "
                f"{row['engine_host']}: steer it from here with orch.run({run_id!r}), "
                "or stop that process first"
            )
        stored = self.store.call_sync(lambda con: load_state(con, run_id))
        engine = build_engine(self.store, run_id, stored, agents=None, config=config)
        self._preflight(engine.config, agents or self.agents, engine.workspace or self.workspace,
                        "resumed")
        engine.agents = _agents_for(engine, agents or self.agents)
        self._attach_git(engine)
        known = {a.branch for a in stored.attempts if a.branch}
        for line in self.git.reconcile(run_id, known):
            engine.record_event("reconciled", None, action=line)
            log.warning("resume %s: %s", run_id, line)
        settle_merges(engine, self.git, stored)
        recover(engine)
        return self._drive(engine)

    @staticmethod
    def _preflight(config: Config, agents, workspace, doing: str) -> None:
        """Refuse the run (ModelNotReady) before anything exists if a model it will call
        cannot be called; a run of agents that call no model checks nothing."""
        models = models_called(agents, config)
        if config.preflight and models is not None:
            preflight(models, workspace=workspace, guardian=config.enable_guardian, doing=doing)

    def _attach_git(self, engine: Engine) -> None:
        engine.integration = Integration(engine, self.git, engine.config.keep_failed_worktrees,
                                         engine.config.keep_worktrees)

    def _drive(self, engine: Engine, loop: asyncio.AbstractEventLoop | None = None) -> Run:
        loop = loop or _loop.running_loop() or _loop.background_loop()
        inbox = Inbox(engine)
        store_path = self.store.path

        async def on_start(e: Engine) -> None:
            e.engine_address = await inbox.start()
            e.save_run()
            await e.store.flush()
            try:
                await inbox.drain()  # commands sent while no engine was live
            except StoreBusy as exc:  # they stay pending: the next wake-up applies them
                log.warning("run %s: pending commands wait: %s", e.run_id, exc)

        def on_stop(e: Engine) -> None:
            inbox.close()
            e.engine_pid = e.engine_address = None
            e.save_run()
            live.forget(store_path, e)  # a finished run is read from the store like any other

        if engine.integration is None:
            self._attach_git(engine)
        engine.engine_pid, engine.engine_host = os.getpid(), socket.gethostname()
        engine.on_start.append(on_start)
        engine.on_stop.append(on_stop)
        engine.save_run()
        self._make_durable(engine)
        live.register(store_path, engine)
        _loop.call_on(loop, engine.start, loop)
        return Run(self, engine.run_id)

    def _make_durable(self, engine: Engine) -> None:
        """The run's row and first events are on disk before its id is handed out. Refused
        (nothing starts) when another process holds the store past lock_timeout."""
        done = self.store.flush_future()
        while True:
            try:
                return done.result(timeout=0.05)
            except TimeoutError:
                busy = self.store.busy
                if busy is not None:
                    raise StoreBusy(
                        f"run {engine.run_id} was not started: {self.store.path} is held by "
                        f"{busy.describe()}. Its record is written when the file is free; "
                        f"then orch.resume({engine.run_id!r}) starts it.") from None

    def cleanup(self, run_id: str | None = None) -> list[str]:
        """Remove the worktrees and branches runs left behind (of one run, or of every run
        no engine in this process drives) and prune git's worktree list."""
        running = live.live_run_ids(self.store.path)
        if run_id in running:
            raise ResolutionError(f"run {run_id} is live: cancel it before cleaning up after it")
        if run_id is not None:
            return self.git.cleanup(run_id)
        return self.git.cleanup(None, keep=frozenset(
            w.branch for rid in running for w in self.git.run_worktrees(rid)))

    def run(self, run_id: str) -> Run:
        """A handle on a run of this store, live in this process or not."""
        if live.engine_for(self.store.path, run_id) is None:
            remote.run_row(self.store, run_id)
        return Run(self, run_id)

    def runs(self) -> list[Run]:
        """Every run in the store, newest first."""
        rows = self.store.rows("select run_id from runs order by created_at desc")
        return [Run(self, r["run_id"]) for r in rows]

    def run_row(self, run_id: str) -> dict:
        """The run's row as stored (status, objective, config, engine address, error)."""
        return remote.run_row(self.store, run_id)

    def dashboard(self):
        """The store's dashboard widget: its runs with their progress, a New Run form, and
        the human queue (every task of every run that waits for a person)."""
        from .widgets import OrchestratorDashboard

        return OrchestratorDashboard(self)

    def sql(self, query: str, params: list | None = None, *, write: bool = False):
        """A pandas DataFrame of ``query`` over this orchestrator's store; read-only unless
        ``write=True``."""
        check_read_only(query, write)
        return self.store.query(query, params)

    def snapshot(self, dest: str | os.PathLike) -> pathlib.Path:
        """Write a consistent copy of this store (live runs included, as they are at this
        moment) to the new DuckDB file ``dest``; any process may keep it open as long as it
        likes, where a session on the live file holds the engine up."""
        return store_snapshot(self.store, dest)

    def prune(self, older_than: datetime.timedelta | str | None = None,
              keep_last: int | None = None, dry_run: bool = False) -> list[str]:
        """Remove finished runs with every row they have (their checkpoints included) and
        shrink the file; return the run ids removed (with ``dry_run``: that would be).

        ``older_than``: a timedelta or ``"30d"``, ``"12h"``...: runs finished longer ago.
        ``keep_last``: keep the N newest runs. Give one or both (both: a run must be old and
        not among the newest). A run an engine drives (in this process or, as its row says,
        another live one) is never removed."""
        found = retention.candidates(self.store, older_than, keep_last)
        running = live.live_run_ids(self.store.path)
        doomed = [r["run_id"] for r in found if r["run_id"] not in running
                  and not (r["engine_address"] and remote.engine_alive(r, answer_timeout=5.0))]
        if dry_run:
            return doomed
        gone = set(retention.delete_runs(self.store, doomed))
        return [r for r in doomed if r in gone]


def check_read_only(query: str, write: bool) -> None:
    """Refuse, before it runs, any statement of ``query`` that is not a query, unless the
    caller asked to write: the store is the run's record."""
    import duckdb

    if not isinstance(query, str) or not query.strip():
        raise InvalidInput("the query is empty")
    if write:
        return
    try:
        kinds = [s.type.name for s in duckdb.extract_statements(query)]
    except duckdb.Error as exc:
        raise InvalidInput(f"the query does not parse: {exc}") from None
    changes = [k for k in kinds if k not in READ_ONLY]
    if changes:
        raise InvalidInput(
            f"refused: this SQL would change the store ({', '.join(k.lower() for k in changes)} "
            "statement). ao.sql() only reads unless you pass write=True (%%agentsql --write)")


def sql(query: str, params: list | None = None, *, store: str | os.PathLike | None = None,
        write: bool = False):
    """Run SQL over a store and return a pandas DataFrame; read-only unless ``write=True``.

        ao.sql("select status, count(*) from tasks group by status",
               store="ws/.agentorch/agentorch.duckdb")
    """
    check_read_only(query, write)
    return _store_or_last(store, "query").query(query, params)


def snapshot(dest: str | os.PathLike, store: str | os.PathLike | None = None) -> pathlib.Path:
    """Write a consistent copy of a store (default: the one this process opened last, as
    :func:`sql`) to the new DuckDB file ``dest``, and return its path.

        ao.snapshot("postmortem.duckdb", store="ws/.agentorch/agentorch.duckdb")
    """
    return store_snapshot(_store_or_last(store, "copy"), dest)


def _store_or_last(store: str | os.PathLike | None, doing: str) -> Store:
    """The store at ``store``, or the one this process opened last."""
    if store is not None:
        return Store.open(store, create=False)
    if _last_store is None:
        raise InvalidInput(f"no store to {doing}: pass store='path/to/agentorch.duckdb'")
    return _last_store
