"""DuckDBSaver's puts join the store's batches: what a user of the file notices.

A put is readable at once, lands in the file by the next ``await store.flush()``, waits in
memory (neither lost nor raising) while another process holds the file, survives a batch that
fails, keeps its order with deletes and copies, reaches the file when the process exits
without a flush, and the cache stays within its bound.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
from datetime import datetime, timezone

import pytest
from langgraph.checkpoint.base.id import uuid6

from agentorch_nb.store import Store
from agentorch_nb.store import checkpoint_sql
from agentorch_nb.store.checkpoint import DuckDBSaver


def new_checkpoint(saver: DuckDBSaver, step: int, prev: dict | None, size: int = 100) -> dict:
    versions = {ch: saver.get_next_version(prev["channel_versions"][ch] if prev else None)
                for ch in ("messages", "count")}
    return {
        "v": 1, "id": str(uuid6(clock_seq=-1)), "ts": datetime.now(timezone.utc).isoformat(),
        "channel_values": {"messages": ["x" * size, f"step {step}"], "count": step},
        "channel_versions": versions, "versions_seen": {"agent": dict(versions)},
        "updated_channels": ["messages", "count"],
    }


async def put_steps(saver: DuckDBSaver, thread: str, n: int, size: int = 100) -> list[dict]:
    """``n`` graph steps on ``thread``: writes against the current checkpoint, then the next."""
    configs, prev = [], None
    for step in range(n):
        conf = {"thread_id": thread, "checkpoint_ns": ""}
        if prev:
            conf["checkpoint_id"] = prev["id"]
            await saver.aput_writes({"configurable": conf}, [("count", step)], f"task-{step}")
        cp = new_checkpoint(saver, step, prev, size)
        configs.append(await saver.aput({"configurable": conf}, cp,
                                        {"source": "loop", "step": step, "parents": {}},
                                        cp["channel_versions"]))
        prev = cp
    return configs


def read_file(path, sql: str) -> list:
    """Rows of ``sql`` as another process sees the file (a plain duckdb client)."""
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
        import json, time, duckdb
        deadline = time.monotonic() + 60
        while True:
            try:
                con = duckdb.connect({str(path)!r}, read_only=True)
                break
            except duckdb.IOException:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
        print(json.dumps(con.execute({sql!r}).fetchall(), default=str))""")],
        capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return [list(r) for r in json.loads(out.stdout)]


async def test_a_put_is_readable_at_once_and_in_the_file_after_a_flush(tmp_path):
    store = Store.open(tmp_path / "a.duckdb", flush_interval=5.0)
    saver = DuckDBSaver(store)
    configs = await put_steps(saver, "t-a", 3)
    # Read-your-writes, by id and as the thread's latest, before anyone asked for a flush.
    assert (await saver.aget_tuple(configs[1])).checkpoint["channel_values"]["count"] == 1
    latest = await saver.aget_tuple({"configurable": {"thread_id": "t-a"}})
    assert latest.config == configs[-1]
    assert latest.parent_config == configs[1]
    assert latest.checkpoint["channel_values"]["messages"] == ["x" * 100, "step 2"]
    middle = await saver.aget_tuple(configs[1])
    assert [(task, channel, value) for task, channel, value in middle.pending_writes] == [
        ("task-2", "count", 2)]

    await store.flush()
    ids = [c["configurable"]["checkpoint_id"] for c in configs]
    assert read_file(store.path, "select checkpoint_id, metadata->>'step' from checkpoints "
                                 "where thread_id = 't-a' order by checkpoint_id") == [
        [ids[0], "0"], [ids[1], "1"], [ids[2], "2"]]
    assert read_file(store.path, "select checkpoint_id, task_id from checkpoint_writes") == [
        [ids[0], "task-1"], [ids[1], "task-2"]]
    assert read_file(store.path, "select count(*) from checkpoint_blobs") == [[6]]
    store.close()


async def test_a_put_while_another_process_holds_the_file_waits_and_lands(tmp_path):
    path = tmp_path / "held.duckdb"
    store = Store.open(path, lock_timeout=60)
    saver = DuckDBSaver(store)
    assert await saver.aget_tuple({"configurable": {"thread_id": "t-h"}}) is None
    # The holder opens the file once the store has let go of it, and keeps it until told.
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time, duckdb
        deadline = time.monotonic() + 60
        while True:
            try:
                con = duckdb.connect({str(path)!r})
                break
            except duckdb.IOException:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
        print("holding", flush=True)
        sys.stdin.readline()
        con.close()""")], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        configs = await put_steps(saver, "t-h", 2)
        # Answered from memory: the file is held until the holder is told to let go.
        got = await asyncio.wait_for(saver.aget_tuple({"configurable": {"thread_id": "t-h"}}), 30)
        assert got.config == configs[-1]
        assert saver.queued == 3  # two checkpoints and one task's writes, none lost
    finally:
        holder.stdin.write("go\n")
        holder.stdin.flush()
        holder.wait(timeout=60)
    await store.flush()  # returns once the queued puts are committed
    assert saver.queued == 0
    assert read_file(path, "select count(*) from checkpoints where thread_id = 't-h'") == [[2]]
    store.close()


async def test_a_failed_batch_keeps_its_checkpoints_and_writes_them_with_the_next(
        tmp_path, monkeypatch, caplog):
    store = Store.open(tmp_path / "fail.duckdb")
    saver = DuckDBSaver(store)
    real = checkpoint_sql.write_segment
    failures = []

    def failing_once(con, items):
        if not failures:
            failures.append(len(items))
            raise OSError("disk full (simulated)")
        return real(con, items)

    monkeypatch.setattr(checkpoint_sql, "write_segment", failing_once)
    first = await put_steps(saver, "t-f", 1)
    await store.flush()
    assert failures and saver.queued == 1
    assert "stay queued" in caplog.text
    assert (await saver.aget_tuple(first[0])) is not None  # still readable
    second = await put_steps(saver, "t-g", 1)
    await store.flush()
    assert saver.queued == 0
    assert sorted(r[0] for r in read_file(store.path, "select checkpoint_id from checkpoints")) == \
        sorted(c["configurable"]["checkpoint_id"] for c in first + second)
    store.close()


async def test_deletes_and_copies_keep_their_place_among_queued_puts(tmp_path):
    store = Store.open(tmp_path / "order.duckdb", flush_interval=5.0)
    saver = DuckDBSaver(store)
    await put_steps(saver, "src", 3)
    await saver.acopy_thread("src", "dst")  # sees the three queued puts
    await put_steps(saver, "src", 1)  # after the copy: not in dst
    await saver.adelete_thread("src")
    again = await put_steps(saver, "src", 1)  # after the delete: kept
    listed = [t async for t in saver.alist({"configurable": {"thread_id": "src"}})]
    assert [t.config for t in listed] == again
    assert len([t async for t in saver.alist({"configurable": {"thread_id": "dst"}})]) == 3
    await store.flush()
    assert read_file(store.path, "select thread_id, count(*) from checkpoints group by all "
                                 "order by thread_id") == [["dst", 3], ["src", 1]]
    store.close()


async def test_putting_again_a_checkpoint_the_file_holds_keeps_its_stored_writes(tmp_path):
    path = tmp_path / "again.duckdb"
    first = Store.open(path)
    configs = await put_steps(DuckDBSaver(first), "t-r", 2)  # writes of task-1 on the first
    first.close()
    store = Store.open(path)  # a new process, as far as caches go
    saver = DuckDBSaver(store)
    stored = await saver.aget_tuple(configs[1])
    parent = {"configurable": {**configs[0]["configurable"]}}
    again = await saver.aput(parent, {**stored.checkpoint, "id": configs[0]["configurable"][
        "checkpoint_id"]}, {"source": "update", "step": 0, "parents": {}}, {})
    tup = await saver.aget_tuple(again)
    assert tup.metadata["source"] == "update"
    assert [(task, value) for task, _, value in tup.pending_writes] == [("task-1", 1)]
    await store.flush()
    assert [(t, v) for t, _, v in (await saver.aget_tuple(again)).pending_writes] == [
        ("task-1", 1)]
    store.close()


async def test_savers_on_one_store_share_what_was_put(tmp_path):
    store = Store.open(tmp_path / "shared.duckdb")
    writer, reader = DuckDBSaver(store), DuckDBSaver(store)
    configs = await put_steps(writer, "t-s", 2)
    assert (await reader.aget_tuple({"configurable": {"thread_id": "t-s"}})).config == configs[-1]
    store.close()


def test_checkpoints_put_just_before_the_process_exits_reach_the_file(tmp_path):
    path = tmp_path / "exit.duckdb"
    code = textwrap.dedent(f"""
        import asyncio, sys
        sys.path.insert(0, {str(__import__('pathlib').Path(__file__).parent)!r})
        from test_checkpoint_queue import put_steps
        from agentorch_nb.store import Store
        from agentorch_nb.store.checkpoint import DuckDBSaver

        async def main():
            await put_steps(DuckDBSaver(Store.open({str(path)!r})), "t-exit", 4)
        asyncio.run(main())  # and exit at once: no flush, no close""")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "could not be written" not in out.stderr and "stay queued" not in out.stderr
    assert read_file(path, "select count(*) from checkpoints") == [[4]]
    assert read_file(path, "select count(*) from checkpoint_writes") == [[3]]


@pytest.mark.parametrize("bound", [60_000, 250_000])
async def test_the_cache_stays_within_its_bound_and_what_left_it_is_read_back(tmp_path, bound):
    store = Store.open(tmp_path / "bound.duckdb")
    saver = DuckDBSaver(store, cache_bytes=bound)
    configs = []
    for t in range(8):
        configs += await put_steps(saver, f"t-{t}", 10, size=2_000)
        assert saver.cached_bytes <= bound
    await store.flush()
    # Every checkpoint is still there, from memory or from the file, with its values.
    for i, cfg in enumerate(configs):
        tup = await saver.aget_tuple(cfg)
        assert tup.checkpoint["channel_values"] == {"messages": ["x" * 2_000, f"step {i % 10}"],
                                                    "count": i % 10}
        assert saver.cached_bytes <= bound
    store.close()
