"""An engine in a process of its own, driving a run whose attempts run on a Ray cluster, for
the test that kills it and resumes the run elsewhere.

    python ray_child.py ADDRESS REPO WORK_DIR PIDFILE

joins the cluster at ADDRESS (``ray://`` for Ray Client), prints the run id on its first line,
and drives the run to its end. Task t2's first attempt starts a command that sleeps, writes
its pid to PIDFILE and never ends.
"""

import asyncio
import sys

import ray

import agentorch_nb as ao
from agentorch_nb.distributed import RayExecutor
from agentorch_nb.testing import Agents, FileWorker, TestDirector, TestStrategist


class StuckOnce(FileWorker):
    def __init__(self, pidfile: str) -> None:
        super().__init__(lambda task: {f"{task.id}.txt": f"{task.title}\n"})
        self.pidfile = pidfile

    async def run(self, task, ctx):
        if task.id == "t2" and ctx.attempt == 1:
            root = await ctx.worktree()
            ctx.log("user", "stuck")
            await ctx.run_command(["sh", "-c", f"sleep 600 & echo $! > {self.pidfile}; wait"],
                                  cwd=root, timeout=900)
        return await super().run(task, ctx)


def agents(pidfile: str) -> Agents:
    specs = [ao.TaskSpec("one"), ao.TaskSpec("two"), ao.TaskSpec("three", depends_on=["t1", "t2"])]
    return Agents(TestDirector(specs), StuckOnce(pidfile), TestStrategist())


def config(executor: RayExecutor) -> ao.Config:
    return ao.Config(executor=executor, max_retries=2, flush_interval=0.01)


async def main() -> None:
    address, repo, work_dir, pidfile = sys.argv[1:5]
    if address.startswith("ray://"):  # the executor connects, as it would for a user
        executor = RayExecutor(address, namespace="agentorch-tests", work_dir=work_dir)
    else:
        ray.init(address=address, namespace="agentorch-tests", log_to_driver=False)
        executor = RayExecutor(work_dir=work_dir)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    orch = ao.Orchestrator(repo, config=config(executor), agents=agents(pidfile))
    run = orch.start("files, one of them stuck")
    print(run.id, flush=True)
    await run.wait()


if __name__ == "__main__":
    asyncio.run(main())
