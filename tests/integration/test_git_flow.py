"""Runs that change files: worktree per attempt, approved work merged into main."""

import asyncio
import subprocess
from pathlib import Path

import pytest

import agentorch_nb as ao
from agentorch_nb import RunStatus, TaskSpec, TaskStatus
from agentorch_nb.testing import TestStrategist


# How long a run may take before the test gives up: a bound for a hang to show, not an
# expectation of speed (git under a loaded machine is slow).
DEADLINE = 120


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, text=True,
                          check=True).stdout.strip()


class FileWriter:
    """Writes ``files[task.title]`` (name -> text) into the attempt's worktree. The first
    attempts of the tasks titled in ``together`` each wait until all of them have their
    worktree, so they surely start from the same tip."""

    def __init__(self, files, together=()):
        self.files, self.seen = files, {}
        self.together, self.arrived, self.all_there = set(together), set(), asyncio.Event()

    async def run(self, task, ctx):
        root = await ctx.worktree()
        self.seen[(task.id, ctx.attempt)] = sorted(p.name for p in root.iterdir() if p.name != ".git")
        if task.title in self.together and ctx.attempt == 1:
            self.arrived.add(task.title)
            if self.arrived == self.together:
                self.all_there.set()
            await self.all_there.wait()
        for name, text in self.files[task.title].items():
            (root / name).write_text(text(ctx) if callable(text) else text)
        return ao.WorkResult(f"wrote {', '.join(self.files[task.title])}")


class SecondAfterFirst(TestStrategist):
    """Approves; judges the first attempt of "second" only once "first" is merged, so that
    "second", begun from the same tip, collides with it."""

    first_merged: asyncio.Event

    async def review(self, task, result, ctx):
        if task.title == "second" and ctx.attempt == 1:
            await self.first_merged.wait()
        return await super().review(task, result, ctx)


def merged(run, task_id: str) -> asyncio.Event:
    """Set once the engine reports ``task_id``'s work merged into the target branch."""
    done = asyncio.Event()

    def observe(item):
        if item["channel"] == "event" and item["kind"] == "merge" and item["task_id"] == task_id:
            done.set()

    run.engine.observers.append(observe)  # before the loop's first turn: nothing missed
    return done


def reached(run, task_id: str, status: TaskStatus) -> asyncio.Event:
    """Set once ``task_id`` moves to ``status``."""
    done = asyncio.Event()

    def observe(item):
        if (item["channel"] == "event" and item["kind"] == "task_status"
                and item["task_id"] == task_id and item["payload"]["to"] == status):
            done.set()

    run.engine.observers.append(observe)
    return done


async def test_parallel_tasks_merge_their_files_into_main(orch_factory, repo):
    worker = FileWriter({"a": {"a.txt": "A\n"}, "b": {"b.txt": "B\n"}, "c": {"c.txt": "C\n"}},
                        together={"a", "b"})
    seen_diff = {}

    class DiffReviewer(TestStrategist):
        async def review(self, task, result, ctx):
            seen_diff[task.id] = await ctx.diff()
            return await super().review(task, result, ctx)

    specs = [TaskSpec("a", key="a"), TaskSpec("b", key="b"), TaskSpec("c", depends_on=["a", "b"])]
    run = orch_factory(specs, worker=worker, strategist=DiffReviewer()).start("files")
    assert await run.wait(DEADLINE) == RunStatus.COMPLETED
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
    # Each attempt's commit and diff outlive its worktree, for the inspector and post-mortems.
    kept = run.store.rows("select task_id, commit_sha, diff from attempts where run_id = ? "
                          "order by task_id", [run.id])
    assert all(len(a["commit_sha"]) == 40 for a in kept)
    assert "+A" in kept[0]["diff"] and "c.txt" in kept[2]["diff"] and "a.txt" not in kept[2]["diff"]
    # Approved attempts leave no worktree or branch behind.
    assert git(repo, "branch", "--list", "agentorch/*") == ""
    assert not any((repo / ".worktrees").glob(f"{run.id}/*"))
    assert git(repo, "status", "--porcelain") == ""


async def test_a_conflict_goes_to_a_merge_task_that_resolves_it_on_the_approved_commit(orch_factory, repo):
    (repo / "shared.txt").write_text("base\n")
    git(repo, "add", "shared.txt")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@x", "commit", "-q", "-m", "shared")
    seen = {}

    def resolve(ctx):
        return "first\nsecond\n"  # both sides' intent, no markers

    worker = FileWriter({"first": {"shared.txt": "first\n"}, "second": {"shared.txt": "second\n"},
                         "Merge: second": {"shared.txt": resolve}}, together={"first", "second"})

    class Looking(FileWriter):
        async def run(self, task, ctx):
            if task.profile == "merge":
                root = await ctx.worktree()
                seen["markers"] = "<<<<<<<" in (root / "shared.txt").read_text()
                seen["root"] = root
                seen["source"] = task.merge_source
            return await worker.run(task, ctx)

    qa = SecondAfterFirst()
    run = orch_factory([TaskSpec("first"), TaskSpec("second", key="s"), TaskSpec("after", depends_on=["s"])],
                       worker=Looking({"after": {"after.txt": "x\n"}}), strategist=qa).start("conflict")
    qa.first_merged = merged(run, "t1")
    worker.files["after"] = {"after.txt": "x\n"}
    assert await run.wait(DEADLINE) == RunStatus.COMPLETED, run.summary()
    merge = run.task("t4")
    assert (merge.profile, merge.created_by, merge.title) == ("merge", "merge:t2", "Merge: second")
    # The merge task's own worktree: t2's approved commit with the target's tip merged in.
    assert seen["markers"] and seen["root"] == repo / ".worktrees" / run.id / "t4-a1"
    second = run.task("t2")
    (approved,) = run.store.rows("select commit_sha from attempts where run_id = ? and "
                                 "task_id = 't2'", [run.id])
    assert seen["source"] == approved["commit_sha"]
    assert second.attempts == 1 and second.status_reason == "integrated by merge task t4"
    assert (repo / "shared.txt").read_text() == "first\nsecond\n"
    assert git(repo, "status", "--porcelain") == ""
    # "after" waited for the integrated work, not just for QA's approval.
    starts = {r["task_id"]: r["s"] for r in run.store.rows(
        "select task_id, min(started_at) as s from attempts where run_id = ? group by task_id", [run.id])}
    ends = {r["task_id"]: r["f"] for r in run.store.rows(
        "select task_id, max(finished_at) as f from attempts where run_id = ? group by task_id", [run.id])}
    assert starts["t3"] >= ends["t4"]
    statuses = [r["status"] for r in run.store.rows(
        "select status from merges where run_id = ? order by ts", [run.id])]
    assert statuses.count("conflict") == 1 and len(statuses) == 4  # first, second, its merge, after
    assert git(repo, "branch", "--list", "agentorch/*") == ""


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
    await asyncio.wait_for(reached(run, "t1", TaskStatus.COMPLETE).wait(), DEADLINE)
    failed = repo / ".worktrees" / run.id / "t1-a1"
    assert failed.exists() and (failed / "x.txt").exists()  # kept for inspection
    gate.set()
    assert await run.wait(DEADLINE) == RunStatus.COMPLETED
    assert failed.exists() is keep


def test_a_dirty_workspace_is_refused_before_anything_starts(orch_factory, repo):
    (repo / "notes.txt").write_text("mine\n")
    git(repo, "add", "notes.txt")
    orch = orch_factory([TaskSpec("x")])
    with pytest.raises(ao.WorkspaceError, match="uncommitted changes .*notes.txt"):
        orch.start("x")
    assert orch.runs() == []
    assert git(repo, "status", "--porcelain") == "A  notes.txt"


async def test_abandoning_a_merge_task_sends_the_work_back_to_phoenix(orch_factory, repo):
    (repo / "shared.txt").write_text("base\n")
    git(repo, "add", "shared.txt")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@x", "commit", "-q", "-m", "shared")
    worker = FileWriter({"first": {"shared.txt": "first\n"},
                         "second": {"shared.txt": lambda ctx: f"second, attempt {ctx.attempt}\n"}},
                        together={"first", "second"})

    class NoMerging(FileWriter):
        async def run(self, task, ctx):
            if task.profile == "merge":
                return ao.WorkResult("cannot", ok=False, error="no idea how to merge this")
            return await worker.run(task, ctx)

    qa = SecondAfterFirst()
    run = orch_factory([TaskSpec("first"), TaskSpec("second", max_retries=1)], worker=NoMerging({}),
                       strategist=qa).start("x")
    qa.first_merged = merged(run, "t1")
    assert await run.wait(DEADLINE) == RunStatus.PAUSED
    assert run.task("t3").status == TaskStatus.WAITING_HUMAN and run.task("t2").status == TaskStatus.AWAITING_QA
    run.resolve("t3", "abandon")
    assert await run.wait(DEADLINE) == RunStatus.COMPLETED, run.summary()
    assert run.task("t2").attempts == 2  # redone from the new tip
    assert (repo / "shared.txt").read_text() == "second, attempt 2\n"
    assert git(repo, "status", "--porcelain") == ""


async def test_keep_worktrees_keeps_everything_until_orch_cleanup(orch_factory, repo):
    orch = orch_factory([TaskSpec("a"), TaskSpec("b")],
                        worker=FileWriter({"a": {"a.txt": "a\n"}, "b": {"b.txt": "b\n"}}),
                        keep_worktrees=True)
    run = orch.start("keep")
    assert await run.wait(DEADLINE) == RunStatus.COMPLETED
    kept = sorted(p.name for p in (repo / ".worktrees" / run.id).iterdir())
    assert kept == ["t1-a1", "t2-a1"]
    removed = orch.cleanup(run.id)
    assert removed == [f"agentorch/{run.id}/t1/a1", f"agentorch/{run.id}/t2/a1"]
    assert not any((repo / ".worktrees" / run.id).iterdir())
    assert git(repo, "branch", "--list", "agentorch/*") == ""
    assert (repo / "a.txt").exists() and (repo / "b.txt").exists()  # the work itself stays on main


async def test_an_untracked_file_in_the_way_fails_the_attempt_not_the_run(orch_factory, repo):
    """A file of yours, untracked in main where a task adds one, makes git refuse the merge:
    the attempt fails saying so, the other tasks go on, and the task waits for you."""
    (repo / "report.md").write_text("my own draft\n")  # untracked: the run may start
    worker = FileWriter({"report": {"report.md": "the task's report\n"},
                         "other": {"other.md": "fine\n"}})
    orch = orch_factory([TaskSpec("report", max_retries=0), TaskSpec("other")], worker=worker)
    run = orch.start("untracked file in the way")
    assert await asyncio.wait_for(run.wait(), DEADLINE) == RunStatus.PAUSED
    tasks = {t.title: t for t in run.tasks}
    assert tasks["other"].status == TaskStatus.COMPLETE
    assert tasks["report"].status == TaskStatus.WAITING_HUMAN
    assert "report.md" in tasks["report"].status_reason
    assert "untracked" in tasks["report"].status_reason
    assert (repo / "report.md").read_text() == "my own draft\n"  # never touched
    merges = orch.sql("select status, error from merges where task_id = ?", [tasks["report"].id])
    assert list(merges.status) == ["refused"]
    run.cancel()
    await run.wait()
