"""Filesystem tools. Every path arrives confined to the worktree (see :mod:`.call`);
git's own metadata (``.git``) is left to the git tools."""

from __future__ import annotations

import os

from ..model import Profile
from .base import ALL_PROFILES, ToolEnv, ToolError, ToolResult, tool
from .paths import confine, inside_git_dir, relative

WRITERS = ALL_PROFILES - {Profile.PLAN.value}
MAX_READ_BYTES = 5_000_000
MAX_LINES = 2000
MAX_ENTRIES = 500
SKIP_DIRS = {".git", "__pycache__", "node_modules", ".venv", ".mypy_cache", ".pytest_cache"}
PATH_ARG = {"type": "string", "description": "Path relative to the worktree root."}


def _missing(env: ToolEnv, path: str) -> ToolError:
    return ToolError(f"no such file: {relative(env.root, path)!r}; use list_directory or "
                     "search_codebase to find the right path")


def _writable(env: ToolEnv, path: str) -> str:
    if inside_git_dir(env.root, path):
        raise ToolError("the .git directory is git's own; use the git tools")
    if os.path.isdir(path):
        raise ToolError(f"{relative(env.root, path)!r} is a directory, not a file")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return relative(env.root, path)


@tool("read_file",
      "Read a text file of the worktree. Long files come in pieces: pass offset (first line, "
      "1-based) and limit (number of lines) to read further.",
      {"properties": {"path": PATH_ARG,
                      "offset": {"type": "integer", "minimum": 1},
                      "limit": {"type": "integer", "minimum": 1, "maximum": MAX_LINES}},
       "required": ["path"]},
      paths=("path",))
def read_file(env: ToolEnv, path: str, offset: int = 1, limit: int = MAX_LINES) -> ToolResult:
    if os.path.isdir(path):
        raise ToolError(f"{relative(env.root, path)!r} is a directory; use list_directory")
    if not os.path.isfile(path):
        raise _missing(env, path)
    size = os.path.getsize(path)
    if size > MAX_READ_BYTES:
        raise ToolError(f"{relative(env.root, path)!r} has {size} bytes, too large to read; "
                        "use search_codebase or run_shell (head, sed -n) for the part you need")
    with open(path, "rb") as fh:
        raw = fh.read()
    if b"\x00" in raw[:8192]:
        return ToolResult(content=f"{relative(env.root, path)!r} is a binary file of {size} bytes")
    lines = raw.decode(errors="replace").splitlines(keepends=True)
    part = lines[offset - 1: offset - 1 + limit]
    text = "".join(part)
    if offset > 1 or offset - 1 + limit < len(lines):
        last = offset - 1 + len(part)
        more = (f"; call again with offset={last + 1} for more" if last < len(lines) else "")
        text = f"[lines {offset}-{last} of {len(lines)}{more}]\n{text}"
    return ToolResult(content=text or "(empty file)")


@tool("write_file", "Create or overwrite a file of the worktree with the given content "
                    "(parent directories are created).",
      {"properties": {"path": PATH_ARG, "content": {"type": "string"}}, "required": ["path", "content"]},
      profiles=WRITERS, paths=("path",))
def write_file(env: ToolEnv, path: str, content: str) -> str:
    shown = _writable(env, path)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(content)
    return f"wrote {len(content)} characters ({content.count(chr(10))} newlines) to {shown}"


@tool("append_file", "Append content to the end of a file of the worktree (created if missing).",
      {"properties": {"path": PATH_ARG, "content": {"type": "string"}}, "required": ["path", "content"]},
      profiles=WRITERS, paths=("path",))
def append_file(env: ToolEnv, path: str, content: str) -> str:
    shown = _writable(env, path)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(content)
    return f"appended {len(content)} characters to {shown} (now {os.path.getsize(path)} bytes)"


@tool("list_directory", "List a directory of the worktree: subdirectories end with '/'. "
                        "recursive=true lists the whole tree below it (skipping .git and caches).",
      {"properties": {"path": PATH_ARG, "recursive": {"type": "boolean"}}},
      paths=("path",))
def list_directory(env: ToolEnv, path: str | None = None, recursive: bool = False) -> str:
    top = path or str(env.root)
    if not os.path.isdir(top):
        if os.path.exists(top):
            raise ToolError(f"{relative(env.root, top)!r} is a file; use read_file")
        raise _missing(env, top)
    entries: list[str] = []
    for here, dirs, files in os.walk(top):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
        base = os.path.relpath(here, top)
        prefix = "" if base == "." else base + "/"
        entries += [f"{prefix}{d}/" for d in dirs] + [f"{prefix}{f}" for f in sorted(files)]
        if not recursive or len(entries) > MAX_ENTRIES:
            break
    if not recursive:
        entries.sort()
    shown = relative(env.root, top)
    if not entries:
        return f"{shown}: (empty)"
    more = len(entries) - MAX_ENTRIES
    listing = "\n".join(entries[:MAX_ENTRIES])
    if more > 0:
        listing += f"\n[... listing stopped after {MAX_ENTRIES} entries; list a subdirectory]"
    return f"{shown}:\n{listing}"


@tool("delete_file", "Delete one file (or symlink) of the worktree. Directories are refused.",
      {"properties": {"path": PATH_ARG}, "required": ["path"]},
      profiles=WRITERS)
def delete_file(env: ToolEnv, path: str) -> str:
    # Confine the parent, not the path: a symlink is deleted itself, never its target.
    parent = confine(env.root, os.path.dirname(path.rstrip("/")) or ".")
    name = os.path.basename(path.rstrip("/"))
    if name in ("", ".", ".."):
        raise ToolError(f"{path!r} does not name a file")
    target = os.path.join(parent, name)
    if inside_git_dir(env.root, target):
        raise ToolError("the .git directory is git's own; use the git tools")
    if os.path.isdir(target) and not os.path.islink(target):
        raise ToolError(f"{relative(env.root, target)!r} is a directory; delete_file deletes files")
    if not os.path.lexists(target):
        raise _missing(env, target)
    os.unlink(target)
    return f"deleted {relative(env.root, target)}"
