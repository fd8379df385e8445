"""Which event loop a run lives on, and how other threads reach it.

In a Jupyter kernel (or any running loop) a run is an asyncio task on that loop, so widget
handlers and cells touch it directly. From plain Python there is no running loop, so the
package keeps one daemon thread with its own loop for all runs of the process; calls from
other threads are marshalled onto it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
_background: asyncio.AbstractEventLoop | None = None
_lock = threading.Lock()


def running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def background_loop() -> asyncio.AbstractEventLoop:
    global _background
    with _lock:
        if _background is None or _background.is_closed():
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="agentorch-loop", daemon=True).start()
            _background = loop
        return _background


def on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    return running_loop() is loop


def call_on(loop: asyncio.AbstractEventLoop, fn: Callable[..., T], *args, **kwargs) -> T:
    """Call ``fn`` on ``loop``'s thread and return its result (directly when already there,
    or when the loop is not running: then nothing else touches what it owns, and waiting for
    it would wait for ever)."""
    if on_loop(loop) or not loop.is_running():
        return fn(*args, **kwargs)

    async def _call() -> T:
        return fn(*args, **kwargs)

    return asyncio.run_coroutine_threadsafe(_call(), loop).result()
