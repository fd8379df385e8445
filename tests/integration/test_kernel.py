"""In a real Jupyter kernel: the run lives on the kernel's loop, the cell that starts it
returns at once, and the run makes progress while the kernel sits idle between cells."""

import os
import time
from pathlib import Path

import pytest
from jupyter_client.manager import start_new_kernel

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def execute(kc, code: str, timeout: float = 60) -> str:
    msg_id = kc.execute(code)
    out = []
    while True:
        msg = kc.get_iopub_msg(timeout=timeout)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        kind, content = msg["msg_type"], msg["content"]
        if kind == "stream":
            out.append(content["text"])
        elif kind == "execute_result":
            out.append(content["data"]["text/plain"])
        elif kind == "error":
            raise AssertionError("\n".join(content["traceback"]))
        elif kind == "status" and content["execution_state"] == "idle":
            return "".join(out)


def test_run_progresses_while_the_kernel_is_idle(repo):
    km, kc = start_new_kernel(kernel_name="python3", env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        execute(kc, f"""
import time, asyncio, agentorch_nb as ao
from agentorch_nb.testing import Agents, TestDirector, TestWorker, TestStrategist, random_dag
orch = ao.Orchestrator({str(repo)!r}, agents=Agents(TestDirector(random_dag(20, seed=2)),
                       TestWorker(latency=0.1), TestStrategist()))
t0 = time.perf_counter()
run = orch.start("kernel run")
print("returned after", round(time.perf_counter() - t0, 3))
print(asyncio.get_running_loop() is run.engine.loop)
""")
        started = time.monotonic()
        # The kernel is idle now: no cell runs. The run must still advance.
        time.sleep(6)
        out = execute(kc, "print(run.status.value, run.summary()['counts']['complete'])")
        assert out.split() == ["completed", "20"], out
        assert time.monotonic() - started < 30
        out = execute(kc, "await run.wait(5)")
        assert "COMPLETED" in out
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_a_cell_runs_at_once_while_five_workers_are_busy(repo):
    km, kc = start_new_kernel(kernel_name="python3", env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        execute(kc, f"""
import agentorch_nb as ao
from agentorch_nb.testing import Agents, TestDirector, TestWorker, TestStrategist, random_dag
orch = ao.Orchestrator({str(repo)!r}, agents=Agents(TestDirector(random_dag(60, seed=4, max_deps=1)),
                       TestWorker(latency=0.3), TestStrategist()))
run = orch.start("busy run")
display(run)  # the live dashboard: its updates cross the same channels as the cells
""")
        time.sleep(1.0)
        assert execute(kc, "print(run.summary()['counts']['active'])").strip() == "5"
        execute(kc, "board = run.dashboard(); board.select(board.hitl.active.options[0])")
        timings = []
        for _ in range(10):
            t = time.perf_counter()
            execute(kc, "1 + 1")
            timings.append(time.perf_counter() - t)
        assert max(timings) < 0.1, f"slowest cell round trip {max(timings) * 1000:.0f} ms"
        assert execute(kc, "print(len(board.dag._nodes), board.feed.errors)").strip() == "60 []"
        execute(kc, "run.cancel(); await run.wait(10)")
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
