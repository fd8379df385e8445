"""A run driven by its own process, for the cross-process tests.

    python child_run.py SCENARIO REPO JOURNAL

prints the run id on its first line, then drives the run to the end.
"""

import sys

BUSY = 120  # tasks that keep the engine writing for about six seconds

import agentorch_nb as ao
from agentorch_nb.testing import Agents, TestDirector, TestStrategist, TestWorker, random_dag


def needs_human(task, ctx):
    if task.title == "needs a human" and not ctx.guidance:
        return "cannot choose between the two designs alone"
    return None


def scenario(name: str, journal: str) -> tuple[list[ao.TaskSpec], TestWorker, ao.Config]:
    if name == "hitl":
        specs = [ao.TaskSpec("needs a human", max_retries=0)] + [
            ao.TaskSpec(f"busy {i}") for i in range(BUSY)]
        worker = TestWorker(latency=0.1, fail=needs_human, journal=journal)
        return specs, worker, ao.Config(max_concurrent_workers=2, flush_interval=0.02)
    if name == "crash":
        worker = TestWorker(latency=0.15, journal=journal)
        return random_dag(30, seed=11, max_deps=2), worker, ao.Config(max_concurrent_workers=3)
    if name == "merge-crash":
        return ([ao.TaskSpec("first"), ao.TaskSpec("second")], FileWorker(journal),
                ao.Config(max_concurrent_workers=2))
    raise SystemExit(f"unknown scenario {name}")


class FileWorker:
    """Writes <title>.txt into its worktree; the two tasks diverge, so the second merge is
    a real merge commit (and runs git's pre-merge-commit hook)."""

    def __init__(self, journal):
        self.journal = journal

    async def run(self, task, ctx):
        root = await ctx.worktree()
        (root / f"{task.title}.txt").write_text(f"{task.title}\n")
        with open(self.journal, "a") as f:
            f.write(f"{task.id} {ctx.attempt}\n")
        return ao.WorkResult(f"wrote {task.title}.txt")


def main() -> None:
    name, repo, journal = sys.argv[1:4]
    specs, worker, config = scenario(name, journal)
    orch = ao.Orchestrator(repo, config=config,
                           agents=Agents(TestDirector(specs), worker, TestStrategist()))
    run = orch.start(f"{name} scenario")
    print(run.id, flush=True)
    status = run.wait_sync(120, stop_on_pause=False)
    print(status.value, flush=True)


if __name__ == "__main__":
    main()
