"""A run in a process of its own, for the crash tests: it is killed, then resumed elsewhere.

    python crash_child.py SCENARIO REPO JOURNAL [--die-after-start]

prints the run id on its first line, then drives the run to its end and prints its status.
The engine's pid is in the environment (ENGINE_PID) for git hooks that kill it.
"""

import os
import signal
import sys

import agentorch_nb as ao
from agentorch_nb.testing import Agents, FileWorker, TestDirector, TestStrategist


def scenario(name: str, journal: str) -> tuple[list[ao.TaskSpec], FileWorker, ao.Config]:
    """``files``: three tasks each adding a file of its own (the last two in parallel, so
    one of them lands as a merge commit); ``one``: a single task adding one file."""
    worker = FileWorker(lambda task: {f"{task.title}.txt": f"{task.title}\n"}, journal)
    if name == "files":
        specs = [ao.TaskSpec("first"), ao.TaskSpec("second", depends_on=["k1"]),
                 ao.TaskSpec("third", depends_on=["k1"])]
        specs[0].key = "k1"
        return specs, worker, ao.Config(max_concurrent_workers=2, max_retries=2)
    if name == "one":
        return [ao.TaskSpec("only")], worker, ao.Config(max_retries=2)
    raise SystemExit(f"unknown scenario {name}")


def agents(name: str, journal: str) -> Agents:
    specs, worker, _ = scenario(name, journal)
    return Agents(TestDirector(specs), worker, TestStrategist())


def main() -> None:
    name, repo, journal = sys.argv[1:4]
    os.environ["ENGINE_PID"] = str(os.getpid())
    specs, worker, config = scenario(name, journal)
    orch = ao.Orchestrator(repo, config=config,
                           agents=Agents(TestDirector(specs), worker, TestStrategist()))
    run = orch.start(f"{name} scenario")
    print(run.id, flush=True)
    if "--die-after-start" in sys.argv:
        os.kill(os.getpid(), signal.SIGKILL)
    print(run.wait_sync(120, stop_on_pause=False).value, flush=True)


if __name__ == "__main__":
    main()
