"""Filesystem tools. Every path arrives confined to the worktree (see :mod:`.call`) and is
then opened step by step from a descriptor of the worktree root (see :mod:`.paths`), so a
symlink swapped in after the check cannot send a read, a write, a listing or a delete
outside. git's own metadata (``.git``) is left to the git tools."""

from __future__ import annotations

import os
import stat

from ..model import Profile
from .base import ALL_PROFILES, ToolEnv, ToolError, ToolResult, tool
from .paths import confine, open_file, opened_dir, opened_parent, relative

WRITERS = ALL_PROFILES - {Profile.PLAN.value}
MAX_READ_BYTES = 5_000_000
MAX_LINES = 2000
MAX_ENTRIES = 500
SKIP_DIRS = {".git", "__pycache__", "node_modules", ".venv", ".mypy_cache", ".pytest_cache"}
PATH_ARG = {"type": "string", "description": "Path relative to the worktree root."}


def _missing(env: ToolEnv, path: str) -> ToolError:
    return ToolError(f"no such file: {relative(env.root, path)!r}; use list_directory or "
                     "search_codebase to find the right path")


def _not_git(rel: str) -> None:
    if rel.split(os.sep)[0] == ".git":
        raise ToolError("the .git directory is git's own; use the git tools")


def _open(env: ToolEnv, path: str, flags: int, on_dir: str, guard=None) -> tuple[int, str]:
    try:
        return open_file(env.root, path, flags, guard=guard)
    except (FileNotFoundError, NotADirectoryError):
        raise _missing(env, path) from None
    except IsADirectoryError:
        raise ToolError(f"{relative(env.root, path)!r} {on_dir}") from None
    except OSError as exc:  # ENXIO: a FIFO nobody reads
        raise ToolError(f"cannot open {relative(env.root, path)!r}: {exc.strerror}") from None


def _regular(fd: int, shown: str, on_dir: str) -> os.stat_result:
    info = os.fstat(fd)
    if stat.S_ISDIR(info.st_mode):
        raise ToolError(f"{shown!r} {on_dir}")
    if not stat.S_ISREG(info.st_mode):
        raise ToolError(f"{shown!r} is not a regular file")
    return info


@tool("read_file",
      "Read a text file of the worktree. Long files come in pieces: pass offset (first line, "
      "1-based) and limit (number of lines) to read further.",
      {"properties": {"path": PATH_ARG,
                      "offset": {"type": "integer", "minimum": 1},
                      "limit": {"type": "integer", "minimum": 1, "maximum": MAX_LINES}},
       "required": ["path"]},
      paths=("path",))
def read_file(env: ToolEnv, path: str, offset: int = 1, limit: int = MAX_LINES) -> ToolResult:
    on_dir = "is a directory; use list_directory"
    fd, shown = _open(env, path, os.O_RDONLY, on_dir)
    with os.fdopen(fd, "rb") as fh:
        size = _regular(fd, shown, on_dir).st_size
        if size > MAX_READ_BYTES:
            raise ToolError(f"{shown!r} has {size} bytes, too large to read; use "
                            "search_codebase or run_shell (head, sed -n) for the part you need")
        raw = fh.read(MAX_READ_BYTES + 1)
    if b"\x00" in raw[:8192]:
        return ToolResult(content=f"{shown!r} is a binary file of {size} bytes")
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
    on_dir = "is a directory, not a file"
    fd, shown = _open(env, path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, on_dir, _not_git)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        _regular(fd, shown, on_dir)
        fh.write(content)
    return f"wrote {len(content)} characters ({content.count(chr(10))} newlines) to {shown}"


@tool("append_file", "Append content to the end of a file of the worktree (created if missing).",
      {"properties": {"path": PATH_ARG, "content": {"type": "string"}}, "required": ["path", "content"]},
      profiles=WRITERS, paths=("path",))
def append_file(env: ToolEnv, path: str, content: str) -> str:
    on_dir = "is a directory, not a file"
    fd, shown = _open(env, path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, on_dir, _not_git)
    with os.fdopen(fd, "a", encoding="utf-8") as fh:
        _regular(fd, shown, on_dir)
        fh.write(content)
        fh.flush()
        size = os.fstat(fd).st_size
    return f"appended {len(content)} characters to {shown} (now {size} bytes)"


@tool("list_directory", "List a directory of the worktree: subdirectories end with '/'. "
                        "recursive=true lists the whole tree below it (skipping .git and caches).",
      {"properties": {"path": PATH_ARG, "recursive": {"type": "boolean"}}},
      paths=("path",))
def list_directory(env: ToolEnv, path: str | None = None, recursive: bool = False) -> str:
    top = path or str(env.root)
    try:
        with opened_dir(env.root, top) as (fd, shown):
            entries = _entries(fd, recursive)
    except NotADirectoryError:
        if os.path.exists(top):
            raise ToolError(f"{relative(env.root, top)!r} is a file; use read_file") from None
        raise _missing(env, top) from None
    except FileNotFoundError:
        raise _missing(env, top) from None
    if not entries:
        return f"{shown}: (empty)"
    more = len(entries) - MAX_ENTRIES
    listing = "\n".join(entries[:MAX_ENTRIES])
    if more > 0:
        listing += f"\n[... listing stopped after {MAX_ENTRIES} entries; list a subdirectory]"
    return f"{shown}:\n{listing}"


def _entries(fd: int, recursive: bool) -> list[str]:
    # fwalk opens each directory relative to its parent's descriptor and never enters a
    # link, so a swap during the walk cannot list a directory outside.
    entries: list[str] = []
    walk = os.fwalk(".", dir_fd=fd)
    try:
        for here, dirs, files, _ in walk:
            dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
            base = os.path.normpath(here)
            prefix = "" if base == "." else base + "/"
            entries += [f"{prefix}{d}/" for d in dirs] + [f"{prefix}{f}" for f in sorted(files)]
            if not recursive or len(entries) > MAX_ENTRIES:
                break
    finally:
        walk.close()
    if not recursive:
        entries.sort()
    return entries


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
    try:
        with opened_parent(env.root, target, guard=_not_git) as (fd, name, shown):
            if stat.S_ISDIR(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode):
                raise ToolError(f"{shown!r} is a directory; delete_file deletes files")
            os.unlink(name, dir_fd=fd)
    except (FileNotFoundError, NotADirectoryError):
        raise _missing(env, target) from None
    except IsADirectoryError:  # it became one meanwhile
        raise ToolError(f"{relative(env.root, target)!r} is a directory; delete_file deletes files") from None
    return f"deleted {shown}"
