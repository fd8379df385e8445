"""Runs nobody watches: the human-in-the-loop policy, the progress and the machine-readable
result, shared by ``agentorch run`` / ``agentorch resume`` and the batch notebook
(``run_objective.ipynb``).

    outcome = await drive(run, hitl="abandon", hitl_timeout=600, timeout=3600)
    outcome.exit_code, outcome.to_dict()

Policies, for a task that escalates (waits for a human):

- ``wait``: keep going; once nothing else can move (the run is paused), wait up to
  ``hitl_timeout`` seconds for a resolution from elsewhere (``agentorch resolve``, another
  notebook, the REST API); then end with :data:`EXIT_WAITING`, the run left paused and
  resumable, a ``hitl_timeout`` event recorded per waiting task.
- ``abandon``: abandon the task and everything downstream of it at once (a resolution with
  source ``policy:abandon``) and finish the rest.
- ``fail``: cancel the run at the first escalation (a ``cancel_requested`` event with source
  ``policy:fail``); the task keeps waiting, so resolving it and resuming continues the run.
"""

from __future__ import annotations

import asyncio
import dataclasses
import html
import importlib
import importlib.util
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import _loop
from .exceptions import InvalidInput, ResolutionError, failure_reason
from .model import RunStatus, TaskStatus, utcnow
from .render import counts_line

POLICIES = ("wait", "abandon", "fail")
MIME = "application/vnd.agentorch.run+json"
POLL = 0.2  # seconds between looks at the engine: how fast a new escalation is met

EXIT_COMPLETED = 0  # the run completed (tasks a policy or a human abandoned are named)
EXIT_FAILED = 1  # the run failed or was cancelled (hitl=fail cancels it), or a refusal
EXIT_USAGE = 2  # bad arguments: nothing was started
EXIT_WAITING = 3  # the run is paused, waiting for a human, and stays resumable
EXIT_TIMEOUT = 4  # --timeout passed while tasks ran: the run was cancelled, resumable
EXIT_INTERRUPTED = 130  # Ctrl-C: the run was cancelled, resumable


class RunNotCompleted(RuntimeError):
    """What a batch job raises when its run did not complete: the job fails with the message."""


@dataclass
class Snapshot:
    """What the progress shows: counts by status, the active tasks, those that wait, cost."""

    run_id: str
    status: str
    counts: dict[str, int]
    active: list[tuple[str, str]]  # (task id, title)
    waiting: list[str]
    cost_usd: float
    elapsed: float

    def key(self) -> tuple:
        return (self.status, tuple(sorted(self.counts.items())), tuple(self.active), tuple(self.waiting))

    def line(self, width: int | None = None) -> str:
        total = sum(self.counts.values())
        done = self.counts.get("complete", 0) + self.counts.get("abandoned", 0)
        parts = [f"{self.run_id} {self.status}", f"{done}/{total} done"]
        others = {s: n for s, n in self.counts.items() if n and s not in ("complete", "abandoned")}
        if others:
            parts.append(counts_line(others))
        if self.active:
            parts.append("active: " + ", ".join(f"{t} {title[:24]}" for t, title in self.active))
        if self.waiting:
            parts.append("waiting for a human: " + ", ".join(self.waiting))
        minutes, seconds = divmod(int(self.elapsed), 60)
        parts.append(f"${self.cost_usd:.4f} · {minutes}:{seconds:02d}")
        text = " · ".join(parts)
        if width is not None and len(text) > width:
            text = text[:max(width - 1, 0)] + "…"
        return text


@dataclass
class Outcome:
    """How a driven run ended, for people (``text()``) and scripts (``to_dict()``, and the
    ``application/vnd.agentorch.run+json`` output it displays as in a notebook)."""

    run_id: str
    status: str
    hitl: str
    exit_code: int
    message: str
    cost_usd: float
    counts: dict[str, int]
    unfinished: list[dict[str, Any]]  # every task that did not complete: id, title, status, why
    abandoned: list[str]  # tasks the abandon policy abandoned (with their dependents)
    escalations: list[dict[str, Any]]  # each wait for a human: task, why, seconds, who answered
    actions: list[dict[str, Any]]  # what the policy did: abandon, cancel, hitl_timeout, timeout
    elapsed_s: float
    store: str
    workspace: str | None = None
    objective: str = ""
    hitl_timeout: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), default=str)

    def text(self) -> str:
        lines = [self.message,
                 f"tasks: {counts_line(self.counts) or 'none'}; cost ${self.cost_usd:.4f}; "
                 f"{self.elapsed_s:.1f} s; store {self.store}"]
        for t in self.unfinished:
            why = f": {t['reason']}" if t["reason"] else ""
            lines.append(f"  {t['task_id']:<5} {t['status']:<14} {t['title']}{why}")
        for e in self.escalations:
            answer = f"{e['action']} by {e['source']}" if e["action"] else "unanswered"
            lines.append(f"  {e['task_id']} waited {e['waited_s']:.1f} s for a human ({e['kind']}): {answer}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.text()

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict[str, Any]:
        return {MIME: json.loads(self.to_json()), "text/plain": self.text()}

    def check(self) -> None:
        """Raise :class:`RunNotCompleted` with the message unless the run completed."""
        if self.exit_code != EXIT_COMPLETED:
            raise RunNotCompleted(self.message)


# ------------------------------------------------------------------ the driver
async def drive(run, *, hitl: str = "fail", hitl_timeout: float | None = 600.0,
                timeout: float | None = None, progress=None, poll: float = POLL) -> Outcome:
    """Follow a run this process drives to its end, applying the ``hitl`` policy to each
    task that escalates (see the module's docstring), and return the :class:`Outcome`.
    ``progress`` (optional) gets ``update(Snapshot)`` every poll (it throttles what it draws),
    ``note(text)`` for each escalation and policy action, and never ``close()``."""
    check_policy(hitl, hitl_timeout, timeout)
    started, since = time.monotonic(), utcnow()
    seen: set[str] = set()
    actions: list[dict[str, Any]] = []
    abandoned: list[str] = []
    failed_on: list = []
    paused_since: float | None = None
    ending: str | None = None  # None: the run finished by itself
    tasks, counts_key, cost, cost_at = [], None, 0.0, 0.0

    def act(action: str, task_id: str | None, text: str, **extra: Any) -> None:
        actions.append({"action": action, "task_id": task_id, "source": f"policy:{hitl}"
                        if action != "timeout" else "policy:timeout",
                        "after_s": round(time.monotonic() - started, 2), **extra})
        if progress is not None:
            progress.note(text)

    if not run.live and not run.status.finished:
        raise ResolutionError(f"run {run.id} is not driven by this process: "
                              f"`agentorch resume {run.id}` continues it here")
    await inbox_drained(run)
    while run.live:
        now = time.monotonic()
        status = run.status
        interrupts = run.interrupts()
        for it in interrupts:
            if it.id in seen:
                continue
            seen.add(it.id)
            if progress is not None:
                progress.note(f"{it.task_id} waits for a human ({it.kind}): {it.reason}")
            if hitl == "abandon":
                try:
                    run.resolve(it.task_id, "abandon", cascade=True, source="policy:abandon")
                except ResolutionError:
                    continue  # answered meanwhile by someone else
                abandoned.append(it.task_id)
                act("abandon", it.task_id, f"policy abandon: abandoned {it.task_id} and the "
                    "tasks that depend on it")
            elif hitl == "fail" and not failed_on:
                failed_on = list(interrupts)
        if failed_on and ending is None:
            ending = "fail"
            act("cancel", failed_on[0].task_id, f"policy fail: cancelling run {run.id}")
            run.cancel(source="policy:fail")
        if status.finished:
            break
        paused_since = (paused_since or now) if status == RunStatus.PAUSED else None
        if ending is None and paused_since is not None and hitl != "fail" and \
                hitl_timeout is not None and now - paused_since >= hitl_timeout:
            ending = "waiting"
        elif ending is None and timeout is not None and now - started >= timeout:
            ending = "waiting" if status == RunStatus.PAUSED else "timeout"
        if ending == "waiting":
            for it in interrupts:
                waited = round(now - (paused_since or now), 1)
                act("hitl_timeout", it.task_id, f"gave up waiting for a human after {waited:.0f} s: "
                    f"{it.task_id}", waited_s=waited)
                if run.engine is not None:  # in the run's record, by the engine of this process
                    _loop.call_on(run.engine.loop, run.engine.record_event, "hitl_timeout",
                                  it.task_id, source=f"policy:{hitl}", waited=waited,
                                  hitl_timeout=hitl_timeout)
            break
        if ending == "timeout":
            act("timeout", None, f"{timeout:g} s passed: cancelling run {run.id}")
            run.cancel(source="policy:timeout")
            ending = "timeout-cancelled"
        if progress is not None:
            summary = run.summary()
            key = tuple(sorted(summary["counts"].items()))
            if key != counts_key:
                counts_key, tasks = key, run.tasks
            if now - cost_at >= 2.0:
                cost, cost_at = await cost_of(run), now
            progress.update(Snapshot(
                run.id, summary["status"], {s: n for s, n in summary["counts"].items() if n},
                [(t.id, t.title) for t in tasks if t.status == TaskStatus.ACTIVE],
                [it.task_id for it in (run.interrupts() if actions else interrupts)],
                cost, now - started))
        await asyncio.sleep(poll)
    await run.store.flush()
    return await outcome_of(run, hitl, hitl_timeout, ending, started, since, actions,
                            abandoned, failed_on, timeout)


def check_policy(hitl: str, hitl_timeout: float | None, timeout: float | None) -> None:
    if hitl not in POLICIES:
        raise InvalidInput(f"unknown hitl policy {hitl!r}: use one of {', '.join(POLICIES)}")
    if hitl_timeout is not None and (isinstance(hitl_timeout, bool) or hitl_timeout < 0):
        raise InvalidInput(f"hitl_timeout must be 0 or more seconds, or None, not {hitl_timeout!r}")
    if timeout is not None and (isinstance(timeout, bool) or timeout <= 0):
        raise InvalidInput(f"timeout must be more than 0 seconds, or None, not {timeout!r}")


async def inbox_drained(run, limit: float = 30.0) -> None:
    """Wait (up to ``limit`` seconds) until the engine has applied the commands sent while no
    process drove the run (a resolution from ``agentorch resolve``): the policy must not act
    on a task somebody already answered."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and run.live:
        rows = await run.store.arows("select count(*) as n from commands where run_id = ? "
                                     "and status = 'pending'", [run.id])
        if not rows[0]["n"]:
            return
        await asyncio.sleep(0.05)


async def cost_of(run) -> float:
    rows = await run.store.arows("select coalesce(sum(cost_usd), 0) as c from llm_calls "
                                 "where run_id = ?", [run.id])
    return float(rows[0]["c"])


async def outcome_of(run, hitl, hitl_timeout, ending, started, since, actions, abandoned,
                     failed_on, timeout) -> Outcome:
    summary, tasks = run.summary(), run.tasks
    status = summary["status"]
    unfinished = [{"task_id": t.id, "title": t.title, "status": t.status.value,
                   "reason": t.status_reason or ""} for t in tasks if t.status != TaskStatus.COMPLETE]
    waiting = [t for t in unfinished if t["status"] == TaskStatus.WAITING_HUMAN]
    named = "; ".join(f"{t['task_id']} ({t['title']}): {t['reason']}" for t in waiting)
    if ending == "fail":
        code = EXIT_FAILED
        names = "; ".join(f"{i.task_id}: {i.reason}" for i in failed_on)
        message = (f"run {run.id} {status} by the hitl policy 'fail': waiting for a human: "
                   f"{names}. {answer(run.id, failed_on[0].task_id)}")
    elif ending == "waiting":
        code = EXIT_WAITING
        message = (f"run {run.id} is {status}, waiting for a human: {named}. "
                   f"{answer(run.id, waiting[0]['task_id'] if waiting else 'TASK')}")
    elif ending == "timeout-cancelled":
        code = EXIT_TIMEOUT
        message = (f"run {run.id} did not finish within {timeout:g} s: it was cancelled; "
                   f"`agentorch resume {run.id}` continues it")
    elif status == RunStatus.COMPLETED:
        code = EXIT_COMPLETED
        gone = [t["task_id"] for t in unfinished]
        message = f"run {run.id} completed: {len(tasks)} tasks" + (
            f", {len(gone)} abandoned ({', '.join(gone)})" if gone else "")
    else:
        code = EXIT_FAILED
        why = f": {failure_reason(summary['error'])}" if summary.get("error") else ""
        message = f"run {run.id} {status}{why}" + (f"; waiting for a human: {named}" if named else "")
    row = run.orchestrator.run_row(run.id)
    return Outcome(
        run_id=run.id, status=status, hitl=hitl, exit_code=code, message=message,
        cost_usd=await cost_of(run), counts={s: n for s, n in summary["counts"].items() if n},
        unfinished=unfinished, abandoned=abandoned,
        escalations=await escalations(run, since), actions=actions,
        elapsed_s=round(time.monotonic() - started, 2), store=str(run.store.path),
        workspace=row.get("workspace"), objective=summary["objective"], hitl_timeout=hitl_timeout)


def answer(run_id: str, task_id: str) -> str:
    return (f"Answer with `agentorch resolve {run_id} {task_id} retry --guidance ...` (or "
            f"abandon, spawn), then `agentorch resume {run_id}`")


async def escalations(run, since) -> list[dict[str, Any]]:
    """The waits for a human while this process drove the run: those open when it began and
    those raised since, with how long each waited and who answered it."""
    rows = await run.store.arows(
        "select i.task_id, i.kind, i.reason, i.ts, i.resolved_at, r.action, r.source "
        "from interrupts i left join resolutions r "
        "  on r.run_id = i.run_id and r.resolution_id = i.resolution_id "
        "where i.run_id = ? and (i.resolved_at is null or i.resolved_at >= ? or i.ts >= ?) "
        "order by i.ts", [run.id, since, since])
    now = utcnow()
    return [{"task_id": r["task_id"], "kind": r["kind"], "reason": r["reason"],
             "since": r["ts"].isoformat(), "waited_s": round(
                 ((r["resolved_at"] or now) - r["ts"]).total_seconds(), 1),
             "action": r["action"], "source": r["source"]} for r in rows]


# ------------------------------------------------------------------ setting a run up
def models_for(model: str, budget_usd: float | None = None):
    """``demo``: the offline scripted demo; ``demo-escalate``: its variant whose tests task
    escalates (with ``max_retries=1``); anything else: a litellm model string for every role."""
    from .agents import demo_models
    from .llm.settings import Models

    if not isinstance(model, str) or not model.strip():
        raise InvalidInput("model is empty: 'demo' (offline) or a litellm model string such as "
                           "'openai/gpt-4o-mini'")
    if model in ("demo", "demo-escalate"):
        models = demo_models(escalate=model == "demo-escalate")
    else:
        models = Models(worker_model=model.strip())
    return models if budget_usd is None else dataclasses.replace(models, budget_usd=budget_usd)


def load_agents(spec: str):
    """``module:factory`` or ``path/to/file.py:factory``: custom agents. ``factory`` is called
    with no arguments and returns an :class:`agentorch_nb.Agents` (or a team with
    ``for_run(engine)``); it may also be such an object itself."""
    module_name, _, attr = spec.rpartition(":")
    if not module_name or not attr:
        raise InvalidInput(f"--agents {spec!r}: expected module:factory or file.py:factory")
    try:
        if module_name.endswith(".py"):
            path = Path(module_name).expanduser().resolve()
            if not path.is_file():
                raise InvalidInput(f"--agents {spec!r}: there is no file {path}")
            loaded = importlib.util.spec_from_file_location(f"agentorch_agents_{path.stem}", path)
            module = importlib.util.module_from_spec(loaded)
            loaded.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
        target = getattr(module, attr)
    except (ImportError, AttributeError) as exc:
        raise InvalidInput(f"--agents {spec!r} cannot be loaded: {exc}") from None
    made = isinstance(target, type) or not (hasattr(target, "for_run") or hasattr(target, "director"))
    agents = target() if made and callable(target) else target
    if not (hasattr(agents, "for_run") or hasattr(agents, "director")):
        raise InvalidInput(f"--agents {spec!r} gave {type(agents).__name__}, not an "
                           "agentorch_nb.Agents or a team with for_run(engine)")
    return agents


# ------------------------------------------------------------------ in a notebook
class NotebookProgress:
    """Progress as one display output, updated in place at most twice a second; nothing else
    is printed per event, so papermill never meets "IOPub message rate exceeded"."""

    def __init__(self, interval: float = 0.5) -> None:
        self.interval = interval
        self.handle = None
        self.snap: Snapshot | None = None
        self.notes: list[str] = []
        self.shown_at = 0.0
        self.dirty = False

    def update(self, snap: Snapshot) -> None:
        self.dirty = self.dirty or self.snap is None or snap.key() != self.snap.key() \
            or int(snap.elapsed) != int(self.snap.elapsed)
        self.snap = snap
        self.show()

    def note(self, text: str) -> None:
        self.notes.append(text)
        self.dirty = True

    def close(self) -> None:
        self.show(force=True)

    def show(self, force: bool = False) -> None:
        now = time.monotonic()
        if self.snap is None or not (force or (self.dirty and now - self.shown_at >= self.interval)):
            return
        from IPython.display import display

        view = ProgressView(self.snap.line(), self.notes[-20:])
        if self.handle is None:
            self.handle = display(view, display_id=True)
        else:
            self.handle.update(view)
        self.shown_at, self.dirty = now, False


@dataclass
class ProgressView:
    line: str
    notes: list[str] = field(default_factory=list)

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict[str, str]:
        notes = "".join(f"<li>{html.escape(n)}</li>" for n in self.notes)
        return {"text/plain": "\n".join([self.line, *self.notes]),
                "text/html": f"<div><code>{html.escape(self.line)}</code><ul>{notes}</ul></div>"}
