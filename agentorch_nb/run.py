"""A handle on one run: live in this process (an engine drives it here) or a view of the
store, steered in memory or through another process's command inbox.

    run = orch.start("Add a --json flag to the CLI")
    await run.wait()
    run.resolve("t3", "retry", guidance="use argparse")
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from . import _loop, live, remote
from .dag import natural_key
from .engine import hitl
from .exceptions import ResolutionError, UnknownTask, WrongLoop
from .model import Interrupt, RunStatus, Task

if TYPE_CHECKING:
    from .engine.dispatch import Engine
    from .orchestrator import Orchestrator


class Run:
    """One run: live in this process (an engine drives it here) or a view of the store."""

    def __init__(self, orchestrator: Orchestrator, run_id: str) -> None:
        self.orchestrator = orchestrator
        self.store = orchestrator.store
        self.id = run_id

    def __repr__(self) -> str:
        s = self.summary()
        done = s["counts"].get("complete", 0)
        return f"<Run {self.id} {s['status']} {done}/{s['tasks']} complete: {s['objective'][:60]!r}>"

    # ------------------------------------------------------------- display
    def dashboard(self):
        """This run's dashboard widget (what displaying the run shows in a notebook)."""
        from .widgets import dashboard_for

        return dashboard_for(self)

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict[str, Any]:
        """The live dashboard where widgets render; a status table and a static SVG of the
        DAG (and Markdown) for nbconvert, GitHub and papermill output."""
        from .render import run_html, run_markdown

        summary, tasks = self.summary(), self.tasks
        bundle = self.dashboard()._repr_mimebundle_(include=include, exclude=exclude) \
            if _in_kernel() else {}
        bundle.update({"text/plain": repr(self), "text/html": run_html(summary, tasks),
                       "text/markdown": run_markdown(summary, tasks)})
        return bundle

    def _repr_html_(self) -> str:
        from .render import run_html

        return run_html(self.summary(), self.tasks)

    def _repr_markdown_(self) -> str:
        from .render import run_markdown

        return run_markdown(self.summary(), self.tasks)

    # ------------------------------------------------------------- engine
    @property
    def engine(self) -> Engine | None:
        """The engine of this process that drives (or drove) the run, or None."""
        return live.engine_for(self.store.path, self.id)

    @property
    def live(self) -> bool:
        """True while an engine in this process drives the run."""
        e = self.engine
        return e is not None and not e.ended

    def _on_engine(self, fn, *args, **kwargs):
        return _loop.call_on(self.engine.loop, fn, *args, **kwargs)

    def _require_live(self, doing: str) -> Engine:
        e = self.engine
        if e is None:
            raise ResolutionError(
                f"cannot {doing} run {self.id} here: no engine in this process drives it; "
                f"orch.resume({self.id!r}) continues it here")
        return e

    # ------------------------------------------------------------- reading
    @property
    def status(self) -> RunStatus:
        if self.engine is not None:
            return self.engine.status
        return RunStatus(remote.summary(self.store, self.id)["status"])

    @property
    def tasks(self) -> list[Task]:
        """Every task, in id order (t1, t2, ..., t10)."""
        e = self.engine
        if e is not None:
            return self._on_engine(lambda: [e.tasks[t].copy() for t in sorted(e.tasks, key=natural_key)])
        # Another process's engine answers on its channel; the store when none does.
        return sorted(remote.tasks(self.store, self.id), key=lambda t: natural_key(t.id))

    def task(self, task_id: str) -> Task:
        for t in self.tasks:
            if t.id == task_id:
                return t
        raise UnknownTask(task_id, self.id)

    def events(self):
        """The run's event history as a DataFrame, in ``seq`` order."""
        self.store.flush_sync()
        return self.store.query("select * from events where run_id = ? order by seq", [self.id])

    def messages(self, task_id: str | None = None):
        self.store.flush_sync()
        if task_id is None:
            return self.store.query("select * from messages where run_id = ? order by ts", [self.id])
        return self.store.query(
            "select * from messages where run_id = ? and task_id = ? order by ts", [self.id, task_id])

    def interrupts(self) -> list[Interrupt]:
        """Tasks waiting for a human, with the reason."""
        e = self.engine
        if e is not None:
            return self._on_engine(lambda: list(e.open_interrupts.values()))
        return remote.interrupts(self.store, self.id)

    def summary(self) -> dict[str, Any]:
        """Status, objective, task counts and the last error; ``store_busy`` says which
        process holds the store, and since when, while the run waits for it."""
        e = self.engine
        if e is not None:
            return self._on_engine(lambda: {
                "run_id": self.id, "status": e.status.value, "objective": e.objective,
                "tasks": len(e.tasks), "counts": e.counts(), "error": e.error,
                "store_busy": e.store_busy.describe() if e.store_busy else None})
        return remote.summary(self.store, self.id)

    # ------------------------------------------------------------- waiting
    async def wait(self, timeout: float | None = None, *, stop_on_pause: bool = True) -> RunStatus:
        """Wait until the run finishes, or (by default) pauses for a human."""
        e = self.engine
        if e is None and self.status.finished:
            return self.status
        e = self._require_live("wait for")
        if not _loop.on_loop(e.loop):
            fut = asyncio.run_coroutine_threadsafe(e.wait(stop_on_pause), e.loop)
            return await asyncio.wait_for(asyncio.wrap_future(fut), timeout)
        return await asyncio.wait_for(e.wait(stop_on_pause), timeout)

    def wait_sync(self, timeout: float | None = None, *, stop_on_pause: bool = True) -> RunStatus:
        """:meth:`wait` for plain Python. Refused on the loop the run lives on (it would
        block the run itself): in a notebook cell use ``await run.wait()``."""
        e = self.engine
        if e is None and self.status.finished:
            return self.status
        e = self._require_live("wait for")
        if _loop.on_loop(e.loop):
            raise WrongLoop("run.wait_sync() would block the event loop this run lives on; "
                            "use `await run.wait()` instead")
        fut = asyncio.run_coroutine_threadsafe(e.wait(stop_on_pause), e.loop)
        try:
            return fut.result(timeout)
        except TimeoutError:
            fut.cancel()
            raise

    # ------------------------------------------------------------ steering
    def resolve(self, task_id: str, action: str, *, source: str | None = None, **changes: Any):
        """Answer a task that waits for a human: ``"retry"`` (optionally with ``description``,
        ``acceptance_criteria``, ``guidance``), ``"abandon"`` (``drop_dependency``,
        ``cascade``) or ``"spawn"`` (``title``, ``description``, ``acceptance_criteria``,
        ``profile``, ``depends_on``, ``replace``)."""
        return self._command("resolve", source, task_id=task_id, action=action, **changes)

    def interrupt(self, task_id: str, *, source: str | None = None) -> None:
        """Stop an active task's attempt (its subprocesses too) and hand it to a human."""
        return self._command("interrupt", source, task_id=task_id)

    def abandon_task(self, task_id: str, *, drop_dependency: bool = False, cascade: bool = False,
                     source: str | None = None) -> None:
        return self._command("abandon_task", source, task_id=task_id,
                             drop_dependency=drop_dependency, cascade=cascade)

    def add_dependency(self, task_id: str, depends_on: str, *, source: str | None = None) -> None:
        """``task_id`` will wait for ``depends_on``; a cycle is refused with the cycle named."""
        return self._command("add_dependency", source, task_id=task_id, depends_on=depends_on)

    def remove_dependency(self, task_id: str, depends_on: str, *, source: str | None = None) -> None:
        return self._command("remove_dependency", source, task_id=task_id, depends_on=depends_on)

    def replan(self, *, source: str | None = None) -> None:
        return self._command("replan", source)

    def cancel(self, *, source: str | None = None) -> None:
        """Stop the run: every attempt is cancelled and its subprocesses killed. ``await
        run.wait()`` returns once all of it has stopped."""
        return self._command("cancel", source)

    def restart(self) -> Run:
        """Continue a finished, cancelled or crashed run from the store."""
        if self.live:
            return self
        return self.orchestrator.resume(self.id)

    def _command(self, kind: str, source: str | None, **payload: Any):
        e = self.engine
        if e is not None and not e.ended:
            return self._on_engine(hitl.apply, e, kind, payload, source or "api")
        return remote.send_command(self.store, self.id, kind, payload,
                                   source or remote.default_source())


def _in_kernel() -> bool:
    """Is this a Jupyter kernel, where a widget has a front end to talk to?"""
    import sys

    if "ipykernel" not in sys.modules:
        return False
    from ipykernel.kernelapp import IPKernelApp

    return IPKernelApp.initialized()
