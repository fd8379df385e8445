"""Search tools: text or regex search over the worktree (``git grep``), and web search through
Tavily."""

from __future__ import annotations

import asyncio
import json
import os
import re
import urllib.error
import urllib.request
from typing import Any

from ..model import Profile
from .base import ToolEnv, ToolError, ToolResult, tool
from .paths import relative
from .process import run

TAVILY_URL = "https://api.tavily.com/search"
WEB_TIMEOUT = 30.0
# Directories nobody means to search (dependencies, caches), beyond what .gitignore says.
SKIP_DIRS = ("node_modules", "__pycache__", ".venv", "venv", ".mypy_cache", ".pytest_cache",
             ".tox", ".agentorch")
MAX_LINE = 300  # characters of a matching line shown


@tool("search_codebase",
      "Search the files of the worktree for a text (or a Python regex with regex=true). Returns "
      "'path:line: text' per match, at most max_results (default 50).",
      {"properties": {"pattern": {"type": "string", "minLength": 1},
                      "regex": {"type": "boolean"},
                      "case_sensitive": {"type": "boolean"},
                      "path": {"type": "string", "description": "File or directory to search "
                                                                 "(default: the whole worktree)."},
                      "glob": {"type": "string", "description": "Only files whose name matches, "
                                                                 "e.g. '*.py'."},
                      "max_results": {"type": "integer", "minimum": 1, "maximum": 500}},
       "required": ["pattern"]},
      paths=("path",))
async def search_codebase(env: ToolEnv, pattern: str, regex: bool = False, case_sensitive: bool = True,
                          path: str | None = None, glob: str | None = None,
                          max_results: int = 50) -> ToolResult:
    """``git grep`` over the worktree's tracked and untracked files (not ignored ones, not
    binary ones, never through a symlink), in its own process group under the env's time
    limit."""
    if regex:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ToolError(f"invalid regex {pattern!r}: {exc}; fix it or pass regex=false") from exc
    root = os.path.realpath(env.root)
    top = path or root
    if not os.path.exists(top):
        raise ToolError(f"no such file or directory: {relative(root, top)!r}")
    where = pathspecs(relative(root, top), glob, os.path.isfile(top))
    kind = "-P" if regex else "-F"  # Perl-compatible: the nearest to Python's re
    ran = await _git_grep(env, root, kind, pattern, case_sensitive, where)
    if regex and ran.returncode == 128 and "PCRE" in ran.stderr.upper():
        ran = await _git_grep(env, root, "-E", pattern, case_sensitive, where)  # git without PCRE
    if ran.timed_out:
        raise ToolError(f"the search timed out after {env.timeout:g} s; narrow the path or glob")
    if ran.returncode not in (0, 1):  # 1: nothing matched
        raise ToolError(f"the search failed: {ran.stderr.strip().splitlines()[-1:] or ran.returncode}")
    return ToolResult(content=matches(ran.stdout, max_results))


async def _git_grep(env: ToolEnv, root: str, kind: str, pattern: str, case_sensitive: bool,
                    where: list[str]):
    # The repository's own grep settings must not change what the model reads.
    git = ["git", "-c", "grep.lineNumber=false", "-c", "grep.column=false",
           "-c", "grep.fullName=false", "grep"]
    rest = ["-n", "-I", "-z", "--no-color", kind, *([] if case_sensitive else ["-i"]),
            "-e", pattern, "--", *where]
    ran = await run(env, [*git, "--untracked", *rest], cwd=root)
    if ran.returncode == 128 and "not a git repository" in ran.stderr:
        # A plain directory: every file but what a .gitignore there excludes.
        ran = await run(env, [*git, "--no-index", "--exclude-standard", *rest], cwd=root)
    return ran


def pathspecs(rel: str, glob: str | None, is_file: bool) -> list[str]:
    """git pathspecs for the file or directory ``rel`` (relative to the worktree), its files
    whose name matches ``glob``, without the :data:`SKIP_DIRS` below it.

    >>> pathspecs("src", "*.py", False)[:2]
    [':(glob)src/**/*.py', ':(exclude,glob)src/**/node_modules/**']
    """
    if is_file:
        return [f":(literal){rel}"]
    base = "" if rel == "." else re.sub(r"([*?\\[\]\\])", r"\\\1", rel) + "/"
    include = f":(glob){base}**/{glob}" if glob else (f":(literal){rel}" if base else ".")
    return [include, *(f":(exclude,glob){base}**/{d}/**" for d in SKIP_DIRS)]


def matches(output: str, limit: int) -> str:
    """``git grep -n -z`` output as ``path:line: text`` lines, at most ``limit`` of them."""
    lines = []
    for record in output.splitlines():
        parts = record.split("\0", 2)
        if len(parts) != 3:
            continue
        name, number, text = parts
        text = text.strip()
        if len(text) > MAX_LINE:
            text = text[:MAX_LINE] + " [...]"
        if len(lines) == limit:
            lines.append(f"[... stopped after {limit} matches; narrow the pattern, path or glob]")
            break
        lines.append(f"{name}:{number}: {text}")
    return "\n".join(lines) or "(no matches)"


@tool("web_search", "Search the web (Tavily) and return titles, URLs and extracts of the top results.",
      {"properties": {"query": {"type": "string", "minLength": 1},
                      "max_results": {"type": "integer", "minimum": 1, "maximum": 10}},
       "required": ["query"]},
      profiles={Profile.RESEARCH, Profile.PLAN, Profile.WRITE, Profile.CODE, Profile.TEST_ARCHITECT})
async def web_search(env: ToolEnv, query: str, max_results: int = 5) -> ToolResult:
    key = os.environ.get("TAVILY_API_KEY")
    if not key:
        return ToolResult.fail("web search is not configured: set TAVILY_API_KEY "
                               "(work from the code and documentation in the worktree instead)")
    payload = {"query": query, "max_results": max_results, "search_depth": "basic"}
    try:
        answer = await asyncio.to_thread(post_json, TAVILY_URL, payload,
                                         {"Authorization": f"Bearer {key}"}, min(WEB_TIMEOUT, env.timeout))
    except urllib.error.HTTPError as exc:
        raise ToolError(f"web search failed: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, TimeoutError, OSError, ValueError) as exc:
        raise ToolError(f"web search failed: {exc}") from exc
    return ToolResult(content=format_results(answer), data={"results": answer.get("results", [])})


def post_json(url: str, payload: dict[str, Any], headers: dict[str, str], timeout: float) -> dict[str, Any]:
    """POST JSON and decode the JSON answer (blocking; run it in a thread)."""
    request = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST",
                                     headers={"Content-Type": "application/json", **headers})
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - fixed https URL
        return json.loads(response.read().decode())


def format_results(answer: dict[str, Any]) -> str:
    parts = [f"answer: {answer['answer']}"] if answer.get("answer") else []
    for i, item in enumerate(answer.get("results") or [], 1):
        parts.append(f"{i}. {item.get('title', '')}\n   {item.get('url', '')}\n   "
                     f"{(item.get('content') or '').strip()[:1000]}")
    return "\n".join(parts) or "(no results)"
