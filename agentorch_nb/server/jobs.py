"""Runs started from the server (``POST /runs``, ``/restart``) as papermill batch jobs.

The server never hosts an engine: a job is ``python -m papermill`` on the packaged
``run_objective.ipynb`` in a subprocess of its own session, which this module watches to its
end (status, exit code, the tail of its log) and reports on the event bus. The run's id is
chosen here and passed in, so the run is known before its first event arrives.

The executed notebook, and its log, are written beside the workspace, in
``<workspace>-runs/``, where JupyterLab can open them. When the workspace is the server's
root itself they go to ``<root>/agentorch-runs/``, which is kept out of git through
``.git/info/exclude`` so the repository stays clean. A job outlives a server that stops: the
run goes on, and its record is in the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..model import utcnow
from ..notebooks import RUN_OBJECTIVE
from ..exceptions import AgentorchError, ResolutionError, WorkspaceError
from ..workspace import Workspace, exclude
from .queries import iso

ROOT_NOTEBOOKS = "agentorch-runs"
LOG_TAIL = 4000


def notebook_dir(workspace: Path, root: Path) -> Path:
    """Where the notebooks of a workspace's jobs and dashboards go (see the module doc)."""
    if workspace == root:
        exclude(workspace, ROOT_NOTEBOOKS + "/")
        return root / ROOT_NOTEBOOKS
    return workspace.parent / f"{workspace.name}-runs"


class TooBusy(AgentorchError):
    """As many batch jobs as the server may run are running."""


@dataclass
class Job:
    id: str
    run_id: str
    workspace: Path
    notebook: Path
    started_at: Any = field(default_factory=utcnow)
    status: str = "running"
    finished_at: Any = None
    returncode: int | None = None
    error: str | None = None
    process: asyncio.subprocess.Process | None = field(default=None, repr=False)

    @property
    def log(self) -> Path:
        return self.notebook.with_suffix(".log")


class Jobs:
    def __init__(self, app) -> None:
        self.app = app
        self.root = Path(app.serverapp.root_dir).expanduser().resolve()
        self.jobs: dict[str, Job] = {}
        self._starting: set[str] = set()  # run ids of jobs being launched
        self._watchers: set[asyncio.Task] = set()

    def relative(self, path: Path) -> str | None:
        try:
            return path.resolve().relative_to(self.root).as_posix()
        except ValueError:
            return None

    def describe(self, job: Job) -> dict[str, Any]:
        return {"id": job.id, "run_id": job.run_id, "status": job.status,
                "workspace": self.relative(job.workspace) or str(job.workspace),
                "notebook": self.relative(job.notebook), "notebook_path": str(job.notebook),
                "started_at": iso(job.started_at), "finished_at": iso(job.finished_at),
                "returncode": job.returncode, "error": job.error}

    def for_run(self, run_id: str) -> Job | None:
        found = [j for j in self.jobs.values() if j.run_id == run_id]
        return max(found, key=lambda j: j.started_at) if found else None

    def workspace(self, relative: str) -> Workspace:
        """The git workspace a request names, relative to the root; refused outside it.
        Runs in a worker thread (git is asked)."""
        try:
            path = (self.root / relative).resolve()
            if not path.is_relative_to(self.root):
                raise PermissionError(f"workspace {relative!r} is outside the server's root directory")
            return Workspace(path)
        except (OSError, ValueError) as exc:  # a name too long, a NUL byte
            if isinstance(exc, PermissionError):
                raise
            raise WorkspaceError(f"workspace {relative[:200]!r} cannot be used: {exc}") from None

    def dashboard(self, store_path: str, run: dict[str, Any]) -> str:
        """A notebook that shows the run's live dashboard (written once, then reused): its
        path relative to the root. Runs in a worker thread."""
        workspace = Path(run["workspace"]).resolve()
        path = notebook_dir(workspace, self.root) / f"dashboard-{run['id']}.ipynb"
        relative = self.relative(path)
        if relative is None:
            raise PermissionError(f"the notebooks of {workspace} go to {path.parent}, outside "
                                  "the server's root directory: open the run from a notebook there")
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            code = (f"import agentorch_nb as ao\n\n"
                    f"orch = ao.Orchestrator({str(workspace)!r}, store={store_path!r})\n"
                    f"run = orch.run({run['id']!r})\nrun")
            nb = {"nbformat": 4, "nbformat_minor": 5,
                  "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                              "language": "python"}},
                  "cells": [
                      {"cell_type": "markdown", "id": "about", "metadata": {},
                       "source": f"# {run['objective'][:200]}\n\nRun `{run['id']}`: its live "
                                 "dashboard, whichever process drives it."},
                      {"cell_type": "code", "id": "dashboard", "metadata": {},
                       "execution_count": None, "outputs": [], "source": code}]}
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(nb, indent=1))
            tmp.replace(path)
        return relative

    def running(self) -> list[Job]:
        return [j for j in self.jobs.values() if j.status == "running"]

    async def start(self, workspace: Path, *, objective: str = "", model: str = "demo",
                    workers: int = 3, max_retries: int = 4, resume: str | None = None,
                    store: str | None = None) -> Job:
        """Start a job; refused (:class:`TooBusy`) while ``max_jobs`` are running, and for a
        run that a job of this server is already resuming."""
        busy = [j.run_id for j in self.running()] + list(self._starting)
        if len(busy) >= self.app.max_jobs:
            raise TooBusy(f"{len(busy)} batch jobs are running, the most this server starts "
                          "at once (c.AgentorchApp.max_jobs): start this one when one ends")
        if resume and resume in busy:
            raise ResolutionError(f"run {resume} is already being resumed by a job of this server")
        run_id = resume or f"run-{uuid.uuid4().hex[:8]}"
        self._starting.add(run_id)  # counted while the awaits below let other requests in
        try:
            return await self._launch(run_id, workspace, objective, model, workers,
                                      max_retries, resume, store)
        finally:
            self._starting.discard(run_id)

    async def _launch(self, run_id: str, workspace: Path, objective: str, model: str,
                      workers: int, max_retries: int, resume: str | None,
                      store: str | None) -> Job:
        folder = await asyncio.to_thread(notebook_dir, workspace, self.root)  # asks git
        folder.mkdir(parents=True, exist_ok=True)
        stamp = utcnow().strftime("%Y%m%d-%H%M%S")
        job = Job(f"job-{uuid.uuid4().hex[:8]}", run_id, workspace, folder / f"{run_id}-{stamp}.ipynb")
        args = [self.app.python or sys.executable, "-m", "papermill", str(RUN_OBJECTIVE),
                str(job.notebook), "--cwd", str(workspace), "-k", "python3",
                "-r", "workspace", str(workspace), "-r", "model", model,
                "-p", "workers", str(workers), "-p", "max_retries", str(max_retries)]
        args += ["-r", "resume", resume] if resume else ["-r", "objective", objective,
                                                         "-r", "run_id", run_id]
        if store:
            args += ["-r", "store", store]
        with open(job.log, "wb") as log:
            job.process = await asyncio.create_subprocess_exec(
                *args, stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log,
                start_new_session=True)
        self.jobs[job.id] = job
        self.app.log.info("agentorch: job %s (run %s) started: %s", job.id, run_id, job.notebook)
        self.app.emit("job", self._event(job))
        watcher = asyncio.create_task(self._watch(job))
        self._watchers.add(watcher)
        watcher.add_done_callback(self._watchers.discard)
        return job

    async def _watch(self, job: Job) -> None:
        job.returncode = await job.process.wait()
        job.finished_at = utcnow()
        job.status = "completed" if job.returncode == 0 else "failed"
        if job.returncode != 0:
            job.error = await asyncio.to_thread(_failure, job)
        self.app.log.info("agentorch: job %s ended %s", job.id, job.status)
        self.app.emit("job", self._event(job))

    def _event(self, job: Job) -> dict[str, Any]:
        d = self.describe(job)
        return {"job_id": d["id"], "run_id": d["run_id"], "status": d["status"],
                "notebook": d["notebook"], "error": d["error"], "workspace": d["workspace"]}

    async def stop(self) -> None:
        """Stop watching (the jobs themselves go on: their runs are in their stores)."""
        for w in list(self._watchers):
            w.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await w


def _failure(job: Job) -> str:
    """Why a job failed: the exception papermill recorded in the notebook, else the log's tail."""
    with contextlib.suppress(OSError, ValueError):
        nb = json.loads(job.notebook.read_text())
        for cell in nb.get("cells", []):
            for out in cell.get("outputs", []):
                if out.get("output_type") == "error":
                    return f"{out.get('ename')}: {out.get('evalue')}"
    with contextlib.suppress(OSError):
        return job.log.read_text(errors="replace")[-LOG_TAIL:].strip() or f"exit code {job.returncode}"
    return f"exit code {job.returncode}"
