"""One keeper of a run's LLM limits for every node: calls in flight, requests and tokens
per minute, and the budget.

``Limits`` is a Ray actor (created by the engine, on the engine's node) wrapping the same
:class:`~agentorch_nb.llm.limits.RateLimiter` a process uses alone, plus the run's
spending. ``RemoteLimiter`` is what an LLM client uses instead of the process-wide limiter,
on the nodes and in the engine alike: a slot is granted by the actor, and when the call
ends its real tokens and cost go back to it. The grant carries the totals spent so far, so
the client's budget check before each call sees what every node has spent: no call starts
once the budget is spent (calls already in flight may overshoot it, as in one process).

A grant whose holder vanished (its node died mid-call) is taken back after ``lease``
seconds, so a lost node cannot keep a slot forever.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from ..llm.limits import RateLimiter, Usage


class Limits:
    def __init__(self, lease: float, usd: float = 0.0, tokens: int = 0) -> None:
        self.lease = lease
        self.limiter = RateLimiter()
        self.usd = usd  # spent before this keeper (one that went with a lost cluster)
        self.tokens = tokens
        self.grants: dict[int, tuple[Any, Usage, float]] = {}
        self.ids = itertools.count(1)

    def configure(self, max_concurrent: int | None, limits: dict | None) -> None:
        self.limiter.configure(max_concurrent, limits)

    async def acquire(self, model: str, tokens: int) -> tuple[int, float, int]:
        await self._reclaim()
        slot = self.limiter.slot(model, tokens)
        use = await slot.__aenter__()
        gid = next(self.ids)
        self.grants[gid] = (slot, use, time.monotonic())
        return gid, self.usd, self.tokens

    async def release(self, gid: int, tokens: int, cost_usd: float, billed: bool) -> tuple[float, int]:
        if billed:  # counted before the slot is handed on: the next grant sees it
            self.usd += cost_usd
            self.tokens += tokens
        held = self.grants.pop(gid, None)
        if held is not None:
            slot, use, _ = held
            use.tokens = tokens
            await slot.__aexit__(None, None, None)
        return self.usd, self.tokens

    def spent(self) -> tuple[float, int]:
        return self.usd, self.tokens

    async def _reclaim(self) -> None:
        now = time.monotonic()
        for gid, (slot, _, since) in list(self.grants.items()):
            if now - since > self.lease:
                del self.grants[gid]
                await slot.__aexit__(None, None, None)


class RemoteLimiter:
    """An LLM client's limiter that asks the run's ``Limits`` actor (``actor`` is set once
    the engine has created it; the object travels to the nodes with each attempt)."""

    def __init__(self, actor: Any = None) -> None:
        self.actor = actor
        self._spend: tuple[float, int] = (0.0, 0)
        self._settings: tuple | None = None  # configured before the actor existed
        # In the engine: open while the actor can be asked. A call made while the cluster
        # is out of reach (or before the run has reached it) waits instead of failing.
        self._open = asyncio.Event()

    def __getstate__(self) -> dict:  # what a node gets: the actor, and no waiting
        return {"actor": self.actor, "_spend": self._spend}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["actor"])
        self._spend = state["_spend"]
        self._open.set()

    def attach(self, actor: Any) -> None:
        self.actor = actor
        if self._settings is not None:
            self.configure(*self._settings)
        self._open.set()

    def hold(self) -> None:
        """The cluster is out of reach: calls wait until ``attach`` is called again."""
        self._open.clear()

    def configure(self, max_concurrent: int | None = None, limits: dict | None = None) -> None:
        if self.actor is None:
            self._settings = (max_concurrent, limits)
        else:
            self.actor.configure.remote(max_concurrent, limits)

    def shared_spend(self) -> tuple[float, int]:
        return self._spend

    @asynccontextmanager
    async def slot(self, model: str, tokens: int = 0) -> AsyncIterator[Usage]:
        await self._open.wait()
        gid, usd, spent = await self.actor.acquire.remote(model, tokens)
        self._spend = (usd, spent)
        use = Usage(time.monotonic(), tokens)
        try:
            yield use
        finally:
            # The slot goes back even if this call is cancelled meanwhile.
            done = asyncio.ensure_future(self._release(gid, use))
            await asyncio.shield(done)

    async def _release(self, gid: int, use: Usage) -> None:
        self._spend = await self.actor.release.remote(gid, use.tokens, use.cost_usd, use.billed)
