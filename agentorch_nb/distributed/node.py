"""What runs on a cluster node: its repository keeper and the runners of attempts.

``NodeAgent`` (one per node, a named, detached Ray actor holding no CPU) keeps the node's
clone of each repository and makes and removes the attempts' worktrees, one at a time.
``Runner`` (a Ray actor with the resources of a task profile) runs one attempt at a time:
the same :func:`~agentorch_nb.engine.pipeline.work_and_judge` the engine runs locally, with
agents built on the node from the run's team, in a worktree on the node's disk. Everything
the attempt records (messages, tool calls, LLM calls, streamed chunks) goes back to the
engine as it happens, answering the engine's long poll; the node writes no store.

These classes are plain Python: :mod:`.executor` makes them Ray actors, so importing this
module does not import ray.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..engine.integration import commit_attempt
from ..engine.pipeline import AttemptFailed, describe, work_and_judge
from ..engine.protocols import Context
from ..model import Attempt, Outcome, Profile, Task
from ..workspace import Worktree
from .gitship import NodeRepo

STOP_WAIT = 15.0  # seconds a stopped attempt has to end (its commands' process trees killed)


def node_id() -> str:
    import ray

    return ray.get_runtime_context().get_node_id()


class NodeAgent:
    """The keeper of a node's clones (``<work_dir>/agentorch-node-<node id>/<repo key>``)."""

    def __init__(self, work_dir: str | None = None) -> None:
        self.node = node_id()
        self.root = Path(work_dir or tempfile.gettempdir()) / f"agentorch-node-{self.node[:16]}"
        self.repos: dict[str, NodeRepo] = {}

    def repo(self, key: str, target: str) -> NodeRepo:
        if key not in self.repos:
            self.repos[key] = NodeRepo(self.root / key, target)
        return self.repos[key]

    def heads(self, key: str, target: str) -> list[str]:
        return self.repo(key, target).heads()

    def receive(self, key: str, target: str, data: bytes | None, updates: dict[str, str]) -> None:
        self.repo(key, target).receive(data, updates)

    def worktree(self, key: str, target: str, run_id: str, task_id: str, attempt: int,
                 start: str, merge_source: str | None) -> tuple[str, str, str, str]:
        """A whole worktree for an attempt (checked as the engine checks its own); returns
        its path, branch, base commit and the clone's path."""
        repo = self.repo(key, target)
        with repo.lock:
            git = repo.workspace()
            if merge_source:
                wt = git.create_merge_worktree(run_id, task_id, attempt, merge_source)
            else:
                wt = git.create_worktree(run_id, task_id, attempt, start=start)
        return str(wt.path), wt.branch, wt.base_sha, str(repo.path)

    def remove(self, key: str, target: str, path: str, branch: str) -> None:
        repo = self.repo(key, target)
        with repo.lock:
            repo.workspace().remove_worktree(Worktree(Path(path), branch, ""))


@dataclass
class AttemptSpec:
    """Everything a node needs for one attempt; travels pickled."""

    run_id: str
    objective: str
    task: Task
    attempt: Attempt
    history: list[Attempt]
    task_ids: list[str]
    team: Any  # a team with for_run(engine), or ready Agents
    config: Any  # the run's Config, without its executor
    limiter: Any  # the cluster's RemoteLimiter
    agent: Any  # the NodeAgent of the node the runner is on
    repo_key: str
    target: str
    base_sha: str  # the target's tip, as sent to the node
    watched: bool  # someone watches the run: replies are worth streaming
    scripts: dict[str, Any] = field(default_factory=dict)  # scripted models' scripts


class Runner:
    """Runs one attempt at a time: ``start`` begins it, ``events`` hands over its records as
    they come and then its end, ``stop`` cancels it."""

    def __init__(self, secret_names: list[str]) -> None:
        from ..tools.secrets import add_secrets

        add_secrets(names=secret_names)  # keys sent to this node never reach a tool
        self.current: asyncio.Task | None = None

    def where(self) -> tuple[str, str]:
        import ray

        return node_id(), ray.util.get_node_ip_address()

    async def start(self, spec: AttemptSpec) -> None:
        """Begin an attempt; its records are collected for ``events``."""
        self.pending: list[tuple] = []
        self.arrived = asyncio.Event()

        def emit(event: tuple) -> None:
            self.pending.append(event)
            self.arrived.set()

        self.current = asyncio.ensure_future(run_attempt(spec, emit))
        self.current.add_done_callback(lambda _: self.arrived.set())

    async def events(self) -> tuple[list[tuple], dict[str, Any] | None]:
        """What the attempt recorded since the last call, as soon as there is something;
        with its end (the second item) once it is over. The engine calls this in a loop: a
        long poll, which works through Ray Client as through a direct connection (a streaming
        generator delivered nothing through Ray Client here)."""
        work = self.current
        while not self.pending and not work.done():
            self.arrived.clear()
            await self.arrived.wait()
        batch, self.pending = self.pending, []
        if work.done() and not batch:
            self.current = None
            return [], work.result()
        return batch, None

    async def stop(self) -> bool:
        """Cancel the attempt under way (its commands' process trees are killed); True once
        it has ended."""
        work = self.current
        if work is None:
            return True
        work.cancel()
        await asyncio.wait({work}, timeout=STOP_WAIT)
        return work.done()


class ForwardStore:
    """What agents and tools write to ``ctx.store`` on a node: sent to the engine."""

    def __init__(self, emit) -> None:
        self.emit = emit

    def append(self, table: str, row: dict[str, Any]) -> None:
        self.emit(("row", table, row))


class NodeSession:
    def __init__(self, limiter: Any) -> None:
        self._limiter = limiter

    def limiter(self) -> Any:
        return self._limiter

    def uses_checkpoints(self) -> bool:
        return False  # only the engine writes the store


class NodeIntegration:
    """The worktree of one attempt on this node, as ``Context`` and the pipeline use it."""

    def __init__(self, spec: AttemptSpec, emit) -> None:
        self.spec, self.emit = spec, emit
        self.wt: Worktree | None = None
        self.repo: NodeRepo | None = None

    async def worktree(self, task: Task, attempt: int, create: bool = True) -> Path | None:
        if self.wt is None and create:
            s = self.spec
            merge_source = task.merge_source if task.profile == Profile.MERGE else None
            path, branch, base, clone = await s.agent.worktree.remote(
                s.repo_key, s.target, s.run_id, task.id, attempt, s.base_sha, merge_source)
            self.wt = Worktree(Path(path), branch, base)
            self.repo = NodeRepo(Path(clone), s.target)
            self.emit(("worktree", branch, base, path))
        return self.wt.path if self.wt is not None else None

    async def diff(self, task: Task, attempt: int) -> str:
        if self.wt is None:
            return ""
        return await asyncio.to_thread(self.repo.workspace().diff, self.wt)

    async def commit(self, task: Task, attempt: Attempt) -> str | None:
        if self.wt is None:
            return None
        return await commit_attempt(self.repo.workspace(), self.wt, self.spec.run_id, task, attempt)

    async def bundle(self, sha: str) -> bytes | None:
        if self.wt is None or sha == self.wt.base_sha:
            return None
        return await asyncio.to_thread(self.repo.bundle_back, self.wt.branch,
                                       [self.wt.base_sha, self.spec.base_sha])

    async def release(self) -> None:
        if self.wt is not None:
            s = self.spec
            await s.agent.remove.remote(s.repo_key, s.target, str(self.wt.path), self.wt.branch)


class NodeEngine:
    """The engine as agents and ``Context`` see it on a node."""

    def __init__(self, spec: AttemptSpec, emit) -> None:
        self.run_id, self.objective, self.config = spec.run_id, spec.objective, spec.config
        self.workspace = None
        self.store = ForwardStore(emit)
        self.observers = [emit] if spec.watched else []
        self.loop = asyncio.get_running_loop()
        self.tasks: dict[str, Task | None] = dict.fromkeys(spec.task_ids)
        self.tasks[spec.task.id] = spec.task
        self.integration = NodeIntegration(spec, emit)
        self.executor = NodeSession(spec.limiter)
        self._emit = emit

    def record_message(self, task_id, attempt, role, content, metadata) -> None:
        self._emit(("message", role, content, metadata))

    def stream_chunk(self, task_id, attempt, role, text) -> None:
        self._emit(("chunk", role, text))


async def run_attempt(spec: AttemptSpec, emit) -> dict[str, Any]:
    """One attempt on this node; what the engine needs to finish it (see ``RaySession``)."""
    from ..llm.script import register_script

    for name, script in spec.scripts.items():
        register_script(name, script)
    engine = NodeEngine(spec, emit)
    task, attempt = spec.task, spec.attempt
    began = time.perf_counter()
    end: dict[str, Any] = {"sha": None, "bundle": None, "failed": None, "result": None}
    try:
        team = spec.team
        agents = team.for_run(engine) if hasattr(team, "for_run") else team
        ctx = Context(spec.run_id, spec.objective, None, task.id, attempt.number, spec.history,
                      attempt.guidance, _engine=engine)
        end["result"], end["sha"] = await work_and_judge(
            agents, engine.integration, task, attempt, ctx, spec.config, lambda: emit(("judging",)))
        if end["sha"] is not None:
            end["bundle"] = await engine.integration.bundle(end["sha"])
    except AttemptFailed as failed:
        end["failed"] = failed
    except Exception as exc:  # noqa: BLE001 - building the agents failed: a failed attempt
        end["failed"] = AttemptFailed(Outcome.ERROR, f"on the node: {describe(exc)}")
    finally:
        await asyncio.shield(engine.integration.release())
    end["attempt"] = {k: getattr(attempt, k) for k in ("summary", "commit_sha", "diff", "qa_feedback")}
    end["task"] = {k: getattr(task, k) for k in ("result_summary", "qa_verdict", "qa_feedback")}
    end["branch"] = engine.integration.wt.branch if engine.integration.wt else None
    end["seconds"] = time.perf_counter() - began  # on the node, for the engine's timings
    return end
