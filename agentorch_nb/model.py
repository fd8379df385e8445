"""The task model: statuses, the one transitions table, and the records a run keeps.

>>> check_transition("t1", TaskStatus.PLANNED, TaskStatus.READY)
>>> check_transition("t1", TaskStatus.COMPLETE, TaskStatus.READY)
Traceback (most recent call last):
...
agentorch_nb.exceptions.InvalidTransition: task 't1' cannot move from 'complete' to 'ready'
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as _dt
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from .exceptions import InvalidTransition


class TaskStatus(StrEnum):
    PLANNED = "planned"
    READY = "ready"
    ACTIVE = "active"
    AWAITING_QA = "awaiting_qa"
    COMPLETE = "complete"
    FAILED = "failed"
    WAITING_HUMAN = "waiting_human"
    ABANDONED = "abandoned"

    @property
    def terminal(self) -> bool:
        return self in (TaskStatus.COMPLETE, TaskStatus.ABANDONED)


class RunStatus(StrEnum):
    RUNNING = "running"
    PAUSED = "paused"  # nothing can move until a human answers
    CANCELLED = "cancelled"
    COMPLETED = "completed"
    FAILED = "failed"

    @property
    def finished(self) -> bool:
        return self in (RunStatus.CANCELLED, RunStatus.COMPLETED, RunStatus.FAILED)


class Profile(StrEnum):
    PLAN = "plan"
    CODE = "code"
    TEST = "test"
    TEST_ARCHITECT = "test_architect"
    RESEARCH = "research"
    WRITE = "write"
    MERGE = "merge"


class Outcome(StrEnum):
    """How one attempt ended."""

    APPROVED = "approved"
    REJECTED = "rejected"  # the Strategist said no
    ERROR = "error"  # the worker raised
    TIMEOUT = "timeout"
    INTERRUPTED = "interrupted"  # a human, a cancel, or a dead engine process stopped it


class Interruption(StrEnum):
    """Who stopped an attempt whose outcome is ``interrupted``."""

    HUMAN = "human"  # run.interrupt(): the task goes to a human
    ABANDONED = "abandoned"  # the task was abandoned while it ran
    CANCELLED = "cancelled"  # the run was cancelled
    ENGINE_DIED = "engine_died"  # the process driving the run ended; the next attempt may continue it
    NODE_LOST = "node_lost"  # the cluster node running it died; Phoenix retries it elsewhere
    CLUSTER_LOST = "cluster_lost"  # the cluster went out of reach; it starts again, no retry used


S = TaskStatus
# The only place that says which status may follow which. Everything that moves a
# task goes through check_transition().
TRANSITIONS: dict[TaskStatus, frozenset[TaskStatus]] = {
    S.PLANNED: frozenset({S.READY, S.WAITING_HUMAN, S.ABANDONED}),
    S.READY: frozenset({S.ACTIVE, S.PLANNED, S.WAITING_HUMAN, S.ABANDONED}),
    S.ACTIVE: frozenset({S.AWAITING_QA, S.FAILED, S.WAITING_HUMAN, S.ABANDONED}),
    S.AWAITING_QA: frozenset({S.COMPLETE, S.FAILED, S.WAITING_HUMAN, S.ABANDONED}),
    S.FAILED: frozenset({S.READY, S.PLANNED, S.WAITING_HUMAN, S.ABANDONED}),
    S.WAITING_HUMAN: frozenset({S.READY, S.PLANNED, S.ABANDONED}),
    S.COMPLETE: frozenset(),
    S.ABANDONED: frozenset(),
}
del S


def check_transition(task_id: str, from_status: TaskStatus, to_status: TaskStatus) -> None:
    """Raise :class:`InvalidTransition` unless the table allows ``from_status -> to_status``."""
    if to_status not in TRANSITIONS[TaskStatus(from_status)]:
        raise InvalidTransition(task_id, from_status, to_status)


def utcnow() -> _dt.datetime:
    """Naive UTC timestamps: what the store keeps (DuckDB TIMESTAMP, no time-zone extension)."""
    return _dt.datetime.now(_dt.UTC).replace(tzinfo=None)


@dataclass
class TaskSpec:
    """What a Director, a planner task or a human asks for; the engine turns it into a Task.

    ``depends_on`` names task ids of the run, or the ``key`` of another spec in the same batch.
    """

    title: str
    description: str = ""
    acceptance_criteria: list[str] = field(default_factory=list)
    profile: Profile | str = Profile.CODE
    depends_on: list[str] = field(default_factory=list)
    phase: str = ""
    key: str | None = None
    max_retries: int | None = None


@dataclass
class Task:
    id: str
    run_id: str
    title: str
    description: str = ""
    acceptance_criteria: list[str] = field(default_factory=list)
    profile: Profile = Profile.CODE
    phase: str = ""
    depends_on: list[str] = field(default_factory=list)
    status: TaskStatus = TaskStatus.PLANNED
    attempts: int = 0  # attempts started, all time
    retries_used: int = 0  # failed attempts since the budget last started afresh
    max_retries: int = 4
    branch: str | None = None
    worktree: str | None = None
    result_summary: str | None = None
    qa_verdict: str | None = None
    qa_feedback: str | None = None
    guidance: str | None = None  # a human's words for the next attempt
    status_reason: str | None = None
    created_by: str | None = None  # director, a planner task id, or a human source
    # A merge task: the approved commit it integrates. Each attempt starts from this commit
    # with the target's current tip merged in.
    merge_source: str | None = None
    created_at: _dt.datetime = field(default_factory=utcnow)
    updated_at: _dt.datetime = field(default_factory=utcnow)

    def _repr_html_(self) -> str:
        from .render import task_html  # here: render imports this module

        return task_html(self)

    def _repr_markdown_(self) -> str:
        from .render import task_markdown

        return task_markdown(self)

    def copy(self) -> Task:
        twin = copy.copy(self)
        twin.acceptance_criteria = list(self.acceptance_criteria)
        twin.depends_on = list(self.depends_on)
        return twin


@dataclass
class Attempt:
    run_id: str
    task_id: str
    number: int
    started_at: _dt.datetime
    finished_at: _dt.datetime | None = None
    outcome: Outcome | None = None
    failure_reason: str | None = None
    interruption: Interruption | None = None  # set when outcome is INTERRUPTED
    summary: str | None = None
    qa_feedback: str | None = None
    guidance: str | None = None  # what the human had said when this attempt started
    # The attempt's worktree, recorded once git made it whole: its branch and the target
    # commit it was cut from. An attempt without them never had a usable worktree.
    branch: str | None = None
    base_sha: str | None = None
    commit_sha: str | None = None  # the attempt's commit, when it changed anything
    diff: str | None = None  # what that commit changed against where the attempt started
    node: str | None = None  # the cluster node it ran on (None: the engine's own process)


@dataclass
class Interrupt:
    id: str
    run_id: str
    task_id: str
    reason: str
    kind: str  # "retries_exhausted", "dependency_abandoned", "human", "budget"
    created_at: _dt.datetime = field(default_factory=utcnow)
    context: dict[str, Any] = field(default_factory=dict)
    resolved_by: str | None = None  # resolution id


@dataclass
class WorkResult:
    """What a worker hands back. ``ok=False`` is a failed attempt with ``error`` as the reason.

    ``new_tasks`` lets a ``plan`` task add work to the run when it is approved.
    """

    summary: str = ""
    ok: bool = True
    error: str | None = None
    artifacts: list[str] = field(default_factory=list)
    new_tasks: list[TaskSpec] = field(default_factory=list)


@dataclass
class Verdict:
    approved: bool
    feedback: str = ""
