"""Every error agentorch_nb raises on purpose is an :class:`AgentorchError`.

Messages say what went wrong and what to do about it. A run that ends on an exception stores
:func:`failure_record` of it: the reason first, then the traceback, which
:func:`failure_reason` cuts off again for the places that show the reason alone.

>>> failure_reason(failure_record(ValueError("no plan")))
'ValueError: no plan'
"""

from __future__ import annotations

import logging
import traceback

# Where the traceback begins in a stored run error (runs.error).
TRACEBACK_START = "\n\nTraceback (most recent call last):"


def _s(value: object) -> str:
    return str(getattr(value, "value", value))


class AgentorchError(Exception):
    """Base class of the package's own errors."""


class InvalidInput(AgentorchError, ValueError):
    """An argument was refused before anything changed."""


class ModelNotReady(InvalidInput):
    """A model the run needs cannot be called as things are (a key not set, a provider
    litellm does not know, an endpoint that does not answer): preflight refused the run
    before anything was created. ``problems`` holds the failed check of each such model
    (its ``model``, ``roles``, ``detail`` and ``fix``)."""

    def __init__(self, message: str, problems: list | tuple = ()) -> None:
        self.problems = list(problems)
        super().__init__(message)


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


def failure_record(exc: BaseException) -> str:
    """What a run stores about the exception that ended it: ``Type: message``, then a blank
    line and the traceback (when it has one)."""
    reason = f"{type(exc).__name__}: {exc}"
    if exc.__traceback__ is None:
        return reason
    return f"{reason}\n\n{''.join(traceback.format_exception(exc)).rstrip()}"


def report_failure(exc: BaseException, log: logging.Logger, run_id: str, store: object) -> str:
    """Log that run ``run_id`` failed on ``exc`` in one line, saying where the traceback is
    (at DEBUG, and in the store); return the :func:`failure_record` to store in runs.error."""
    error = failure_record(exc)
    log.error("run %s failed: %s (the traceback: run.summary()['error'], or runs.error in %s)",
              run_id, " ".join(failure_reason(error).split()), store)
    log.debug("run %s failed", run_id, exc_info=exc)
    return error


def failure_reason(error: str | None) -> str | None:
    """The reason of a stored run error, without its traceback."""
    return error.split(TRACEBACK_START, 1)[0] if error else error
