"""Another process holds the store (an analyst's duckdb session) for twice lock_timeout while
a run writes: the run waits for it, says who holds it, and loses nothing."""

import asyncio

import pytest

from agentorch_nb import RunStatus, TaskSpec
from agentorch_nb.testing import TestWorker
from agentorch_nb.widgets import dashboard_for
from tests.integration.holder import hold

pytestmark = pytest.mark.slow
LOCK_TIMEOUT = 1.0
N = 12


async def test_a_held_store_pauses_the_run_and_drops_nothing(orch_factory, tmp_path):
    journal = tmp_path / "journal"
    store = tmp_path / "store.duckdb"
    # Twelve tasks of 0.3 s on two workers: the run is surely still at work when the
    # holder, which takes the file at once, has kept it for lock_timeout.
    orch = orch_factory([TaskSpec(f"task {i}") for i in range(N)],
                        worker=TestWorker(latency=0.3, journal=journal), store=store,
                        max_concurrent_workers=2, lock_timeout=LOCK_TIMEOUT)
    run = orch.start("busy store")
    board = dashboard_for(run)  # what a person watching the notebook sees
    engine = run.engine
    busy, free = asyncio.Event(), asyncio.Event()
    seen = {}

    def observe(item):
        if item.get("kind") == "attempt_started" and busy.is_set() and not free.is_set():
            seen["started while busy"] = seen.get("started while busy", 0) + 1
        if item.get("kind") == "store_busy":
            seen["summary"] = run.summary()  # what a user asking now is told
            seen["running"] = len(engine.running)
            busy.set()
        elif item.get("kind") == "store_free":
            free.set()

    engine.observers.append(observe)
    # The holder takes the file as soon as the run's store thread lets go of it, keeps it
    # for twice lock_timeout, and closes.
    holder = hold(store, 2 * LOCK_TIMEOUT)
    try:
        line = await asyncio.to_thread(holder.stdout.readline)
        assert line.strip() == "holding"
        await asyncio.wait_for(busy.wait(), 30)
        assert f"process {holder.pid}" in seen["summary"]["store_busy"]
        assert seen["summary"]["status"] == "running"
        for _ in range(200):  # the header shows it at its next batch (every 100 ms)
            if f"store held by process {holder.pid}" in board.header.status.value:
                break
            await asyncio.sleep(0.02)
        assert f"store held by process {holder.pid}" in board.header.status.value
        assert await run.wait(120, stop_on_pause=False) == RunStatus.COMPLETED, run.summary()
        assert free.is_set()
        assert "started while busy" not in seen  # no new attempt while the store was held
    finally:
        holder.kill()
        holder.wait()

    events = run.events()
    assert list(events.seq) == list(range(1, len(events) + 1))  # nothing dropped
    assert set(events.kind) >= {"store_busy", "store_free"}
    ran = journal.read_text().split("\n")[:-1]
    assert len(ran) == N and len(set(ran)) == N  # every task once, none redone
    tasks = run.store.rows("select status from tasks where run_id = ?", [run.id])
    assert [t["status"] for t in tasks] == ["complete"] * N
    assert run.summary()["store_busy"] is None
