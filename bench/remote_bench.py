"""Commands and reads of a live run from another process, while its engine is busy.

    python bench/remote_bench.py              # 800 tasks, 40 + 40 escalations, 200 reads (~30 s)
    python bench/remote_bench.py --tasks 400  # shorter

One process (the "engine" process, this script with ``--engine``) drives a busy run: a
random DAG of short tasks (60-140 ms workers, 5 at a time) on a fresh git repository and its
real DuckDB file. Eighty of its tasks escalate to a human (they fail with ``max_retries=0``
until a human gives guidance): forty are marked for this process, forty for the engine's.

This process ("other process") opens the same store, finds the run and, while the run is
busy, resolves its forty escalations (alternately ``retry`` with guidance and ``abandon``
with ``drop_dependency``) and reads ``run.interrupts()`` and ``run.tasks`` 200 times each.
In the engine's process a thread does the same with its forty and 200 + 200 reads through
the same public calls: there they go straight to the engine's memory on its loop, which is
the baseline. Every figure is the caller's wall time of one call. "engine part" is the
engine's own time from receipt of the request to its answer (``engine_ms`` in the answer).
"store road" is the same read done the way a process without the channel does it (the
DuckDB file, waiting for the engine's store thread to let go of it), 40 times before the rest
(each such read makes the engine give up the file, which would slow its other answers).

The run is kept busy until both sides are done (its workers stay slow until then), so
every call is measured against a working engine. The machine this was written on has two
cores shared with other work: run it several times.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import agentorch_nb as ao  # noqa: E402
from agentorch_nb import remote  # noqa: E402
from agentorch_nb.store.records import load_tasks  # noqa: E402
from agentorch_nb.testing import Agents, TestDirector, TestStrategist, TestWorker, random_dag  # noqa: E402

ESCALATIONS = 40  # per side
READS = 200  # of each kind, per side
WORKERS = 5
STORE_ROAD = 40  # reads the way a process without the channel does them


# ------------------------------------------------------------ engine process
def specs(n: int) -> list[ao.TaskSpec]:
    out = random_dag(n, seed=7, max_deps=2)
    step = n // (2 * ESCALATIONS + 1)
    for i in range(2 * ESCALATIONS):
        s = out[step * (i + 1)]
        s.title = f"esc-{'remote' if i % 2 == 0 else 'local'} {i}"
        s.max_retries = 0
    return out


def engine_main(repo: Path, done: Path, results: Path, n: int) -> None:
    def latency(task, ctx):
        if done.exists():
            return 0.0
        return 0.06 + (hash(task.id) % 81) / 1000

    def fail(task, ctx):
        return "needs a person" if task.title.startswith("esc-") and not ctx.guidance else None

    class Worker(TestWorker):
        """Short tasks; "hold" keeps the run from finishing until both sides are done."""

        async def run(self, task, ctx):
            if task.title == "hold":
                while not done.exists():
                    await asyncio.sleep(0.05)
                return ao.WorkResult("held")
            result = await super().run(task, ctx)
            local["last_work"] = time.time()
            return result

    local: dict = {}
    orch = ao.Orchestrator(repo, config=ao.Config(max_concurrent_workers=WORKERS),
                           agents=Agents(TestDirector(specs(n) + [ao.TaskSpec("hold")]),
                                         Worker(latency, fail), TestStrategist()))
    run = orch.start("remote bench: a busy run")
    print(run.id, flush=True)
    side = threading.Thread(target=lambda: local.update(caller(run, "esc-local", None)))
    side.start()
    side.join()
    (done.parent / "local.done").touch()
    status = run.wait_sync(600, stop_on_pause=False)
    local["run_status"] = status.value
    results.write_text(json.dumps(local))


# ---------------------------------------------------------------- the caller
def caller(run, marker: str, store_road) -> dict:
    """Resolve this side's escalations and read, timing each call; return the samples."""
    got: dict[str, list[float]] = {k: [] for k in (
        "resolve", "interrupts", "tasks", "resolve.engine", "interrupts.engine", "tasks.engine",
        "interrupts.store", "tasks.store")}
    for _ in range(STORE_ROAD if store_road else 0):  # first, so it does not slow the rest
        for kind, fn in store_road.items():
            t0 = time.perf_counter()
            fn()
            got[f"{kind}.store"].append((time.perf_counter() - t0) * 1000)
        time.sleep(0.02)
    resolved: set[str] = set()
    reads = 0
    deadline = time.monotonic() + 300
    while (len(resolved) < ESCALATIONS or reads < READS) and time.monotonic() < deadline:
        t0 = time.perf_counter()
        remote.last_answer.engine_ms = None
        waiting = run.interrupts()
        if reads < READS:
            _note(got, "interrupts", t0)
            t0 = time.perf_counter()
            remote.last_answer.engine_ms = None
            run.tasks
            _note(got, "tasks", t0)
            reads += 1
        for it in waiting:
            if it.task_id in resolved or not _mine(run, it.task_id, marker):
                continue
            i = len(resolved)
            t0 = time.perf_counter()
            remote.last_answer.engine_ms = None
            if i % 2 == 0:
                status = run.resolve(it.task_id, "retry", guidance="go ahead")
            else:
                status = run.resolve(it.task_id, "abandon", drop_dependency=True)
            _note(got, "resolve", t0)
            assert status in ("applied", None) or hasattr(status, "action"), status
            resolved.add(it.task_id)
        time.sleep(0.01)
    got["resolved"] = len(resolved)
    return got


_titles: dict[str, str] = {}


def _mine(run, task_id: str, marker: str) -> bool:
    if task_id not in _titles:
        _titles.update({t.id: t.title for t in run.tasks})
    return _titles.get(task_id, "").startswith(marker)


def _note(got: dict, kind: str, t0: float) -> None:
    got[kind].append((time.perf_counter() - t0) * 1000)
    ms = getattr(remote.last_answer, "engine_ms", None)
    if ms is not None:
        got[f"{kind}.engine"].append(ms)


# ------------------------------------------------------------------- report
def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def row(name: str, xs: list[float]) -> str:
    if not xs:
        return f"  {name:<34} {'-':>5}"
    return (f"  {name:<34} {len(xs):>5} {statistics.median(xs):>8.1f} {pct(xs, 0.95):>8.1f} "
            f"{max(xs):>8.1f}")


def report(other: dict, local: dict, wall: float, n: int) -> None:
    print(f"remote_bench: {n} tasks, {WORKERS} workers, {ESCALATIONS} escalations and {READS} "
          f"reads of each kind per side; {os.cpu_count()} cores; run busy {wall:.1f} s; "
          f"run ended {local.get('run_status')}")
    tail = local.get("idle_tail", 0)
    print(f"  workers had tasks under way until {'the end' if tail <= 0.1 else f'{tail:.1f} s before the end'}"
          " of the measurement")
    print(f"  {'caller wall time (ms)':<34} {'n':>5} {'p50':>8} {'p95':>8} {'max':>8}")
    for op in ("resolve", "interrupts", "tasks"):
        print(f"{op}:")
        print(row("other process", other[op]))
        print(row("  engine part (receipt->answer)", other[f"{op}.engine"]))
        if f"{op}.store" in other and other[f"{op}.store"]:
            print(row("  store road (file read)", other[f"{op}.store"]))
        print(row("engine's own process (baseline)", local[op]))
        a, b = other[op], local[op]
        if a and b:
            print(f"  {'ratio other/own':<34} {'':>5} {statistics.median(a) / statistics.median(b):>8.1f} "
                  f"{pct(a, 0.95) / pct(b, 0.95):>8.1f}")
    print(f"resolved: other process {other['resolved']}/{ESCALATIONS}, "
          f"engine's process {local['resolved']}/{ESCALATIONS}")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", type=int, default=800)
    ap.add_argument("--engine", nargs=3, metavar=("REPO", "DONE", "RESULTS"))
    args = ap.parse_args()
    if args.engine:
        engine_main(Path(args.engine[0]), Path(args.engine[1]), Path(args.engine[2]), args.tasks)
        return 0
    with tempfile.TemporaryDirectory(prefix="remote-bench-") as tmp:
        tmp = Path(tmp)
        repo = tmp / "repo"
        repo.mkdir()
        git = ["git", "-C", str(repo), "-c", "user.name=b", "-c", "user.email=b@localhost"]
        subprocess.run(git[:3] + ["init", "-q"], check=True)
        subprocess.run(git + ["commit", "-q", "--allow-empty", "-m", "init"], check=True)
        done, results = tmp / "done", tmp / "local.json"
        proc = subprocess.Popen([sys.executable, __file__, "--tasks", str(args.tasks), "--engine",
                                 str(repo), str(done), str(results)],
                                stdout=subprocess.PIPE, text=True,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})
        orch = None
        try:
            run_id = proc.stdout.readline().strip()
            t0 = time.monotonic()
            orch = ao.Orchestrator(repo)  # this process: no engine, the store and the channel
            run = orch.run(run_id)
            store = orch.store
            store_road = {
                "tasks": lambda: store.call_sync(lambda con: load_tasks(con, run_id)),
                "interrupts": lambda: store.rows(
                    "select * from interrupts where run_id = ? and resolved_at is null", [run_id]),
            }
            other = caller(run, "esc-remote", store_road)
            while not (tmp / "local.done").exists():
                time.sleep(0.05)
            wall, ended = time.monotonic() - t0, time.time()
            done.touch()
            proc.wait(600)
            local = json.loads(results.read_text())
            local["idle_tail"] = ended - local.get("last_work", 0)
        finally:
            done.touch()
            if orch is not None:
                orch.store.close()
            if proc.poll() is None:
                proc.kill()
        report(other, local, wall, args.tasks)
        ok = other["resolved"] == ESCALATIONS and local["resolved"] == ESCALATIONS
        return 0 if ok and local.get("run_status") == "completed" else 1


if __name__ == "__main__":
    sys.exit(main())
