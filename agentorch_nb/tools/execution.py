"""Execution tools: a shell command or a Python snippet, run in the worktree."""

from __future__ import annotations

import os
import sys

from ..model import Profile
from .base import ToolEnv, ToolError, ToolResult, tool
from .paths import relative
from .process import describe, run, shell, timeout_for

RUNNERS = {Profile.CODE, Profile.TEST, Profile.TEST_ARCHITECT, Profile.RESEARCH, Profile.WRITE,
           Profile.MERGE}
TIMEOUT_ARG = {"type": "integer", "minimum": 1,
               "description": "Seconds before the command and everything it started are killed "
                              "(default 120, at most 600)."}


@tool("run_shell",
      "Run a shell command (bash) in the worktree and return its exit code, stdout and stderr. "
      "It has no terminal and no stdin; background jobs are killed when it returns.",
      {"properties": {"command": {"type": "string", "minLength": 1},
                      "timeout_seconds": TIMEOUT_ARG,
                      "workdir": {"type": "string", "description": "Directory in the worktree to run in "
                                                                    "(default: the worktree root)."}},
       "required": ["command"]},
      profiles=RUNNERS - {Profile.RESEARCH}, paths=("workdir",))
async def run_shell(env: ToolEnv, command: str, timeout_seconds: int | None = None,
                    workdir: str | None = None) -> ToolResult:
    limit = timeout_for(env, timeout_seconds)
    if workdir is not None and not os.path.isdir(workdir):
        raise ToolError(f"workdir {relative(env.root, workdir)!r} is not a directory in the worktree")
    result = await run(env, [shell(), "-c", command], timeout=limit, cwd=workdir)
    return describe(result, limit)


@tool("run_python",
      "Run a Python snippet with this interpreter, in the worktree (importable from there), and "
      "return its exit code, stdout and stderr. Print what you want to see.",
      {"properties": {"code": {"type": "string", "minLength": 1}, "timeout_seconds": TIMEOUT_ARG},
       "required": ["code"]},
      profiles=RUNNERS)
async def run_python(env: ToolEnv, code: str, timeout_seconds: int | None = None) -> ToolResult:
    limit = timeout_for(env, timeout_seconds)
    result = await run(env, [sys.executable, "-"], timeout=limit, input=code.encode(),
                       extra_env={"PYTHONUNBUFFERED": "1"})
    return describe(result, limit)
