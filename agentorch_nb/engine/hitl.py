"""Human-in-the-loop: resolutions of waiting tasks, interrupts and live edits of a run.

Every way a person (or another program) steers a run ends here, in :func:`apply`, whether
the call came from Python in the same kernel, a widget, another process through the store's
command inbox, or the REST API. Each command is validated completely before anything
changes, so a refused command changes nothing; an applied one is recorded as events (and,
for resolutions, a ``resolutions`` row naming its source).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from ..exceptions import InvalidInput, ResolutionError
from ..model import Interruption, TaskSpec, TaskStatus, utcnow
from ..store.records import interrupt_row
from .dispatch import Engine

S = TaskStatus
ACTIONS = ("retry", "abandon", "spawn")
OPEN = (S.PLANNED, S.READY, S.FAILED, S.WAITING_HUMAN)


@dataclass
class Resolution:
    id: str
    task_id: str
    action: str
    source: str
    new_task_id: str | None = None
    payload: dict[str, Any] = field(default_factory=dict)


def apply(engine: Engine, kind: str, payload: dict[str, Any], source: str) -> Any:
    """Apply one command to a live engine; raise (changing nothing) when it is refused."""
    handler = COMMANDS.get(kind)
    if handler is None:
        raise InvalidInput(f"unknown command {kind!r}; known: {sorted(COMMANDS)}")
    if engine.status.finished and kind not in ("replan",):
        raise ResolutionError(
            f"run {engine.run_id} is {engine.status.value}; run.restart() resumes it first"
        )
    result = handler(engine, source=source, **payload)
    engine.wake()
    return result


def resolve(engine: Engine, task_id: str, action: str, *, source: str = "api",
            description: str | None = None, acceptance_criteria: list[str] | None = None,
            guidance: str | None = None, title: str | None = None, profile: str | None = None,
            depends_on: list[str] | None = None, replace: bool = True,
            drop_dependency: bool = False, cascade: bool = False) -> Resolution:
    if action not in ACTIONS:
        raise InvalidInput(f"unknown resolution {action!r}; use one of {ACTIONS}")
    task = engine.require(task_id, S.WAITING_HUMAN, doing=f"resolve ({action})")
    payload = {k: v for k, v in dict(
        description=description, acceptance_criteria=acceptance_criteria, guidance=guidance,
        title=title, profile=profile, depends_on=depends_on).items() if v is not None}
    res = Resolution(f"res-{uuid.uuid4().hex[:8]}", task_id, action, source, payload=payload)
    if action == "retry":
        if acceptance_criteria is not None and not all(str(c).strip() for c in acceptance_criteria):
            raise InvalidInput("acceptance criteria must not be empty strings")
        _edit(engine, task, description, acceptance_criteria, guidance)
        _restart_budget(engine, task, "retry requested by a human")
    elif action == "abandon":
        _abandon(engine, task_id, drop_dependency=drop_dependency, cascade=cascade,
                 reason=f"abandoned by the {source[7:]} policy" if source.startswith("policy:")
                 else "abandoned by a human")
        payload.update(drop_dependency=drop_dependency, cascade=cascade)
    else:
        res.new_task_id = _spawn(engine, task, title, description, acceptance_criteria,
                                 profile, depends_on or [], replace, source)
        payload.update(replace=replace, new_task_id=res.new_task_id)
    _record(engine, res)
    return res


def _edit(engine: Engine, task, description, criteria, guidance) -> None:
    changes = {}
    if description is not None:
        task.description = changes["description"] = description
    if criteria is not None:
        task.acceptance_criteria = changes["acceptance_criteria"] = list(criteria)
    if guidance is not None:
        task.guidance = changes["guidance"] = guidance
    if changes:
        engine.record_event("task_edited", task.id, **changes)


def _restart_budget(engine: Engine, task, reason: str) -> None:
    task.retries_used = 0
    engine.budget_hold = False  # a human chose to go on
    engine.move(task.id, S.PLANNED, reason)


def _abandon(engine: Engine, task_id: str, *, drop_dependency: bool, cascade: bool,
             reason: str) -> None:
    dependents = engine.graph.dependents(task_id)
    victims = []
    if cascade:
        below = engine.graph.descendants(task_id)
        victims = [t for t in engine.graph.topological_order()
                   if t in below and not engine.tasks[t].status.terminal]
    if drop_dependency:
        for dep in dependents:
            _unlink(engine, dep, task_id)
    task = engine.tasks[task_id]
    if task.status in (S.ACTIVE, S.AWAITING_QA):
        engine.stop_attempt(task_id, Interruption.ABANDONED)
    else:
        engine.move(task_id, S.ABANDONED, reason)
    for t in victims:
        if engine.tasks[t].status in (S.ACTIVE, S.AWAITING_QA):
            engine.stop_attempt(t, Interruption.ABANDONED)
        else:
            engine.move(t, S.ABANDONED, f"{reason} (depends on {task_id})")
        _close_interrupt(engine, t, None)


def _spawn(engine: Engine, task, title, description, criteria, profile, depends_on,
           replace: bool, source: str) -> str:
    if not title or not str(title).strip():
        raise InvalidInput("spawn needs a title for the new task")
    downstream = engine.graph.descendants(task.id) | {task.id}
    loop = sorted(set(depends_on) & downstream)
    if loop:
        raise ResolutionError(
            f"the new task cannot depend on {', '.join(loop)}: that waits for {task.id}, "
            "so the new task would wait for itself"
        )
    spec = TaskSpec(title=title, description=description or "",
                    acceptance_criteria=list(criteria or task.acceptance_criteria),
                    profile=profile or task.profile, depends_on=list(depends_on),
                    phase=task.phase)
    (new,) = engine.add_tasks([spec], created_by=source)
    if replace:
        for dep in engine.graph.dependents(task.id):
            _unlink(engine, dep, task.id)
            _link(engine, dep, new.id)
        engine.move(task.id, S.ABANDONED, f"replaced by {new.id}")
    else:
        _link(engine, task.id, new.id)
        _restart_budget(engine, task, f"waits for {new.id}, spawned by a human")
    return new.id


def _link(engine: Engine, task_id: str, depends_on: str) -> None:
    engine.graph.add_dependency(task_id, depends_on)
    engine.record_dependencies(task_id, "dep_added", depends_on)
    if engine.tasks[task_id].status == S.READY and engine.tasks[depends_on].status != S.COMPLETE:
        engine.move(task_id, S.PLANNED, f"now waits for {depends_on}")


def _unlink(engine: Engine, task_id: str, depends_on: str) -> None:
    engine.graph.remove_dependency(task_id, depends_on)
    engine.record_dependencies(task_id, "dep_removed", depends_on)
    engine.mark_dirty(task_id)


def _record(engine: Engine, res: Resolution) -> None:
    interrupt_id = _close_interrupt(engine, res.task_id, res.id)
    engine.store.upsert("resolutions", {
        "run_id": engine.run_id, "resolution_id": res.id, "task_id": res.task_id,
        "ts": utcnow(), "action": res.action, "payload": res.payload, "source": res.source,
        "interrupt_id": interrupt_id})
    engine.record_event("resolution", res.task_id, resolution_id=res.id, action=res.action,
                 source=res.source, new_task_id=res.new_task_id)


def _close_interrupt(engine: Engine, task_id: str, resolution_id: str | None) -> str | None:
    it = engine.open_interrupts.pop(task_id, None)
    if it is None:
        return None
    it.resolved_by = resolution_id
    engine.store.upsert("interrupts", interrupt_row(it, resolved_at=utcnow()))
    return it.id


# --------------------------------------------------------------- other commands
def interrupt(engine: Engine, task_id: str, *, source: str = "api") -> None:
    engine.require(task_id, S.ACTIVE, S.AWAITING_QA, doing="interrupt")
    engine.record_event("interrupt_requested", task_id, source=source)
    engine.stop_attempt(task_id, Interruption.HUMAN)


def abandon_task(engine: Engine, task_id: str, *, source: str = "api",
                 drop_dependency: bool = False, cascade: bool = False) -> None:
    engine.require(task_id, *OPEN, S.ACTIVE, S.AWAITING_QA, doing="abandon")
    _abandon(engine, task_id, drop_dependency=drop_dependency, cascade=cascade,
             reason=f"abandoned ({source})")
    _close_interrupt(engine, task_id, None)


def add_dependency(engine: Engine, task_id: str, depends_on: str, *, source: str = "api") -> None:
    engine.task(depends_on)
    engine.require(task_id, *OPEN, doing="add a dependency to")
    if depends_on in engine.graph.dependencies(task_id):
        return
    _link(engine, task_id, depends_on)


def remove_dependency(engine: Engine, task_id: str, depends_on: str, *, source: str = "api") -> None:
    engine.task(depends_on)
    engine.require(task_id, *OPEN, doing="remove a dependency of")
    _unlink(engine, task_id, depends_on)


def replan(engine: Engine, *, source: str = "api") -> None:
    """Re-examine every task's readiness after edits."""
    for tid, task in engine.tasks.items():
        if task.status == S.READY and engine.graph.blocked_by(
                tid, {t: x.status for t, x in engine.tasks.items()}):
            engine.move(tid, S.PLANNED, "replan: a dependency is not complete")
        elif task.status == S.PLANNED:
            engine.mark_dirty(tid)
    engine.record_event("replan", None, source=source)


def cancel(engine: Engine, *, source: str = "api") -> None:
    engine.record_event("cancel_requested", None, source=source)
    engine.cancel()


COMMANDS = {
    "resolve": resolve,
    "interrupt": interrupt,
    "abandon_task": abandon_task,
    "add_dependency": add_dependency,
    "remove_dependency": remove_dependency,
    "replan": replan,
    "cancel": cancel,
}
