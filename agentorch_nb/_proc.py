"""Subprocesses that cannot outlive the call that started them.

Each command runs in a new session (its own process group); a timeout or a cancellation
of the awaiting coroutine kills the whole group, grandchildren included, and so does a
normal exit of the command: a background job it left behind is killed with it. A child
that starts a session of its own (``setsid``) leaves the group and is out of reach.

Output is read while the command runs, so a command that times out still returns what it
printed; ``max_output`` bounds what is kept of each stream (its head and its tail), so a
command printing without end cannot fill memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

READ_CHUNK = 64 * 1024


@dataclass
class CommandResult:
    returncode: int | None
    stdout: str
    stderr: str
    timed_out: bool = False
    omitted: int = 0  # bytes dropped from the middle of stdout and stderr by ``max_output``


async def run_command(
    argv: Sequence[str],
    *,
    cwd: str | Path | None = None,
    timeout: float | None = None,
    env: Mapping[str, str] | None = None,
    input: bytes | None = None,
    max_output: int | None = None,
) -> CommandResult:
    """Run ``argv`` in its own process group and return its exit status and output.

    ``env`` replaces the environment (None: inherit); ``input`` is written to stdin (None:
    stdin is /dev/null, so a command never waits on the caller's terminal); ``max_output``
    keeps at most that many bytes of each stream, the first and the last half, and marks
    the cut. On timeout the group is killed and the output so far is returned with
    ``timed_out=True``; on cancellation the group is killed and the cancellation goes on.
    """
    proc = await asyncio.create_subprocess_exec(
        *argv,
        cwd=cwd,
        env=dict(env) if env is not None else None,
        stdin=asyncio.subprocess.PIPE if input is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    out, err = _Capture(max_output), _Capture(max_output)

    async def feed() -> None:
        if input is None or proc.stdin is None:
            return
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            proc.stdin.write(input)
            await proc.stdin.drain()
        proc.stdin.close()

    async def complete() -> None:
        await asyncio.gather(out.drain(proc.stdout), err.drain(proc.stderr), feed())
        await proc.wait()

    try:
        await asyncio.wait_for(complete(), timeout)
    except TimeoutError:
        await _kill_group(proc)
        note = f"timed out after {timeout} s"
        stderr = err.text()
        return CommandResult(
            proc.returncode,
            out.text(),
            f"{stderr.rstrip()}\n{note}" if stderr.strip() else note,
            timed_out=True,
            omitted=out.omitted + err.omitted,
        )
    except BaseException:
        await asyncio.shield(_kill_group(proc))
        raise
    _kill_stragglers(proc)
    return CommandResult(proc.returncode, out.text(), err.text(), omitted=out.omitted + err.omitted)


class _Capture:
    """One output stream, kept whole up to ``limit`` bytes, else its head and tail."""

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    async def drain(self, stream: asyncio.StreamReader | None) -> None:
        if stream is None:
            return
        while chunk := await stream.read(READ_CHUNK):
            self.total += len(chunk)
            if self.limit is None:
                self.head += chunk
                continue
            room = self.limit - self.limit // 2 - len(self.head)
            if room > 0:
                self.head += chunk[:room]
                chunk = chunk[room:]
            if chunk:
                self.tail += chunk
                keep = self.limit // 2
                if len(self.tail) > keep:
                    del self.tail[: len(self.tail) - keep]

    @property
    def omitted(self) -> int:
        return self.total - len(self.head) - len(self.tail)

    def text(self) -> str:
        head = self.head.decode(errors="replace")
        if not self.omitted:
            return head + self.tail.decode(errors="replace")
        return (f"{head}\n[... {self.omitted} bytes of output omitted ...]\n"
                f"{self.tail.decode(errors='replace')}")


def _kill_stragglers(proc: asyncio.subprocess.Process) -> None:
    """The command exited: kill what it left running in its group (background jobs)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


async def _kill_group(proc: asyncio.subprocess.Process, grace: float = 2.0) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        try:
            await asyncio.wait_for(proc.wait(), grace)
            # The leader is gone; make sure no member of its group stayed behind.
            _kill_stragglers(proc)
            return
        except TimeoutError:
            continue
