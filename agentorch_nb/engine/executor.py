"""Where attempts run: the seam between the engine and the place that does the work.

The engine keeps the graph, the store, the merges and the human loop wherever it runs; an
executor carries out the middle of each attempt (:func:`.pipeline.work_and_judge`: the
worker, the commit, QA). ``Config(executor=None)`` runs it in the engine's own process, as
:class:`LocalExecutor`; :class:`agentorch_nb.distributed.RayExecutor` runs it on a Ray
cluster. An executor is configuration and may serve many runs: ``bind(engine)`` gives the
session of one run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..exceptions import InvalidInput
from ..model import Attempt, Task, TaskStatus, WorkResult
from .pipeline import work_and_judge

if TYPE_CHECKING:
    from .dispatch import Engine
    from .protocols import Context


class Session:
    """One run's use of an executor. ``paused`` holds a reason while no attempt may start
    (a cluster out of reach); the engine starts none until it is None again."""

    paused: str | None = None

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def start(self) -> None:
        """Before the run plans: connect, warm up. Must not block the loop."""

    async def close(self) -> None:
        """The run has ended (or this process stops driving it)."""

    def limiter(self) -> Any:
        """The rate limiter and budget keeper of the run's LLM calls: None for the
        process-wide one."""
        return None

    def uses_checkpoints(self) -> bool:
        """Do the engine's checkpoints (the store) see the attempts' graph steps?"""
        return True

    async def attempt(self, task: Task, attempt: Attempt, ctx: Context) -> tuple[WorkResult, str | None]:
        raise NotImplementedError


class LocalSession(Session):
    async def attempt(self, task: Task, attempt: Attempt, ctx: Context) -> tuple[WorkResult, str | None]:
        engine = self.engine
        return await work_and_judge(
            engine.agents, engine.integration, task, attempt, ctx, engine.config,
            lambda: engine.move(task.id, TaskStatus.AWAITING_QA))


class LocalExecutor:
    """Attempts run in the engine's process, on its loop (the default)."""

    def describe(self) -> dict[str, Any]:
        return {"kind": "local"}

    def bind(self, engine: Engine) -> Session:
        return LocalSession(engine)


LOCAL = LocalExecutor()


def executor_from_dict(data: dict[str, Any]) -> Any:
    """The executor a stored config names (``describe()``'s output)."""
    kind = data.get("kind")
    if kind == "local":
        return None
    if kind == "ray":
        from ..distributed import RayExecutor  # imports ray only when it starts

        return RayExecutor.from_dict(data)
    raise InvalidInput(f"unknown executor {data!r} in the stored config: 'local' or 'ray'")
