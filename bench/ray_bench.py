"""What running attempts on Ray costs each attempt, against running them in the engine's process.

    python bench/ray_bench.py                          # 50 attempts, then a 200 MB repository (~4 min)
    python bench/ray_bench.py --attempts 20 --repo-mb 50
    python bench/ray_bench.py --repo-mb 0              # the small repository only

A Ray cluster is simulated on this machine (``ray.cluster_utils.Cluster``: a head with no
CPU and two nodes of two CPUs, each keeping its clones in a directory of its own). The same
run is made twice on fresh repositories, once with attempts in the engine's process (the
baseline) and once with ``RayExecutor``: ``--attempts`` independent tasks whose worker writes
one file, approved and merged, four at a time. An attempt's time is the store's
(``finished_at - started_at``: worker, commit, QA and merge), so both sides are measured the
same way; the overhead is the difference of the means.

The Ray run's first attempts wait for its runners to start (a Ray worker process importing
the package); that cold start is printed apart, and the per-attempt figures are of the
attempts after it. Ray's own column splits an attempt into waiting for a runner, sending the
repository, the attempt on the node (its work and the streaming of its records) and fetching
the commit back.

The second part does the same with a repository holding ``--repo-mb`` of incompressible
files: each node receives it once (its cost printed as "first send to a node"), later
attempts send only what is new.

Goal (issue 15): under 100 ms per attempt, and under 5 % of a typical attempt. A typical
LLM attempt is a handful of model calls of seconds each plus QA's checks; ``--typical``
(default 60 s) is that assumption, printed with the ratio. This machine has two cores,
shared by the engine, the simulated nodes and git: run it more than once.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import agentorch_nb as ao  # noqa: E402
from agentorch_nb.testing import Agents, FileWorker, TestDirector, TestStrategist  # noqa: E402

WORKERS = 4


def team(n: int) -> Agents:
    specs = [ao.TaskSpec(f"task {i}") for i in range(n)]
    worker = FileWorker(lambda task: {f"out/{task.id}.txt": f"{task.title}\n"})
    return Agents(TestDirector(specs), worker, TestStrategist())


def make_repo(path: Path, megabytes: int) -> Path:
    ao.init_workspace(path)
    if megabytes:
        data = path / "data"
        data.mkdir()
        for i in range(max(1, megabytes // 10)):
            (data / f"blob{i}.bin").write_bytes(os.urandom(min(10, megabytes) * 1024 * 1024))
        git = ["git", "-C", str(path), "-c", "user.name=b", "-c", "user.email=b@localhost"]
        import subprocess

        subprocess.run(git + ["add", "-A"], check=True)
        subprocess.run(git + ["commit", "-q", "-m", "data"], check=True)
    return path


async def one_run(repo: Path, n: int, executor=None) -> tuple[list[float], float, object]:
    """Attempt times (s, in start order), the makespan, and the executor's session."""
    config = ao.Config(max_concurrent_workers=WORKERS, flush_interval=0.01, executor=executor)
    orch = ao.Orchestrator(repo, config=config, agents=team(n))
    t0 = time.perf_counter()
    run = orch.start("bench")
    session = run.engine.executor
    status = await run.wait()
    makespan = time.perf_counter() - t0
    assert status == ao.RunStatus.COMPLETED, run.summary()
    rows = orch.store.rows("select epoch(finished_at) - epoch(started_at) as s from attempts "
                           "where run_id = ? order by started_at", [run.id])
    assert len(rows) == n and len(list((repo / "out").iterdir())) == n
    orch.store.close()
    return [r["s"] for r in rows], makespan, session


def ms(seconds: float) -> str:
    return f"{seconds * 1000:8.1f}"


async def part(title: str, megabytes: int, n: int, executor, typical: float, tmp: Path) -> float:
    local_times, local_span, _ = await one_run(make_repo(tmp / f"{title}-local", megabytes), n)
    ray_times, ray_span, session = await one_run(make_repo(tmp / f"{title}-ray", megabytes), n, executor)
    cold = ray_times[:WORKERS]
    local_mean = statistics.mean(local_times[WORKERS:])
    ray_mean = statistics.mean(ray_times[WORKERS:])
    overhead = ray_mean - local_mean
    steps = session.timings[WORKERS:]
    first = session.timings[:WORKERS]
    print(f"\n{title}: {n} attempts, {WORKERS} at a time, repository {megabytes or 'small'}"
          f"{' MB' if megabytes else ''}")
    print(f"{'':34}{'local':>9}{'ray':>9}{'ray-local':>11}")
    print(f"{'ms per attempt (after cold start)':34}{ms(local_mean)}{ms(ray_mean)}{ms(overhead):>11}")
    print(f"{'makespan s':34}{local_span:9.2f}{ray_span:9.2f}{ray_span / local_span:>10.2f}x")
    print(f"{'ray, ms per attempt (median):':34}" + "  ".join(
        f"{k} {statistics.median(t[k] for t in steps) * 1000:.1f}" for k in steps[0]))
    added = statistics.median(t["ship"] + t["fetch"] + t["run"] - t["on node"] for t in steps)
    print(f"{'steps Ray adds, ms (median)':34}{added * 1000:8.1f}   (sending, fetching back, "
          "starting and streaming; the rest is the attempt's own work on the node)")
    print(f"{'cold start (first attempts), s':34}{statistics.mean(cold):9.2f}   "
          f"(waiting for a runner {statistics.mean(t['take'] for t in first):.2f}, "
          f"first send to a node {max(t['ship'] for t in first):.2f})")
    print(f"overhead: {overhead * 1000:.1f} ms per attempt = {overhead / typical:.2%} of a "
          f"{typical:g} s attempt; goal < 100 ms and < 5 %: "
          f"{'met' if overhead < 0.1 and overhead / typical < 0.05 else 'NOT met'}")
    return overhead


async def main(args) -> None:
    import ray
    from ray.cluster_utils import Cluster

    from agentorch_nb.distributed import RayExecutor

    logging.getLogger("ray").setLevel(logging.WARNING)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    for _ in range(2):
        cluster.add_node(num_cpus=2)
    ray.init(address=cluster.address, namespace="agentorch-bench", log_to_driver=False)
    try:
        with tempfile.TemporaryDirectory(prefix="agentorch-raybench-") as tmp:
            executor = RayExecutor(work_dir=str(Path(tmp) / "nodes"), warm=WORKERS)
            await part("small repository", 0, args.attempts, executor, args.typical, Path(tmp))
            if args.repo_mb:
                await part("big repository", args.repo_mb, args.big_attempts, executor,
                           args.typical, Path(tmp))
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--attempts", type=int, default=50)
    parser.add_argument("--big-attempts", type=int, default=12)
    parser.add_argument("--repo-mb", type=int, default=200)
    parser.add_argument("--typical", type=float, default=60.0, help="seconds of a typical attempt")
    asyncio.run(main(parser.parse_args()))
