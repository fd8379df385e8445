"""How agents plug into the engine: three small protocols and the context they receive.

A Director turns the objective into tasks, a Worker does one attempt of one task, a
Strategist judges the attempt. The engine knows nothing else about them, so the
deterministic agents of :mod:`agentorch_nb.testing` and the LLM agents share one path.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from .._proc import CommandResult, run_command
from ..model import Attempt, Task, TaskSpec, Verdict, WorkResult
from .phoenix import phoenix_brief

if TYPE_CHECKING:
    from ..store import Store
    from .dispatch import Engine


@dataclass
class Context:
    """What an agent sees of the run, and how it records what it says."""

    run_id: str
    objective: str
    workspace: Path | None
    task_id: str | None = None
    attempt: int = 0
    history: list[Attempt] = field(default_factory=list)  # earlier attempts, oldest first
    guidance: str | None = None  # a human's words for this attempt
    _engine: Engine | None = field(default=None, repr=False)

    @property
    def store(self) -> Store | None:
        """The run's store (None for a context made outside an engine)."""
        return self._engine.store if self._engine is not None else None

    @property
    def watched(self) -> bool:
        """Someone watches the run live (a dashboard): replies are worth streaming."""
        return self._engine is not None and bool(self._engine.observers)

    def task_ids(self) -> set[str]:
        """The ids of the run's tasks so far."""
        return set(self._engine.tasks) if self._engine is not None else set()

    def log(self, role: str, content: str, **metadata: Any) -> None:
        """Record one message of this agent's conversation (stored in ``messages``)."""
        if self._engine is not None:
            self._engine.record_message(self.task_id, self.attempt, role, content, metadata)

    def stream(self, role: str, text: str) -> None:
        """Show part of a message still being written (a model reply as it streams) to whoever
        watches the run; nothing is stored: ``log`` records the whole message when it is done.
        Safe from any thread: off the engine's loop the chunk is handed over to it."""
        engine = self._engine
        if engine is None:
            return
        loop = engine.loop
        try:
            here = asyncio.get_running_loop()
        except RuntimeError:
            here = None
        if loop is None or here is loop:
            engine.stream_chunk(self.task_id, self.attempt, role, text)
        else:  # observers run on the engine's loop, never beside it
            loop.call_soon_threadsafe(engine.stream_chunk, self.task_id, self.attempt, role, text)

    async def worktree(self, create: bool = True) -> Path | None:
        """This attempt's own git worktree, made on first use from the target branch's tip.
        What the worker leaves there is committed, judged by QA and, if approved, merged.
        With ``create=False``: the worktree if the attempt has one, else None."""
        engine = self._engine
        if engine is None or engine.integration is None:
            if create:
                raise RuntimeError("this run has no git workspace")
            return None
        return await engine.integration.worktree(engine.tasks[self.task_id], self.attempt, create)

    async def diff(self) -> str:
        """What this attempt changed, against where its worktree started."""
        engine = self._engine
        if engine is None or engine.integration is None:
            return ""
        return await engine.integration.diff(engine.tasks[self.task_id], self.attempt)

    def phoenix_brief(self) -> str:
        """The earlier attempts and the human's guidance, as text for a prompt."""
        return phoenix_brief(self.history, self.guidance)

    async def run_command(
        self, argv: Sequence[str], *, cwd: str | Path | None = None, timeout: float | None = None
    ) -> CommandResult:
        """Run a subprocess in its own process group; cancelling the attempt kills the group."""
        return await run_command(argv, cwd=cwd or self.workspace, timeout=timeout)


@runtime_checkable
class Director(Protocol):
    async def plan(self, objective: str, ctx: Context) -> list[TaskSpec]: ...


@runtime_checkable
class Worker(Protocol):
    async def run(self, task: Task, ctx: Context) -> WorkResult: ...


@runtime_checkable
class Strategist(Protocol):
    async def review(self, task: Task, result: WorkResult, ctx: Context) -> Verdict: ...


@dataclass
class Agents:
    """The team a run uses."""

    director: Director
    worker: Worker
    strategist: Strategist
