"""Writes made on an engine's loop, gathered per turn of the loop and handed to the store's
thread as one unit.

One step of the engine writes rows that only make sense together: a status change is an
event and the task's new row. If the store's thread could take a batch between the two, a
crash right after that commit would leave a file whose events say one thing and whose
tables another. So writes made on a bound loop go to that loop's batch of the current turn
(no lock: only the loop's thread touches it), and a callback the first write schedules hands
the whole turn to the store at once. Rows of keyed tables may be given as functions
(:meth:`LoopTurns.upsert_later`): built once, when the turn is handed over, from the state
the turn's events lead to, however often the task changed during the turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import Callable

from .batch import Batch


class LoopTurns:
    def __init__(self, hand_over: Callable[[Batch], None]) -> None:
        self._hand_over = hand_over
        self._loops: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()
        self._turns: dict[asyncio.AbstractEventLoop, Batch] = {}
        self._later: dict[asyncio.AbstractEventLoop, dict[tuple, Callable[[], dict]]] = {}
        self._held: dict[asyncio.AbstractEventLoop, int] = {}  # one_unit() blocks open

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loops.add(loop)

    def current(self) -> Batch | None:
        """The running bound loop's batch of this turn, or None off a bound loop."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return None
        if loop not in self._loops:
            return None
        turn = self._turns.get(loop)
        if turn is None:
            turn = self._turns[loop] = Batch()
            loop.call_soon(self._turn_ended, loop)
        return turn

    @contextlib.contextmanager
    def one_unit(self):
        """Writes made on the running loop inside this block, over as many turns as it
        takes, reach the store as one unit (a flush asked for meanwhile still sends them)."""
        loop = asyncio.get_running_loop()
        self._held[loop] = self._held.get(loop, 0) + 1
        try:
            yield
        finally:
            self._held[loop] -= 1
            if not self._held[loop]:
                del self._held[loop]
                self.hand_over(loop)

    def _turn_ended(self, loop: asyncio.AbstractEventLoop) -> None:
        if loop not in self._held:  # else the end of the unit hands it over
            self.hand_over(loop)

    def upsert_later(self, table: str, key: tuple, build: Callable[[], dict]) -> bool:
        """Queue ``build()``'s row for this turn; False off a bound loop (write it now)."""
        if self.current() is None:
            return False
        self._later.setdefault(asyncio.get_running_loop(), {})[(table, key)] = build
        return True

    def hand_over(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Give ``loop``'s turn (by default the running loop's) to the store now: before a
        flush or a read asked for on the loop, and at the end of every turn."""
        if loop is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return
        turn = self._turns.pop(loop, None)
        if turn is None:
            return
        for (table, key), build in self._later.pop(loop, {}).items():
            turn.upserts.setdefault(table, {})[key] = build()
        self._hand_over(turn)

    def hand_over_all(self) -> None:
        """At close: whatever a loop that stopped left behind."""
        for loop in list(self._turns):
            self.hand_over(loop)
