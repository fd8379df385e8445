"""A run driven by its own process, for tests/integration/test_remote_channel.py.

    python remote_child.py REPO DIR

prints the run id, then drives the run to its end. t1 and t2 fail until a human gives
guidance (``max_retries=0``: they wait for one), t3 waits for t2, t4 and t5 just work. While
it runs, a thread answers ``DIR/dump`` (a file the test touches) by writing the engine's own
view of the run, ``run.tasks`` and ``run.interrupts()`` of this process, to ``DIR/view.json``.
"""

import dataclasses
import json
import sys
import threading
import time
from pathlib import Path

import agentorch_nb as ao
from agentorch_nb.testing import Agents, TestDirector, TestStrategist, TestWorker

SPECS = [ao.TaskSpec("ask", key="a1", max_retries=0), ao.TaskSpec("ask", key="a2", max_retries=0),
         ao.TaskSpec("after t2", depends_on=["a2"]), ao.TaskSpec("plain"), ao.TaskSpec("plain")]


def needs_human(task, ctx):
    return "cannot choose alone" if task.title == "ask" and not ctx.guidance else None


def agents() -> Agents:
    return Agents(TestDirector(SPECS), TestWorker(latency=0.05, fail=needs_human), TestStrategist())


def view(run) -> dict:
    return {"tasks": [dataclasses.asdict(t) for t in run.tasks],
            "interrupts": [dataclasses.asdict(i) for i in run.interrupts()]}


def main() -> None:
    repo, folder = Path(sys.argv[1]), Path(sys.argv[2])
    orch = ao.Orchestrator(repo, agents=agents())
    run = orch.start("remote channel scenario")
    print(run.id, flush=True)

    def answer_dumps() -> None:
        while True:
            request = folder / "dump"
            if request.exists():
                (folder / "view.tmp").write_text(json.dumps(view(run), default=str))
                (folder / "view.tmp").rename(folder / "view.json")
                request.unlink()
            time.sleep(0.05)

    threading.Thread(target=answer_dumps, daemon=True).start()
    print(run.wait_sync(600, stop_on_pause=False).value, flush=True)


if __name__ == "__main__":
    main()
