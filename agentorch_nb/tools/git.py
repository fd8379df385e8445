"""Git tools: the git CLI, run through the same subprocess path as every command."""

from __future__ import annotations

from ..model import Profile
from .base import ALL_PROFILES, ToolEnv, ToolError, ToolResult, tool
from .paths import relative
from .process import run

COMMITTERS = ALL_PROFILES - {Profile.PLAN.value}
# Variables that would override the fixed author given with -c.
IDENTITY_ENV = ("GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_AUTHOR_DATE", "GIT_COMMITTER_NAME",
                "GIT_COMMITTER_EMAIL", "GIT_COMMITTER_DATE")


async def git(env: ToolEnv, *args: str, check: bool = True) -> ToolResult:
    """Run ``git args`` in the worktree; a failure (non-zero exit) is a :class:`ToolError`
    carrying git's own message, which says what to do."""
    name, email = env.git_author
    argv = ["git", "-c", f"user.name={name}", "-c", f"user.email={email}",
            "-c", "commit.gpgsign=false", "-c", "core.pager=cat", *args]
    ran = await run(env, argv, drop_env=IDENTITY_ENV)
    if ran.timed_out:
        raise ToolError(f"git {args[0]} timed out after {env.timeout:g} s and was killed")
    if check and ran.returncode != 0:
        raise ToolError(f"git {args[0]} failed (exit {ran.returncode}): "
                        f"{(ran.stderr or ran.stdout).strip()}")
    # A long diff's cut is stated once, exactly, by the bound of the answer.
    return ToolResult(content=ran.kept("stdout"), data={"returncode": ran.returncode},
                      omitted=ran.stdout_omitted)


def _rel(env: ToolEnv, path: str | None) -> list[str]:
    return ["--", relative(env.root, path)] if path else []


@tool("git_status", "Show the branch and the changed, staged and untracked files of the worktree.",
      {"properties": {}})
async def git_status(env: ToolEnv) -> ToolResult:
    result = await git(env, "status", "--short", "--branch")
    result.content = result.content or "(clean)"
    return result


@tool("git_diff", "Show changes of the worktree: unstaged by default, staged=true for the index, "
                  "stat=true for a summary only; path limits it to one file or directory.",
      {"properties": {"path": {"type": "string"}, "staged": {"type": "boolean"},
                      "stat": {"type": "boolean"}}},
      paths=("path",))
async def git_diff(env: ToolEnv, path: str | None = None, staged: bool = False,
                   stat: bool = False) -> ToolResult:
    args = ["diff", *(["--cached"] if staged else []), *(["--stat"] if stat else []), *_rel(env, path)]
    result = await git(env, *args)
    result.content = result.content or "(no changes)"
    return result


@tool("git_log", "Show recent commits (newest first), optionally only those touching path.",
      {"properties": {"max_count": {"type": "integer", "minimum": 1, "maximum": 200},
                      "path": {"type": "string"}}},
      paths=("path",))
async def git_log(env: ToolEnv, max_count: int = 10, path: str | None = None) -> ToolResult:
    result = await git(env, "log", f"--max-count={max_count}", "--date=short",
                       "--format=%h %ad %an: %s", *_rel(env, path))
    result.content = result.content or "(no commits)"
    return result


@tool("git_commit", "Stage and commit changes of the worktree: all of them, or only paths. "
                    "The author is fixed.",
      {"properties": {"message": {"type": "string", "minLength": 1},
                      "paths": {"type": "array", "items": {"type": "string"}, "minItems": 1}},
       "required": ["message"]},
      profiles=COMMITTERS, paths=("paths",))
async def git_commit(env: ToolEnv, message: str, paths: list[str] | None = None) -> ToolResult:
    targets = [relative(env.root, p) for p in paths] if paths else ["."]
    await git(env, "add", "-A", "--", *targets)
    staged = await git(env, "diff", "--cached", "--quiet", check=False)
    if staged.data and staged.data.get("returncode") == 0:
        raise ToolError("nothing to commit: no changes are staged" +
                        (" under the given paths" if paths else "") + "; check git_status")
    await git(env, "commit", "--quiet", "-m", message)
    head = await git(env, "log", "-1", "--stat", "--format=committed %h: %s")
    sha = await git(env, "rev-parse", "HEAD")
    return ToolResult(content=head.content.strip(), data={"sha": sha.content.strip()},
                      omitted=head.omitted)
