"""A snapshot of a live run, held open by another process for longer than lock_timeout while
the run goes on untouched; and a pruned store read by another process."""

import asyncio
import json
import subprocess
import sys
import textwrap
import time

import duckdb
import pytest

from agentorch_nb import RunStatus, TaskSpec
from agentorch_nb.model import utcnow
from agentorch_nb.testing import TestWorker

pytestmark = pytest.mark.slow
LOCK_TIMEOUT = 2.0
HOLD = 1.5 * LOCK_TIMEOUT
N = 100

HOLDER = textwrap.dedent("""
    import duckdb, json, sys, time
    con = duckdb.connect(sys.argv[1])  # read-write: DuckDB's lock on the snapshot is ours
    events = con.execute("select seq, task_id, kind, payload from events order by seq").fetchall()
    tasks = con.execute("select task_id, status from tasks").fetchall()
    timeline = con.execute("select task_id, list(status order by started_at) "
                           "from task_timeline group by task_id").fetchall()
    run = con.execute("select status from runs").fetchall()
    print(json.dumps({"events": events, "tasks": tasks, "timeline": timeline, "run": run}),
          flush=True)
    print("holding", flush=True)
    time.sleep(float(sys.argv[2]))
    con.close()
    print("released", flush=True)
""")


async def test_a_snapshot_of_a_live_run_is_held_open_while_the_run_goes_on(orch_factory, tmp_path):
    # 100 tasks of 0.2 s on four workers: about six seconds, of which the holder takes
    # HOLD (1.5 lock_timeout) after the first ten tasks are done.
    orch = orch_factory([TaskSpec(f"task {i}") for i in range(N)],
                        worker=TestWorker(latency=0.2), store=tmp_path / "live.duckdb",
                        max_concurrent_workers=4, lock_timeout=LOCK_TIMEOUT)
    run = orch.start("snapshot a live run")
    for _ in range(600):
        done = orch.store.rows("select count(*) as n from tasks where run_id = ? "
                               "and status = 'complete'", [run.id])[0]["n"]
        if done >= 10:
            break
        await asyncio.sleep(0.02)
    snap = await asyncio.to_thread(orch.snapshot, tmp_path / "snap.duckdb")
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(snap), str(HOLD)],
                              stdout=subprocess.PIPE, text=True)
    try:
        seen = json.loads(await asyncio.to_thread(holder.stdout.readline))
        assert (await asyncio.to_thread(holder.stdout.readline)).strip() == "holding"
        held_at, held_since = time.monotonic(), utcnow()
        # the run goes on while the snapshot is held, past lock_timeout
        await asyncio.sleep(LOCK_TIMEOUT + 0.3)
        assert holder.poll() is None, "the holder let go early"
        assert run.summary()["status"] == "running"
        assert await run.wait(120) == RunStatus.COMPLETED, run.summary()
        assert (await asyncio.to_thread(holder.stdout.readline)).strip() == "released"
        assert time.monotonic() - held_at >= HOLD - 0.1
    finally:
        holder.kill()
        holder.wait()

    live = run.events()
    assert "store_busy" not in set(live.kind)  # the snapshot never held the engine up
    assert list(live.seq) == list(range(1, len(live) + 1))
    assert (live.ts > held_since).sum() > 100  # it kept writing while the snapshot was held
    # The snapshot is one point in time: a gapless prefix of the run's events, the run
    # still running, each task row as its events say (or one step behind: it is written
    # after its event), every task of the run present.
    events = seen["events"]
    assert [e[0] for e in events] == list(range(1, len(events) + 1))
    assert 0 < len(events) < len(live)
    prefix = live.iloc[:len(events)]
    assert [(e[1], e[2], json.loads(e[3])) for e in events] == [
        (t if isinstance(t, str) else None, k, json.loads(p))
        for t, k, p in zip(prefix.task_id, prefix.kind, prefix.payload)]
    assert seen["run"] == [["running"]]
    timeline = {t: statuses for t, statuses in seen["timeline"]}
    assert len(seen["tasks"]) == N
    for task_id, status in seen["tasks"]:
        assert status in timeline[task_id][-2:], (task_id, status, timeline[task_id])
    completed = sum(status == "complete" for _, status in seen["tasks"])
    assert 10 <= completed < N


async def test_a_pruned_store_is_read_by_another_process(orch_factory, tmp_path):
    path = tmp_path / "s.duckdb"
    orch = orch_factory([TaskSpec("a")], store=path)
    ids = []
    for i in range(3):
        run = orch.start(f"run {i}")
        assert await run.wait(60) == RunStatus.COMPLETED
        ids.append(run.id)
    assert orch.prune(keep_last=1) == ids[:2]
    code = textwrap.dedent(f"""
        import duckdb, time
        for _ in range(1000):
            try:
                con = duckdb.connect({str(path)!r}, read_only=True)
                break
            except duckdb.IOException:
                time.sleep(0.01)
        print(con.execute("select run_id from runs").fetchall(),
              con.execute("select count(*) from critical_path").fetchone()[0])""")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.split("]")[0] + "]" == str([(ids[2],)]), out.stderr
    assert out.stdout.strip().endswith("1")
    orch.store.close()
    con = duckdb.connect(str(path), read_only=True)
    try:
        assert con.execute("select count(*) from events where run_id <> ?", [ids[2]]).fetchone() == (0,)
    finally:
        con.close()
