"""Planning: the Director's plan, tasks added to the graph, and the Director's review of
the planned graph.

This module is part of :class:`agentorch_nb.engine.dispatch.Engine`: ``Planning`` is one of
its base classes, not a collaborator, and shares the engine's private state.
"""

from __future__ import annotations

import asyncio
import logging

from ..dag import natural_key
from ..exceptions import InvalidInput, UnknownTask
from ..model import Profile, Task, TaskSpec, TaskStatus
from ..store.records import task_row
from .protocols import Context

log = logging.getLogger("agentorch_nb.engine")
S = TaskStatus
PLAN_SLICE = 500  # tasks built per turn of the loop while a big plan is checked


class Planning:
    def add_tasks(self, specs: list[TaskSpec], created_by: str) -> list[Task]:
        """Add tasks to the graph, all or none: unknown dependencies and cycles are refused."""
        new = self._new_tasks(specs, created_by, self._keys(specs))
        self._add_to_graph(new)
        self._register(new, created_by)
        return new

    def _keys(self, specs: list[TaskSpec]) -> dict[str, str]:
        """Each spec's key (or its id) -> the id it gets, checking titles and profiles."""
        ids: dict[str, str] = {}
        for i, spec in enumerate(specs):
            if not spec.title or not spec.title.strip():
                raise InvalidInput(f"task {i + 1} of {len(specs)} has no title")
            try:
                Profile(spec.profile)
            except ValueError:
                raise InvalidInput(
                    f"unknown profile {spec.profile!r}; use one of {[p.value for p in Profile]}"
                ) from None
            tid = f"t{self._next_task + i}"
            ids[spec.key or tid] = tid
        return ids

    def _new_tasks(self, specs: list[TaskSpec], created_by: str, ids: dict[str, str],
                   first: int = 0) -> list[Task]:
        """Tasks for ``specs`` (the ``first``-th spec onwards), dependencies resolved."""
        new_ids = set(ids.values())
        out = []
        for i, spec in enumerate(specs, start=first):
            deps = set()
            for d in spec.depends_on:
                dep = ids.get(d, d)
                if dep not in self.tasks and dep not in new_ids:
                    raise UnknownTask(d, self.run_id)
                deps.add(dep)
            out.append(Task(
                id=f"t{self._next_task + i}", run_id=self.run_id, title=spec.title.strip(),
                description=spec.description, acceptance_criteria=list(spec.acceptance_criteria),
                profile=Profile(spec.profile), phase=spec.phase,
                max_retries=self.config.max_retries if spec.max_retries is None else spec.max_retries,
                created_by=created_by, depends_on=sorted(deps, key=natural_key),
            ))
        return out

    def _add_to_graph(self, new: list[Task]) -> None:
        self.graph.add_new({t.id: t.depends_on for t in new})
        self._next_task += len(new)
        self._priority = None

    def _register(self, new: list[Task], created_by: str) -> None:
        """The tasks are the run's: counted, recorded, queued for readiness."""
        for task in new:
            self.tasks[task.id] = task
            self.attempts[task.id] = []
            self._counts[task.status] += 1
            if task.profile == Profile.PLAN:
                self._plan_counts[task.status] += 1
                self._review_wanted = True
            self.record_event("task_created", task.id, title=task.title, profile=task.profile,
                              depends_on=task.depends_on, created_by=created_by)
            task.updated_at = task.created_at
            self.store.upsert("tasks", task_row(task))
            self.store.set_deps(self.run_id, task.id, task.depends_on)
            self._dirty.add(task.id)
        self._notify()

    def _merge_task_gone(self, merge_id: str) -> None:
        """A merge task was abandoned: the work it was to integrate is a failed attempt."""
        for tid in [t for t, m in self._merging.items() if m == merge_id]:
            del self._merging[tid]
            reason = f"its merge task {merge_id} was abandoned"
            self.move(tid, S.FAILED, reason)
            self.after_failure(self.tasks[tid], reason)

    async def _plan(self) -> None:
        ctx = Context(self.run_id, self.objective, self.workspace, _engine=self)
        async with asyncio.timeout(self.config.plan_timeout):
            specs = await self.agents.director.plan(self.objective, ctx)
        if not specs:
            raise InvalidInput("the Director produced no tasks for this objective")
        # A plan of thousands of tasks is checked and built in slices that give the loop
        # its turns; then it joins the run in one step, so the store gets it whole.
        specs, new = list(specs), []
        ids = self._keys(specs)
        for first in range(0, len(specs), PLAN_SLICE):
            new += self._new_tasks(specs[first:first + PLAN_SLICE], "director", ids, first)
            self.keep_heap()
            await asyncio.sleep(0)
        self._add_to_graph(new)
        cancelled = None
        with self.store.one_unit():  # a crash leaves all of the plan in the store, or none
            for first in range(0, len(new), PLAN_SLICE):
                if cancelled is None:
                    try:
                        await asyncio.sleep(0)
                    except asyncio.CancelledError as exc:  # the plan still lands whole
                        cancelled = exc
                self._register(new[first:first + PLAN_SLICE], "director")
            self.planned = True
            self.record_event("planned", None, tasks=len(specs))
        if cancelled is not None:
            raise cancelled
        # No flush here: the plan is queued ahead of anything its tasks write, and the store
        # commits in that order.

    # The Director may review the graph once planning is done (``review`` is optional in its
    # protocol). Until then only plan tasks start, so the review can still order the rest.
    def _plans_open(self) -> int:
        p = self._plan_counts
        return p[S.PLANNED] + p[S.READY] + p[S.ACTIVE] + p[S.AWAITING_QA] + p[S.FAILED]

    def _review_holds(self) -> bool:
        return self._reviewing is not None or (self._review_wanted and self._plans_open() > 0)

    def _start_review(self) -> None:
        self._review_wanted = False
        review = getattr(self.agents.director, "review", None)
        if review is not None:
            self._reviewing = self.loop.create_task(self._review(review),
                                                    name=f"agentorch:{self.run_id}:review")

    async def _review(self, review) -> None:
        ctx = Context(self.run_id, self.objective, self.workspace, _engine=self)
        listing = [{"id": t.id, "title": t.title, "profile": t.profile.value,
                    "depends_on": list(t.depends_on)} for t in self.tasks.values()]
        try:
            async with asyncio.timeout(self.config.plan_timeout):
                edges = await review(self.objective, listing, ctx)
            from . import hitl

            for task_id, depends_on in edges:
                try:
                    hitl.add_dependency(self, task_id, depends_on, source="director")
                except Exception as exc:  # noqa: BLE001 - an edit the graph refuses is skipped
                    ctx.log("system", f"review edit {task_id} <- {depends_on} refused: {exc}")
            self.record_event("reviewed", None, added=[list(e) for e in edges])
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the review is advice; the run goes on without it
            log.warning("the Director's review of run %s failed: %s", self.run_id, exc)
            self.record_event("reviewed", None, error=str(exc))
        finally:
            self._reviewing = None
            self.wake()
