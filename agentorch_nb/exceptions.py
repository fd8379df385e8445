"""Every error agentorch_nb raises on purpose is an :class:`AgentorchError`.

Messages say what went wrong and what to do about it.
"""

from __future__ import annotations


def _s(value: object) -> str:
    return str(getattr(value, "value", value))


class AgentorchError(Exception):
    """Base class of the package's own errors."""


class InvalidInput(AgentorchError, ValueError):
    """An argument was refused before anything changed."""


class InvalidTransition(AgentorchError):
    """A task was asked to move between two statuses the transitions table does not link."""

    def __init__(self, task_id: str, from_status: object, to_status: object) -> None:
        self.task_id = task_id
        self.from_status = from_status
        self.to_status = to_status
        super().__init__(
            f"task {task_id!r} cannot move from {_s(from_status)!r} to {_s(to_status)!r}"
        )


class CycleError(AgentorchError, ValueError):
    """A dependency edit would close a cycle; ``cycle`` lists it."""

    def __init__(self, cycle: list[str]) -> None:
        self.cycle = cycle
        super().__init__(
            "refused: this dependency would close the cycle " + " -> ".join(cycle)
        )


class UnknownTask(AgentorchError, KeyError):
    def __init__(self, task_id: str, run_id: str | None = None) -> None:
        self.task_id = task_id
        where = f" in run {run_id!r}" if run_id else ""
        super().__init__(f"no task {task_id!r}{where}; run.tasks lists the task ids")

    def __str__(self) -> str:  # KeyError would repr() the message
        return self.args[0]


class MissingDependency(AgentorchError, KeyError):
    """A dependency edit named an edge the graph does not have."""

    def __init__(self, task_id: str, depends_on: str) -> None:
        self.task_id, self.depends_on = task_id, depends_on
        super().__init__(f"task {task_id!r} does not depend on {depends_on!r}: there is no "
                         f"{depends_on} -> {task_id} dependency to remove")

    def __str__(self) -> str:
        return self.args[0]


class UnknownRun(AgentorchError, KeyError):
    def __init__(self, run_id: str, store: object) -> None:
        super().__init__(f"no run {run_id!r} in {store}; orch.runs() lists the runs")

    def __str__(self) -> str:
        return self.args[0]


class WorkspaceError(AgentorchError):
    """The workspace is not usable (not a git repository, no commit, ...)."""


class ResolutionError(AgentorchError):
    """A human resolution or a run command was refused; nothing changed."""


class RunBusyElsewhere(AgentorchError):
    """Another live process is driving this run."""


class StoreError(AgentorchError):
    """The store file cannot be used: it is not a DuckDB database, or it is damaged."""


class SchemaTooNew(StoreError):
    """The store was written by a newer agentorch_nb than this one."""


class StoreBusy(AgentorchError):
    """The store file stayed locked by another process for longer than the lock timeout."""


class WrongLoop(AgentorchError, RuntimeError):
    """A synchronous call would block the event loop it was called from."""
