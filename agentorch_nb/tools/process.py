"""Subprocesses for tools: the shared path through :func:`agentorch_nb._proc.run_command`,
with the worktree as cwd, a scrubbed environment, the env's time limit and bounded output."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from .._proc import CommandResult, run_command
from .base import ToolEnv, ToolError, ToolResult
from .secrets import scrubbed_env

# Characters kept of each stream, in units of the env's limit: the answer is cut again to
# that limit, and the capture's own cut (2 limits from either end) always falls in the part
# that second cut drops, so its note can count both exactly.
CAPTURE_FACTOR = 4


def timeout_for(env: ToolEnv, requested: float | None) -> float:
    """The limit of one command: the env's default, or what the model asked for up to
    ``env.max_timeout``."""
    if requested is None:
        return env.timeout
    if requested <= 0:
        raise ToolError("timeout_seconds must be positive")
    return min(float(requested), env.max_timeout)


async def run(env: ToolEnv, argv: Sequence[str], *, timeout: float | None = None,
              cwd: str | None = None, input: bytes | None = None,
              extra_env: Mapping[str, str] | None = None, drop_env: Sequence[str] = ()) -> CommandResult:
    """Run ``argv`` for a tool: cwd the worktree (or a confined ``cwd`` in it), credentials
    out of the environment, the whole process group killed at the time limit."""
    where = cwd or env.root
    if not os.path.isdir(where):
        raise ToolError(f"the worktree {str(env.root)!r} does not exist (any more); finish and report it")
    environ = scrubbed_env()
    for name in drop_env:
        environ.pop(name, None)
    environ.update(extra_env or {})
    try:
        return await run_command(argv, cwd=where, timeout=timeout or env.timeout,
                                 env=environ, input=input,
                                 max_output=env.output_limit * CAPTURE_FACTOR)
    except FileNotFoundError as exc:
        raise ToolError(f"cannot run {argv[0]!r}: {exc.strerror or exc}") from exc


def describe(result: CommandResult, timeout: float) -> ToolResult:
    """A command's outcome as the model reads it: exit code, stdout, stderr. A timeout is an
    error result that still shows the output the command gave before it was killed."""
    parts = [f"exit code: {result.returncode}"] if not result.timed_out else []
    # Kept output without the capture's notes: the bound of the answer states the cut.
    stdout, stderr = result.kept("stdout"), result.kept("stderr")
    if result.timed_out:  # the error says it; keep only what the command wrote
        stderr = stderr.removesuffix(f"timed out after {timeout} s").rstrip()
    if stdout:
        parts.append(f"--- stdout ---\n{stdout.rstrip()}")
    if stderr:
        parts.append(f"--- stderr ---\n{stderr.rstrip()}")
    if not (stdout or stderr):
        parts.append("(no output)")
    text = "\n".join(parts)
    if result.timed_out:
        failed = ToolResult.fail(
            f"timed out after {timeout:g} s; the command and every process it started were killed "
            "(pass a larger timeout_seconds, or run less at once)", text)
        failed.omitted = result.omitted
        return failed
    return ToolResult(content=text, data={"returncode": result.returncode}, omitted=result.omitted)


def shell() -> str:
    """bash where there is one (models write bash), else the POSIX shell."""
    for candidate in ("/bin/bash", "/usr/bin/bash"):
        if os.access(candidate, os.X_OK):
            return candidate
    return "/bin/sh"
