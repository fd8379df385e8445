"""Big runs and the cyclic garbage collector.

While runs are live, what the heap held once they were planned (their tasks and graph, and
everything imported) is kept out of the cyclic collector's sweeps (``gc.freeze``): a full
sweep otherwise walks every task of a big run and stops the loop for tens of milliseconds
each time (5,000 tasks: 40-90 ms on a 2-core machine). Objects are still freed by reference
counting as ever; only cycles among them wait until the last live run has ended
(``gc.unfreeze``): the sweep put off then happens once, at the collector's next full sweep.
"""

from __future__ import annotations

import gc
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .dispatch import Engine


class FrozenHeap:
    """Which engines keep the heap frozen; the last to end thaws it."""

    def __init__(self) -> None:
        self.engines: set[int] = set()

    def hold(self, engine: Engine) -> None:
        self.engines.add(id(engine))
        gc.freeze()

    def let_go(self, engine: Engine) -> None:
        """The run ended: when no run holds it any more, the heap is the collector's again
        (its next full sweep walks all of it, once)."""
        if id(engine) in self.engines:
            self.engines.discard(id(engine))
            if not self.engines:
                gc.unfreeze()


HEAP = FrozenHeap()
