"""Big runs: a plan of thousands of tasks is added without taking the loop away, and lands in
the store whole; the heap is kept from the collector's full sweeps while a run is live; a
store another process holds stops new attempts once enough finished ones wait for it."""

import asyncio
import gc

import duckdb
import pytest

from agentorch_nb import RunStatus
from agentorch_nb.engine import dispatch
from agentorch_nb.testing import TestWorker, random_dag
from tests.integration.holder import hold


class Turns:
    """Counts the loop's turns that reach a coroutine of its own."""

    def __init__(self) -> None:
        self.n = 0
        self.task = asyncio.get_running_loop().create_task(self._count())

    async def _count(self) -> None:
        while True:
            self.n += 1
            await asyncio.sleep(0)


async def test_a_big_plan_leaves_the_loop_its_turns(orch_factory):
    orch = orch_factory(random_dag(3000, seed=3))
    turns = Turns()
    planned = asyncio.Event()
    run = orch.start("big plan")
    at_start = turns.n
    run.engine.observers.append(lambda e: e.get("kind") == "planned" and planned.set())
    await asyncio.wait_for(planned.wait(), 60)
    during = turns.n - at_start
    run.cancel()
    await run.wait(60)
    turns.task.cancel()
    # built and registered 500 tasks at a time: 6 + 6 slices, each a turn of the loop
    assert during >= 10, during


async def test_a_plan_cancelled_while_it_is_added_lands_whole(orch_factory, tmp_path):
    store = tmp_path / "s.duckdb"
    orch = orch_factory(random_dag(3000, seed=4), store=store)
    run = orch.start("cancelled while planning")
    for _ in range(4):  # into the slices
        await asyncio.sleep(0)
    run.cancel()
    assert await run.wait(60) == RunStatus.CANCELLED
    orch.store.close()
    con = duckdb.connect(str(store), read_only=True)
    try:
        tasks, = con.execute("select count(*) from tasks where run_id = ?", [run.id]).fetchone()
        planned, = con.execute("select count(*) from events where run_id = ? and kind = 'planned'",
                               [run.id]).fetchone()
    finally:
        con.close()
    assert (tasks, planned) in ((0, 0), (3000, 1))


async def test_the_heap_is_frozen_while_a_run_is_live_and_thawed_after(orch_factory):
    orch = orch_factory(random_dag(40, seed=5), worker=TestWorker(latency=0.01))
    gc.unfreeze()
    run = orch.start("frozen heap")
    seen = []
    run.engine.observers.append(
        lambda e: e.get("kind") == "attempt_started" and seen.append(gc.get_freeze_count()))
    assert await run.wait(60) == RunStatus.COMPLETED
    assert min(seen) > 0  # frozen all through the run
    assert gc.get_freeze_count() == 0  # the collector has it all again


@pytest.mark.slow
async def test_a_held_store_stops_new_attempts_once_enough_wait_for_it(orch_factory, tmp_path,
                                                                        monkeypatch):
    monkeypatch.setattr(dispatch, "FINISHING_PER_WORKER", 2)  # at most 2 x 2 waiting
    store = tmp_path / "s.duckdb"
    orch = orch_factory(random_dag(400, seed=6, max_deps=0), store=store,
                        worker=TestWorker(latency=0.02), max_concurrent_workers=2,
                        lock_timeout=30)
    run = orch.start("held store")
    started = []
    run.engine.observers.append(
        lambda e: e.get("kind") == "attempt_started" and started.append(e["task_id"]))
    # The holder takes the file when the run's store thread lets go of it (after at most
    # two seconds of continuous work) and keeps it until told to let go.
    holder = hold(store)
    try:
        assert (await asyncio.to_thread(holder.stdout.readline)).strip() == "holding"
        at_hold = len(started)
        await asyncio.sleep(1.0)  # 50 attempts' worth of time on two workers
        while_held = len(started) - at_hold
        holder.stdin.write("go\n")
        holder.stdin.flush()
        assert await run.wait(120) == RunStatus.COMPLETED
    finally:
        holder.kill()
        holder.wait()
    # the 2 that were running and the 2 x 2 allowed to wait for the store; not 50
    assert while_held <= 6, while_held
    assert len(set(started)) == 400
