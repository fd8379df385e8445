"""One attempt of one task, from launch to its end: the worker under its timeout, the commit
of its worktree, QA, the merge, and every way it can fail (Phoenix decides what follows).

This module is part of :class:`agentorch_nb.engine.dispatch.Engine`: ``AttemptLifecycle`` is
one of its base classes, not a collaborator, and shares the engine's private state. It is
kept apart because it is the part of the engine that awaits agents and git; the rest of the
engine only does bookkeeping.
"""

from __future__ import annotations

import asyncio
import logging

from ..exceptions import CycleError, InvalidInput, UnknownTask, WorkspaceError
from ..model import (
    Attempt,
    Interruption,
    Outcome,
    Profile,
    Task,
    TaskSpec,
    TaskStatus,
    utcnow,
)
from . import phoenix
from .pipeline import AttemptFailed
from .protocols import Context

log = logging.getLogger("agentorch_nb.engine")
S = TaskStatus


class AttemptLifecycle:
    def _launch(self, tid: str) -> None:
        task = self.tasks[tid]
        task.attempts += 1
        history = list(self.attempts[tid])
        attempt = Attempt(self.run_id, tid, task.attempts, utcnow(), guidance=task.guidance)
        self.attempts[tid].append(attempt)
        self.move(tid, S.ACTIVE)
        self.record_event("attempt_started", tid, attempt=attempt.number)
        self.save_attempt(attempt)
        ctx = Context(self.run_id, self.objective, self.workspace, tid, attempt.number,
                      history, task.guidance, _engine=self)
        runner = self.loop.create_task(self._attempt(task, attempt, ctx),
                                       name=f"agentorch:{self.run_id}:{tid}")
        runner.add_done_callback(self._attempt_done)
        self.running[tid] = runner
        self._attempt_tasks.add(runner)
        self.max_running_seen = max(self.max_running_seen, len(self.running))

    async def _attempt(self, task: Task, attempt: Attempt, ctx: Context) -> None:
        tid = task.id
        try:
            try:
                result, sha = await self.executor.attempt(task, attempt, ctx)
                if sha is not None:
                    try:
                        merged = await self.integration.merge(task, attempt, sha)
                    except WorkspaceError as exc:
                        raise AttemptFailed(Outcome.ERROR, f"the merge was refused: {exc}") from None
                    if not merged.ok and task.profile != Profile.MERGE:
                        # Approved work that collides with the target: a merge task
                        # integrates it; the task waits for it.
                        self._hand_to_merge_task(task, attempt, sha, merged.conflicts)
                        return
                    if not merged.ok:
                        raise AttemptFailed(Outcome.ERROR, "merge conflict with the target branch "
                                            "in " + ", ".join(merged.conflicts) + "; the retry "
                                            "starts from the current tip")
                if result.new_tasks:
                    try:
                        self.add_tasks(list(result.new_tasks), created_by=tid)
                    except (InvalidInput, UnknownTask, CycleError) as exc:
                        raise AttemptFailed(Outcome.ERROR, f"the new tasks were refused: {exc}") from None
            except AttemptFailed as failure:
                failed = failure
            except asyncio.CancelledError:
                self._stopped(task, attempt)
                return
            else:
                failed = None
            if failed is not None:
                try:
                    if failed.escalate != "requeue":  # a requeue has nothing to learn from
                        await self._summarize(task, attempt, failed.reason)
                except asyncio.CancelledError:
                    self._stopped(task, attempt)
                    return
                self._fail(task, attempt, failed.outcome, failed.reason, failed.feedback,
                           escalate=failed.escalate, interruption=failed.interruption)
                return
            self.finish_attempt(attempt, Outcome.APPROVED)
            self.move(tid, S.COMPLETE)
            for waiting in self._merged_for(tid):
                self.move(waiting, S.COMPLETE, f"integrated by merge task {tid}")
        finally:
            self.running.pop(tid, None)
            # Until its writes are on disk and its worktree released, the attempt keeps the
            # run from settling (a run that ends cleans up its worktrees).
            self._finishing.add(tid)
            if task.status == S.COMPLETE:
                # Dependents may start at once: the store commits in the order things were
                # written, so no commit can hold a dependent's start without this
                # completion, and every git step of theirs waits for a commit first.
                for done in [tid, *self._integrated.pop(tid, [])]:
                    self.mark_dirty(*self.graph.dependents(done))
            self.wake()  # the free slot can go to a task that is ready already
            if self.integration is None or not self.integration.holds(tid, attempt.number):
                self._finish_at_commit(tid)  # nothing to release: no coroutine waits for it
                return
            try:
                await asyncio.shield(self.store.committed())
                # Work a merge task integrates keeps its branch: the commit must stay
                # reachable (and git gc must not take it) until the merge lands.
                await asyncio.shield(self.integration.release(
                    task, attempt.number, attempt.outcome == Outcome.APPROVED,
                    keep_branch=tid in self._merging))
            finally:
                self._finishing.discard(tid)
                self.wake()

    def _finish_at_commit(self, tid: str) -> None:
        """``tid``'s attempt is over once the store's next commit holds its writes. Every
        attempt waiting for one commit is settled by one callback: after a commit of
        hundreds of attempts the loop does a set removal for each, not a coroutine step."""
        commit = self.store.committed()
        waiting = self._at_commit.get(commit)
        if waiting is None:
            waiting = self._at_commit[commit] = []
            commit.add_done_callback(self._committed)
        waiting.append(tid)

    def _committed(self, commit: asyncio.Future) -> None:
        self._finishing.difference_update(self._at_commit.pop(commit, ()))
        if not commit.cancelled() and commit.exception() is not None and self._fatal is None:
            self._fatal = commit.exception()  # the store failed: the run fails loudly
        self.wake()

    def _hand_to_merge_task(self, task: Task, attempt: Attempt, sha: str,
                            conflicts: list[str]) -> None:
        """``task``'s approved commit conflicts with the target: a ``merge`` task integrates
        it. Each of its attempts starts from that commit with the target's tip of the moment
        merged in (conflict markers left for the merge worker), goes through QA and merges;
        ``task`` stays awaiting_qa until then."""
        self.finish_attempt(attempt, Outcome.APPROVED)
        target = self.integration.git.target
        spec = TaskSpec(
            title=f"Merge: {task.title}",
            description=(f"The approved work of task {task.id} ({task.title}, commit {sha[:10]}) "
                         f"conflicts with {target}. This worktree holds that work with "
                         f"{target}'s current tip merged in, leaving conflict markers in: "
                         f"{', '.join(conflicts)} (and any file that conflicts with what "
                         f"{target} gained since). Resolve every conflict so that both sides' "
                         "intent survives, remove the markers, run the checks, and finish."),
            acceptance_criteria=["no conflict markers remain",
                                 f"both {target}'s changes and the task's changes are kept",
                                 *task.acceptance_criteria],
            profile=Profile.MERGE, phase=task.phase, max_retries=task.max_retries)
        (merge,) = self.add_tasks([spec], created_by=f"merge:{task.id}")
        merge.merge_source = sha
        self.save_task(merge)
        self._merging[task.id] = merge.id
        task.status_reason = f"waits for merge task {merge.id} to integrate its work"
        self.save_task(task)
        self.record_event("merge_task", task.id, merge_task=merge.id, conflicts=conflicts,
                          source_sha=sha)

    def complete_landed(self, task_id: str, attempt_no: int) -> None:
        """Git shows this attempt's approved commit in the target although the engine that
        merged it stopped before recording the end: the task is complete (resume)."""
        attempt = self.attempts[task_id][attempt_no - 1]
        if attempt.outcome is None:
            self.finish_attempt(attempt, Outcome.APPROVED)
        self.move(task_id, S.COMPLETE, "its merge had landed when the engine stopped")
        for waiting in self._merged_for(task_id):
            self.move(waiting, S.COMPLETE, f"integrated by merge task {task_id}")
        for done in [task_id, *self._integrated.pop(task_id, [])]:
            self.mark_dirty(*self.graph.dependents(done))

    def _merged_for(self, merge_id: str) -> list[str]:
        """Tasks whose work the merge task ``merge_id`` has just integrated."""
        done = [t for t, m in self._merging.items() if m == merge_id]
        for t in done:
            del self._merging[t]
        if done:
            self._integrated[merge_id] = done
        return done

    async def _summarize(self, task: Task, attempt: Attempt, reason: str) -> None:
        """Phoenix: let the Strategist (if it can) condense the failed attempt's conversation
        into the summary the next attempt reads. The raw conversation stays in the store."""
        summarize = getattr(self.agents.strategist, "summarize", None)
        if summarize is None:
            return
        key = [self.run_id, task.id, attempt.number]
        try:
            await self.store.flush()
            conversation = await self.store.call(lambda con: [
                {"role": r, "content": c} for r, c in con.execute(
                    "select role, content from messages where run_id = ? and task_id = ? "
                    "and attempt = ? order by ts", key).fetchall()])
            ctx = Context(self.run_id, self.objective, self.workspace, task.id, attempt.number,
                          _engine=self)
            async with asyncio.timeout(self.config.qa_timeout):
                attempt.summary = await summarize(task.copy(), reason, conversation, ctx)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the raw failure reason still reaches Phoenix
            log.warning("summarizing attempt %s of %s failed: %s", attempt.number, task.id, exc)

    def _attempt_done(self, runner: asyncio.Task) -> None:
        self._attempt_tasks.discard(runner)
        # Worker errors are failed attempts; an exception here is a bug in the engine
        # itself. It fails the run loudly instead of vanishing with the task.
        if not runner.cancelled() and runner.exception() is not None and self._fatal is None:
            self._fatal = runner.exception()
            self.wake()

    def finish_attempt(self, attempt: Attempt, outcome: Outcome, reason: str | None = None,
                        interruption: Interruption | None = None) -> None:
        attempt.finished_at = utcnow()
        attempt.outcome = outcome
        attempt.failure_reason = reason
        attempt.interruption = interruption
        self.save_attempt(attempt)
        self.record_event("attempt_finished", attempt.task_id, attempt=attempt.number,
                          outcome=outcome, reason=reason, interruption=interruption)

    def _fail(self, task: Task, attempt: Attempt, outcome: Outcome, reason: str,
              feedback: str | None = None, escalate: str | None = None,
              interruption: Interruption | None = None) -> None:
        attempt.qa_feedback = feedback or attempt.qa_feedback
        self.finish_attempt(attempt, outcome, reason, interruption)
        self.move(task.id, S.FAILED, reason)
        if escalate == "requeue":
            # Not the task's fault (the cluster went out of reach): it starts again when
            # attempts can start, without using a retry.
            self.move(task.id, S.PLANNED, reason)
            self.mark_dirty(task.id)
        elif escalate == "budget":
            # Spending more cannot help: hold new work and ask a human.
            self.budget_hold = True
            self.move(task.id, S.WAITING_HUMAN, reason)
            self.raise_interrupt(task.id, "budget", reason)
        else:
            self.after_failure(task, reason)

    def after_failure(self, task: Task, reason: str) -> None:
        """Phoenix: retry with the history, or hand the task to a human."""
        if phoenix.should_retry(task):
            task.retries_used += 1
            self.move(task.id, S.PLANNED, f"retry {task.retries_used} of {task.max_retries}: {reason}")
        else:
            self.move(task.id, S.WAITING_HUMAN, f"retries exhausted: {reason}")
            self.raise_interrupt(task.id, "retries_exhausted",
                                 f"{task.attempts} attempt{'s' if task.attempts != 1 else ''} failed; last: {reason}")

    def _stopped(self, task: Task, attempt: Attempt) -> None:
        """The attempt's coroutine was cancelled: say why it was, and where the task goes."""
        why = self._stop_reason.pop(task.id, Interruption.CANCELLED)
        if why == Interruption.HUMAN:
            self.finish_attempt(attempt, Outcome.INTERRUPTED, "interrupted by a human", why)
            self.move(task.id, S.WAITING_HUMAN, "interrupted by a human")
            self.raise_interrupt(task.id, "human", "interrupted by a human while it ran")
        elif why == Interruption.ABANDONED:
            self.finish_attempt(attempt, Outcome.INTERRUPTED, "task abandoned", why)
            self.move(task.id, S.ABANDONED, "abandoned while it ran")
        else:
            self.finish_attempt(attempt, Outcome.INTERRUPTED, "run cancelled", why)
            self.move(task.id, S.FAILED, "run cancelled")

    def stop_attempt(self, task_id: str, why: Interruption) -> None:
        self._stop_reason[task_id] = why
        self.running[task_id].cancel()

    async def _stop_workers(self, why: Interruption) -> None:
        if self._reviewing is not None:
            self._reviewing.cancel()
        pending = list(self.running.items())
        for tid, _ in pending:
            self.stop_attempt(tid, why)
        if pending:
            await asyncio.gather(*(t for _, t in pending), return_exceptions=True)

