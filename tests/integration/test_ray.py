"""Attempts on a Ray cluster simulated on this machine (``ray.cluster_utils.Cluster``): a head
with no CPU, so no attempt runs beside the engine, and worker nodes that keep their clones in
directories of their own under a per-node name. Real git repositories, real DuckDB files,
real Ray processes; the engine stays in the test's process and loop."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import ray

import agentorch_nb as ao
from agentorch_nb import RunStatus
from agentorch_nb.agents import LLMTeam, demo_models
from agentorch_nb.distributed import RayExecutor
from agentorch_nb.engine.protocols import Agents
from agentorch_nb.llm import LLM, Models, register_script
from agentorch_nb.model import TaskSpec, WorkResult
from agentorch_nb.testing import DEMO_OBJECTIVE, FileWorker, TestDirector, TestStrategist
from agentorch_nb.widgets._feed import RunFeed

pytestmark = pytest.mark.slow
TABLES = ("tasks", "attempts", "messages", "llm_calls", "tool_calls", "merges", "interrupts")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    for _ in range(2):
        c.add_node(num_cpus=2, resources={"pool": 8})
    ray.init(address=c.address, namespace="agentorch-tests", log_to_driver=False)
    # This module's agents travel to the nodes by value (the nodes need not import tests/).
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield c
    ray.shutdown()
    c.shutdown()


@pytest.fixture(scope="module")
def work_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("nodes")


def until(predicate, timeout: float = 120.0, every: float = 0.1):
    async def wait():
        async with asyncio.timeout(timeout):
            while not predicate():
                await asyncio.sleep(every)
    return wait()


def counts(orch: ao.Orchestrator, run_id: str) -> dict[str, int]:
    return {t: orch.store.rows(f"select count(*) as n from {t} where run_id = ?", [run_id])[0]["n"]
            for t in TABLES}


def files_of(repo: Path) -> dict[str, str]:
    """Path -> blob of every file on main."""
    out = subprocess.run(["git", "-C", str(repo), "ls-tree", "-r", "main"], check=True,
                         capture_output=True, text=True).stdout
    return {line.split("\t")[1]: line.split()[2] for line in out.splitlines()}


async def test_the_demo_runs_on_the_nodes_as_it_runs_here(cluster, work_dir, tmp_path):
    local_ws, remote_ws = tmp_path / "local", tmp_path / "remote"
    for ws in (local_ws, remote_ws):
        ao.init_workspace(ws)
    local = ao.Orchestrator(local_ws, config=ao.Config(models=demo_models()), agents=LLMTeam())
    here = local.start(DEMO_OBJECTIVE)
    assert await here.wait(240) == RunStatus.COMPLETED

    executor = RayExecutor(work_dir=str(work_dir))
    remote = ao.Orchestrator(remote_ws, config=ao.Config(models=demo_models(), executor=executor),
                             agents=LLMTeam())
    there = remote.start(DEMO_OBJECTIVE)
    chunks = []
    RunFeed(there).subscribe(lambda batch: chunks.extend(batch.chunks))  # a dashboard watches
    assert await there.wait(300) == RunStatus.COMPLETED, there.summary()

    # The work landed on main, file for file as the local run's.
    assert files_of(remote_ws) == files_of(local_ws) and "README.md" in files_of(remote_ws)
    # The store cannot tell them apart but by the node column.
    assert counts(remote, there.id) == counts(local, here.id)
    status = "select task_id, title, status from tasks where run_id = ? order by task_id"
    assert remote.store.rows(status, [there.id]) == local.store.rows(status, [here.id])
    outcomes = "select task_id, attempt, outcome from attempts where run_id = ? order by all"
    assert remote.store.rows(outcomes, [there.id]) == local.store.rows(outcomes, [here.id])
    nodes = {r["node"] for r in remote.store.rows("select node from attempts where run_id = ?", [there.id])}
    assert None not in nodes and nodes <= {f"{n.node_ip_address}/{n.node_id[:8]}" for n in cluster.worker_nodes}
    assert {r["node"] for r in local.store.rows("select node from attempts")} == {None}
    # Nothing was made in the user's repository but the merges: the worktrees were on the nodes.
    worktrees = subprocess.run(["git", "-C", str(remote_ws), "worktree", "list"], capture_output=True,
                               text=True, check=True).stdout.splitlines()
    assert len(worktrees) == 1
    made = remote.store.rows("select worktree from tasks where run_id = ? and worktree is not null",
                             [there.id])
    assert made and all(str(work_dir) in r["worktree"] and str(remote_ws) not in r["worktree"]
                        for r in made)
    # Replies streamed on the nodes reached the dashboard's feed, and add up to what was stored.
    streamed = {}
    for c in chunks:
        assert c["task_id"] is not None
        streamed.setdefault((c["task_id"], c["attempt"]), []).append(c["content"])
    assert streamed
    stored = {r["content"] for r in remote.store.rows(
        "select content from messages where run_id = ? and role = 'assistant'", [there.id])}
    assert any("".join(parts) in stored for parts in streamed.values())


class TreeWorker:
    """Starts a command that leaves two sleepers behind it (one in a session of its own),
    writes their pids to ``pidfile``, and waits for it."""

    def __init__(self, pidfile: str) -> None:
        self.pidfile = pidfile

    async def run(self, task, ctx):
        root = await ctx.worktree()
        ctx.log("user", "starting a tree")
        script = (f"sleep 300 & echo $! >> {self.pidfile}; setsid sleep 300 & "
                  f"echo $! >> {self.pidfile}; wait")
        await ctx.run_command(["sh", "-c", script], cwd=root, timeout=600)
        return WorkResult("the tree ended")


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("how", ["interrupt", "cancel"])
async def test_interrupt_and_cancel_kill_a_remote_commands_process_tree(cluster, work_dir, tmp_path, how):
    repo = tmp_path / "repo"
    ao.init_workspace(repo)
    pidfile = tmp_path / "pids"
    agents = Agents(TestDirector([TaskSpec("tree")]), TreeWorker(str(pidfile)), TestStrategist())
    orch = ao.Orchestrator(repo, config=ao.Config(executor=RayExecutor(work_dir=str(work_dir)),
                                                  flush_interval=0.01), agents=agents)
    run = orch.start("a command tree on a node")
    await until(lambda: pidfile.exists() and len(pidfile.read_text().split()) == 2)
    pids = [int(p) for p in pidfile.read_text().split()]
    assert all(alive(p) for p in pids)
    if how == "interrupt":
        run.interrupt("t1")
        await until(lambda: run.task("t1").status.value == "waiting_human")
        expected = ("interrupted", "human")
    else:
        run.cancel()
        assert await run.wait(60) == RunStatus.CANCELLED
        expected = ("interrupted", "cancelled")
    assert not any(alive(p) for p in pids)
    (row,) = orch.store.rows("select outcome, interruption, node from attempts where run_id = ?", [run.id])
    assert (row["outcome"], row["interruption"]) == expected and row["node"]
    if how == "interrupt":
        run.cancel()
        await run.wait(60)


async def test_a_node_that_dies_mid_attempt_is_retried_on_another(cluster, work_dir, tmp_path):
    spares = [cluster.add_node(num_cpus=1, resources={"spare": 1}) for _ in range(2)]
    repo = tmp_path / "repo"
    ao.init_workspace(repo)
    started = tmp_path / "started"

    class SlowFirst(FileWorker):
        async def run(self, task, ctx):
            ctx.log("user", f"attempt {ctx.attempt} begins")
            if ctx.attempt == 1 and task.id == "t2":
                Path(started).write_text("x")
                await asyncio.sleep(600)
            return await super().run(task, ctx)

    specs = [TaskSpec("one"), TaskSpec("two"), TaskSpec("three", depends_on=["t1", "t2"])]
    agents = Agents(TestDirector(specs), SlowFirst(lambda t: {f"{t.id}.txt": t.title}), TestStrategist())
    executor = RayExecutor(work_dir=str(work_dir), placement={"*": {"num_cpus": 1, "resources": {"spare": 1}}})
    orch = ao.Orchestrator(repo, config=ao.Config(executor=executor, flush_interval=0.01), agents=agents)
    run = orch.start("survive a node")
    await until(started.exists)
    await until(lambda: orch.store.rows(
        "select node from attempts where task_id = 't2' and node is not null"))
    victim = orch.store.rows("select node from attempts where task_id = 't2'")[0]["node"]
    (node,) = [n for n in spares if victim.endswith(n.node_id[:8])]
    cluster.remove_node(node)
    assert await run.wait(240) == RunStatus.COMPLETED, run.summary()

    rows = orch.store.rows("select attempt, outcome, interruption, node from attempts "
                           "where run_id = ? and task_id = 't2' order by attempt", [run.id])
    assert [(r["outcome"], r["interruption"]) for r in rows] == [("interrupted", "node_lost"),
                                                                ("approved", None)]
    assert rows[0]["node"] == victim and rows[1]["node"] != victim
    # Nothing lost: every task's file is on main, and what attempt 1 said is in the store.
    assert {p: (repo / p).read_text() for p in ("t1.txt", "t2.txt", "t3.txt")} == {
        "t1.txt": "one", "t2.txt": "two", "t3.txt": "three"}
    said = orch.store.rows("select content from messages where task_id = 't2' and attempt = 1")
    assert [r["content"] for r in said] == ["attempt 1 begins"]
    for n in spares:
        if n is not node:
            cluster.remove_node(n)


async def test_a_run_whose_engine_died_resumes_and_settles_its_remote_attempts(cluster, work_dir, tmp_path):
    from tests.integration import ray_child

    repo = tmp_path / "repo"
    ao.init_workspace(repo)
    pidfile = tmp_path / "pid"
    child = subprocess.Popen(
        [sys.executable, ray_child.__file__, cluster.address, str(repo), str(work_dir), str(pidfile)],
        stdout=subprocess.PIPE, text=True, start_new_session=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])})
    try:
        run_id = child.stdout.readline().strip()
        await until(lambda: pidfile.exists() and pidfile.read_text().strip(), timeout=180)
        sleeper = int(pidfile.read_text())
        child.kill()  # the engine alone: its runners and their commands are the cluster's
        child.wait()
    finally:
        if child.poll() is None:
            child.kill()
    # Ray ends the dead driver's runners, and with them the command trees they started.
    await until(lambda: not alive(sleeper), timeout=60)

    ray.cloudpickle.register_pickle_by_value(ray_child)
    orch = ao.Orchestrator(repo, config=ray_child.config(RayExecutor(work_dir=str(work_dir))),
                           agents=ray_child.agents(str(pidfile)))
    run = orch.resume(run_id)
    assert await run.wait(240) == RunStatus.COMPLETED, run.summary()
    rows = orch.store.rows("select attempt, outcome, interruption, node from attempts "
                           "where run_id = ? and task_id = 't2' order by attempt", [run_id])
    assert [(r["outcome"], r["interruption"]) for r in rows] == [("interrupted", "engine_died"),
                                                                ("approved", None)]
    assert all(r["node"] for r in rows)
    assert sorted(p.name for p in repo.glob("t*.txt")) == ["t1.txt", "t2.txt", "t3.txt"]
    assert subprocess.run(["git", "-C", str(repo), "status", "--porcelain"], capture_output=True,
                          text=True, check=True).stdout == ""


def client_server(cluster, port: int) -> subprocess.Popen:
    """A Ray Client server for the cluster on 127.0.0.1:port, as KubeRay and `ray start` run one."""
    import socket

    server = subprocess.Popen([sys.executable, "-m", "ray.util.client.server", "--address",
                               cluster.address, "--host", "127.0.0.1", "--port", str(port),
                               "--mode", "proxy"], start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(600):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return server
        time.sleep(0.1)
    raise AssertionError("the Ray Client server did not start")


async def test_a_cluster_out_of_reach_pauses_launches_and_the_run_goes_on(cluster, work_dir, tmp_path):
    from tests.integration import ray_child

    port = free_port()
    server = client_server(cluster, port)
    repo = tmp_path / "repo"
    ao.init_workspace(repo)
    pidfile = tmp_path / "pid"
    child = subprocess.Popen(
        [sys.executable, ray_child.__file__, f"ray://127.0.0.1:{port}", str(repo), str(work_dir),
         str(pidfile)], stdout=subprocess.PIPE, text=True, start_new_session=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2]),
             "RAY_CLIENT_RECONNECT_GRACE_PERIOD": "3"})
    try:
        run_id = child.stdout.readline().strip()
        await until(lambda: pidfile.exists() and pidfile.read_text().strip(), timeout=180)
        os.killpg(server.pid, 9)  # the connection to the cluster is gone
        server.wait()
        orch = ao.Orchestrator(repo)

        def cut_off():
            return orch.store.rows("select outcome, interruption from attempts where run_id = ? "
                                   "and task_id = 't2' and attempt = 1", [run_id])[0]

        def kinds():
            return [r["kind"] for r in orch.store.rows(
                "select kind from events where run_id = ? order by seq", [run_id])]

        await until(lambda: "executor_paused" in kinds() and cut_off()["outcome"], timeout=120,
                    every=0.5)
        assert cut_off() == {"outcome": "interrupted", "interruption": "cluster_lost"}
        await asyncio.sleep(3)  # launches stay paused, and the run is not failed
        assert orch.run_row(run_id)["status"] == "running" and child.poll() is None
        assert orch.store.rows("select count(*) as n, max(retries_used) as used from attempts a "
                               "join tasks t using (run_id, task_id) where run_id = ? and "
                               "task_id = 't2'", [run_id]) == [{"n": 1, "used": 0}]
        # Every other control still works: a cancel from this process ends the run.
        orch.run(run_id).cancel()
        assert child.wait(60) == 0
        assert orch.run_row(run_id)["status"] == "cancelled"
    finally:
        for proc in (child, server):
            if proc.poll() is None:
                os.killpg(proc.pid, 9)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class CallingTeam:
    """A deterministic Director and Strategist around a worker that makes ``calls`` LLM calls
    through the run's client (so through the cluster's limiter)."""

    def __init__(self, specs, calls: int, barrier: str, parties: int) -> None:
        self.specs, self.calls, self.barrier, self.parties = specs, calls, barrier, parties

    def for_run(self, engine):
        llm = LLM(engine.config.models, store=engine.store, run_id=engine.run_id,
                  limiter=engine.executor.limiter())
        worker = CallingWorker(llm, self.calls, self.barrier, self.parties)
        return Agents(TestDirector(self.specs), worker, TestStrategist())


class CallingWorker:
    """Makes one call, waits until ``parties`` attempts have made theirs (a file the
    simulated nodes share, as only a test can), so that every node spends; then calls on."""

    def __init__(self, llm, calls: int, barrier: str, parties: int) -> None:
        self.llm, self.calls, self.barrier, self.parties = llm, calls, Path(barrier), parties

    async def run(self, task, ctx):
        for n in range(self.calls):
            await self.llm.complete(role="worker", task_id=task.id, attempt=ctx.attempt,
                                    messages=[{"role": "user", "content": f"call {n}"}])
            if n == 0:
                with self.barrier.open("a") as f:
                    f.write(f"{task.id}\n")
                async with asyncio.timeout(120):
                    while len(self.barrier.read_text().split()) < self.parties:
                        await asyncio.sleep(0.05)
        return WorkResult("called")


async def test_the_budget_holds_across_nodes(cluster, work_dir, tmp_path):
    register_script("hundred", [{"reply": {"content": "ok", "tokens_in": 60, "tokens_out": 40}}])
    repo = tmp_path / "repo"
    ao.init_workspace(repo)
    models = Models(worker_model="scripted/hundred", budget_tokens=1000, max_concurrent_calls=1)
    specs = [TaskSpec(f"task {n}") for n in range(6)]
    orch = ao.Orchestrator(repo, config=ao.Config(
        models=models, max_concurrent_workers=4, flush_interval=0.01,
        executor=RayExecutor(work_dir=str(work_dir), placement={"*": {"num_cpus": 1}})),
        agents=CallingTeam(specs, calls=5, barrier=str(tmp_path / "barrier"), parties=4))
    run = orch.start("spend")
    assert await run.wait(240) == RunStatus.PAUSED, run.summary()

    # 6 tasks x 5 calls of 100 tokens would be 3,000; the budget is 1,000 for the run, and a
    # call starts only while less than that is spent: exactly 10 calls, on more than one node.
    calls = orch.store.rows("select c.tokens_in + c.tokens_out as tokens, a.node from llm_calls c "
                            "join attempts a using (run_id, task_id, attempt) where run_id = ?",
                            [run.id])
    assert len(calls) == 10 and sum(c["tokens"] for c in calls) == 1000
    assert len({c["node"] for c in calls}) == 2
    kinds = {i.kind for i in run.interrupts()}
    assert kinds == {"budget"}
    run.cancel()
    await run.wait(60)

