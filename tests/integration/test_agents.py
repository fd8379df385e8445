"""The LLM agents through litellm with scripted models, on real repositories and stores."""

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

import agentorch_nb as ao
from agentorch_nb import RunStatus, TaskStatus
from agentorch_nb.agents import LLMTeam
from agentorch_nb.agents.worker import ReActWorker
from agentorch_nb.engine.resume import ENGINE_DIED
from agentorch_nb.llm import LLM, Models, register_script
from agentorch_nb.model import Attempt, Interruption, Outcome, Task, utcnow
from agentorch_nb.tools import Toolbox, ToolEnv

ROOT = Path(__file__).resolve().parents[2]


def call(name, **arguments):
    return {"name": name, "arguments": arguments}


REVIEW = {"role": "director", "last_message": "Review\\s+the task graph", "reply": {
    "tool_calls": [call("submit_review", add_dependencies=[])]}}


def plan_one(title="Do it", profile="code", **extra):
    return [
        REVIEW,
        {"role": "director", "reply": {"tool_calls": [call("submit_plan", components=[
            {"title": "all", "description": "everything"}])]}},
        {"role": "planner", "reply": {"tool_calls": [call("create_subtasks", tasks=[
            {"key": "a", "title": title, "description": "d", "acceptance_criteria": ["works"],
             "profile": profile, **extra}])]}},
    ]


APPROVE = {"role": "strategist", "reply": {"tool_calls": [call(
    "submit_verdict", approved=True, criteria=[{"criterion": "works", "met": True}])]}}


def orch_for(repo, script_name, rules, **config):
    register_script(script_name, rules)
    cfg = ao.Config(models=Models(worker_model=f"scripted/{script_name}", backoff_base=0.01),
                    flush_interval=0.01, **config)
    return ao.Orchestrator(repo, config=cfg, agents=LLMTeam(checks=[]))


async def test_director_in_prose_is_asked_again_and_the_plan_runs(repo):
    rules = [
        REVIEW,
        {"role": "director", "replies": [{"content": "I think we should build it."}]},
        *plan_one(),
        {"role": "worker", "replies": [
            {"tool_calls": [call("write_file", path="a.txt", content="A\n")]},
            {"tool_calls": [call("finish", summary="wrote a.txt", artifacts=["a.txt"])]}]},
        APPROVE,
    ]
    run = orch_for(repo, "prose", rules).start("write a.txt")
    assert await run.wait(60) == RunStatus.COMPLETED, run.summary()
    assert (repo / "a.txt").read_text() == "A\n"
    director = run.messages().query("role in ('user', 'assistant') and task_id.isnull()")
    assert "You must answer by calling the tool `submit_plan`" in " ".join(director.content)
    calls = run.store.rows("select role, count(*) as n from llm_calls where run_id = ? group by role "
                           "order by role", [run.id])
    assert {r["role"]: r["n"] for r in calls} == {"director": 3, "planner": 1, "strategist": 2, "worker": 2}
    tools = run.store.rows("select tool, error from tool_calls where run_id = ? order by ts", [run.id])
    assert [(t["tool"], t["error"]) for t in tools] == [("write_file", None), ("finish", None)]


async def test_the_directors_review_links_tasks_of_different_components(repo):
    def component(n):
        return {"role": "planner", "title": f"Plan: part {n}", "reply": {"tool_calls": [call(
            "create_subtasks", tasks=[{"key": "k", "title": f"build {n}", "description": "d",
                                       "acceptance_criteria": ["ok"], "profile": "code"}])]}}

    rules = [
        {"role": "director", "last_message": "Review\\s+the task graph", "reply": {"tool_calls": [
            call("submit_review", add_dependencies=[{"task": "t4", "depends_on": "t3"}])]}},
        {"role": "director", "reply": {"tool_calls": [call("submit_plan", components=[
            {"title": "part 1", "description": "d"}, {"title": "part 2", "description": "d"}])]}},
        component(1), component(2),
        {"role": "worker", "reply": {"tool_calls": [call("finish", summary="done")]}},
        APPROVE,
    ]
    run = orch_for(repo, "review", rules).start("x")
    assert await run.wait(60) == RunStatus.COMPLETED, run.summary()
    assert [(t.title, t.depends_on) for t in run.tasks] == [
        ("Plan: part 1", []), ("Plan: part 2", []), ("build 1", []), ("build 2", ["t3"])]
    starts = run.store.rows("select task_id, min(started_at) as s from attempts where run_id = ? "
                            "group by task_id", [run.id])
    started = {r["task_id"]: r["s"] for r in starts}
    finished = {r["task_id"]: r["f"] for r in run.store.rows(
        "select task_id, max(finished_at) as f from attempts where run_id = ? group by task_id", [run.id])}
    assert started["t4"] >= finished["t3"]
    events = run.events()
    (added,) = events.query("kind == 'dep_added'").payload
    assert added == '{"depends_on": "t3"}'
    reviewed = int(events.query("kind == 'reviewed'").seq.iloc[0])
    build_starts = events.query("kind == 'attempt_started' and task_id in ('t3', 't4')").seq
    assert (build_starts > reviewed).all()  # nothing the plans added started before the review


async def test_a_plan_with_an_unknown_dependency_goes_back_to_the_planner(repo):
    good = {"key": "a", "title": "A", "description": "d", "acceptance_criteria": ["ok"], "profile": "code"}
    rules = [
        REVIEW,
        {"role": "director", "reply": {"tool_calls": [call("submit_plan", components=[
            {"title": "c", "description": "d"}])]}},
        {"role": "planner", "replies": [{"tool_calls": [call("create_subtasks", tasks=[
            {**good, "depends_on": ["nowhere"]}])]}]},
        {"role": "planner", "last_message": "nowhere", "reply": {"tool_calls": [call(
            "create_subtasks", tasks=[good])]}},
        {"role": "worker", "reply": {"tool_calls": [call("finish", summary="nothing to change")]}},
        APPROVE,
    ]
    run = orch_for(repo, "baddep", rules).start("x")
    assert await run.wait(60) == RunStatus.COMPLETED, run.summary()
    # Refused in the same attempt: the error went back to the model, which fixed its answer.
    assert run.task("t1").attempts == 1
    said = " ".join(run.messages("t1").content)
    assert "depends on unknown ['nowhere']" in said
    assert [t.title for t in run.tasks] == ["Plan: c", "A"]


async def test_running_out_of_iterations_fails_the_attempt(repo):
    rules = [*plan_one(),
             {"role": "worker", "reply": {"tool_calls": [call("list_directory", path=".")]}},
             APPROVE]
    run = orch_for(repo, "loop", rules, max_iterations_per_task=3, max_retries=0).start("x")
    assert await run.wait(60) == RunStatus.PAUSED
    (a,) = run.store.rows("select outcome, failure_reason from attempts where run_id = ? and task_id = 't2'",
                          [run.id])
    assert "ran out of iterations (3)" in a["failure_reason"]
    assert run.task("t2").status == TaskStatus.WAITING_HUMAN


async def test_a_spent_budget_pauses_new_work_with_an_interrupt(repo):
    task = {"description": "d", "acceptance_criteria": ["works"], "profile": "code"}
    rules = [REVIEW,
             {"role": "director", "reply": {"tool_calls": [call("submit_plan", components=[
                 {"title": "all", "description": "everything"}])]}},
             {"role": "planner", "reply": {"tool_calls": [call("create_subtasks", tasks=[
                 {"key": "a", "title": "Do it", **task}, {"key": "b", "title": "Then this", **task}])]}},
             {"role": "worker", "reply": {"content": "thinking " * 400, "tokens_in": 5000, "tokens_out": 5000}},
             APPROVE]
    register_script("budget", rules)
    cfg = ao.Config(models=Models(worker_model="scripted/budget", budget_tokens=12_000),
                    flush_interval=0.01, max_concurrent_workers=1)
    run = ao.Orchestrator(repo, config=cfg, agents=LLMTeam(checks=[])).start("x")
    assert await run.wait(60) == RunStatus.PAUSED
    (it,) = run.interrupts()
    assert it.kind == "budget" and "budget is spent" in it.reason and it.task_id == "t2"
    # Paused although t3 is ready and a worker slot is free: the spent budget holds new work.
    assert run.task("t3").status == TaskStatus.READY and run.task("t3").attempts == 0
    calls_before = len(run.store.rows("select * from llm_calls where run_id = ?", [run.id]))
    # Once the engine has stopped, everything it did after the pause is on record.
    run.cancel()
    assert await run.wait(60) == RunStatus.CANCELLED
    assert len(run.store.rows("select * from llm_calls where run_id = ?", [run.id])) == calls_before
    assert run.task("t2").attempts == 1  # no retry spent more
    assert run.task("t3").attempts == 0


async def test_the_next_attempt_continues_a_crashed_one_from_its_checkpoint(repo, tmp_path):
    """Attempt 1 is cut off after writing a file (its process 'died'); attempt 2 continues the
    same conversation in the same worktree instead of starting over."""
    from agentorch_nb.store import Store
    from agentorch_nb.store.checkpoint import DuckDBSaver
    from agentorch_nb.workspace import Workspace

    register_script("resume", [
        {"role": "worker", "attempt": 1, "replies": [
            {"tool_calls": [call("write_file", path="half.txt", content="first half\n")]},
            {"error": {"status": 400}}]},  # the call that never came back
        {"role": "worker", "attempt": 2, "last_message": "wrote", "replies": [
            {"tool_calls": [call("finish", summary="continued")]}]},
    ])
    store = Store.open(tmp_path / "s.duckdb")
    llm = LLM(Models(worker_model="scripted/resume", max_retries=0), store=store, run_id="r1")
    ws = Workspace(repo)
    worker = ReActWorker(llm, lambda task, ctx, root: Toolbox(ToolEnv(root=root, run_id="r1")),
                         checkpointer=DuckDBSaver(store))
    task = Task(id="t1", run_id="r1", title="two halves", acceptance_criteria=["both"])

    class Ctx:
        run_id, objective, task_id = "r1", "x", "t1"

        def __init__(self, attempt, history):
            self.attempt, self.history, self.guidance, self.logged = attempt, history, None, []

        async def worktree(self, create=True):
            wt = ws.adopt_worktree("r1", "t1", 1, ws.tip()) or ws.create_worktree("r1", "t1", 1)
            return wt.path

        def log(self, role, content, **meta):
            self.logged.append((role, content))

        def phoenix_brief(self):
            return ""

    with pytest.raises(ao.AgentorchError):
        await worker.run(task, Ctx(1, []))
    cut = Attempt("r1", "t1", 1, utcnow(), outcome=Outcome.INTERRUPTED, failure_reason=ENGINE_DIED,
                  interruption=Interruption.ENGINE_DIED)
    second = Ctx(2, [cut])
    result = await worker.run(task, second)
    assert result.ok and result.summary == "continued"
    assert ("system", "continuing attempt 1 from its last checkpoint") in second.logged
    assert (await second.worktree() / "half.txt").read_text() == "first half\n"


@pytest.mark.slow
def test_the_readme_demo_builds_a_working_package(tmp_path):
    ws = tmp_path / "demo"
    out = subprocess.run([sys.executable, "-m", "agentorch_nb", "demo", "--workspace", str(ws)],
                         capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stdout + out.stderr
    assert "status: completed" in out.stdout
    assert "attempts=2  Write pytest tests" in out.stdout  # the Phoenix retry
    assert "tokens in" in out.stdout and "$0.0000" in out.stdout
    assert (ws / "wordstats" / "__init__.py").exists() and (ws / "tests" / "test_wordstats.py").exists()
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=ws,
                           capture_output=True, text=True, timeout=120)
    assert tests.returncode == 0 and "4 passed" in tests.stdout, tests.stdout
    status = subprocess.run(["git", "-C", str(ws), "status", "--porcelain"], capture_output=True, text=True)
    assert status.stdout == ""
    log = subprocess.run(["git", "-C", str(ws), "log", "--format=%s"], capture_output=True, text=True).stdout
    assert "Implement count_words(text)" in log and "Write pytest tests" in log


async def test_the_guardian_nudges_a_drifting_worker(repo):
    rules = [*plan_one(),
             {"role": "worker", "last_message": "Guardian:", "reply": {
                 "tool_calls": [call("finish", summary="back on track")]}},
             {"role": "worker", "reply": {"tool_calls": [call("list_directory", path=".")]}},
             {"role": "guardian", "replies": [
                 {"tool_calls": [call("submit_drift_check", on_track=True)]},
                 {"tool_calls": [call("submit_drift_check", on_track=False,
                                      nudge="Stop listing directories; finish the task.")]}]},
             APPROVE]
    run = orch_for(repo, "guard", rules, enable_guardian=True, guardian_every=2).start("x")
    assert await run.wait(60) == RunStatus.COMPLETED, run.summary()
    rows = run.store.rows("select tool_calls, on_track, nudge from guardian_verdicts where run_id = ? "
                          "order by ts", [run.id])
    assert [(r["tool_calls"], r["on_track"]) for r in rows] == [(2, True), (4, False)]
    assert rows[1]["nudge"] == "Stop listing directories; finish the task."
    assert run.task("t2").result_summary == "back on track"


async def test_the_scripted_merge_worker_resolves_a_conflict_that_lands_on_main(repo):
    (repo / "notes.txt").write_text("base\n")
    subprocess.run(["git", "-C", str(repo), "add", "notes.txt"], check=True)
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@x", "commit",
                    "-q", "-m", "notes"], check=True)
    task = {"description": "d", "acceptance_criteria": ["ok"], "profile": "code"}
    rules = [
        REVIEW,
        {"role": "director", "reply": {"tool_calls": [call("submit_plan", components=[
            {"title": "c", "description": "d"}])]}},
        {"role": "planner", "reply": {"tool_calls": [call("create_subtasks", tasks=[
            {"key": "a", "title": "Note A", **task}, {"key": "b", "title": "Note B", **task}])]}},
        {"role": "worker", "profile": "merge", "replies": [
            {"tool_calls": [call("read_file", path="notes.txt")]},
            {"tool_calls": [call("write_file", path="notes.txt", content="A\nB\n")]},
            {"tool_calls": [call("finish", summary="kept both notes")]}]},
        {"role": "worker", "title": "Note A", "replies": [
            {"tool_calls": [call("write_file", path="notes.txt", content="A\n")]},
            {"tool_calls": [call("finish", summary="A")]}]},
        {"role": "worker", "title": "Note B", "replies": [
            {"tool_calls": [call("write_file", path="notes.txt", content="B\n")]},
            {"tool_calls": [call("finish", summary="B")]}]},
        APPROVE,
    ]
    run = orch_for(repo, "merger", rules).start("two notes")
    assert await run.wait(60) == RunStatus.COMPLETED, run.summary()
    assert (repo / "notes.txt").read_text() == "A\nB\n"
    merge = [t for t in run.tasks if t.profile == "merge"]
    assert len(merge) == 1 and merge[0].title in ("Merge: Note A", "Merge: Note B")
    said = " ".join(run.messages(merge[0].id).content)
    assert "<<<<<<<" in said  # the merge worker read the conflict markers
    log = subprocess.run(["git", "-C", str(repo), "log", "--format=%s"], capture_output=True,
                         text=True).stdout
    assert "Merge" in log and "Note A" in log and "Note B" in log


STREAMING = [
    REVIEW,
    {"role": "director", "reply": {"content": "One component will do.", "tool_calls": [
        call("submit_plan", components=[{"title": "all", "description": "everything"}])]}},
    {"role": "planner", "reply": {"content": "A single task writes the file.", "tool_calls": [
        call("create_subtasks", tasks=[{"key": "a", "title": "Write a.txt", "description": "d",
                                        "acceptance_criteria": ["works"], "profile": "code"}])]}},
    {"role": "worker", "replies": [
        {"content": "First I write a.txt with the letter A in it, then I check it.",
         "tool_calls": [call("write_file", path="a.txt", content="A\n")]},
        {"content": "The file is written; nothing else is needed.",
         "tool_calls": [call("finish", summary="wrote a.txt")]}]},
    {"role": "strategist", "reply": {"content": "a.txt holds A, as asked.", "tool_calls": [call(
        "submit_verdict", approved=True, criteria=[{"criterion": "works", "met": True}])]}},
]


async def test_a_watched_run_streams_each_reply_before_recording_it(repo):
    run = orch_for(repo, "streaming", STREAMING).start("write a.txt")
    engine, seen, loops = run.engine, [], set()

    def observe(item: dict) -> None:
        seen.append(item)
        loops.add(asyncio.get_running_loop() is engine.loop)

    engine.observers.append(observe)  # before the loop's first turn: nothing missed
    assert await run.wait(60) == RunStatus.COMPLETED, run.summary()
    assert loops == {True}  # observers are only ever called on the engine's loop

    chunks = [s for s in seen if s["channel"] == "chunk"]
    assert {s["role"] for s in chunks} == {"assistant"} and all(s["run_id"] == run.id for s in chunks)
    assert None not in {s["task_id"] for s in chunks}  # the Director's calls are not a task's
    # The pieces of each reply arrive first; the recorded message is exactly their sum.
    pending: dict[tuple, str] = {}
    checked = []
    for s in seen:
        key = (s.get("task_id"), s.get("attempt"))
        if s["channel"] == "chunk":
            pending[key] = pending.get(key, "") + s["content"]
        elif s["channel"] == "message" and s["role"] == "assistant" and s["task_id"]:
            assert pending.pop(key, "") == s["content"], key
            checked.append((key, s["content"]))
    assert not pending
    worker_said = [c for k, c in checked if k == ("t2", 1)]
    assert worker_said == ["First I write a.txt with the letter A in it, then I check it.",
                           "The file is written; nothing else is needed.", "a.txt holds A, as asked."]
    assert ("t1", 1) in {k for k, _ in checked}  # the planner's reply streamed too
    assert len([c for c in chunks if c["task_id"] == "t2"]) > len(worker_said)

    # Chunks are shown, never stored: the messages table has what the observers saw as messages.
    assert len(run.messages()) == len([s for s in seen if s["channel"] == "message"])


async def test_a_run_nobody_watches_is_not_streamed(repo, monkeypatch):
    given = []
    complete = LLM.complete

    async def spy(self, **kw):
        given.append(kw.get("on_chunk"))
        return await complete(self, **kw)

    monkeypatch.setattr(LLM, "complete", spy)
    run = orch_for(repo, "unwatched", STREAMING).start("write a.txt")
    assert await run.wait(60) == RunStatus.COMPLETED, run.summary()
    assert len(given) >= 5 and given == [None] * len(given)
