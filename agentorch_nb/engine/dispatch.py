"""The dispatch loop of one run.

An :class:`Engine` lives on one asyncio loop (the kernel's, or the package's background
loop) and is the only writer of its run. It keeps the run's tasks in memory and writes
every change through to the store as it happens: events, task rows, attempts. The loop
sleeps until something happens (a worker finished, a human answered, a dependency was
edited, the run was cancelled) and then does one step: promote what became ready, hold
what lost a dependency, start workers up to the limit, and decide whether the run is
paused or done. It never polls.

The engine's methods are not thread-safe: :class:`agentorch_nb.Run` marshals calls onto
the engine's loop.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
import uuid
from collections import Counter
from pathlib import Path
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..config import Config
from ..dag import TaskGraph, natural_key
from ..exceptions import ResolutionError, UnknownTask, report_failure
from ..model import (
    Attempt,
    Interrupt,
    Interruption,
    Profile,
    RunStatus,
    Task,
    TaskStatus,
    check_transition,
)
from ..store import Store
from ..store.sharing import Busy
from ..store.records import interrupt_row
from .attempts import AttemptLifecycle
from .executor import LOCAL
from .heap import HEAP
from .planning import Planning
from .recording import Recording
from .integration import Integration
from .protocols import Agents

if TYPE_CHECKING:
    from .resume import StoredRun

log = logging.getLogger("agentorch_nb.engine")
S = TaskStatus
# Ended attempts whose writes are not committed yet, per worker, beyond which no attempt
# starts: while another process holds the store, the queue of writes stays bounded.
FINISHING_PER_WORKER = 256
STEP_SLICE = 500  # tasks whose readiness one step looks at


class Engine(Recording, Planning, AttemptLifecycle):
    def __init__(
        self,
        *,
        run_id: str,
        objective: str,
        store: Store,
        config: Config,
        agents: Agents,
        workspace: Path | None,
    ) -> None:
        self.run_id = run_id
        self.objective = objective
        self.store = store
        self.config = config
        self.agents = agents
        self.workspace = workspace
        self.status = RunStatus.RUNNING
        self.error: str | None = None
        self.created_at = None
        # The process that drives the run and its wake-up port, as the run's row shows them.
        self.engine_pid: int | None = None
        self.engine_host: str | None = None
        self.engine_address: str | None = None
        self.tasks: dict[str, Task] = {}
        self.graph = TaskGraph()
        self.attempts: dict[str, list[Attempt]] = {}
        self.open_interrupts: dict[str, Interrupt] = {}  # by task id
        self.planned = False
        self.running: dict[str, asyncio.Task] = {}
        self.max_running_seen = 0
        self._seq = 0
        self._next_task = 1
        self._counts: Counter[TaskStatus] = Counter()
        self._dirty: set[str] = set()  # planned tasks whose readiness may have changed
        self._finishing: set[str] = set()  # ended attempts still writing or releasing their worktree
        self._at_commit: dict[asyncio.Future, list[str]] = {}  # commit -> attempts it ends
        self._attempt_tasks: set[asyncio.Task] = set()  # every attempt coroutine not done yet
        self.budget_hold = False  # the LLM budget is spent: start nothing until a human retries
        self.store_busy: Busy | None = None  # another process holds the store: start nothing
        self._reviewing: asyncio.Task | None = None  # the Director's review of the planned graph
        self._review_wanted = False  # plan tasks exist that the Director has not reviewed yet
        self._plan_counts: Counter[TaskStatus] = Counter()  # statuses of plan-profile tasks
        # Approved tasks whose merge conflicted wait (awaiting_qa) for a merge task: task -> merge
        # task; and, for a merge task that just completed, the tasks it integrated.
        self._merging: dict[str, str] = {}
        self._integrated: dict[str, list[str]] = {}
        self._ready: list[tuple[int, tuple, str]] = []  # heap: (-priority, natural id, id)
        self._priority: dict[str, int] | None = None
        self._stop_reason: dict[str, str] = {}
        self._fatal: BaseException | None = None
        self._wake: asyncio.Event | None = None
        self._changed: asyncio.Event | None = None
        self._main_task: asyncio.Task | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.integration: Integration | None = None  # git worktrees and merges, when a workspace is set
        # Where attempts run (this process unless Config.executor says otherwise), and what
        # the agents were built from (a team with for_run, or ready Agents): an executor
        # that runs attempts elsewhere builds them there from it.
        self.executor = (config.executor or LOCAL).bind(self)
        self.team: Any = agents
        self.on_start: list = []  # coroutine functions awaited before the first step
        self.on_stop: list = []  # callables run when the loop ends
        # Called on the engine's loop with each event, message and streamed reply chunk as it
        # happens (see _publish); the widgets watch a live run through this.
        self.observers: list[Callable[[dict[str, Any]], None]] = []

    def set_run_status(self, status: RunStatus, error: str | None = None) -> None:
        if status == self.status and error is None:
            return
        self.record_event("run_status", None, **{"from": self.status, "to": status, "error": error})
        self.status = status
        if error:
            self.error = error
        self.save_run()
        self._notify()

    def keep_heap(self) -> None:
        """Keep what the heap holds now out of the collector's sweeps while the run is live
        (see :mod:`.heap`)."""
        HEAP.hold(self)

    def mark_dirty(self, *task_ids: str) -> None:
        """These tasks' readiness may have changed: the next step looks at them."""
        self._dirty.update(task_ids)

    def record_dependencies(self, task_id: str, kind: str, depends_on: str) -> None:
        """``task_id``'s dependencies were edited in the graph (``kind``: dep_added or
        dep_removed ``depends_on``): record it and keep the task's row in step."""
        task = self.tasks[task_id]
        task.depends_on = self.graph.dependencies(task_id)
        self.record_event(kind, task_id, depends_on=depends_on)
        self.store.set_deps(self.run_id, task_id, task.depends_on)
        self.save_task(task)
        self._priority = None

    def cancel(self) -> None:
        """Stop the run: the loop cancels every attempt and ends ``cancelled``."""
        if self._main_task is not None:
            self._main_task.cancel()

    @property
    def ended(self) -> bool:
        """The loop has finished (or its event loop is gone): nothing drives the run here."""
        if self.loop is not None and self.loop.is_closed():
            return True
        return self._main_task is not None and self._main_task.done()

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()

    def move(self, task_id: str, to: TaskStatus, reason: str | None = None) -> None:
        """The one way a task's status changes: checked against the table, then recorded."""
        task = self.tasks[task_id]
        check_transition(task_id, task.status, to)
        self.record_event("task_status", task_id, **{"from": task.status, "to": to, "reason": reason})
        self._counts[task.status] -= 1
        self._counts[to] += 1
        if task.profile == Profile.PLAN:
            self._plan_counts[task.status] -= 1
            self._plan_counts[to] += 1
        task.status = to
        task.status_reason = reason
        self.save_task(task)
        if to == S.PLANNED:
            self._dirty.add(task_id)
        elif to == S.READY:
            heapq.heappush(self._ready, (-self._prio(task_id), natural_key(task_id), task_id))
        elif to == S.ABANDONED:
            self._dirty.update(self.graph.dependents(task_id))
            if task.profile == Profile.MERGE:
                self._merge_task_gone(task_id)
        # COMPLETE: dependents are looked at once the completion is on disk (_attempt).
        self._notify()

    def restore(self, stored: StoredRun) -> None:
        """Take on a run as the store holds it (see :mod:`.resume`): tasks, graph, attempts,
        open interrupts, the event sequence, and which tasks wait for a merge task."""
        run = stored.run
        self.created_at = run["created_at"]
        self.status = RunStatus(run["status"])
        for task in sorted(stored.tasks, key=lambda t: natural_key(t.id)):
            self.tasks[task.id] = task
            self.attempts[task.id] = []
            self.graph.add_task(task.id)
            self._counts[task.status] += 1
            if task.profile == Profile.PLAN:
                self._plan_counts[task.status] += 1
        for tid, task in self.tasks.items():
            for dep in task.depends_on:
                self.graph.add_dependency(tid, dep)
            if (task.created_by or "").startswith("merge:") and not task.status.terminal:
                waiting = task.created_by.split(":", 1)[1]
                if waiting in self.tasks and self.tasks[waiting].status == S.AWAITING_QA:
                    self._merging[waiting] = tid
        for a in stored.attempts:
            self.attempts[a.task_id].append(a)
        for it in stored.interrupts:
            self.open_interrupts[it.task_id] = it
        self._review_wanted = self._plans_open() > 0
        self._seq = stored.last_seq
        self.planned = stored.planned
        self._next_task = 1 + max((int(t[1:]) for t in self.tasks if t[1:].isdigit()), default=0)

    def waits_for_merge_task(self, task_id: str) -> bool:
        """``task_id`` is approved work that a merge task is integrating."""
        return task_id in self._merging

    def task(self, task_id: str) -> Task:
        try:
            return self.tasks[task_id]
        except KeyError:
            raise UnknownTask(task_id, self.run_id) from None

    def _prio(self, task_id: str) -> int:
        """Longest chain of work still behind a task: start those first (list scheduling
        by critical path gets close to the best makespan)."""
        if self._priority is None:
            self._priority = self.graph.heights()
        return self._priority.get(task_id, 1)

    def counts(self) -> dict[str, int]:
        return {s.value: self._counts.get(s, 0) for s in TaskStatus}

    # ------------------------------------------------------------------ loop
    def start(self, loop: asyncio.AbstractEventLoop) -> asyncio.Task:
        self.loop = loop
        self._wake = asyncio.Event()
        self._changed = asyncio.Event()
        self.store.bind(loop)
        self.store.busy_listeners.append(self._on_store_busy)
        self._main_task = loop.create_task(self._main(), name=f"agentorch:{self.run_id}")
        return self._main_task

    def wake(self) -> None:
        if self._wake is not None:
            self._wake.set()

    def _on_store_busy(self, busy: Busy | None) -> None:
        """From the store's thread: another process holds the file past lock_timeout (busy),
        or let go of it (None)."""
        loop = self.loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._store_busy_changed, busy)

    def _store_busy_changed(self, busy: Busy | None) -> None:
        # Writes wait in the store's queue meanwhile; new attempts would only add to it, so
        # none starts until the file is free. Attempts already running go on.
        was, self.store_busy = self.store_busy, busy
        if busy is not None:
            log.warning("run %s: no new attempt starts while the store is held by %s",
                        self.run_id, busy.describe())
            self.record_event("store_busy", None, holder=busy.holder, held_by=busy.describe())
        elif was is not None:
            log.warning("run %s: the store is free again after %.0f s", self.run_id,
                        time.time() - was.since)
            self.record_event("store_free", None, holder=was.holder,
                              waited=round(time.time() - was.since, 1))
        self._notify()
        self.wake()

    async def _main(self) -> None:
        try:
            for hook in self.on_start:
                await hook(self)
            await self.executor.start()
            self.keep_heap()
            if not self.planned:
                await self._plan()
                self.keep_heap()
            while not self.status.finished:
                self._wake.clear()
                if self._fatal is not None:
                    raise self._fatal
                more = self._step()
                if self.status.finished:
                    break
                if more:  # a big step goes on in the next turn: the loop has its turn first
                    await asyncio.sleep(0)
                else:
                    await self._wake.wait()
        except asyncio.CancelledError:
            await self._stop_workers(Interruption.CANCELLED)
            if not self.status.finished:
                self.set_run_status(RunStatus.CANCELLED)
            raise
        except Exception as exc:  # noqa: BLE001 - stored on the run, shown to the user
            error = report_failure(exc, log, self.run_id, self.store.path)  # one log line
            await self._stop_workers(Interruption.CANCELLED)
            self.set_run_status(RunStatus.FAILED, error)  # the reason, then the traceback
        finally:
            try:
                pending = [t for t in self._attempt_tasks if not t.done()]
                if pending:  # stopped attempts still recording their end: let them finish first
                    await asyncio.wait(pending, timeout=60)
                try:
                    await self.executor.close()
                except Exception:  # noqa: BLE001 - the run's outcome stands
                    log.exception("run %s: closing its executor failed", self.run_id)
                if self.integration is not None and self.status in (RunStatus.COMPLETED, RunStatus.CANCELLED):
                    try:
                        await self.integration.finish_run()
                    except Exception:  # noqa: BLE001 - leftovers are reported by orch.cleanup()
                        log.exception("cleaning up the worktrees of run %s failed", self.run_id)
                for cb in self.on_stop:
                    cb(self)
                await self.store.flush()  # waits, if another process holds the store
                if self._on_store_busy in self.store.busy_listeners:
                    self.store.busy_listeners.remove(self._on_store_busy)
                self._notify()
            finally:
                HEAP.let_go(self)  # however the wind-down went

    def _step(self) -> bool:
        """One step; True when tasks whose readiness may have changed are left for the
        next (at most STEP_SLICE are looked at per step, so the loop keeps its turns)."""
        if self._dirty:
            if len(self._dirty) <= STEP_SLICE:
                dirty, self._dirty = self._dirty, set()
            else:
                dirty = set(sorted(self._dirty, key=natural_key)[:STEP_SLICE])
                self._dirty -= dirty
            ready, orphaned = self.graph.readiness(lambda t: self.tasks[t].status, dirty)
            for tid in ready:
                self.move(tid, S.READY)
            for tid, gone in orphaned:
                self.move(tid, S.WAITING_HUMAN, f"dependency {', '.join(gone)} was abandoned")
                self.raise_interrupt(tid, "dependency_abandoned",
                                     f"depends on abandoned {', '.join(gone)}: retry to wait "
                                     "for a replacement, or spawn one, or abandon this task too",
                                     abandoned=gone)
        if self._review_wanted and self._reviewing is None and not self._plans_open():
            self._start_review()
        if (self.status in (RunStatus.RUNNING, RunStatus.PAUSED) and not self.budget_hold
                and self.store_busy is None and self.executor.paused is None):
            held = []
            limit = self.config.max_concurrent_workers
            while (self._ready and len(self.running) < limit
                   and len(self._finishing) < FINISHING_PER_WORKER * limit):
                entry = heapq.heappop(self._ready)
                task = self.tasks[entry[2]]
                if task.status != S.READY:
                    continue  # stale heap entry: moved since it was pushed
                if task.profile != Profile.PLAN and self._review_holds():
                    held.append(entry)  # planned work waits for the Director's review
                    continue
                self._launch(task.id)
            for entry in held:
                heapq.heappush(self._ready, entry)
        self._settle()
        return bool(self._dirty)

    def _settle(self) -> None:
        if self.status.finished:
            return
        c = self._counts
        runnable = c[S.READY] > 0 and not self.budget_hold and not (
            self._review_holds() and self._plan_counts[S.READY] == 0)
        judging = c[S.AWAITING_QA] - len(self._merging)  # the rest wait for their merge task
        if (self.running or self._finishing or self._dirty or self._reviewing is not None
                or c[S.ACTIVE] or judging or runnable):
            self.set_run_status(RunStatus.RUNNING)
        elif c[S.COMPLETE] + c[S.ABANDONED] == len(self.tasks):
            self.set_run_status(RunStatus.COMPLETED)
        else:  # only waiting_human / planned-behind-them are left
            self.set_run_status(RunStatus.PAUSED)

    def raise_interrupt(self, task_id: str, kind: str, reason: str, **context: Any) -> Interrupt:
        it = Interrupt(id=f"i-{uuid.uuid4().hex[:8]}", run_id=self.run_id, task_id=task_id,
                       reason=reason, kind=kind, context=context)
        self.open_interrupts[task_id] = it
        self.store.upsert("interrupts", interrupt_row(it))
        self.record_event("interrupt", task_id, interrupt_id=it.id, kind=kind, reason=reason)
        return it

    # ----------------------------------------------------------- waiting on it
    async def wait(self, stop_on_pause: bool = True) -> RunStatus:
        while True:
            done = self.status.finished and (self._main_task is None or self._main_task.done())
            if done or (stop_on_pause and self.status == RunStatus.PAUSED):
                return self.status
            self._changed.clear()
            if self._main_task is not None and self._main_task.done():
                return self.status
            waiter = asyncio.ensure_future(self._changed.wait())
            await asyncio.wait({waiter, self._main_task}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()

    def require(self, task_id: str, *allowed: TaskStatus, doing: str) -> Task:
        task = self.task(task_id)
        if task.status not in allowed:
            raise ResolutionError(
                f"cannot {doing} task {task_id!r}: it is {task.status.value}, and that needs "
                f"{' or '.join(s.value for s in allowed)}"
            )
        return task
