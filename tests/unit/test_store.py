"""The store on real DuckDB files: batching, upserts, schema versions, replay, locks."""

import subprocess
import sys
import textwrap

import duckdb
import pytest

import agentorch_nb as ao
from agentorch_nb.store import SCHEMA_VERSION, Store
from agentorch_nb.store.replay import replay
from agentorch_nb.model import utcnow

TABLES = {"runs", "tasks", "task_deps", "events", "attempts", "messages", "tool_calls", "llm_calls",
          "interrupts", "resolutions", "insights", "design_decisions", "merges", "commands",
          "schema_version"}


def test_schema_has_every_table_and_records_its_version(tmp_path):
    store = Store.open(tmp_path / "a.duckdb")
    names = {r["table_name"] for r in store.rows("select table_name from information_schema.tables")}
    assert TABLES <= names
    assert store.rows("select max(version) as v from schema_version")[0]["v"] == SCHEMA_VERSION
    store.close()
    # Opening again applies nothing twice.
    again = Store.open(tmp_path / "a.duckdb")
    assert again.rows("select count(*) as n from schema_version")[0]["n"] == SCHEMA_VERSION


def test_a_newer_schema_is_refused_with_advice(tmp_path):
    path = tmp_path / "new.duckdb"
    con = duckdb.connect(str(path))
    con.execute("create table schema_version (version integer, applied_at timestamp)")
    con.execute("insert into schema_version values (99, now())")
    con.close()
    store = Store.open(path)
    with pytest.raises(ao.AgentorchError, match="upgrade agentorch_nb"):
        store.rows("select 1")
    store.close()


def test_writes_wait_for_a_flush_and_upserts_keep_the_last_row(tmp_path):
    store = Store.open(tmp_path / "b.duckdb", flush_interval=5.0)
    row = {"run_id": "r", "objective": "o", "status": "running", "created_at": utcnow(),
           "updated_at": utcnow()}
    store.upsert("runs", row)
    store.upsert("runs", {**row, "status": "paused"})
    for i in range(3):
        store.append("events", {"run_id": "r", "seq": i + 1, "kind": "k", "payload": {"i": i}})
    store.flush_sync(timeout=2)  # long before the 5 s linger
    assert store.rows("select status from runs") == [{"status": "paused"}]
    assert [r["payload"] for r in store.rows("select payload from events order by seq")] == [
        '{"i": 0}', '{"i": 1}', '{"i": 2}']
    assert store.rows("select payload->>'i' as i from events where seq = 3") == [{"i": "2"}]


def test_the_file_is_free_between_batches(tmp_path):
    """Another process can open the file once the store has nothing to do, while the store
    itself stays open."""
    store = Store.open(tmp_path / "c.duckdb")
    store.append("insights", {"run_id": "r", "content": "x"})
    store.flush_sync()
    # The store lets go a moment after its last batch: the reader tries until a deadline
    # far beyond that moment (a plain DuckDB client does not ask the store to let go).
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
        import time, duckdb
        deadline = time.monotonic() + 30
        while True:
            try:
                con = duckdb.connect({str(tmp_path / 'c.duckdb')!r}, read_only=True)
                break
            except duckdb.IOException:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
        print(con.execute("select content from insights").fetchone()[0])""")],
        capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "x", out.stderr
    store.append("insights", {"run_id": "r", "content": "y"})  # and takes it back for writes
    store.flush_sync()
    assert [r["content"] for r in store.rows("select content from insights order by content")] == ["x", "y"]


def test_a_file_held_by_another_process_waits_then_says_who_holds_it(tmp_path):
    path = tmp_path / "d.duckdb"
    # The holder lets go only once a waiting store has asked for the file (it touches
    # <file>.waiting): the read below surely had to wait, and succeeds once the holder is gone.
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import duckdb, os, time
        con = duckdb.connect({str(path)!r})
        print("holding", flush=True)
        deadline = time.monotonic() + 60
        while not os.path.exists({str(path) + '.waiting'!r}) and time.monotonic() < deadline:
            time.sleep(0.01)""")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        patient = Store.open(path, lock_timeout=30)
        assert patient.rows("select 42 as x") == [{"x": 42}]
        patient.close()
    finally:
        holder.wait()
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import duckdb, time
        con = duckdb.connect({str(path)!r})
        print("holding", flush=True)
        time.sleep(30)""")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        impatient = Store.open(path, lock_timeout=0.5)
        with pytest.raises(ao.StoreBusy, match=f"process {holder.pid}"):
            impatient.rows("select 1")
    finally:
        holder.kill()
        holder.wait()


def test_replay_folds_events_up_to_any_point():
    events = [
        {"seq": 1, "task_id": "t1", "kind": "task_created", "payload": '{"depends_on": []}'},
        {"seq": 2, "task_id": "t2", "kind": "task_created", "payload": '{"depends_on": ["t1"]}'},
        {"seq": 3, "task_id": "t1", "kind": "task_status", "payload": '{"from": "planned", "to": "ready"}'},
        {"seq": 4, "task_id": "t2", "kind": "dep_removed", "payload": '{"depends_on": "t1"}'},
        {"seq": 5, "task_id": "t1", "kind": "task_status", "payload": '{"from": "ready", "to": "active"}'},
    ]
    assert replay(events, upto_seq=3).status == {"t1": "ready", "t2": "planned"}
    assert replay(events, upto_seq=3).deps == {("t2", "t1")}
    final = replay(list(reversed(events)))
    assert final.status == {"t1": "active", "t2": "planned"} and final.deps == set()


def test_sql_helper_reads_a_store_file_and_refuses_a_missing_one(tmp_path):
    store = Store.open(tmp_path / "e.duckdb")
    store.append("insights", {"run_id": "r", "content": "found"})
    store.flush_sync()
    assert ao.sql("select content from insights", store=tmp_path / "e.duckdb").content.tolist() == ["found"]
    with pytest.raises(ao.InvalidInput, match="no agentorch store"):
        ao.sql("select 1", store=tmp_path / "missing.duckdb")


def test_memory_store_keeps_its_connection():
    store = Store.open(":memory:")
    store.append("insights", {"run_id": "r", "content": "kept"})
    store.flush_sync()
    assert store.rows("select content from insights") == [{"content": "kept"}]
