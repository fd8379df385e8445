"""Search tools: text or regex search over the worktree, and web search through Tavily."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from ..model import Profile
from .base import ToolEnv, ToolError, ToolResult, tool
from .paths import relative
from .process import run

GREP_SCRIPT = Path(__file__).with_name("_grep.py")
TAVILY_URL = "https://api.tavily.com/search"
WEB_TIMEOUT = 30.0


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
    if regex:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ToolError(f"invalid regex {pattern!r}: {exc}; fix it or pass regex=false") from exc
    top = path or str(env.root)
    if not os.path.exists(top):
        raise ToolError(f"no such file or directory: {relative(env.root, top)!r}")
    spec = {"root": str(env.root), "top": top, "pattern": pattern, "regex": regex,
            "case_sensitive": case_sensitive, "glob": glob, "max_results": max_results}
    ran = await run(env, [sys.executable, "-I", str(GREP_SCRIPT)], input=json.dumps(spec).encode())
    if ran.timed_out:
        raise ToolError(f"the search timed out after {env.timeout:g} s; narrow the path or glob")
    if ran.returncode != 0:
        raise ToolError(f"the search failed: {ran.stderr.strip().splitlines()[-1:] or ran.returncode}")
    return ToolResult(content=ran.stdout.rstrip("\n"))


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
