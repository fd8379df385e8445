"""Process-wide limits on LLM calls: calls in flight, requests and tokens per minute per model.

One limiter serves every LLM client of the process, whichever event loop it runs on (a
notebook kernel's loop and the package's background loop may both call models), so its
state sits behind a short ``threading.Lock`` and waiting is always ``await``: nothing here
blocks an event loop.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

WINDOW = 60.0  # seconds: "per minute"


@dataclass
class Usage:
    at: float
    tokens: int
    cost_usd: float = 0.0  # set by the caller with the real tokens once the reply is in
    billed: bool = False  # a reply came: tokens and cost were spent (not only estimated)


class _Window:
    """Requests and tokens of one model over the last ``window`` seconds."""

    def __init__(self) -> None:
        self.uses: deque[Usage] = deque()

    def wait_for(
        self, now: float, window: float, rpm: int | None, tpm: int | None, tokens: int
    ) -> float:
        """0 if a request of ``tokens`` may start now, else how long until the window frees."""
        while self.uses and self.uses[0].at <= now - window:
            self.uses.popleft()
        if not self.uses:
            return 0.0  # an empty window admits one request, however large
        if rpm is not None and len(self.uses) >= rpm:
            return self.uses[0].at + window - now
        if tpm is not None:
            used = sum(u.tokens for u in self.uses)
            if used + tokens > tpm:
                # The earliest moment enough old usage has left the window.
                for use in self.uses:
                    used -= use.tokens
                    if used + tokens <= tpm:
                        return use.at + window - now
        return 0.0


class RateLimiter:
    """Calls in flight (all models) plus requests/minute and tokens/minute per model.

    ``limits`` maps a model name, or ``"*"`` for every other model, to ``{"rpm", "tpm"}``.
    """

    def __init__(
        self,
        max_concurrent: int = 8,
        limits: dict[str, dict[str, int]] | None = None,
        *,
        window: float = WINDOW,
    ) -> None:
        self.window = window
        self._lock = threading.Lock()
        self._limits: dict[str, dict[str, int]] = dict(limits or {})
        self._windows: dict[str, _Window] = {}
        self._capacity = max_concurrent
        self._in_flight = 0
        self._waiters: deque[tuple[asyncio.AbstractEventLoop, asyncio.Future]] = deque()

    def configure(
        self, max_concurrent: int | None = None, limits: dict[str, dict[str, int]] | None = None
    ) -> None:
        """Change the limits; entries for other models are kept. The last setting wins."""
        with self._lock:
            if limits:
                self._limits.update({m: dict(v) for m, v in limits.items()})
            if max_concurrent is not None:
                self._capacity = max_concurrent
            self._grant_locked()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def shared_spend(self) -> tuple[float, int] | None:
        """What every client sharing this limiter spent, where it keeps count (a cluster's
        limiter does); None here: each LLM client counts its own run's spending."""
        return None

    @asynccontextmanager
    async def slot(self, model: str, tokens: int = 0) -> AsyncIterator[Usage]:
        """Wait for a free slot and room in ``model``'s window; yields the usage record,
        whose ``tokens`` (and ``cost_usd``) the caller corrects once the reply is in."""
        await self._acquire()
        try:
            use = await self._admit(model, tokens)
            yield use
        finally:
            self._release()

    # --------------------------------------------------------------- the window
    async def _admit(self, model: str, tokens: int) -> Usage:
        while True:
            with self._lock:
                lim = self._limits.get(model) or self._limits.get("*") or {}
                win = self._windows.setdefault(model, _Window())
                now = time.monotonic()
                delay = win.wait_for(now, self.window, lim.get("rpm"), lim.get("tpm"), tokens)
                if delay <= 0:
                    use = Usage(now, tokens)
                    win.uses.append(use)
                    return use
            await asyncio.sleep(delay + 0.001)

    # ---------------------------------------------------------------- the slots
    async def _acquire(self) -> None:
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._in_flight < self._capacity and not self._waiters:
                self._in_flight += 1
                return
            fut = loop.create_future()
            self._waiters.append((loop, fut))
        try:
            await fut
        except asyncio.CancelledError:
            with self._lock:
                try:
                    self._waiters.remove((loop, fut))
                    granted = False
                except ValueError:  # a slot was handed over already, or is on its way
                    granted = fut.done() and not fut.cancelled()
            if granted:
                self._release()
            raise

    def _release(self) -> None:
        with self._lock:
            self._in_flight -= 1
            self._grant_locked()

    def _grant_locked(self) -> None:
        while self._waiters and self._in_flight < self._capacity:
            loop, fut = self._waiters.popleft()
            self._in_flight += 1
            try:
                loop.call_soon_threadsafe(self._hand_over, fut)
            except RuntimeError:  # that loop is closed: the slot goes to the next waiter
                self._in_flight -= 1

    def _hand_over(self, fut: asyncio.Future) -> None:
        if fut.cancelled():  # its waiter gave up after the slot was granted
            self._release()
        else:
            fut.set_result(None)


_shared: RateLimiter | None = None
_shared_lock = threading.Lock()


def shared_limiter() -> RateLimiter:
    """The limiter every LLM client of this process uses unless given its own."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = RateLimiter()
        return _shared
