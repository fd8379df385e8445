"""The post-mortem views (store/views.sql, migration 6): each one over rows whose numbers are
known, one over a run driven by the real engine, and the critical path against TaskGraph's."""

import datetime as dt
import json
import random

import duckdb
import pytest

from agentorch_nb import TaskSpec
from agentorch_nb.dag import TaskGraph
from agentorch_nb.store import SCHEMA_VERSION, Store
from agentorch_nb.store.migrations import MIGRATIONS, migrate
from agentorch_nb.testing import TestWorker

T0 = dt.datetime(2025, 1, 1, 12, 0, 0)
VIEWS = ["task_timeline", "attempt_outcomes", "llm_costs", "tool_stats", "human_waits",
         "critical_path", "merge_log"]


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


@pytest.fixture
def store(tmp_path):
    s = Store.open(tmp_path / "views.duckdb")
    yield s
    s.close()


def insert(store: Store, table: str, rows: list[dict]) -> None:
    def go(con):
        for row in rows:
            row = {k: json.dumps(v) if isinstance(v, (dict, list)) else v for k, v in row.items()}
            cols = ", ".join(row)
            con.execute(f"insert into {table} ({cols}) values ({', '.join('?' * len(row))})",
                        list(row.values()))
    store.call_sync(go)


def task(run_id, task_id, title, status="complete", **kw):
    return {"run_id": run_id, "task_id": task_id, "title": title, "profile": "code",
            "status": status, "attempts": 1, "retries_used": 0, "max_retries": 2,
            "created_at": T0, "updated_at": T0, **kw}


def attempt(run_id, task_id, n, start, end, outcome="approved", **kw):
    return {"run_id": run_id, "task_id": task_id, "attempt": n, "started_at": at(start),
            "finished_at": None if end is None else at(end), "outcome": outcome, **kw}


def rows(store, sql, params=None):
    return store.rows(sql, params)


# ------------------------------------------------------------------ schema version
def test_a_version_5_store_migrates_to_6_and_gets_the_views(tmp_path):
    path = tmp_path / "v5.duckdb"
    con = duckdb.connect(str(path))
    con.execute("create table schema_version (version integer not null, "
                "applied_at timestamp default current_timestamp)")
    for number, migration in enumerate(MIGRATIONS[:5], start=1):
        migration(con)
        con.execute("insert into schema_version (version) values (?)", [number])
    con.execute("insert into events values ('r1', 1, ?, 't1', 'task_created', '{}')", [T0])
    con.close()

    s = Store.open(path)
    try:
        assert rows(s, "select max(version) as v from schema_version") == [{"v": SCHEMA_VERSION}]
        views = {r["view_name"] for r in rows(s, "select view_name from duckdb_views() "
                                                 "where not internal")}
        assert views == set(VIEWS)
        assert rows(s, "select task_id, status from task_timeline") == [
            {"task_id": "t1", "status": "planned"}]
    finally:
        s.close()


def test_the_views_are_replaced_by_running_their_migration_again():
    con = duckdb.connect()
    migrate(con)
    MIGRATIONS[5](con)  # create or replace: a later migration may do the same
    assert con.execute("select count(*) from duckdb_views() where not internal").fetchone() == (7,)


def test_every_view_answers_on_an_empty_store(store):
    for view in VIEWS:
        assert rows(store, f"select * from {view}") == []


# ------------------------------------------------------------------- task_timeline
def test_task_timeline_gives_each_status_its_interval(store):
    events = [(1, 0, "t1", "task_created", {"title": "a"}),
              (2, 0, "t2", "task_created", {"title": "b"}),
              (3, 1, "t1", "task_status", {"from": "planned", "to": "ready", "reason": None}),
              (4, 3, "t1", "task_status", {"from": "ready", "to": "active", "reason": None}),
              (5, 10, "t1", "task_status", {"from": "active", "to": "failed", "reason": "tests fail"}),
              (6, 10.5, "t1", "task_status", {"from": "failed", "to": "ready", "reason": None}),
              (7, 12, "t1", "task_status", {"from": "ready", "to": "active", "reason": None}),
              (8, 20, "t1", "task_status", {"from": "active", "to": "complete", "reason": None}),
              (9, 20, None, "run_status", {"from": "running", "to": "completed"})]
    insert(store, "events", [{"run_id": "r1", "seq": s, "ts": at(t), "task_id": tid, "kind": k,
                              "payload": p} for s, t, tid, k, p in events])
    got = rows(store, "select task_id, status, reason, started_at, ended_at, seconds "
                      "from task_timeline where run_id = 'r1' order by task_id, started_at")
    expect = [("t1", "planned", None, 0, 1), ("t1", "ready", None, 1, 3),
              ("t1", "active", None, 3, 10), ("t1", "failed", "tests fail", 10, 10.5),
              ("t1", "ready", None, 10.5, 12), ("t1", "active", None, 12, 20),
              ("t1", "complete", None, 20, None), ("t2", "planned", None, 0, None)]
    assert got == [{"task_id": t, "status": s, "reason": r, "started_at": at(a),
                    "ended_at": None if b is None else at(b),
                    "seconds": None if b is None else b - a} for t, s, r, a, b in expect]
    (total,) = rows(store, "select sum(seconds) as s from task_timeline "
                           "where task_id = 't1' and status = 'active'")
    assert total["s"] == 15.0


# ---------------------------------------------------------------- attempt_outcomes
def test_attempt_outcomes_say_why_each_attempt_ended(store):
    insert(store, "tasks", [task("r1", "t1", "Parse the config", attempts=3)])
    insert(store, "attempts", [
        attempt("r1", "t1", 1, 0, 4, "rejected", failure_reason="QA rejected the work",
                qa_feedback="no test of empty input"),
        attempt("r1", "t1", 2, 5, 7.5, "interrupted", failure_reason="interrupted by a human",
                interruption="human", guidance="no test of empty input"),
        attempt("r1", "t1", 3, 60, None, None, guidance="use configparser")])
    got = rows(store, "select title, attempt, outcome, interruption, failure_reason, "
                      "qa_feedback, guidance, started_at, finished_at, seconds "
                      "from attempt_outcomes order by attempt")
    assert got == [
        {"title": "Parse the config", "attempt": 1, "outcome": "rejected", "interruption": None,
         "failure_reason": "QA rejected the work", "qa_feedback": "no test of empty input",
         "guidance": None, "started_at": at(0), "finished_at": at(4), "seconds": 4.0},
        {"title": "Parse the config", "attempt": 2, "outcome": "interrupted",
         "interruption": "human", "failure_reason": "interrupted by a human",
         "qa_feedback": None, "guidance": "no test of empty input", "started_at": at(5),
         "finished_at": at(7.5), "seconds": 2.5},
        {"title": "Parse the config", "attempt": 3, "outcome": None, "interruption": None,
         "failure_reason": None, "qa_feedback": None, "guidance": "use configparser",
         "started_at": at(60), "finished_at": None, "seconds": None}]


# ----------------------------------------------------------------------- llm_costs
def test_llm_costs_sum_calls_tokens_and_dollars(store):
    def call(task_id, role, model, tin, tout, cost, ms, error=None):
        return {"run_id": "r1", "task_id": task_id, "attempt": 1, "role": role, "ts": T0,
                "model": model, "tokens_in": tin, "tokens_out": tout, "cost_usd": cost,
                "latency_ms": ms, "error": error}

    insert(store, "llm_calls", [
        call("t1", "worker", "gpt-x", 1000, 100, 0.25, 100),
        call("t1", "worker", "gpt-x", 2000, 200, 0.5, 200),
        call("t1", "worker", "gpt-x", None, None, None, 300, error="rate limited"),
        call("t1", "worker", "gpt-x", 500, 50, 0.125, 400),
        call("t1", "strategist", "claude-y", 300, 30, 0.0625, 50),
        call(None, "director", "gpt-x", 700, 70, 0.5, 1000)])
    got = rows(store, "select task_id, role, model, calls, tokens_in, tokens_out, cost_usd, "
                      "errors, p50_latency_ms, p95_latency_ms from llm_costs "
                      "order by cost_usd desc, role")
    assert got == [
        {"task_id": "t1", "role": "worker", "model": "gpt-x", "calls": 4, "tokens_in": 3500,
         "tokens_out": 350, "cost_usd": 0.875, "errors": 1, "p50_latency_ms": 250.0,
         "p95_latency_ms": pytest.approx(385.0)},
        {"task_id": None, "role": "director", "model": "gpt-x", "calls": 1, "tokens_in": 700,
         "tokens_out": 70, "cost_usd": 0.5, "errors": 0, "p50_latency_ms": 1000.0,
         "p95_latency_ms": 1000.0},
        {"task_id": "t1", "role": "strategist", "model": "claude-y", "calls": 1,
         "tokens_in": 300, "tokens_out": 30, "cost_usd": 0.0625, "errors": 0,
         "p50_latency_ms": 50.0, "p95_latency_ms": 50.0}]
    (by_role,) = rows(store, "select sum(cost_usd) as usd from llm_costs where role = 'worker'")
    assert by_role["usd"] == 0.875


# ---------------------------------------------------------------------- tool_stats
def test_tool_stats_count_failures_and_quantiles(store):
    def call(tool, ms, error=None, run_id="r1"):
        return {"run_id": run_id, "task_id": "t1", "attempt": 1, "call_id": None, "ts": T0,
                "tool": tool, "arguments": {}, "result": None if error else "ok",
                "error": error, "duration_ms": ms}

    insert(store, "tool_calls", [call("run_shell", 10), call("run_shell", 20),
                                 call("run_shell", 30, "exit 1"), call("run_shell", 1000),
                                 call("read_file", 2), call("read_file", 4, "no such file"),
                                 call("run_shell", 5, run_id="r2")])
    got = rows(store, "select run_id, tool, calls, errors, error_rate, p50_ms, p95_ms, max_ms, "
                      "total_ms from tool_stats order by run_id, tool")
    assert got == [
        {"run_id": "r1", "tool": "read_file", "calls": 2, "errors": 1, "error_rate": 0.5,
         "p50_ms": 3.0, "p95_ms": pytest.approx(3.9), "max_ms": 4.0, "total_ms": 6.0},
        {"run_id": "r1", "tool": "run_shell", "calls": 4, "errors": 1, "error_rate": 0.25,
         "p50_ms": 25.0, "p95_ms": pytest.approx(854.5), "max_ms": 1000.0, "total_ms": 1060.0},
        {"run_id": "r2", "tool": "run_shell", "calls": 1, "errors": 0, "error_rate": 0.0,
         "p50_ms": 5.0, "p95_ms": 5.0, "max_ms": 5.0, "total_ms": 5.0}]


# --------------------------------------------------------------------- human_waits
def test_human_waits_time_each_escalation_and_name_its_answer(store):
    insert(store, "tasks", [task("r1", "t1", "Migrate the DB", "ready"),
                            task("r1", "t2", "Flaky test", "waiting_human")])
    insert(store, "interrupts", [
        {"run_id": "r1", "interrupt_id": "int-1", "task_id": "t1", "ts": at(5),
         "kind": "retries_exhausted", "reason": "3 attempts failed", "resolved_at": at(65),
         "resolution_id": "res-1"},
        {"run_id": "r1", "interrupt_id": "int-2", "task_id": "t2", "ts": at(100),
         "kind": "human", "reason": "asked to stop"}])
    insert(store, "resolutions", [
        {"run_id": "r1", "resolution_id": "res-1", "task_id": "t1", "ts": at(65),
         "action": "retry", "payload": {"guidance": "use alembic"}, "source": "widget",
         "interrupt_id": "int-1"}])
    got = rows(store, "select task_id, title, interrupt_id, kind, reason, raised_at, "
                      "resolved_at, seconds, action, source from human_waits order by raised_at")
    assert got == [
        {"task_id": "t1", "title": "Migrate the DB", "interrupt_id": "int-1",
         "kind": "retries_exhausted", "reason": "3 attempts failed", "raised_at": at(5),
         "resolved_at": at(65), "seconds": 60.0, "action": "retry", "source": "widget"},
        {"task_id": "t2", "title": "Flaky test", "interrupt_id": "int-2", "kind": "human",
         "reason": "asked to stop", "raised_at": at(100), "resolved_at": None, "seconds": None,
         "action": None, "source": None}]


# ------------------------------------------------------------------- critical_path
def test_critical_path_is_the_longest_chain_of_dependencies(store):
    # t1 (5 s) -> t2 (10 s: two attempts, 5..8 and 9..15) -> t4 (1 s)
    # t1 -> t3 (3 s) -> t4 ; t5 (12 s) alone ; t6 never started (0 s) depends on t4: of two
    # chains as long, the one of fewer tasks is the critical path (as TaskGraph says)
    insert(store, "tasks", [task("r1", f"t{i}", f"task {i}") for i in range(1, 7)]
           + [task("r2", "t1", "other run")])
    insert(store, "task_deps", [{"run_id": "r1", "task_id": a, "depends_on": b} for a, b in
                                [("t2", "t1"), ("t3", "t1"), ("t4", "t2"), ("t4", "t3"),
                                 ("t6", "t4")]])
    insert(store, "attempts", [
        attempt("r1", "t1", 1, 0, 5), attempt("r1", "t2", 1, 5, 8, "rejected"),
        attempt("r1", "t2", 2, 9, 15), attempt("r1", "t3", 1, 5, 8),
        attempt("r1", "t4", 1, 15, 16), attempt("r1", "t5", 1, 0, 12),
        attempt("r2", "t1", 1, 0, 2)])
    got = rows(store, "select run_id, position, task_id, title, seconds, cumulative_seconds "
                      "from critical_path order by run_id, position")
    assert got == [
        {"run_id": "r1", "position": 1, "task_id": "t1", "title": "task 1", "seconds": 5.0,
         "cumulative_seconds": 5.0},
        {"run_id": "r1", "position": 2, "task_id": "t2", "title": "task 2", "seconds": 10.0,
         "cumulative_seconds": 15.0},
        {"run_id": "r1", "position": 3, "task_id": "t4", "title": "task 4", "seconds": 1.0,
         "cumulative_seconds": 16.0},
        {"run_id": "r2", "position": 1, "task_id": "t1", "title": "other run", "seconds": 2.0,
         "cumulative_seconds": 2.0}]
    graph = TaskGraph()
    for i in range(1, 7):
        graph.add_task(f"t{i}")
    for a, b in [("t2", "t1"), ("t3", "t1"), ("t4", "t2"), ("t4", "t3"), ("t6", "t4")]:
        graph.add_dependency(a, b)
    assert graph.critical_path({"t1": 5, "t2": 10, "t3": 3, "t4": 1, "t5": 12, "t6": 0}) == (
        16.0, ["t1", "t2", "t4"])


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_critical_path_agrees_with_the_task_graph(store, seed):
    rng = random.Random(seed)
    n = 60
    graph = TaskGraph()
    ids = [f"t{i}" for i in range(n)]
    for t in ids:
        graph.add_task(t)
    deps = []
    for i in range(1, n):
        for j in rng.sample(range(max(0, i - 12), i), min(i - max(0, i - 12), rng.randint(0, 3))):
            graph.add_dependency(ids[i], ids[j])
            deps.append({"run_id": "r1", "task_id": ids[i], "depends_on": ids[j]})
    duration, attempts = {}, []
    for t in ids:
        start = rng.randint(0, 10**9)
        spans = sorted(rng.sample(range(1, 5 * 10**7), rng.randint(1, 3)))
        for k, end in enumerate(spans, start=1):  # retries: the span runs to the last end
            attempts.append(attempt("r1", t, k, start / 1e6 + (k - 1) * 1e-6, start / 1e6 + end / 1e6))
        duration[t] = (at(start / 1e6 + spans[-1] / 1e6) - at(start / 1e6)).total_seconds()
    insert(store, "tasks", [task("r1", t, t) for t in ids])
    insert(store, "task_deps", deps)
    insert(store, "attempts", attempts)

    length, path = graph.critical_path(duration)
    got = rows(store, "select task_id, seconds, cumulative_seconds from critical_path "
                      "order by position")
    assert [r["task_id"] for r in got] == path
    assert got[-1]["cumulative_seconds"] == pytest.approx(length)
    assert [r["seconds"] for r in got] == pytest.approx([duration[t] for t in path])


# ----------------------------------------------------------------------- merge_log
def test_merge_log_lists_merges_with_their_task(store):
    insert(store, "tasks", [task("r1", "t1", "Add --json"), task("r1", "t2", "Docs", "failed")])
    insert(store, "attempts", [attempt("r1", "t1", 1, 0, 30), attempt("r1", "t2", 2, 10, 40)])
    insert(store, "merges", [
        {"run_id": "r1", "task_id": "t1", "attempt": 1, "ts": at(31), "source_branch": "b1",
         "source_sha": "aaa", "target_branch": "main", "target_sha": "000", "result_sha": "aaa",
         "files_changed": ["cli.py"], "status": "fast_forward"},
        {"run_id": "r1", "task_id": "t2", "attempt": 2, "ts": at(41), "source_branch": "b2",
         "source_sha": "bbb", "target_branch": "main", "target_sha": "aaa", "result_sha": None,
         "files_changed": ["README.md"], "status": "conflict", "error": "README.md"}])
    got = rows(store, "select task_id, title, task_status, attempt, status, error, source_sha, "
                      "target_branch, target_sha, result_sha, merged_at, attempt_started_at, "
                      "attempt_finished_at from merge_log order by merged_at")
    assert got == [
        {"task_id": "t1", "title": "Add --json", "task_status": "complete", "attempt": 1,
         "status": "fast_forward", "error": None, "source_sha": "aaa", "target_branch": "main",
         "target_sha": "000", "result_sha": "aaa", "merged_at": at(31),
         "attempt_started_at": at(0), "attempt_finished_at": at(30)},
        {"task_id": "t2", "title": "Docs", "task_status": "failed", "attempt": 2,
         "status": "conflict", "error": "README.md", "source_sha": "bbb",
         "target_branch": "main", "target_sha": "aaa", "result_sha": None, "merged_at": at(41),
         "attempt_started_at": at(10), "attempt_finished_at": at(40)}]


# ------------------------------------------------------------ over a real engine run
async def test_the_views_agree_with_a_run_the_engine_drove(orch_factory):
    specs = [TaskSpec("a", key="a"), TaskSpec("b", key="b", depends_on=["a"]),
             TaskSpec("c", key="c", depends_on=["a"]), TaskSpec("d", key="d", depends_on=["b", "c"])]

    def fail(task, ctx):
        return "flaky" if task.title == "b" and ctx.attempt == 1 else None

    orch = orch_factory(specs, worker=TestWorker(latency=lambda t, c: {"b": 0.3}.get(t.title, 0.05),
                                                 fail=fail))
    run = orch.start("views over a real run")
    assert (await run.wait(60)).value == "completed"
    rid = run.id
    ids = {r["title"]: r["task_id"] for r in
           orch.store.rows("select title, task_id from tasks where run_id = ?", [rid])}

    outcomes = orch.sql("select title, attempt, outcome, failure_reason from attempt_outcomes "
                        "where run_id = ? order by title, attempt", [rid])
    assert outcomes[outcomes.title == "b"].outcome.tolist() == ["error", "approved"]
    assert "flaky" in outcomes[outcomes.title == "b"].failure_reason.iloc[0]

    timeline = orch.sql("select task_id, status, seconds, ended_at from task_timeline "
                        "where run_id = ?", [rid])
    current = timeline[timeline.ended_at.isna()]
    assert sorted(current.status) == ["complete"] * len(ids)  # one open interval per task
    active_b = timeline[(timeline.task_id == ids["b"]) & (timeline.status == "active")]
    assert len(active_b) == 2 and active_b.seconds.sum() >= 0.3

    path = orch.sql("select task_id from critical_path where run_id = ? order by position", [rid])
    assert path.task_id.tolist() == [ids["a"], ids["b"], ids["d"]]
    # TestWorker commits nothing, so nothing is merged: merge_log has the merges table's rows
    assert len(orch.sql("select * from merge_log where run_id = ?", [rid])) == len(
        orch.sql("select * from merges where run_id = ?", [rid]))
