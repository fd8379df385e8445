"""A run driven by its own process, for the cross-process tests.

    python child_run.py SCENARIO REPO JOURNAL

prints the run id on its first line, then drives the run to the end. In this process the
workers have gates (``scenario(..., gated=True)``) that stop the run at the point a test
wants to catch it; the test resumes with the plain workers.
"""

import asyncio
import sys
from pathlib import Path

BUSY = 120  # tasks that keep the engine writing for about six seconds
HELD_AFTER = 8  # "crash": worker calls that finish; every later one holds until the kill

import agentorch_nb as ao
from agentorch_nb.testing import Agents, TestDirector, TestStrategist, TestWorker, random_dag


def needs_human(task, ctx):
    if task.title == "needs a human" and not ctx.guidance:
        return "cannot choose between the two designs alone"
    return None


def scenario(name: str, journal: str, gated: bool = False) -> tuple[list[ao.TaskSpec], object, ao.Config]:
    if name == "hitl":
        specs = [ao.TaskSpec("needs a human", max_retries=0)] + [
            ao.TaskSpec(f"busy {i}") for i in range(BUSY)]
        worker = TestWorker(latency=0.1, fail=needs_human, journal=journal)
        return specs, worker, ao.Config(max_concurrent_workers=2, flush_interval=0.02)
    if name == "crash":
        worker = TestWorker(latency=0.15, journal=journal)
        if gated:
            worker = HoldAfter(worker, HELD_AFTER, held_marker(journal))
        return random_dag(30, seed=11, max_deps=2), worker, ao.Config(max_concurrent_workers=3)
    if name == "merge-crash":
        return ([ao.TaskSpec("first"), ao.TaskSpec("second")], FileWorker(journal, meet=gated),
                ao.Config(max_concurrent_workers=2))
    raise SystemExit(f"unknown scenario {name}")


def held_marker(journal: str) -> Path:
    """The file a held worker call writes its task id to."""
    return Path(f"{journal}.held")


class HoldAfter:
    """The first ``n`` calls go to ``worker``; every later call writes its task id to
    ``marker`` and never returns, so the run stands still with attempts in flight until
    the test kills the process."""

    def __init__(self, worker, n: int, marker: Path):
        self.worker, self.n, self.marker, self.calls = worker, n, marker, 0

    async def run(self, task, ctx):
        self.calls += 1
        if self.calls <= self.n:
            return await self.worker.run(task, ctx)
        with self.marker.open("a") as f:
            f.write(f"{task.id}\n")
        await asyncio.Event().wait()


class FileWorker:
    """Writes <title>.txt into its worktree; the two tasks diverge, so the second merge is
    a real merge commit (and runs git's pre-merge-commit hook). With ``meet``, the first
    attempts wait for each other's worktree, so both surely start from the same tip."""

    def __init__(self, journal, meet: bool = False):
        self.journal = journal
        self.waiting = 2 if meet else 0
        self.met = asyncio.Event()

    async def run(self, task, ctx):
        root = await ctx.worktree()
        if self.waiting and ctx.attempt == 1:
            self.waiting -= 1
            if not self.waiting:
                self.met.set()
            await self.met.wait()
        (root / f"{task.title}.txt").write_text(f"{task.title}\n")
        with open(self.journal, "a") as f:
            f.write(f"{task.id} {ctx.attempt}\n")
        return ao.WorkResult(f"wrote {task.title}.txt")


def main() -> None:
    name, repo, journal = sys.argv[1:4]
    specs, worker, config = scenario(name, journal, gated=True)
    orch = ao.Orchestrator(repo, config=config,
                           agents=Agents(TestDirector(specs), worker, TestStrategist()))
    run = orch.start(f"{name} scenario")
    print(run.id, flush=True)
    status = run.wait_sync(600, stop_on_pause=False)  # the test decides when to give up
    print(status.value, flush=True)


if __name__ == "__main__":
    main()
