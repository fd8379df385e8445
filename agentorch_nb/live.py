"""The engines this process drives, by store file and run id.

A :class:`~agentorch_nb.Run` handle looks its run up here: found and not ended, the run is
live in this process and is steered in memory; otherwise it is read from the store and
steered through the command inbox (:mod:`agentorch_nb.remote`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .engine.dispatch import Engine

_ENGINES: dict[tuple[str, str], Engine] = {}


def register(store_path: str, engine: Engine) -> None:
    for stale in [k for k, e in _ENGINES.items() if e.ended]:
        del _ENGINES[stale]  # engines whose loop is gone; their runs read from the store
    _ENGINES[(store_path, engine.run_id)] = engine


def forget(store_path: str, engine: Engine) -> None:
    if _ENGINES.get((store_path, engine.run_id)) is engine:
        del _ENGINES[(store_path, engine.run_id)]


def engine_for(store_path: str, run_id: str) -> Engine | None:
    """The engine of this process that drives ``run_id`` (ended or not), or None."""
    e = _ENGINES.get((store_path, run_id))
    return None if e is None or (e.loop is not None and e.loop.is_closed()) else e


def live_run_ids(store_path: str) -> set[str]:
    return {rid for (path, rid), e in _ENGINES.items() if path == store_path and not e.ended}


def clear() -> None:
    """Forget every engine (tests: as in a new kernel, only the store knows the runs)."""
    _ENGINES.clear()
