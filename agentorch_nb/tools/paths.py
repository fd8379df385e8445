"""Confinement of every path a tool touches to the worktree.

A path is resolved with ``realpath`` (symlinks followed, ``..`` folded) and must land in the
worktree's own real path: ``../x``, an absolute path elsewhere, and a symlink whose target
lies outside are all refused, whether or not the target exists.

>>> import tempfile, os
>>> root = os.path.realpath(tempfile.mkdtemp())
>>> confine(root, "src/../a.txt") == os.path.join(root, "a.txt")
True
>>> confine(root, "../etc/passwd")
Traceback (most recent call last):
...
agentorch_nb.tools.base.ToolError: path '../etc/passwd' is outside the worktree; use a path relative to the worktree root
"""

from __future__ import annotations

import os

from .base import ToolError


def confine(root: str | os.PathLike, path: str) -> str:
    """The real absolute path of ``path`` (relative to ``root`` unless absolute), refused
    with a :class:`ToolError` unless it is ``root`` or lies inside it."""
    if not isinstance(path, str) or not path.strip():
        raise ToolError("path must be a non-empty string relative to the worktree root")
    if "\x00" in path:
        raise ToolError("path must not contain NUL characters")
    base = os.path.realpath(root)
    real = os.path.realpath(os.path.join(base, os.path.expanduser(path) if path.startswith("~") else path))
    if real != base and os.path.commonpath([base, real]) != base:
        raise ToolError(f"path {path!r} is outside the worktree; use a path relative to the worktree root")
    return real


def relative(root: str | os.PathLike, real: str) -> str:
    """How the model should see a confined path: relative to the worktree, '.' for the root."""
    return os.path.relpath(real, os.path.realpath(root))


def inside_git_dir(root: str | os.PathLike, real: str) -> bool:
    """Whether ``real`` is git's own metadata (``.git``), which only the git tools change."""
    return relative(root, real).split(os.sep)[0] == ".git"
