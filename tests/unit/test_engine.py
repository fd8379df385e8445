"""The dispatch loop, Phoenix and HITL on a real DuckDB file and a real git repository."""

import asyncio
import os
import subprocess

import pytest

import agentorch_nb as ao
from agentorch_nb import RunStatus, TaskSpec, TaskStatus
from agentorch_nb.testing import TestStrategist, TestWorker
from tests.conftest import chain

S = TaskStatus


def statuses(run):
    return {t.id: t.status for t in run.tasks}


async def test_runs_a_chain_to_completion_in_dependency_order(orch_factory):
    worker = TestWorker(latency=0.01)
    run = orch_factory(chain("a", "b", "c"), worker=worker).start("three steps")
    assert await run.wait(10) == RunStatus.COMPLETED
    assert [c[0] for c in worker.calls] == ["t1", "t2", "t3"]
    assert statuses(run) == {"t1": S.COMPLETE, "t2": S.COMPLETE, "t3": S.COMPLETE}
    # The store agrees with memory.
    rows = run.store.rows("select task_id, status from tasks where run_id = ?", [run.id])
    assert {r["task_id"]: r["status"] for r in rows} == {"t1": "complete", "t2": "complete", "t3": "complete"}


async def test_phoenix_retries_with_every_earlier_attempt_and_escalates_at_the_limit(orch_factory):
    briefs = []

    def fail(task, ctx):
        briefs.append(ctx.phoenix_brief())
        return f"broken build #{ctx.attempt}"

    run = orch_factory([TaskSpec("flaky", max_retries=2)], worker=TestWorker(fail=fail)).start("x")
    assert await run.wait(10) == RunStatus.PAUSED
    task = run.task("t1")
    assert task.status == S.WAITING_HUMAN and task.attempts == 3  # first try + 2 retries
    assert briefs[0] == ""
    assert "broken build #1" in briefs[1] and "broken build #2" not in briefs[1]
    assert briefs[2].index("broken build #1") < briefs[2].index("broken build #2")
    (it,) = run.interrupts()
    assert it.task_id == "t1" and it.kind == "retries_exhausted" and "broken build #3" in it.reason
    outcomes = run.store.rows("select attempt, outcome, failure_reason from attempts where run_id = ? "
                              "order by attempt", [run.id])
    assert [r["outcome"] for r in outcomes] == ["error"] * 3


async def test_qa_rejection_feedback_reaches_the_next_attempt(orch_factory):
    seen = []

    def reject(task, ctx):
        return "missing edge cases" if ctx.attempt == 1 else None

    worker = TestWorker(fail=lambda task, ctx: seen.append(ctx.phoenix_brief()))
    run = orch_factory([TaskSpec("t")], worker=worker, strategist=TestStrategist(reject)).start("x")
    assert await run.wait(10) == RunStatus.COMPLETED
    assert "QA feedback: missing edge cases" in seen[1]
    assert run.task("t1").attempts == 2


async def test_a_waiting_task_blocks_only_its_dependents(orch_factory):
    specs = [TaskSpec("bad", key="bad", max_retries=0), TaskSpec("after bad", depends_on=["bad"]),
             TaskSpec("independent", key="ind"), TaskSpec("after ind", depends_on=["ind"])]
    fail = lambda task, ctx: "no" if task.title == "bad" else None  # noqa: E731
    run = orch_factory(specs, worker=TestWorker(fail=fail)).start("x")
    assert await run.wait(10) == RunStatus.PAUSED
    assert statuses(run) == {"t1": S.WAITING_HUMAN, "t2": S.PLANNED, "t3": S.COMPLETE, "t4": S.COMPLETE}


async def test_retry_resolution_with_changes_and_a_fresh_budget(orch_factory):
    seen = {}

    def fail(task, ctx):
        seen[ctx.attempt] = (task.description, task.acceptance_criteria, ctx.guidance)
        return None if ctx.guidance else "stuck"

    run = orch_factory([TaskSpec("x", max_retries=1)], worker=TestWorker(fail=fail)).start("x")
    assert await run.wait(10) == RunStatus.PAUSED
    res = run.resolve("t1", "retry", description="new plan", acceptance_criteria=["it works"],
                      guidance="use the other API", source="widget")
    assert await run.wait(10) == RunStatus.COMPLETED
    assert seen[3] == ("new plan", ["it works"], "use the other API")
    assert run.task("t1").retries_used == 0
    (row,) = run.store.rows("select * from resolutions where run_id = ?", [run.id])
    assert row["action"] == "retry" and row["source"] == "widget" and row["resolution_id"] == res.id
    assert run.interrupts() == []


async def test_abandon_leaves_dependents_waiting_for_a_human(orch_factory):
    specs = chain("a", "b", "c", max_retries=0)
    run = orch_factory(specs, worker=TestWorker(fail=lambda t, c: "no" if t.id == "t1" else None)).start("x")
    await run.wait(10)
    run.resolve("t1", "abandon")
    assert await run.wait(10) == RunStatus.PAUSED
    assert statuses(run) == {"t1": S.ABANDONED, "t2": S.WAITING_HUMAN, "t3": S.PLANNED}
    (it,) = run.interrupts()
    assert it.task_id == "t2" and it.kind == "dependency_abandoned" and "t1" in it.reason


async def test_abandon_with_drop_dependency_lets_dependents_run(orch_factory):
    run = orch_factory(chain("a", "b", max_retries=0),
                       worker=TestWorker(fail=lambda t, c: "no" if t.id == "t1" else None)).start("x")
    await run.wait(10)
    run.resolve("t1", "abandon", drop_dependency=True)
    assert await run.wait(10) == RunStatus.COMPLETED
    assert statuses(run) == {"t1": S.ABANDONED, "t2": S.COMPLETE}
    assert run.task("t2").depends_on == []


async def test_abandon_with_cascade_abandons_everything_downstream(orch_factory):
    specs = chain("a", "b", "c", max_retries=0) + [TaskSpec("other")]
    run = orch_factory(specs, worker=TestWorker(fail=lambda t, c: "no" if t.id == "t1" else None)).start("x")
    await run.wait(10)
    run.resolve("t1", "abandon", cascade=True)
    assert await run.wait(10) == RunStatus.COMPLETED
    assert statuses(run) == {"t1": S.ABANDONED, "t2": S.ABANDONED, "t3": S.ABANDONED, "t4": S.COMPLETE}


async def test_spawn_replacement_relinks_the_dependents(orch_factory):
    run = orch_factory(chain("a", "b", max_retries=0),
                       worker=TestWorker(fail=lambda t, c: "no" if t.id == "t1" else None)).start("x")
    await run.wait(10)
    res = run.resolve("t1", "spawn", title="a, done differently", description="smaller step")
    assert res.new_task_id == "t3"
    assert await run.wait(10) == RunStatus.COMPLETED
    assert statuses(run) == {"t1": S.ABANDONED, "t2": S.COMPLETE, "t3": S.COMPLETE}
    assert run.task("t2").depends_on == ["t3"]
    assert run.task("t3").created_by == "api"


async def test_spawn_without_replace_makes_the_waiting_task_wait_for_the_new_one(orch_factory):
    order = []

    def fail(task, ctx):
        order.append(task.id)
        return "needs groundwork" if task.id == "t1" and "t2" not in order else None

    run = orch_factory([TaskSpec("a", max_retries=0)], worker=TestWorker(fail=fail)).start("x")
    await run.wait(10)
    run.resolve("t1", "spawn", title="groundwork", replace=False)
    assert await run.wait(10) == RunStatus.COMPLETED
    assert order == ["t1", "t2", "t1"]
    assert run.task("t1").depends_on == ["t2"]


async def test_interrupt_stops_an_active_task_and_its_subprocess(orch_factory, tmp_path):
    pidfile = tmp_path / "pid"

    class Sleeper:
        async def run(self, task, ctx):
            await ctx.run_command(["sh", "-c", f"echo $$ > {pidfile}; exec sleep 60"])
            return ao.WorkResult("never")

    run = orch_factory([TaskSpec("long")], worker=Sleeper()).start("x")
    for _ in range(200):
        if pidfile.exists() and pidfile.read_text().strip():
            break
        await asyncio.sleep(0.02)
    pid = int(pidfile.read_text())
    run.interrupt("t1", source="test")
    assert await run.wait(10) == RunStatus.PAUSED
    assert run.task("t1").status == S.WAITING_HUMAN
    assert run.interrupts()[0].kind == "human"
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


async def test_cancel_stops_every_worker_and_subprocess(orch_factory, tmp_path):
    started = []

    class Sleeper:
        async def run(self, task, ctx):
            pidfile = tmp_path / task.id
            started.append(pidfile)
            await ctx.run_command(["sh", "-c", f"echo $$ > {pidfile}; exec sleep 60"])
            return ao.WorkResult("never")

    run = orch_factory([TaskSpec(f"s{i}") for i in range(3)], worker=Sleeper(),
                       max_concurrent_workers=3).start("x")
    for _ in range(200):
        if len(started) == 3 and all(p.exists() and p.read_text().strip() for p in started):
            break
        await asyncio.sleep(0.02)
    pids = [int(p.read_text()) for p in started]
    run.cancel()
    assert await run.wait(10) == RunStatus.CANCELLED
    assert not run.live
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert {t.status for t in run.tasks} == {S.FAILED}
    rows = run.store.rows("select outcome, failure_reason from attempts where run_id = ?", [run.id])
    assert {(r["outcome"], r["failure_reason"]) for r in rows} == {("interrupted", "run cancelled")}


async def test_restart_after_cancel_finishes_the_run(orch_factory):
    started = asyncio.Event()

    class Gated:
        async def run(self, task, ctx):
            if task.id == "t1" and ctx.attempt == 1:
                started.set()
                await asyncio.Event().wait()  # forever
            return ao.WorkResult("ok")

    orch = orch_factory(chain("a", "b"), worker=Gated())
    run = orch.start("x")
    await asyncio.wait_for(started.wait(), 10)
    run.cancel()
    assert await run.wait(10) == RunStatus.CANCELLED
    run.restart()
    assert await run.wait(10) == RunStatus.COMPLETED
    assert run.task("t1").attempts == 2


async def test_worker_timeout_and_exception_are_failed_attempts(orch_factory):
    class Bad:
        async def run(self, task, ctx):
            if task.title == "slow":
                await asyncio.sleep(5)
            raise RuntimeError("disk on fire")

    run = orch_factory([TaskSpec("slow", max_retries=0), TaskSpec("boom", max_retries=0)],
                       worker=Bad(), worker_timeout=0.2).start("x")
    assert await run.wait(10) == RunStatus.PAUSED
    rows = {r["task_id"]: r for r in run.store.rows(
        "select task_id, outcome, failure_reason from attempts where run_id = ?", [run.id])}
    assert rows["t1"]["outcome"] == "timeout" and "0.2 s" in rows["t1"]["failure_reason"]
    assert rows["t2"]["outcome"] == "error" and "RuntimeError: disk on fire" in rows["t2"]["failure_reason"]


async def test_never_more_than_max_concurrent_workers(orch_factory):
    now = {"n": 0, "max": 0}

    class Counting:
        async def run(self, task, ctx):
            now["n"] += 1
            now["max"] = max(now["max"], now["n"])
            await asyncio.sleep(0.02)
            now["n"] -= 1
            return ao.WorkResult("ok")

    run = orch_factory([TaskSpec(f"p{i}") for i in range(12)], worker=Counting(),
                       max_concurrent_workers=3).start("x")
    assert await run.wait(10) == RunStatus.COMPLETED
    assert now["max"] == 3


async def test_dependency_edits_on_a_live_run(orch_factory):
    gate = asyncio.Event()

    class Gated:
        async def run(self, task, ctx):
            if task.title == "slow":
                await gate.wait()
            return ao.WorkResult("ok")

    run = orch_factory([TaskSpec("slow"), TaskSpec("b", max_retries=0), TaskSpec("c")],
                       worker=Gated(), max_concurrent_workers=1).start("x")
    while statuses(run).get("t1") != S.ACTIVE:  # t1 takes the only worker slot
        await asyncio.sleep(0.01)
    assert run.task("t2").status == S.READY
    run.add_dependency("t2", "t1")
    assert run.task("t2").status == S.PLANNED
    with pytest.raises(ao.ResolutionError, match="it is active"):
        run.add_dependency("t1", "t3")
    run.remove_dependency("t2", "t1")
    run.add_dependency("t3", "t2")
    with pytest.raises(ao.CycleError, match="t2 -> t3 -> t2"):
        run.add_dependency("t2", "t3")
    run.replan(source="test")
    await asyncio.sleep(0.05)  # the loop's next step recomputes readiness
    assert statuses(run) == {"t1": S.ACTIVE, "t2": S.READY, "t3": S.PLANNED}
    gate.set()
    assert await run.wait(10) == RunStatus.COMPLETED
    kinds = run.events().kind.tolist()
    assert kinds.count("dep_added") == 2 and kinds.count("dep_removed") == 1
    assert kinds.count("replan") == 1


async def test_plan_task_adds_work_when_approved(orch_factory):
    def more(task):
        if task.profile == "plan":
            return [TaskSpec("sub 1", key="s1"), TaskSpec("sub 2", depends_on=["s1"])]
        return []

    run = orch_factory([TaskSpec("plan the component", profile="plan")],
                       worker=TestWorker(new_tasks=more)).start("x")
    assert await run.wait(10) == RunStatus.COMPLETED
    assert [(t.id, t.created_by, t.depends_on) for t in run.tasks] == [
        ("t1", "director", []), ("t2", "t1", []), ("t3", "t1", ["t2"])]


# ------------------------------------------------------------------ bad input
def test_empty_objective_is_refused(orch_factory):
    orch = orch_factory(chain("a"))
    for bad in ("", "   ", None):
        with pytest.raises(ao.InvalidInput, match="objective is empty"):
            orch.start(bad)
    assert orch.runs() == []


def test_workspace_must_be_a_git_repository(tmp_path):
    with pytest.raises(ao.WorkspaceError, match="not a git repository"):
        ao.Orchestrator(tmp_path)
    with pytest.raises(ao.WorkspaceError, match="does not exist"):
        ao.Orchestrator(tmp_path / "nope")
    assert not (tmp_path / ".agentorch").exists()


async def test_bad_commands_are_refused_and_change_nothing(orch_factory):
    run = orch_factory(chain("a", "b", max_retries=0),
                       worker=TestWorker(fail=lambda t, c: "no" if t.id == "t1" else None)).start("x")
    await run.wait(10)
    before = (statuses(run), len(run.events()))
    with pytest.raises(ao.UnknownTask, match="t9"):
        run.resolve("t9", "retry")
    with pytest.raises(ao.ResolutionError, match="it is planned"):
        run.resolve("t2", "retry")
    with pytest.raises(ao.InvalidInput, match="unknown resolution"):
        run.resolve("t1", "shrug")
    with pytest.raises(ao.CycleError):
        run.add_dependency("t1", "t2")
    with pytest.raises(ao.UnknownTask):
        run.add_dependency("t1", "t9")
    with pytest.raises(ao.ResolutionError, match="would wait for itself"):
        run.resolve("t1", "spawn", title="x", depends_on=["t2"])
    with pytest.raises(ao.ResolutionError, match="it is waiting_human"):
        run.interrupt("t1")
    with pytest.raises(ao.MissingDependency, match="'t1' does not depend on 't2'"):
        run.remove_dependency("t1", "t2")
    assert (statuses(run), len(run.events())) == before
    assert run.task("t2").depends_on == ["t1"]


async def test_director_without_tasks_fails_the_run_with_a_reason(orch_factory):
    run = orch_factory([]).start("nothing to do")
    assert await run.wait(10) == RunStatus.FAILED
    assert "no tasks" in run.summary()["error"]


async def test_wait_sync_refuses_the_loop_it_would_block(orch_factory):
    run = orch_factory(chain("a"), worker=TestWorker(latency=0.05)).start("x")
    with pytest.raises(ao.WrongLoop, match="await run.wait"):
        run.wait_sync(1)
    await run.wait(10)


def test_default_store_lives_in_the_workspace_and_stays_out_of_git(repo, orch_factory):
    orch = orch_factory(chain("a"))
    assert orch.store.path == str(repo / ".agentorch" / "agentorch.duckdb")
    exclude = (repo / ".git" / "info" / "exclude").read_text().splitlines()
    assert exclude.count(".agentorch/") == 1
    orch_factory(chain("a"))  # a second orchestrator adds no second line
    assert (repo / ".git" / "info" / "exclude").read_text().splitlines().count(".agentorch/") == 1
    assert orch.start("x").wait_sync(10) == RunStatus.COMPLETED
    status = subprocess.run(["git", "-C", str(repo), "status", "--porcelain"],
                            capture_output=True, text=True).stdout
    assert status == ""


async def test_memory_store_runs_and_keeps_nothing_on_disk(repo, orch_factory):
    run = orch_factory(chain("a", "b"), store=":memory:").start("x")
    assert await run.wait(10) == RunStatus.COMPLETED
    assert not (repo / ".agentorch").exists()
    assert len(run.events()) > 0


def test_plain_python_runs_on_the_background_loop(orch_factory):
    run = orch_factory(chain("a", "b", "c"), worker=TestWorker(latency=0.01)).start("x")
    assert run.wait_sync(10) == RunStatus.COMPLETED
    assert [t.status for t in run.tasks] == [S.COMPLETE] * 3


async def test_refused_subtasks_fail_the_planning_attempt_with_the_reason(orch_factory):
    def bad_plan(task):
        if task.profile == "plan" and len([c for c in worker.calls if c[0] == task.id]) == 1:
            return [TaskSpec("sub", depends_on=["nonexistent"])]
        return [TaskSpec("sub")] if task.profile == "plan" else []

    worker = TestWorker(new_tasks=bad_plan)
    run = orch_factory([TaskSpec("plan it", profile="plan")], worker=worker).start("x")
    assert await run.wait(10) == RunStatus.COMPLETED
    (first, second) = run.store.rows(
        "select outcome, failure_reason from attempts where run_id = ? and task_id = 't1' "
        "order by attempt", [run.id])
    assert first["outcome"] == "error" and "nonexistent" in first["failure_reason"]
    assert second["outcome"] == "approved"
    assert [t.title for t in run.tasks] == ["plan it", "sub"]


async def test_a_strategist_that_summarizes_feeds_its_summary_to_the_next_attempt(orch_factory):
    briefs = []

    class Summarizing(TestStrategist):
        async def summarize(self, task, reason, conversation, ctx):
            said = [m["content"] for m in conversation if m["role"] == "assistant"]
            return f"SUMMARY of {len(conversation)} messages; worker said {said[-1]!r}; {reason}"

    def fail(task, ctx):
        briefs.append(ctx.phoenix_brief())
        return "compile error" if ctx.attempt == 1 else None

    run = orch_factory([TaskSpec("x")], worker=TestWorker(fail=fail),
                       strategist=Summarizing()).start("x")
    assert await run.wait(10) == RunStatus.COMPLETED
    assert "SUMMARY of 2 messages; worker said 'Gave up: compile error'; compile error" in briefs[1]
    (first,) = run.store.rows("select summary from attempts where run_id = ? and attempt = 1", [run.id])
    assert first["summary"].startswith("SUMMARY of 2 messages")
