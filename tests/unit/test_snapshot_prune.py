"""Snapshots of a store and retention (Orchestrator.prune): what is copied or removed, what
is refused, that the file really shrinks and that what remains works."""

import datetime as dt
import os
import stat

import duckdb
import pytest

import agentorch_nb as ao
from agentorch_nb import TaskSpec
from agentorch_nb.model import utcnow
from agentorch_nb.store import SCHEMA_VERSION
from agentorch_nb.store.retention import file_size, parse_age
from agentorch_nb.testing import TestWorker

RUN_TABLES = ["tasks", "task_deps", "events", "attempts", "messages", "tool_calls", "llm_calls",
              "interrupts", "resolutions", "commands", "merges", "insights", "design_decisions",
              "guardian_verdicts"]
CHECKPOINT_TABLES = ["checkpoints", "checkpoint_blobs", "checkpoint_writes"]
SPECS = [TaskSpec("a", key="a"), TaskSpec("b", key="b", depends_on=["a"])]


async def finished_run(orch, objective="o"):
    run = orch.start(objective)
    assert (await run.wait(60)).value == "completed"
    return run.id


def counts(con_or_store, run_id):
    q = {t: f"select count(*) as n from {t} where run_id = ?" for t in RUN_TABLES + ["runs"]}
    q |= {t: f"select count(*) as n from {t} where split_part(thread_id, '/', 1) = ?"
          for t in CHECKPOINT_TABLES}
    if isinstance(con_or_store, duckdb.DuckDBPyConnection):
        return {t: con_or_store.execute(sql, [run_id]).fetchone()[0] for t, sql in q.items()}
    return {t: con_or_store.rows(sql, [run_id])[0]["n"] for t, sql in q.items()}


def add_bulk(store, run_id, n=20000):
    """Many messages, tool calls and checkpoints for a run: what makes a store big."""
    def go(con):
        con.execute("insert into messages (run_id, task_id, attempt, ts, role, content) "
                    "select ?, 't1', 1, now()::timestamp, 'assistant', "
                    "md5(i::varchar) || repeat(md5((i * 7)::varchar), 12) from range(?) r(i)",
                    [run_id, n])
        con.execute("insert into tool_calls (run_id, task_id, attempt, ts, tool, result, "
                    "duration_ms) select ?, 't1', 1, now()::timestamp, 'run_shell', "
                    "repeat(md5(i::varchar), 4), i from range(?) r(i)", [run_id, n // 4])
        con.execute("insert into checkpoints (thread_id, checkpoint_ns, checkpoint_id, checkpoint) "
                    "select ? || '/t1/a1', '', lpad(i::varchar, 8, '0'), "
                    "md5(i::varchar)::blob from range(?) r(i)", [run_id, n // 4])
        con.execute("insert into checkpoint_blobs (thread_id, checkpoint_ns, channel, version, "
                    "type, blob) select ? || '/t1/a1', '', 'messages', i::varchar, 'msgpack', "
                    "repeat(md5(i::varchar), 8)::blob from range(?) r(i)", [run_id, n // 4])
    store.call_sync(go)


# ------------------------------------------------------------------------ snapshots
async def test_a_snapshot_is_a_whole_copy_with_the_views(orch_factory, tmp_path):
    orch = orch_factory(SPECS, store=tmp_path / "live.duckdb")
    rid = await finished_run(orch)
    dest = orch.snapshot(tmp_path / "snaps" / "one.duckdb")
    assert dest == tmp_path / "snaps" / "one.duckdb"
    assert stat.S_IMODE(os.stat(dest).st_mode) == 0o600
    assert not [p for p in dest.parent.iterdir() if p.name != "one.duckdb"]  # no leftovers
    con = duckdb.connect(str(dest), read_only=True)
    try:
        assert counts(con, rid) == counts(orch.store, rid)
        views = {v for (v,) in con.execute("select view_name from duckdb_views() "
                                           "where not internal").fetchall()}
        assert views >= {"task_timeline", "critical_path", "llm_costs"}
        assert con.execute("select count(*) from critical_path where run_id = ?",
                           [rid]).fetchone() == (2,)
        assert con.execute("select max(version) from schema_version").fetchone() == (SCHEMA_VERSION,)
    finally:
        con.close()
    # the snapshot is a store in its own right
    other = ao.Orchestrator(orch.workspace, store=dest)
    assert other.run(rid).status.value == "completed"


async def test_a_snapshot_never_overwrites(orch_factory, tmp_path):
    orch = orch_factory(SPECS, store=tmp_path / "live.duckdb")
    await finished_run(orch)
    taken = tmp_path / "taken.duckdb"
    taken.write_text("mine")
    with pytest.raises(ao.InvalidInput, match="exists"):
        orch.snapshot(taken)
    assert taken.read_text() == "mine"
    with pytest.raises(ao.InvalidInput, match="store itself|exists"):
        orch.snapshot(orch.store.path)


async def test_ao_snapshot_copies_the_last_store_or_the_one_named(orch_factory, tmp_path):
    orch = orch_factory(SPECS, store=tmp_path / "live.duckdb")
    rid = await finished_run(orch)
    first = ao.snapshot(tmp_path / "a.duckdb")  # the store this process opened last
    second = ao.snapshot(str(tmp_path / "b.duckdb"), store=tmp_path / "live.duckdb")
    for path in (first, second):
        con = duckdb.connect(str(path), read_only=True)
        assert con.execute("select run_id from runs").fetchall() == [(rid,)]
        con.close()
    with pytest.raises(ao.InvalidInput, match="no agentorch store"):
        ao.snapshot(tmp_path / "c.duckdb", store=tmp_path / "nowhere.duckdb")


# ------------------------------------------------------------------------ retention
def test_ages_are_read_from_strings_or_timedeltas():
    assert parse_age("30d") == dt.timedelta(days=30)
    assert parse_age("12h") == dt.timedelta(hours=12)
    assert parse_age(" 90m ") == dt.timedelta(minutes=90)
    assert parse_age("1.5w") == dt.timedelta(weeks=1.5)
    assert parse_age(dt.timedelta(seconds=5)) == dt.timedelta(seconds=5)
    for bad in ("30", "d", "thirty days", "-1d", 30):
        with pytest.raises(ao.InvalidInput, match="not an age"):
            parse_age(bad)


async def test_prune_wants_a_rule_and_sane_values(orch_factory, tmp_path):
    orch = orch_factory(SPECS, store=tmp_path / "s.duckdb")
    with pytest.raises(ao.InvalidInput, match="older_than.*keep_last"):
        orch.prune()
    with pytest.raises(ao.InvalidInput, match="keep_last"):
        orch.prune(keep_last=-1)
    with pytest.raises(ao.InvalidInput, match="keep_last"):
        orch.prune(keep_last="3")
    with pytest.raises(ao.InvalidInput, match="not an age"):
        orch.prune(older_than="a while")


async def test_prune_picks_old_finished_runs_and_never_a_live_one(orch_factory, tmp_path):
    orch = orch_factory(SPECS, store=tmp_path / "s.duckdb")
    old, middle, new = [await finished_run(orch, f"run {i}") for i in range(3)]
    # the first two finished long ago
    for rid, days in ((old, 40), (middle, 10)):
        orch.store.call_sync(lambda con, rid=rid, days=days: con.execute(
            "update runs set created_at = created_at - to_days(?::integer), "
            "finished_at = finished_at - to_days(?::integer) where run_id = ?",
            [days, days, rid]))
    slow = orch_factory(SPECS, worker=TestWorker(latency=5.0), store=tmp_path / "s.duckdb")
    live_run = slow.start("still at work")
    try:
        assert orch.prune(older_than="30d", dry_run=True) == [old]
        assert orch.prune(older_than=dt.timedelta(days=5), dry_run=True) == [old, middle]
        assert orch.prune(keep_last=2, dry_run=True) == [old, middle]  # live one is newest
        assert orch.prune(keep_last=0, dry_run=True) == [old, middle, new]
        assert orch.prune(keep_last=3, older_than="1d", dry_run=True) == [old]
        before = counts(orch.store, old)
        assert orch.prune(older_than="30d", dry_run=True) == [old]
        assert counts(orch.store, old) == before  # a dry run changes nothing

        assert orch.prune(keep_last=0) == [old, middle, new]
        assert [r.id for r in orch.runs()] == [live_run.id]
    finally:
        live_run.cancel()
        await live_run.wait(30)


async def test_prune_shrinks_the_file_and_what_remains_works(orch_factory, tmp_path):
    path = tmp_path / "big.duckdb"
    orch = orch_factory(SPECS, store=path)
    doomed = [await finished_run(orch, f"old {i}") for i in range(2)]
    kept = await finished_run(orch, "kept")
    for rid in doomed:
        add_bulk(orch.store, rid)
    add_bulk(orch.store, kept, n=2000)
    orch.store.call_sync(lambda con: con.execute("checkpoint"))
    kept_before = counts(orch.store, kept)
    assert kept_before["messages"] > 2000 and kept_before["checkpoints"] == 500
    size_before = file_size(path)
    assert size_before > 10 * 2**20, size_before

    assert orch.prune(keep_last=1) == doomed
    size_after = file_size(path)
    assert size_after < size_before / 4, (size_before, size_after)
    assert not [p for p in tmp_path.iterdir() if ".prune-" in p.name]  # scratch file gone

    for rid in doomed:
        assert set(counts(orch.store, rid).values()) == {0}
    assert counts(orch.store, kept) == kept_before
    # every table and view still answers, keys and defaults included
    names = orch.store.rows("select table_name from information_schema.tables "
                            "where table_schema = 'main'")
    for r in names:
        orch.sql(f'select * from "{r["table_name"]}" limit 1')
    assert orch.sql("select count(*) as n from critical_path where run_id = ?", [kept]).n[0] == 2
    pk = orch.store.rows("select count(*) as n from duckdb_constraints() "
                         "where constraint_type = 'PRIMARY KEY' and table_name = 'tasks'")
    assert pk == [{"n": 1}]
    # the kept run reads as before, and the store takes new runs
    assert [t.status.value for t in orch.run(kept).tasks] == ["complete", "complete"]
    assert orch.run(kept).summary()["status"] == "completed"
    again = await finished_run(orch, "after the prune")
    assert counts(orch.store, again)["tasks"] == 2
    assert orch.prune(older_than="0s", dry_run=True) == [kept, again]


async def test_prune_of_nothing_leaves_the_file_alone(orch_factory, tmp_path):
    orch = orch_factory(SPECS, store=tmp_path / "s.duckdb")
    rid = await finished_run(orch)
    before = counts(orch.store, rid)
    assert orch.prune(keep_last=5) == []
    assert orch.prune(older_than="1d") == []
    assert counts(orch.store, rid) == before


def test_a_run_resumed_meanwhile_is_not_deleted(tmp_path):
    from agentorch_nb.store import Store
    from agentorch_nb.store.retention import delete_runs

    store = Store.open(tmp_path / "r.duckdb")
    now = utcnow()
    for rid, status in (("run-a", "completed"), ("run-b", "running")):
        store.upsert("runs", {"run_id": rid, "objective": "o", "status": status,
                              "created_at": now, "updated_at": now})
        store.append("events", {"run_id": rid, "seq": 1, "kind": "run_created", "payload": {}})
    store.flush_sync()
    assert delete_runs(store, ["run-a", "run-b"]) == ["run-a"]
    assert store.rows("select run_id from events") == [{"run_id": "run-b"}]
    store.close()
