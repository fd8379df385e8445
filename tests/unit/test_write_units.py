"""Writes made on an engine's loop reach the store a turn (or a ``one_unit`` block) at a time:
a reader in another thread or process never sees half of what one step wrote."""

import asyncio
import threading
import time

import duckdb

from agentorch_nb.model import utcnow
from agentorch_nb.store.store import Store


def _command_row(i: int) -> dict:
    return {"run_id": "r", "command_id": f"c{i}", "ts": utcnow(), "kind": "resolve",
            "payload": {"n": i}, "source": "test", "status": "pending"}


async def _tear_count(store: Store, n: int) -> int:
    """Write n (event, row) pairs, each pair in one turn, while a reader in another thread
    flushes and compares the counts all along; how often it saw them differ."""
    torn, stop = [], threading.Event()

    def reader():
        while not stop.is_set():
            store.flush_sync()
            (events, rows), = store.call_sync(lambda con: con.execute(
                "select (select count(*) from events where run_id = 'r'), "
                "(select count(*) from commands where run_id = 'r')").fetchall())
            if events != rows:
                torn.append((events, rows))

    t = threading.Thread(target=reader)
    t.start()
    try:
        for i in range(n):
            store.append("events", {"run_id": "r", "seq": i + 1, "task_id": None,
                                    "kind": "command", "payload": {"i": i}})
            time.sleep(0.0002)  # a step doing more work between its two writes
            store.upsert("commands", _command_row(i))
            await asyncio.sleep(0)
    finally:
        stop.set()
        await asyncio.to_thread(t.join)
    await store.flush()
    assert store.rows("select count(*) as n from events")[0]["n"] == n
    return len(torn)


async def test_what_one_turn_writes_is_committed_together(tmp_path):
    """A status change is an event and a row: a reader never finds one without the other."""
    store = Store.open(tmp_path / "s.duckdb", flush_interval=0.0005)
    store.bind(asyncio.get_running_loop())
    try:
        assert await _tear_count(store, 800) == 0
    finally:
        store.close()


async def test_a_unit_spanning_turns_lands_whole(tmp_path):
    path = tmp_path / "s.duckdb"
    store = Store.open(path, flush_interval=0.001)
    store.bind(asyncio.get_running_loop())
    seen_inside = []
    with store.one_unit():
        for i in range(50):
            store.append("events", {"run_id": "r", "seq": i + 1, "task_id": None,
                                    "kind": "x", "payload": {}})
            await asyncio.sleep(0.002)  # many turns, several store batches meanwhile
            if i == 25:
                seen_inside.append(await asyncio.to_thread(
                    lambda: store.submit(lambda con: con.execute(
                        "select count(*) from events").fetchone()[0]).result()))
    await store.flush()
    store.close()
    assert seen_inside == [0]  # a read from another thread saw none of the unit
    con = duckdb.connect(str(path), read_only=True)
    try:
        assert con.execute("select count(*) from events").fetchone() == (50,)
    finally:
        con.close()


async def test_a_read_asked_for_on_the_loop_sees_the_turns_writes(tmp_path):
    store = Store.open(tmp_path / "s.duckdb")
    store.bind(asyncio.get_running_loop())
    store.append("insights", {"run_id": "r", "content": "written this turn"})
    rows = await store.arows("select content from insights")
    store.close()
    assert rows == [{"content": "written this turn"}]


async def test_committed_waits_for_the_next_batch_without_forcing_one(tmp_path):
    """Many waiters on one commit share one future; it settles once the rows are on disk."""
    path = tmp_path / "s.duckdb"
    store = Store.open(path, flush_interval=0.05)
    store.bind(asyncio.get_running_loop())
    store.append("insights", {"run_id": "r", "content": "a"})
    first = store.committed()
    store.append("insights", {"run_id": "r", "content": "b"})
    second = store.committed()
    assert first is second  # the same commit settles both
    await asyncio.shield(second)
    n = await asyncio.to_thread(lambda: store.submit(
        lambda con: con.execute("select count(*) from insights").fetchone()[0]).result())
    store.close()
    assert n == 2
