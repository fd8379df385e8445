"""Three tasks edit the same lines at once: merge tasks integrate all of them without a
human, and each attempt of a merge task starts from the target's tip of its moment."""

import asyncio
import subprocess

import pytest

import agentorch_nb as ao
from agentorch_nb import RunStatus, TaskSpec
from agentorch_nb.testing import FileWorker, resolve_conflicts

pytestmark = pytest.mark.slow


def git(repo, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                          check=True).stdout.strip()


class SameLines(FileWorker):
    """t1, t2 and t3 each replace the file's one line with their own, all from the same tip
    (each waits until all three have their worktree). A merge task records the target's tip
    just before its worktree is made and whether the worktree holds it; the first attempt
    of the second merge task waits until the first merge task has landed, so that its own
    merge then conflicts and its retry must start from the new tip."""

    def __init__(self, repo):
        super().__init__(lambda task: {"shared.txt": f"from {task.title}\n"})
        self.repo, self.arrived, self.all_there = repo, set(), asyncio.Event()
        self.merge_tasks: list[str] = []
        self.first_merge_landed = asyncio.Event()
        self.cut_from: list[tuple[str, int, bool]] = []
        self.sources_kept: list[bool] = []

    async def run(self, task, ctx):
        if task.profile != "merge":
            await ctx.worktree()
            self.arrived.add(task.id)
            if len(self.arrived) == 3:
                self.all_there.set()
            await self.all_there.wait()
            return await super().run(task, ctx)
        if task.id not in self.merge_tasks:
            self.merge_tasks.append(task.id)
        tip = await asyncio.to_thread(git, self.repo, "rev-parse", "HEAD")
        root = await ctx.worktree()
        merged_in = await asyncio.to_thread(git, root, "rev-parse", "MERGE_HEAD")
        self.cut_from.append((task.id, ctx.attempt, merged_in == tip))
        # The approved work keeps its branch until its merge lands: git gc cannot take it.
        approved = task.created_by.split(":")[1]
        branch = await asyncio.to_thread(git, self.repo, "rev-parse",
                                         f"refs/heads/agentorch/{ctx.run_id}/{approved}/a1")
        self.sources_kept.append(branch == task.merge_source)
        if self.merge_tasks.index(task.id) == 1 and ctx.attempt == 1:
            await self.first_merge_landed.wait()  # the target moves on under this attempt
        return await super().run(task, ctx)


async def test_three_tasks_on_the_same_lines_are_integrated_by_merge_tasks(orch_factory, repo):
    (repo / "shared.txt").write_text("base\n")
    git(repo, "add", "shared.txt")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@x", "commit", "-q", "-m", "shared")
    worker = SameLines(repo)
    run = orch_factory([TaskSpec("t1"), TaskSpec("t2"), TaskSpec("t3")], worker=worker,
                       max_concurrent_workers=3, max_retries=3).start("same lines")

    def observe(item):
        if (item.get("kind") == "merge" and worker.merge_tasks
                and item["task_id"] == worker.merge_tasks[0]
                and item["payload"]["status"] != "conflict"):
            worker.first_merge_landed.set()

    run.engine.observers.append(observe)
    assert await run.wait(60) == RunStatus.COMPLETED, run.summary()  # no human was asked
    assert not run.interrupts()
    lines = (repo / "shared.txt").read_text().splitlines()
    assert sorted(lines) == ["from t1", "from t2", "from t3"]
    merges = [t for t in run.tasks if t.profile == "merge"]
    assert len(merges) == 2 and all(t.status == "complete" for t in merges)
    second = next(t for t in merges if t.id == worker.merge_tasks[1])
    assert second.attempts == 2  # its first merge conflicted with the first merge task's work
    # Every merge attempt (the retry too) began with the target's tip of its moment merged in.
    assert [(a, held) for _, a, held in worker.cut_from] == [(1, True), (1, True), (2, True)]
    assert worker.sources_kept == [True, True, True]
    sources = {r["task_id"]: r["source_sha"] for r in run.store.rows(
        "select task_id, source_sha from merges where run_id = ? and attempt = 1", [run.id])}
    assert {t.merge_source for t in merges} <= set(sources.values())
    assert git(repo, "status", "--porcelain") == "" and git(repo, "branch", "--list", "agentorch/*") == ""


def test_resolve_conflicts_keeps_both_sides(tmp_path):
    repo = tmp_path / "r"
    repo.mkdir()
    g = lambda *a: subprocess.run(["git", "-C", str(repo), "-c", "user.name=t",  # noqa: E731
                                   "-c", "user.email=t@x", *a], capture_output=True, text=True)
    g("init", "-q", "-b", "main")
    (repo / "f.txt").write_text("a\nbase\nz\n")
    g("add", "f.txt"), g("commit", "-q", "-m", "base")
    g("checkout", "-q", "-b", "other")
    (repo / "f.txt").write_text("a\nother\nz\n")
    g("commit", "-qam", "other")
    g("checkout", "-q", "main")
    (repo / "f.txt").write_text("a\nmine\nz\n")
    g("commit", "-qam", "mine")
    g("merge", "other")
    assert resolve_conflicts(repo) == ["f.txt"]
    assert (repo / "f.txt").read_text() == "a\nmine\nother\nz\n"
