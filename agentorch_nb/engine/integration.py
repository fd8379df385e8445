"""Git for a run: each attempt's worktree, its commit, and the merge of approved work.

A worktree is made the first time an agent asks for it (``await ctx.worktree()``), so
agents that never touch files cost nothing here. It is recorded on the attempt (branch and
base commit) only once git has made it whole; a worktree no attempt records is never
used, and reconcile removes it after a crash. When the worker finishes, everything in the
worktree is committed; that commit is what QA judges and, once approved, exactly what is
merged into the target branch. A merge is written to the store as an intent (source and
target commits) before git starts it, so a crash in the middle is settled from git on
resume. All git work runs in threads, off the event loop.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

from ..exceptions import WorkspaceError
from ..model import Attempt, Interruption, Profile, Task, utcnow
from ..workspace import MergeResult, Workspace, Worktree

if TYPE_CHECKING:
    from .dispatch import Engine


class Integration:
    def __init__(self, engine: Engine, git: Workspace, keep_failed_worktrees: bool = False,
                 keep_all: bool = False) -> None:
        self.engine = engine
        self.git = git
        self.keep_failed = keep_failed_worktrees
        self.keep_all = keep_all
        self.active: dict[tuple[str, int], Worktree] = {}  # (task id, attempt) -> worktree
        self.failed: set[str] = set()  # branches of failed attempts, kept until the run ends

    async def worktree(self, task: Task, attempt: int, create: bool = True) -> Path | None:
        wt = self.active.get((task.id, attempt))
        if wt is None and not create:
            return None
        if wt is None:
            wt = await self._continued(task) or await asyncio.to_thread(self._fresh, task, attempt)
            self.active[(task.id, attempt)] = wt
            record = self.engine.attempts[task.id][attempt - 1]
            record.branch, record.base_sha = wt.branch, wt.base_sha
            self.engine.save_attempt(record)
            task.branch, task.worktree = wt.branch, str(wt.path)
            self.engine.save_task(task)
            self.engine.record_event("worktree_created", task.id, attempt=attempt,
                                     branch=wt.branch, base_sha=wt.base_sha)
        return wt.path

    def _fresh(self, task: Task, attempt: int) -> Worktree:
        if task.profile == Profile.MERGE and task.merge_source:
            # A merge task integrates an approved commit: every attempt starts from it with
            # the target's tip of the moment merged in, so a retry never replays a stale merge.
            return self.git.create_merge_worktree(self.engine.run_id, task.id, attempt,
                                                  task.merge_source)
        return self.git.create_worktree(self.engine.run_id, task.id, attempt)

    async def _continued(self, task: Task) -> Worktree | None:
        """After a crash the next attempt goes on in the cut-off attempt's worktree, if git
        shows it whole; otherwise it starts afresh."""
        earlier = self.engine.attempts[task.id][:-1]
        if not earlier:
            return None
        last = earlier[-1]
        if last.interruption != Interruption.ENGINE_DIED or not (last.branch and last.base_sha):
            return None
        return await asyncio.to_thread(self.git.adopt_worktree, self.engine.run_id, task.id,
                                       last.number, last.base_sha)

    async def commit(self, task: Task, attempt: Attempt) -> str | None:
        """Commit the attempt's work; the SHA QA will judge, or None if it changed nothing."""
        wt = self.active.get((task.id, attempt.number))
        if wt is None:
            return None
        return await commit_attempt(self.git, wt, self.engine.run_id, task, attempt)

    def adopt_remote(self, task: Task, attempt: int, branch: str, base_sha: str) -> None:
        """An attempt that ran on another machine left its approved commit on ``branch``
        here: merged and released like local work (nothing to remove but the branch)."""
        wt = self.git.worktree_for(self.engine.run_id, task.id, attempt)
        self.active[(task.id, attempt)] = Worktree(wt.path, branch, base_sha)

    async def diff(self, task: Task, attempt: int) -> str:
        wt = self.active.get((task.id, attempt))
        return "" if wt is None else await asyncio.to_thread(self.git.diff, wt)

    async def merge(self, task: Task, attempt: Attempt, sha: str) -> MergeResult:
        """Merge the approved commit into the target. The intent is on disk first: whatever
        happens to this process after git starts, resume can tell from git what it did."""
        wt = self.active[(task.id, attempt.number)]
        store = self.engine.store
        before = await asyncio.to_thread(self.git.tip)
        row = {"run_id": self.engine.run_id, "task_id": task.id, "attempt": attempt.number,
               "ts": utcnow(), "source_branch": wt.branch, "source_sha": sha,
               "target_branch": self.git.target, "target_sha": before, "status": "started"}
        store.upsert("merges", row)
        await store.flush()
        message = f"agentorch: merge {self.engine.run_id}/{task.id}: {task.title}"
        job = asyncio.ensure_future(asyncio.to_thread(self.git.merge, sha, message))
        try:
            result = await asyncio.shield(job)
        except asyncio.CancelledError:
            # Cancelled while git merges (a cancel, an abandon): git goes on regardless, and
            # what it did is recorded before the cancellation goes on.
            self.record_merge(row, await job)
            raise
        except WorkspaceError as exc:  # git would not start it (untracked files in the way)
            store.upsert("merges", {**row, "ts": utcnow(), "status": "refused", "error": str(exc)})
            self.engine.record_event("merge", task.id, attempt=attempt.number, status="refused",
                                     source_sha=sha, error=str(exc))
            raise
        self.record_merge(row, result)
        return result

    def record_merge(self, intent: dict, result: MergeResult | None) -> None:
        """The outcome of a merge whose intent is ``intent``: ``result`` from git, or None
        when git never made it (a crash cut it off before the merge commit)."""
        if result is None:
            row = {**intent, "status": "interrupted",
                   "error": "cut off before git merged it; the attempt is retried"}
        else:
            row = {**intent, "ts": utcnow(), "target_branch": result.target_branch,
                   "result_sha": result.result_sha,
                   "files_changed": result.files_changed or result.conflicts,
                   "status": result.status,
                   "error": None if result.ok else "conflict in " + ", ".join(result.conflicts)}
        self.engine.store.upsert("merges", row)
        self.engine.record_event("merge", intent["task_id"], attempt=intent["attempt"],
                                 status=row["status"], source_sha=intent["source_sha"],
                                 result_sha=row.get("result_sha"))

    def holds(self, task_id: str, attempt: int) -> bool:
        """Does this attempt have a worktree to release?"""
        return (task_id, attempt) in self.active

    async def release(self, task: Task, attempt: int, approved: bool,
                      keep_branch: bool = False) -> None:
        """An attempt ended: an approved one's worktree goes at once (its branch too, unless
        ``keep_branch``), a failed one's stays for inspection until the run ends."""
        wt = self.active.pop((task.id, attempt), None)
        if wt is None:
            return
        if approved and not self.keep_all:
            await asyncio.to_thread(self.git.remove_worktree, wt, not keep_branch)
        else:
            self.failed.add(wt.branch)

    async def finish_run(self) -> None:
        if self.keep_all:
            return
        keep = frozenset(self.failed) if self.keep_failed else frozenset()
        await asyncio.to_thread(self.git.cleanup, self.engine.run_id, keep)


async def commit_attempt(git: Workspace, wt: Worktree, run_id: str, task: Task,
                         attempt: Attempt) -> str | None:
    """Commit everything in ``wt`` for ``attempt`` (its commit and diff are noted on it); the
    SHA QA will judge, or None if nothing changed. Also used where attempts run elsewhere."""
    message = f"{task.title}\n\nagentorch run {run_id}, task {task.id}, attempt {attempt.number}"
    await asyncio.to_thread(git.commit_all, wt, message)
    head = await asyncio.to_thread(git.head, wt)
    if head != wt.base_sha:
        attempt.commit_sha = head
        attempt.diff = await asyncio.to_thread(git.diff, wt)
    if task.profile == Profile.MERGE:
        return head  # a merge task always integrates its branch, changed or not
    return None if head == wt.base_sha else head
