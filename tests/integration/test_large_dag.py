"""A 60-task random DAG with random latencies and failures, steered by a human, on a real
DuckDB file: final states as expected, the concurrency limit held, the event history
replays to the final state, and no engine step blocks the loop."""

import asyncio
import gc
import random
import time

import networkx as nx
import pytest

from agentorch_nb import RunStatus, TaskStatus
from agentorch_nb.store.replay import replay_run
from agentorch_nb.testing import TestStrategist, TestWorker, random_dag

S = TaskStatus
N_TASKS, WORKERS = 60, 4


def expected_graph(specs):
    g = nx.DiGraph()
    ids = {s.key: f"t{i + 1}" for i, s in enumerate(specs)}
    for s in specs:
        g.add_node(ids[s.key])
        for d in s.depends_on:
            g.add_edge(ids[d], ids[s.key])
    return g


class Probe:
    """Sleeps 5 ms at a time on the loop and records how late each wake-up is.

    Objects that earlier tests left (litellm's and pydantic's alone are half a million) are
    frozen first: a full garbage collection over them takes 0.2-0.4 s, which is no engine
    step's doing and would otherwise land in whichever test happens to be running."""

    def __init__(self):
        gc.collect()
        gc.freeze()
        self.lags: list[float] = []
        self._task = asyncio.ensure_future(self._run())

    async def _run(self):
        while True:
            t = time.perf_counter()
            await asyncio.sleep(0.005)
            self.lags.append(time.perf_counter() - t - 0.005)

    def stop(self):
        self._task.cancel()
        gc.unfreeze()
        return max(self.lags), sorted(self.lags)[len(self.lags) // 2]


async def test_large_random_dag_with_failures_and_human_resolutions(orch_factory):
    specs = random_dag(N_TASKS, seed=7, max_deps=3)
    g = expected_graph(specs)
    rng = random.Random(7)
    # Three tasks that always fail: one a human retries with guidance, one is abandoned with
    # everything downstream, one abandoned alone (its dependents then wait for a human).
    # All three must fail on their own, not wait behind one another.
    def unrelated(t, chosen):
        return all(t != c and t not in nx.descendants(g, c) and t not in nx.ancestors(g, c)
                   for c in chosen)

    has_children = [t for t in g if g.out_degree(t)]
    f_cascade = rng.choice(has_children[: N_TASKS // 3])
    f_retry = rng.choice([t for t in has_children if unrelated(t, [f_cascade])])
    f_alone = next(t for t in has_children if unrelated(t, [f_cascade, f_retry])
                   and all(g.out_degree(c) == 0 for c in g.successors(t)))
    always = {f_retry, f_cascade, f_alone}
    transient = set(rng.sample(sorted(set(g) - always), 10))  # fail once, then succeed
    latency = {t: rng.uniform(0.0, 0.03) for t in g}
    running = {"now": 0, "max": 0}

    def fail(task, ctx):
        if task.id in always and not ctx.guidance:
            return "cannot be done as specified"
        if task.id in transient and ctx.attempt == 1:
            return "flaky dependency download"
        return None

    class Counting(TestWorker):
        async def run(self, task, ctx):
            running["now"] += 1
            running["max"] = max(running["max"], running["now"])
            try:
                return await super().run(task, ctx)
            finally:
                running["now"] -= 1

    orch = orch_factory(specs, worker=Counting(latency=lambda t, c: latency[t.id], fail=fail),
                        strategist=TestStrategist(lambda t, c: "too vague" if t.id in transient
                                                  and c.attempt == 2 and t.id[-1] == "3" else None),
                        max_concurrent_workers=WORKERS, max_retries=2)
    probe = Probe()
    run = orch.start("a large objective")
    assert await run.wait(60) == RunStatus.PAUSED
    waiting = {i.task_id for i in run.interrupts()}
    assert waiting == always, {t.id: (t.status, t.depends_on) for t in run.tasks if t.status != S.COMPLETE}

    run.resolve(f_retry, "retry", guidance="use the documented API")
    run.resolve(f_cascade, "abandon", cascade=True)
    run.resolve(f_alone, "abandon")
    assert await run.wait(60) == RunStatus.PAUSED
    max_lag, median_lag = probe.stop()

    cascade = nx.descendants(g, f_cascade) | {f_cascade}
    orphans = set(g.successors(f_alone)) - cascade
    expect = {t: S.COMPLETE for t in g}
    expect.update({t: S.ABANDONED for t in cascade | {f_alone}})
    expect.update({t: S.WAITING_HUMAN for t in orphans})
    final = {t.id: t.status for t in run.tasks}
    assert final == expect
    assert {i.task_id for i in run.interrupts()} == orphans

    # Never more than the limit at once, and the limit was actually used.
    assert running["max"] == WORKERS and run.engine.max_running_seen == WORKERS
    # Transient failures were retried: two or three attempts each, the last one approved.
    for t in transient - cascade - orphans:
        assert run.task(t).attempts >= 2

    # The store: the tasks table, and a replay of the event history, both give the final state.
    run.store.flush_sync()
    rows = run.store.rows("select task_id, status from tasks where run_id = ?", [run.id])
    assert {r["task_id"]: S(r["status"]) for r in rows} == final
    replayed = replay_run(run.store, run.id)
    assert replayed.status == final
    assert replayed.deps == {(t.id, d) for t in run.tasks for d in t.depends_on}
    assert replayed.run_status == "paused"
    seqs = run.events().seq.tolist()
    assert seqs == list(range(1, len(seqs) + 1))

    # Loop discipline: nothing the engine did blocked the loop for long.
    assert max_lag < 0.2, f"the loop was blocked for {max_lag * 1000:.0f} ms"
    assert median_lag < 0.02


@pytest.mark.parametrize("n", [50])
async def test_lag_probe_during_a_run_with_real_duckdb_writes(orch_factory, n):
    """Fails when any engine step blocks the event loop for more than 200 ms."""
    run_specs = random_dag(n, seed=3)
    orch = orch_factory(run_specs, worker=TestWorker(latency=0.002), max_concurrent_workers=5)
    probe = Probe()
    run = orch.start("lag probe")
    assert await run.wait(60) == RunStatus.COMPLETED
    max_lag, _ = probe.stop()
    events = run.store.rows("select count(*) as n from events where run_id = ?", [run.id])[0]["n"]
    assert events > 6 * n  # the run really wrote its history while the probe ran
    assert max_lag < 0.2, f"an engine step blocked the loop for {max_lag * 1000:.0f} ms"
