"""Ray's side of the executor: the connection, warm runners, node agents and shipping.

Runners are Ray actors holding the resources of one task profile's placement; each runs
one attempt at a time and is kept warm for the next, so an attempt costs a method call, not
a process start and the package's import. Idle runners of another placement are let go
when a new one is needed, so warm runners never starve a placement of resources. Every
call that blocks on Ray runs in a thread; the engine's loop only awaits.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..exceptions import InvalidInput
from . import gitship

if TYPE_CHECKING:
    from .executor import RayExecutor

log = logging.getLogger("agentorch_nb.distributed")
_connect_lock = threading.Lock()
MANY = 64  # runners of a placement that needs nothing countable (num_cpus=0)


def cluster_errors() -> tuple[type[BaseException], ...]:
    """What Ray raises when the cluster is out of reach (not when one actor died)."""
    import ray

    return (ConnectionError, ray.exceptions.RaySystemError, ray.exceptions.GetTimeoutError,
            ray.exceptions.ObjectLostError, ray.exceptions.OwnerDiedError)


def describe_failure(exc: BaseException) -> str:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first[:200]}" if first else type(exc).__name__


def connect(ex: RayExecutor) -> None:
    """Join the cluster once per process (as it was asked, or as the user already did)."""
    import ray

    with _connect_lock:
        if ray.is_initialized():
            try:
                ray.cluster_resources()
                return
            except Exception as exc:  # noqa: BLE001 - Ray Client says so with a bare Exception
                if not ex.address or not ex.address.startswith("ray://"):
                    raise ConnectionError(f"the Ray cluster does not answer: {exc}") from exc
                ray.shutdown()  # a Ray Client cut off for good: connect anew below
        try:
            ray.init(address=ex.address, namespace=ex.namespace, log_to_driver=False,
                     include_dashboard=False if ex.address is None else None)
        except ConnectionError:
            raise
        except Exception as exc:  # noqa: BLE001 - whatever ray.init raises when nobody answers
            raise ConnectionError(f"cannot connect to the Ray cluster at {ex.address}: "
                                  f"{describe_failure(exc)}") from exc


def answers() -> bool:
    """Does the cluster this process is connected to answer now (no new connection)?"""
    import ray

    try:
        return ray.is_initialized() and bool(ray.cluster_resources())
    except Exception:  # noqa: BLE001 - Ray Client says it with a bare Exception
        return False


def reachable(ex: RayExecutor) -> bool:
    try:
        connect(ex)
        return True
    except ConnectionError:
        return False


def make_limits(lease: float, spent: tuple[float, int]) -> Any:
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from .limits import Limits

    here = ray.get_runtime_context().get_node_id()
    return ray.remote(Limits).options(
        num_cpus=0, max_concurrency=1000,
        scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=True)).remote(lease, *spent)


def kill(*actors: Any) -> None:
    import ray

    for actor in actors:
        try:
            ray.kill(actor)
        except Exception:  # noqa: BLE001 - gone already, or the cluster is
            pass


@dataclass
class RunnerRef:
    actor: Any
    node: str  # the Ray node id
    ip: str
    agent: Any  # that node's NodeAgent
    key: str  # its placement, as a key
    generation: int = 0  # the pool's generation it was made in
    label: str = field(init=False)

    def __post_init__(self) -> None:
        self.label = f"{self.ip}/{self.node[:8]}"


class RunnerPool:
    """Warm runners per placement. An attempt takes an idle one, or waits for the first
    that is given back or newly made; no more are made than the live nodes can hold at
    once, so an attempt beyond the cluster's room waits for a runner instead of a
    creation Ray could never schedule."""

    def __init__(self, ex: RayExecutor) -> None:
        self.ex = ex
        self.idle: dict[str, list[RunnerRef]] = {}
        self.waiters: dict[str, deque[asyncio.Future]] = {}
        self.count: dict[str, int] = {}  # runners alive or being made, per placement
        self.agents: dict[str, Any] = {}  # node id -> NodeAgent
        self.known: dict[str, set[str]] = {}  # node id -> commits its clone has for sure
        self.placed: dict[str, dict[str, str]] = {}  # node id -> its refs as last set
        self.ship_locks: dict[str, asyncio.Lock] = {}
        self.bundles: dict[tuple, asyncio.Future] = {}  # the latest few, shared by nodes
        self.users = 0  # live runs on this pool; with none, idle runners are let go
        self.generation = 0  # one more each time the cluster came back after a loss

    # ------------------------------------------------------------ runners
    async def warm(self, placement: dict[str, Any], n: int) -> None:
        room = await asyncio.to_thread(capacity, placement)
        for _ in range(min(n, room) - self.count.get(_key(placement), 0)):
            self._spawn(placement)

    async def take(self, placement: dict[str, Any]) -> RunnerRef:
        key = _key(placement)
        if self.idle.get(key):
            return self.idle[key].pop()
        waiter = asyncio.get_running_loop().create_future()
        self.waiters.setdefault(key, deque()).append(waiter)
        try:
            room = await asyncio.to_thread(capacity, placement)
            if room == 0:
                raise InvalidInput(f"no node of the Ray cluster can hold an attempt that needs "
                                   f"{placement}: add such a node, or change RayExecutor(placement=...)")
            if self.count.get(key, 0) < room and not waiter.done():
                self._make_room(key)
                self._spawn(placement)
            return await waiter
        except BaseException:
            if waiter in self.waiters[key]:
                self.waiters[key].remove(waiter)
            elif waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self.give_back(waiter.result())  # handed over as this caller gave up
            raise

    def _make_room(self, key: str) -> None:
        """Idle runners of other placements hold resources a new runner may need."""
        for other, idle in self.idle.items():
            if other != key:
                for runner in idle:
                    self.count[other] -= 1
                    kill(runner.actor)
                idle.clear()

    def _spawn(self, placement: dict[str, Any]) -> None:
        key = _key(placement)
        self.count[key] = self.count.get(key, 0) + 1
        generation = self.generation
        made = asyncio.ensure_future(self._create(placement, generation))
        made.add_done_callback(lambda done: self._made(key, done, generation))

    def _made(self, key: str, done: asyncio.Future, generation: int) -> None:
        if generation != self.generation:  # made for a cluster connection that is gone
            if not done.cancelled() and done.exception() is None:
                kill(done.result().actor)
            return
        if not done.cancelled() and done.exception() is None:
            self.give_back(done.result())
            return
        self.count[key] -= 1
        waiting = self.waiters.get(key)
        if done.cancelled():
            return
        log.warning("a Ray runner failed to start: %s", describe_failure(done.exception()))
        while waiting:  # the attempt waiting longest hears why
            waiter = waiting.popleft()
            if not waiter.done():
                waiter.set_exception(done.exception())
                return

    async def _create(self, placement: dict[str, Any], generation: int) -> RunnerRef:
        import ray

        from .node import Runner

        options = {k: v for k, v in placement.items() if v is not None}
        actor = ray.remote(Runner).options(
            max_concurrency=8, runtime_env=self.ex.runner_env() or None, **options
        ).remote(self.ex.env_vars)
        node, ip = await actor.where.remote()
        return RunnerRef(actor, node, ip, await self._agent(node), _key(placement), generation)

    def give_back(self, runner: RunnerRef) -> None:
        if runner.generation != self.generation:
            kill(runner.actor)
            return
        waiting = self.waiters.get(runner.key)
        while waiting:
            waiter = waiting.popleft()
            if not waiter.done():
                waiter.set_result(runner)
                return
        if self.users == 0:  # no run needs it: its resources go back to the cluster
            self.count[runner.key] -= 1
            kill(runner.actor)
            return
        self.idle.setdefault(runner.key, []).append(runner)

    def reset(self) -> None:
        """After the cluster was out of reach: every runner and handle of before is gone (a
        runner of an earlier generation that comes back is let go, not counted)."""
        self.generation += 1
        kill(*(runner.actor for idle in self.idle.values() for runner in idle))
        self.count.clear()
        self.idle.clear()
        self.agents.clear()
        self.known.clear()
        self.placed.clear()
        self.bundles.clear()

    def forget_node(self, node: str) -> None:
        """What the pool knew of ``node``'s clones and agent: asked anew next time."""
        self.known.pop(node, None)
        self.placed.pop(node, None)
        self.agents.pop(node, None)

    def lost(self, runner: RunnerRef, node_gone: bool = False) -> None:
        """``runner`` died; with ``node_gone``, so did its node: forget what the node had
        and its idle runners."""
        self.count[runner.key] -= 1
        if node_gone:
            self.forget_node(runner.node)
            for key, idle in self.idle.items():
                self.count[key] -= sum(r.node == runner.node for r in idle)
                idle[:] = [r for r in idle if r.node != runner.node]
        for key, waiting in self.waiters.items():
            if waiting:  # they waited for runners that are gone: make others
                asyncio.ensure_future(self._refill(json.loads(key)))

    async def _refill(self, placement: dict[str, Any]) -> None:
        key = _key(placement)
        room = await asyncio.to_thread(capacity, placement)
        for _ in range(min(len(self.waiters.get(key, ())), room - self.count.get(key, 0))):
            self._spawn(placement)

    def node_dead(self, node: str) -> bool:
        import ray

        return not any(n["NodeID"] == node and n.get("Alive") for n in ray.nodes())

    async def stop(self, runner: RunnerRef) -> None:
        """Cancel the attempt on ``runner`` and wait (bounded) until it has ended, its
        commands' process trees killed; a runner that does not confirm is let go."""
        try:
            ended = await asyncio.wait_for(asyncio.wrap_future(runner.actor.stop.remote().future()), 30)
        except Exception:  # noqa: BLE001 - it is dead or does not answer
            ended = False
        if ended:
            self.give_back(runner)
        else:
            self.lost(runner)
            await asyncio.to_thread(kill, runner.actor)

    async def leave(self) -> None:
        """A run is over with this pool; the last one lets the idle runners go."""
        self.users -= 1
        if self.users == 0:
            await asyncio.to_thread(kill, *self.let_go())

    def let_go(self) -> list[Any]:
        """Forget the idle runners; returns their actors, to be killed."""
        actors = []
        for key, idle in self.idle.items():
            actors += [runner.actor for runner in idle]
            self.count[key] -= len(idle)
            idle.clear()
        return actors

    # ----------------------------------------------------- nodes' clones
    async def _agent(self, node: str) -> Any:
        if node not in self.agents:
            self.agents[node] = await asyncio.to_thread(self._make_agent, node)
        return self.agents[node]

    def _make_agent(self, node: str) -> Any:
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        from .node import NodeAgent

        # Detached: the clone it keeps serves later runs and engines, not just this one.
        return ray.remote(NodeAgent).options(
            name=f"agentorch-node-{node}", namespace=self.ex.namespace, get_if_exists=True,
            lifetime="detached", num_cpus=0, max_concurrency=16,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False),
        ).remote(self.ex.work_dir)

    def _bundle(self, root: Path, refs: dict[str, str], known: set[str]) -> asyncio.Future:
        """The bundle of ``refs`` minus ``known``: made once when several nodes need the same
        (a new cluster's nodes all start empty)."""
        key = (str(root), tuple(sorted(refs.items())), frozenset(known))
        if key not in self.bundles:
            while len(self.bundles) >= BUNDLES_KEPT:
                del self.bundles[next(iter(self.bundles))]
            made = self.bundles[key] = asyncio.ensure_future(
                asyncio.to_thread(gitship.make_bundle, root, list(refs), known))
            made.add_done_callback(
                lambda done: done.cancelled() or done.exception() is None
                or self.bundles.pop(key, None))  # a failure is not kept: the next one tries again
        return self.bundles[key]

    async def ship(self, runner: RunnerRef, root: Path, target: str, refs: dict[str, str]) -> None:
        """Make ``runner``'s node hold ``refs``' commits, sending only what it lacks, and
        point its target branch at the target's tip."""
        key = gitship.repo_key(root)
        async with self.ship_locks.setdefault(runner.node, asyncio.Lock()):
            known = self.known.get(runner.node)
            if known is None:
                known = set(await runner.agent.heads.remote(key, target))
            data = None
            if any(sha not in known for sha in refs.values()):
                data = await self._bundle(root, refs, known)
            updates = {f"refs/heads/{target}": refs[f"refs/heads/{target}"]}
            updates.update({f"refs/agentorch/in/{sha}": sha for ref, sha in refs.items()
                            if ref != f"refs/heads/{target}"})
            if data is None and self.placed.get(runner.node) == updates:
                return  # the node is where this attempt needs it (no merge since the last)
            await runner.agent.receive.remote(key, target, data, updates)
            self.placed[runner.node] = updates
            # What was sent reaches everything sent before it (the target only moves on):
            # excluding it is enough for the next bundle.
            self.known[runner.node] = set(refs.values())


def capacity(placement: dict[str, Any]) -> int:
    """How many runners of ``placement`` the live nodes can hold at once (by their totals)."""
    import ray

    wanted = {"CPU": placement.get("num_cpus", 0), "GPU": placement.get("num_gpus", 0),
              "memory": placement.get("memory", 0), **placement.get("resources", {})}
    wanted = {k: v for k, v in wanted.items() if v}
    room = 0
    for node in ray.nodes():
        if node.get("Alive"):
            have = node["Resources"]
            room += min((int(have.get(k, 0) // v) for k, v in wanted.items()), default=MANY)
    return min(room, MANY)


BUNDLES_KEPT = 2  # bundles may be large: only those made last are kept for other nodes


def _key(placement: dict[str, Any]) -> str:
    return json.dumps(placement, sort_keys=True)
