"""Git for a run: each attempt's worktree, its commit, and the merge of approved work.

A worktree is made the first time an agent asks for it (``await ctx.worktree()``), so
agents that never touch files cost nothing here. When the worker finishes, everything in
the worktree is committed; that commit is what QA judges and, once approved, exactly what
is merged into the target branch. All git work runs in threads, off the event loop.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

from ..model import Attempt, Profile, Task, utcnow
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
            wt = (await self._handed_over(task) or await self._continued(task)
                  or await asyncio.to_thread(self.git.create_worktree, self.engine.run_id,
                                             task.id, attempt))
            self.active[(task.id, attempt)] = wt
            task.branch, task.worktree = wt.branch, str(wt.path)
            self.engine._save(task)
            self.engine._emit("worktree_created", task.id, attempt=attempt, branch=wt.branch,
                              base_sha=wt.base_sha)
        return wt.path

    async def _handed_over(self, task: Task) -> Worktree | None:
        """A merge task works in the worktree of the attempt whose merge it resolves."""
        if task.profile != Profile.MERGE or not task.worktree:
            return None
        head = await asyncio.to_thread(self.git.head, Worktree(Path(task.worktree), task.branch, ""))
        return Worktree(Path(task.worktree), task.branch, head)

    async def start_merge_in_worktree(self, task: Task, attempt: Attempt) -> Worktree:
        """Merge the target into an approved attempt's worktree, leaving any conflicts there
        for a merge task; the worktree now belongs to that merge task."""
        wt = self.active.pop((task.id, attempt.number))
        await asyncio.to_thread(self.git.merge_target_into, wt)
        return wt

    async def _continued(self, task: Task) -> Worktree | None:
        """After a crash the next attempt goes on in the cut-off attempt's worktree."""
        from .resume import ENGINE_DIED

        earlier = self.engine.attempts[task.id][:-1]
        if not earlier or earlier[-1].failure_reason != ENGINE_DIED:
            return None
        return await asyncio.to_thread(self.git.adopt_worktree, self.engine.run_id, task.id,
                                       earlier[-1].number)

    async def commit(self, task: Task, attempt: Attempt) -> str | None:
        """Commit the attempt's work; the SHA QA will judge, or None if it changed nothing."""
        wt = self.active.get((task.id, attempt.number))
        if wt is None:
            return None
        message = f"{task.title}\n\nagentorch run {self.engine.run_id}, task {task.id}, attempt {attempt.number}"
        await asyncio.to_thread(self.git.commit_all, wt, message)
        head = await asyncio.to_thread(self.git.head, wt)
        if head != wt.base_sha:
            attempt.commit_sha = head
            attempt.diff = await asyncio.to_thread(self.git.diff, wt)
        if task.profile == Profile.MERGE:
            return head  # a merge task always integrates its branch, changed or not
        return None if head == wt.base_sha else head

    async def diff(self, task: Task, attempt: int) -> str:
        wt = self.active.get((task.id, attempt))
        return "" if wt is None else await asyncio.to_thread(self.git.diff, wt)

    async def merge(self, task: Task, attempt: Attempt, sha: str) -> MergeResult:
        wt = self.active[(task.id, attempt.number)]
        message = f"agentorch: merge {self.engine.run_id}/{task.id}: {task.title}"
        result = await asyncio.to_thread(self.git.merge, sha, message)
        self.engine.store.append("merges", {
            "run_id": self.engine.run_id, "task_id": task.id, "attempt": attempt.number,
            "ts": utcnow(), "source_branch": wt.branch, "source_sha": sha,
            "target_branch": result.target_branch, "result_sha": result.result_sha,
            "files_changed": result.files_changed or result.conflicts, "status": result.status,
            "error": None if result.ok else "conflict in " + ", ".join(result.conflicts)})
        self.engine._emit("merge", task.id, attempt=attempt.number, status=result.status,
                          source_sha=sha, result_sha=result.result_sha)
        return result

    async def release(self, task: Task, attempt: int, approved: bool) -> None:
        """An attempt ended: an approved one's worktree goes at once, a failed one's stays
        for inspection until the run ends."""
        wt = self.active.pop((task.id, attempt), None)
        if wt is None:
            return
        if approved and not self.keep_all:
            await asyncio.to_thread(self.git.remove_worktree, wt)
        else:
            self.failed.add(wt.branch)

    async def finish_run(self) -> None:
        if self.keep_all:
            return
        keep = frozenset(self.failed) if self.keep_failed else frozenset()
        await asyncio.to_thread(self.git.cleanup, self.engine.run_id, keep)
