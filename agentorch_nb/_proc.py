"""Subprocesses that cannot outlive the attempt that started them.

Each command runs in a new session (its own process group); a timeout or a cancellation
of the awaiting coroutine kills the whole group, grandchildren included.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass
class CommandResult:
    returncode: int | None
    stdout: str
    stderr: str
    timed_out: bool = False


async def run_command(
    argv: Sequence[str], *, cwd: str | Path | None = None, timeout: float | None = None
) -> CommandResult:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        await _kill_group(proc)
        return CommandResult(proc.returncode, "", f"timed out after {timeout} s", timed_out=True)
    except BaseException:
        await asyncio.shield(_kill_group(proc))
        raise
    return CommandResult(proc.returncode, out.decode(errors="replace"), err.decode(errors="replace"))


async def _kill_group(proc: asyncio.subprocess.Process, grace: float = 2.0) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            await asyncio.wait_for(proc.wait(), grace)
            # The leader is gone; make sure no member of its group stayed behind.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            return
        except TimeoutError:
            continue
