"""The Ray executor, engine side: where an attempt is placed, what travels, how it ends.

``RayExecutor`` is configuration (an address, placements per task profile, the variables
to send); ``bind(engine)`` gives a run its ``RaySession``. For each attempt the session
takes a warm ``Runner`` whose resources fit the task's profile (Ray places it), sends the
runner's node whatever it lacks of the target branch, starts the attempt there and applies
what it sends back as it happens (rows, messages, chunks, the worktree, the move to QA) through the
engine's own recording, as if the attempt ran here. An approved commit comes back as a
bundle onto the attempt's branch, and the engine merges it as local work.

Failures keep their meaning: a node that dies ends the attempt as ``interrupted``
(``node_lost``) and Phoenix retries it; a cluster out of reach ends it as ``cluster_lost``,
puts the task back without using a retry, and pauses launches until the cluster answers
again; the run goes on either way.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.util
import logging
import os
import re
import time
from typing import TYPE_CHECKING, Any

from ..engine.executor import Session
from ..engine.pipeline import AttemptFailed
from ..exceptions import InvalidInput
from ..model import Attempt, Interruption, Outcome, Profile, Task, TaskStatus, WorkResult
from . import gitship
from .limits import RemoteLimiter
from .pool import RunnerPool, answers, cluster_errors, connect, describe_failure, reachable

if TYPE_CHECKING:
    from ..engine.dispatch import Engine
    from ..engine.protocols import Context

log = logging.getLogger("agentorch_nb.distributed")
PLACEMENT_KEYS = {"num_cpus", "num_gpus", "memory", "resources"}
DEFAULT_PLACEMENT = {"num_cpus": 1}
ADDRESS = re.compile(r"(auto|ray://[\w.\-]+(:\d+)?|[\w.\-]+:\d+)")
SLACK = 120.0  # seconds beyond worker_timeout + qa_timeout before the engine gives up on a node
PROBE_EVERY = 5.0  # seconds between checks that the cluster answers (or answers again)
PROBE_TIMEOUT = 20.0  # seconds a check may take before the cluster counts as out of reach


class RayExecutor:
    """Run attempts on a Ray cluster; the engine stays in this process.

    ``address``: None starts (or joins, as ``ray.init()`` does) a cluster on this machine;
    ``"auto"`` joins the one ``ray start`` runs here; ``"ray://host:10001"`` connects through
    Ray Client; ``"host:6379"`` joins as a driver. ``placement`` maps a task profile (or
    ``"*"`` for the rest) to what one attempt needs: ``num_cpus``, ``num_gpus``, ``memory``
    (bytes) and ``resources`` (custom ones, e.g. ``{"gpu_node": 1}``); the default is one CPU.
    ``env_vars`` names variables (API keys) sent from this process to the runners through
    Ray's runtime environment; they are never stored, and on the node they are secrets.
    ``work_dir`` is where nodes keep their clones (default: the node's temporary directory).
    ``warm`` runners are started when a run starts, so its first attempts do not wait.
    """

    def __init__(self, address: str | None = None, *, namespace: str = "agentorch",
                 placement: dict[str, dict[str, Any]] | None = None,
                 env_vars: list[str] | tuple[str, ...] = (), work_dir: str | None = None,
                 runtime_env: dict[str, Any] | None = None, warm: int | None = None) -> None:
        if importlib.util.find_spec("ray") is None:
            raise InvalidInput("RayExecutor needs Ray: pip install 'agentorch_nb[ray]'")
        if address is not None and (not isinstance(address, str) or not ADDRESS.fullmatch(address)):
            raise InvalidInput(f"RayExecutor address must be None, 'auto', 'ray://host:port' or "
                               f"'host:port', not {address!r}")
        if not isinstance(namespace, str) or not namespace:
            raise InvalidInput("RayExecutor namespace must be a non-empty string")
        self.address, self.namespace = address, namespace
        self.placement = {k: _placement(k, v) for k, v in (placement or {}).items()}
        bad = [n for n in env_vars if not isinstance(n, str) or not n.isidentifier()]
        if bad or isinstance(env_vars, str):
            raise InvalidInput(f"RayExecutor env_vars must be a list of variable names, not {env_vars!r}")
        self.env_vars = list(env_vars)
        self.work_dir = work_dir
        self.runtime_env = dict(runtime_env or {})
        if warm is not None and (isinstance(warm, bool) or not isinstance(warm, int) or warm < 0):
            raise InvalidInput(f"RayExecutor warm must be a whole number of runners, not {warm!r}")
        self.warm = warm
        self.pool = RunnerPool(self)

    def __repr__(self) -> str:
        return f"RayExecutor(address={self.address!r}, placement={self.placement!r})"
    def describe(self) -> dict[str, Any]:
        """As stored with the run's config: names of variables, never their values."""
        return {"kind": "ray", "address": self.address, "namespace": self.namespace,
                "placement": self.placement, "env_vars": self.env_vars, "work_dir": self.work_dir,
                "warm": self.warm}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RayExecutor:
        known = {"address", "namespace", "placement", "env_vars", "work_dir", "warm"}
        return cls(**{k: v for k, v in data.items() if k in known})

    def bind(self, engine: Engine) -> RaySession:
        return RaySession(self, engine)

    def placement_for(self, profile: Profile | str) -> dict[str, Any]:
        return self.placement.get(str(profile)) or self.placement.get("*") or DEFAULT_PLACEMENT

    def runner_env(self) -> dict[str, Any]:
        """The runtime environment of runners: the user's, plus the variables to send."""
        env = dict(self.runtime_env)
        sent = {n: os.environ[n] for n in self.env_vars if n in os.environ}
        if sent:
            env["env_vars"] = {**env.get("env_vars", {}), **sent}
        return env

    def shutdown(self) -> None:
        """Stop this executor's idle runners now (the end of its last run does it too)."""
        from .pool import kill

        kill(*self.pool.let_go())


def _placement(profile: str, spec: Any) -> dict[str, Any]:
    known = {p.value for p in Profile} | {"*"}
    if profile not in known:
        raise InvalidInput(f"RayExecutor placement: unknown task profile {profile!r}; use one "
                           f"of {', '.join(sorted(known))}")
    if not isinstance(spec, dict) or set(spec) - PLACEMENT_KEYS:
        raise InvalidInput(f"RayExecutor placement[{profile!r}] must be a dict of "
                           f"{', '.join(sorted(PLACEMENT_KEYS))}, not {spec!r}")
    for key in ("num_cpus", "num_gpus", "memory"):
        value = spec.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or value < 0):
            raise InvalidInput(f"RayExecutor placement[{profile!r}][{key!r}] must be a number "
                               f"of at least 0, not {value!r}")
    custom = spec.get("resources", {})
    if not isinstance(custom, dict) or not all(
            isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0
            for k, v in custom.items()):
        raise InvalidInput(f"RayExecutor placement[{profile!r}]['resources'] must map resource "
                           f"names to positive amounts, not {custom!r}")
    return dict(spec)


class RaySession(Session):
    def __init__(self, executor: RayExecutor, engine: Engine) -> None:
        super().__init__(engine)
        self.ex = executor
        self.limits = RemoteLimiter()
        self._limits_actor = None
        self._probe: asyncio.Task | None = None
        self._heartbeat: asyncio.Task | None = None
        # Set while the cluster is out of reach: whatever awaits Ray gives up at once (Ray
        # Client may leave a call hanging instead of raising).
        self._cut = asyncio.Event()
        self._joined = False
        # Seconds each attempt spent waiting for a runner, sending the repository, on the
        # node, and fetching its commit back (bench/ray_bench.py reads them).
        self.timings: list[dict[str, float]] = []

    def limiter(self) -> RemoteLimiter:
        return self.limits

    def uses_checkpoints(self) -> bool:
        return False  # attempts run elsewhere; their graph steps are not checkpointed here

    async def start(self) -> None:
        if self.engine.integration is None:
            raise InvalidInput("RayExecutor runs attempts of a git workspace: give the "
                               "Orchestrator one")
        self.ex.pool.users += 1
        self._joined = True
        try:
            await asyncio.to_thread(connect, self.ex)
            await self._make_limits()
        except cluster_errors() as exc:
            self._lost(f"cannot reach the Ray cluster ({describe_failure(exc)})")
            return
        self._heartbeat = asyncio.ensure_future(self._beat())
        warm = self.ex.warm if self.ex.warm is not None else self.engine.config.max_concurrent_workers
        await self.ex.pool.warm(self.ex.placement_for("*"), warm)

    async def _beat(self) -> None:
        """While the run lives: a cluster that stops answering pauses launches."""
        while True:
            await asyncio.sleep(PROBE_EVERY)
            if self.paused is not None:
                continue
            try:
                ok = await asyncio.wait_for(asyncio.to_thread(answers), PROBE_TIMEOUT)
            except TimeoutError:
                ok = False
            if not ok and self.paused is None:
                self._lost("the Ray cluster stopped answering")

    async def _or_cut(self, awaitable):
        """``awaitable``'s result, or ConnectionError as soon as the cluster is out of reach."""
        work = asyncio.ensure_future(awaitable)
        cut = asyncio.ensure_future(self._cut.wait())
        try:
            await asyncio.wait({work, cut}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            work.cancel()
            raise
        finally:
            cut.cancel()
        if work.done():
            return work.result()
        work.cancel()
        raise ConnectionError(self.paused or "the Ray cluster is out of reach")

    async def _make_limits(self) -> None:
        from .pool import make_limits

        from .pool import kill

        if self._limits_actor is not None:  # one that went with a lost cluster, if not gone
            await asyncio.to_thread(kill, self._limits_actor)
        models = self.engine.config.models
        lease = models.call_timeout * (models.max_retries + 1) + SLACK
        # What the run spent so far stays spent.
        actor = await asyncio.to_thread(make_limits, lease, self.limits.shared_spend())
        self._limits_actor = actor
        self.limits.attach(actor)
        self.limits.configure(models.max_concurrent_calls, models.rate_limits)

    async def close(self) -> None:
        for task in (self._probe, self._heartbeat):
            if task is not None:
                task.cancel()
        if self._joined:
            self._joined = False
            await self.ex.pool.leave()
        if self._limits_actor is not None:
            from .pool import kill

            await asyncio.to_thread(kill, self._limits_actor)

    # ------------------------------------------------------------ one attempt
    async def attempt(self, task: Task, attempt: Attempt, ctx: Context) -> tuple[WorkResult, str | None]:
        engine = self.engine
        git = engine.integration.git
        clock = time.perf_counter
        took: dict[str, float] = {"take": clock()}
        try:
            runner = await self._or_cut(self.ex.pool.take(self.ex.placement_for(task.profile)))
        except InvalidInput as exc:  # a placement no node can hold
            raise AttemptFailed(Outcome.ERROR, str(exc)) from None
        except Exception as exc:  # noqa: BLE001 - what Ray raises depends on how it was cut off
            if isinstance(exc, cluster_errors()) or not await asyncio.to_thread(reachable, self.ex):
                raise self._requeue(f"the Ray cluster went out of reach ({describe_failure(exc)})") from None
            raise AttemptFailed(Outcome.ERROR, f"no runner could be started: {describe_failure(exc)}") from None
        took["ship"] = clock()
        attempt.node = runner.label
        engine.save_attempt(attempt)
        try:
            base = await asyncio.to_thread(git.tip)
            refs = {f"refs/heads/{git.target}": base}
            if task.profile == Profile.MERGE and task.merge_source:
                source_ref = await asyncio.to_thread(gitship.ref_for, git.root, task.merge_source)
                refs[source_ref] = task.merge_source
            await self._or_cut(self.ex.pool.ship(runner, git.root, git.target, refs))
        except BaseException as exc:
            raise self._unship(runner, exc) from None
        spec = self._spec(task, attempt, ctx, runner, base)
        took["run"] = clock()
        end = await self._follow(task, attempt, runner, spec)
        took["fetch"] = clock()
        for key, value in end["attempt"].items():
            setattr(attempt, key, value)
        for key, value in end["task"].items():
            setattr(task, key, value)
        if end["failed"] is not None:
            raise end["failed"]
        sha = end["sha"]
        if sha is not None:
            if end["bundle"] is not None:
                try:
                    await asyncio.to_thread(gitship.fetch_commit, git.root, end["bundle"],
                                            end["branch"], sha)
                except gitship.ShipError as exc:
                    raise AttemptFailed(Outcome.ERROR, f"the approved commit did not arrive "
                                        f"whole from {runner.label}: {exc}") from None
            engine.integration.adopt_remote(task, attempt.number, end["branch"] or "",
                                            attempt.base_sha or base)
        marks = [*took.values(), clock()]
        spent = {k: b - a for k, a, b in zip(took, marks, marks[1:])}
        spent["on node"] = end["seconds"]
        self.timings.append(spent)
        return end["result"], sha

    def _unship(self, runner, exc: BaseException) -> BaseException:
        """What sending the commits to ``runner``'s node failing means for the attempt (the
        runner goes back to the pool, or is forgotten with its node)."""
        import ray

        if isinstance(exc, ray.exceptions.RayActorError):  # the node's agent died, or the node
            self.ex.pool.forget_node(runner.node)
            self.ex.pool.give_back(runner)  # if its node is gone too, its next use says so
            return AttemptFailed(Outcome.INTERRUPTED, f"the node's keeper of clones was lost "
                                 f"before the attempt began ({runner.label}): "
                                 f"{describe_failure(exc)}", interruption=Interruption.NODE_LOST)
        if isinstance(exc, cluster_errors()):
            self.ex.pool.lost(runner)
            return self._requeue(f"the Ray cluster went out of reach ({describe_failure(exc)})")
        self.ex.pool.give_back(runner)
        if isinstance(exc, gitship.ShipError):
            return AttemptFailed(Outcome.ERROR, f"the commits could not be sent to "
                                 f"{runner.label}: {exc}")
        return exc

    def _spec(self, task: Task, attempt: Attempt, ctx: Context, runner, base: str):
        from ..llm.script import get_script
        from .node import AttemptSpec

        engine = self.engine
        models = engine.config.models
        scripts = {}
        for value in dataclasses.asdict(models).values():
            if isinstance(value, str) and value.startswith("scripted/"):
                name = value.split("/", 1)[1]
                scripts[name] = get_script(name)
        return AttemptSpec(
            run_id=engine.run_id, objective=engine.objective, task=task.copy(),
            attempt=dataclasses.replace(attempt), history=list(ctx.history),
            task_ids=list(engine.tasks), team=engine.team,
            config=dataclasses.replace(engine.config, executor=None), limiter=self.limits,
            agent=runner.agent, repo_key=gitship.repo_key(engine.integration.git.root),
            target=engine.integration.git.target, base_sha=base, watched=bool(engine.observers),
            scripts=scripts)

    async def _follow(self, task: Task, attempt: Attempt, runner, spec) -> dict[str, Any]:
        """Start the attempt on ``runner`` and apply what it streams until its end."""
        import ray

        limit = self.engine.config.worker_timeout + self.engine.config.qa_timeout + SLACK
        end = None
        try:
            async with asyncio.timeout(limit):
                await self._or_cut(runner.actor.start.remote(spec))
                while end is None:
                    batch, end = await self._or_cut(runner.actor.events.remote())
                    for event in batch:
                        self._apply(task, attempt, runner, event)
        except asyncio.CancelledError:
            await asyncio.shield(self.ex.pool.stop(runner))
            raise
        except TimeoutError:
            await self.ex.pool.stop(runner)
            raise AttemptFailed(Outcome.TIMEOUT, f"{runner.label} gave no end within {limit:g} s") from None
        except ray.exceptions.RayActorError as exc:
            gone = await asyncio.to_thread(self.ex.pool.node_dead, runner.node)
            self.ex.pool.lost(runner, node_gone=gone)
            what = "its node died" if gone else "the Ray worker running it died"
            raise AttemptFailed(Outcome.INTERRUPTED, f"{what} mid-attempt ({runner.label}): "
                                f"{describe_failure(exc)}; retried on another node",
                                interruption=Interruption.NODE_LOST) from None
        except cluster_errors() as exc:
            self.ex.pool.lost(runner)
            raise self._requeue(f"the Ray cluster went out of reach mid-attempt "
                                f"({describe_failure(exc)})") from None
        self.ex.pool.give_back(runner)
        if end is None:
            raise AttemptFailed(Outcome.ERROR, f"{runner.label} ended the attempt without its result")
        return end

    def _apply(self, task: Task, attempt: Attempt, runner, event: tuple) -> None:
        engine, kind = self.engine, event[0]
        if kind == "row":
            engine.store.append(event[1], event[2])
        elif kind == "message":
            engine.record_message(task.id, attempt.number, *event[1:])
        elif kind == "chunk":
            engine.stream_chunk(task.id, attempt.number, event[1], event[2])
        elif kind == "worktree":
            branch, base, path = event[1:]
            attempt.branch, attempt.base_sha = branch, base
            engine.save_attempt(attempt)
            task.branch, task.worktree = branch, f"{runner.ip}:{path}"
            engine.save_task(task)
            engine.record_event("worktree_created", task.id, attempt=attempt.number, branch=branch,
                                base_sha=base, node=runner.label)
        elif kind == "judging":
            engine.move(task.id, TaskStatus.AWAITING_QA)

    # -------------------------------------------------------- cluster lost
    def _requeue(self, reason: str) -> AttemptFailed:
        self._lost(reason)
        return AttemptFailed(Outcome.INTERRUPTED, reason, escalate="requeue",
                             interruption=Interruption.CLUSTER_LOST)

    def _lost(self, reason: str) -> None:
        """No attempt starts until the cluster answers again; the run goes on waiting."""
        if self.paused is not None:
            return
        self.paused = reason
        self._cut.set()
        self.limits.hold()  # the engine's own model calls wait for the cluster too
        engine = self.engine
        log.warning("run %s: %s; no attempt starts until it answers again", engine.run_id, reason)
        engine.record_event("executor_paused", None, reason=reason)
        self._probe = asyncio.ensure_future(self._until_back())

    async def _until_back(self) -> None:
        while True:
            await asyncio.sleep(PROBE_EVERY)
            try:
                await asyncio.to_thread(connect, self.ex)
                # What was made before the loss went with it (Ray Client ends a cut-off
                # session's actors): runners, handles and the limiter are made anew.
                self.ex.pool.reset()
                await self._make_limits()
            except cluster_errors():
                continue
            break
        reason, self.paused = self.paused, None
        self._cut.clear()
        log.warning("run %s: the Ray cluster answers again; attempts start", self.engine.run_id)
        self.engine.record_event("executor_resumed", None, after=reason)
        self.engine.wake()

