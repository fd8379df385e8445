"""Runs that change files: worktree per attempt, approved work merged into main."""

import asyncio
import subprocess
from pathlib import Path

import pytest

import agentorch_nb as ao
from agentorch_nb import RunStatus, TaskSpec, TaskStatus
from agentorch_nb.testing import TestStrategist


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, text=True,
                          check=True).stdout.strip()


class FileWriter:
    """Writes ``files[task.title]`` (name -> text) into the attempt's worktree."""

    def __init__(self, files, delay=0.0):
        self.files, self.delay, self.seen = files, delay, {}

    async def run(self, task, ctx):
        root = await ctx.worktree()
        self.seen[(task.id, ctx.attempt)] = sorted(p.name for p in root.iterdir() if p.name != ".git")
        await asyncio.sleep(self.delay)
        for name, text in self.files[task.title].items():
            (root / name).write_text(text(ctx) if callable(text) else text)
        return ao.WorkResult(f"wrote {', '.join(self.files[task.title])}")


async def test_parallel_tasks_merge_their_files_into_main(orch_factory, repo):
    worker = FileWriter({"a": {"a.txt": "A\n"}, "b": {"b.txt": "B\n"}, "c": {"c.txt": "C\n"}}, delay=0.1)
    seen_diff = {}

    class DiffReviewer(TestStrategist):
        async def review(self, task, result, ctx):
            seen_diff[task.id] = await ctx.diff()
            return await super().review(task, result, ctx)

    specs = [TaskSpec("a", key="a"), TaskSpec("b", key="b"), TaskSpec("c", depends_on=["a", "b"])]
    run = orch_factory(specs, worker=worker, strategist=DiffReviewer()).start("files")
    assert await run.wait(20) == RunStatus.COMPLETED
    assert {p.name for p in repo.iterdir()} >= {"a.txt", "b.txt", "c.txt"}
    # a and b ran in parallel from the same tip; c started from a tip holding both.
    assert worker.seen[("t1", 1)] == [] and worker.seen[("t2", 1)] == []
    assert worker.seen[("t3", 1)] == ["a.txt", "b.txt"]
    assert "+A" in seen_diff["t1"] and "b.txt" not in seen_diff["t1"]
    log = git(repo, "log", "--format=%s%n%b", "HEAD")
    for tid in ("t1", "t2", "t3"):
        assert f"agentorch run {run.id}, task {tid}, attempt 1" in log
    assert f"agentorch: merge {run.id}/" in log
    merges = run.store.rows("select task_id, status, files_changed from merges where run_id = ? "
                            "order by task_id", [run.id])
    assert [m["task_id"] for m in merges] == ["t1", "t2", "t3"]
    assert {m["status"] for m in merges} <= {"fast_forward", "merged"}
    assert "merged" in {m["status"] for m in merges}  # a and b diverged: one needed a merge commit
    # Approved attempts leave no worktree or branch behind.
    assert git(repo, "branch", "--list", "agentorch/*") == ""
    assert not any((repo / ".worktrees").glob(f"{run.id}/*"))
    assert git(repo, "status", "--porcelain") == ""


async def test_a_conflicting_merge_fails_the_attempt_and_the_retry_lands(orch_factory, repo):
    (repo / "shared.txt").write_text("base\n")
    git(repo, "add", "shared.txt")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@x", "commit", "-q", "-m", "shared")
    worker = FileWriter({
        "first": {"shared.txt": "first\n"},
        "second": {"shared.txt": lambda ctx: f"second, attempt {ctx.attempt}\n"},
    }, delay=0.1)

    class SlowSecondQA(TestStrategist):
        async def review(self, task, result, ctx):
            if task.title == "second" and ctx.attempt == 1:
                await asyncio.sleep(0.3)  # lets "first" land meanwhile
            return await super().review(task, result, ctx)

    run = orch_factory([TaskSpec("first"), TaskSpec("second")], worker=worker,
                       strategist=SlowSecondQA()).start("conflict")
    assert await run.wait(20) == RunStatus.COMPLETED
    rows = run.store.rows("select attempt, outcome, failure_reason from attempts where run_id = ? "
                          "and task_id = 't2' order by attempt", [run.id])
    assert rows[0]["outcome"] == "error" and "merge conflict" in rows[0]["failure_reason"]
    assert rows[-1]["outcome"] == "approved"
    assert (repo / "shared.txt").read_text() == f"second, attempt {len(rows)}\n"
    assert git(repo, "status", "--porcelain") == ""
    assert not (repo / ".git" / "MERGE_HEAD").exists()


@pytest.mark.parametrize("keep", [False, True])
async def test_failed_worktrees_stay_until_the_run_ends(orch_factory, repo, keep):
    class FailOnce(FileWriter):
        async def run(self, task, ctx):
            result = await super().run(task, ctx)
            return ao.WorkResult("no", ok=False, error="broken") if ctx.attempt == 1 else result

    gate = asyncio.Event()

    class Gate(FileWriter):
        async def run(self, task, ctx):
            await gate.wait()
            return await super().run(task, ctx)

    worker = FailOnce({"x": {"x.txt": "x\n"}})
    gated = Gate({"y": {"y.txt": "y\n"}})

    class Both:
        async def run(self, task, ctx):
            return await (worker if task.title == "x" else gated).run(task, ctx)

    run = orch_factory([TaskSpec("x"), TaskSpec("y")], worker=Both(),
                       keep_failed_worktrees=keep).start("keep")
    while run.task("t1").status != TaskStatus.COMPLETE if run.tasks else True:
        await asyncio.sleep(0.02)
    failed = repo / ".worktrees" / run.id / "t1-a1"
    assert failed.exists() and (failed / "x.txt").exists()  # kept for inspection
    gate.set()
    assert await run.wait(20) == RunStatus.COMPLETED
    assert failed.exists() is keep


def test_a_dirty_workspace_is_refused_before_anything_starts(orch_factory, repo):
    (repo / "notes.txt").write_text("mine\n")
    git(repo, "add", "notes.txt")
    orch = orch_factory([TaskSpec("x")])
    with pytest.raises(ao.WorkspaceError, match="uncommitted changes .*notes.txt"):
        orch.start("x")
    assert orch.runs() == []
    assert git(repo, "status", "--porcelain") == "A  notes.txt"
