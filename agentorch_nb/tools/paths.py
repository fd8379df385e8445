"""Confinement of every path a tool touches to the worktree.

A path is resolved with ``realpath`` (symlinks followed, ``..`` folded) and must land in the
worktree's own real path: ``../x``, an absolute path elsewhere, and a symlink whose target
lies outside are all refused, whether or not the target exists. That check is made once,
by name; the file tools then open the path with :func:`open_file`, :func:`opened_parent` or
:func:`opened_dir`, which walk it from a descriptor of the worktree root without following
a link blindly, so a directory swapped for a symlink after the check cannot lead outside.

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

import contextlib
import errno
import os
from collections.abc import Callable, Iterator

from .base import ToolError


def confine(root: str | os.PathLike, path: str) -> str:
    """The real absolute path of ``path`` (relative to ``root`` unless absolute), refused
    with a :class:`ToolError` unless it is ``root`` or lies inside it."""
    if not isinstance(path, str) or not path.strip():
        raise ToolError("path must be a non-empty string relative to the worktree root")
    if "\x00" in path:
        raise ToolError("path must not contain NUL characters")
    base = os.path.realpath(root)
    try:
        real = os.path.realpath(os.path.join(base, os.path.expanduser(path) if path.startswith("~") else path))
    except OSError as exc:  # a link swapped while realpath read it
        raise ToolError(f"path {path!r} changed while it was checked ({exc.strerror}); try again") from None
    if real != base and os.path.commonpath([base, real]) != base:
        raise ToolError(f"path {path!r} is outside the worktree; use a path relative to the worktree root")
    return real


def relative(root: str | os.PathLike, real: str) -> str:
    """How the model should see a confined path: relative to the worktree, '.' for the root."""
    return os.path.relpath(real, os.path.realpath(root))


def inside_git_dir(root: str | os.PathLike, real: str) -> bool:
    """Whether ``real`` is git's own metadata (``.git``), which only the git tools change."""
    return relative(root, real).split(os.sep)[0] == ".git"


# ------------------------------------------------- opening without following a swap
# ``confine`` checks a path by name; between that check and the use of the path, anything
# running in the worktree (a command of the model's) may swap a directory or a file for a
# symlink to elsewhere. So the tools that touch files open them step by step from a
# descriptor of the worktree root: each directory relative to the one before, none followed
# if it is a link (O_NOFOLLOW). A link on the way is read and its target walked the same
# way, so a link that stays inside works and one that leads outside is refused, whenever it
# appeared.
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
MAX_LINKS = 40
MAX_RETRIES = 100  # a path that keeps changing under the walk
LINK_ERRNOS = {errno.ELOOP, errno.EMLINK, errno.ENOTDIR}  # a link met where O_NOFOLLOW forbids


class _Walk:
    """Descriptors of the directories from the worktree root down to where the walk is."""

    def __init__(self, root: str | os.PathLike, shown: str, guard: Callable[[str], None] | None) -> None:
        self.root = os.path.realpath(root)
        self.shown = shown  # the path as the caller gave it, for messages
        self.guard = guard
        self.fds = [os.open(self.root, DIR_FLAGS)]
        self.names: list[str] = []
        self.links = self.retries = 0

    @property
    def fd(self) -> int:
        return self.fds[-1]

    def rel(self, name: str = "") -> str:
        return os.path.join(*self.names, name) if self.names or name else "."

    def close(self) -> None:
        while self.fds:
            os.close(self.fds.pop())

    def outside(self) -> ToolError:
        return ToolError(f"path {self.shown!r} is outside the worktree; use a path relative to "
                         "the worktree root")

    def retry(self, exc: OSError) -> None:
        self.retries += 1
        if self.retries > MAX_RETRIES:
            raise exc

    def enter(self, parts: list[str], make: bool = False) -> None:
        """Walk down ``parts`` (directories), creating missing ones if ``make``."""
        todo = list(parts)
        while todo:
            part = todo.pop(0)
            if part in ("", "."):
                continue
            if part == "..":
                if not self.names:
                    raise self.outside()
                os.close(self.fds.pop())
                self.names.pop()
                continue
            try:
                fd = os.open(part, DIR_FLAGS, dir_fd=self.fd)
            except FileNotFoundError as exc:
                if not make:
                    raise
                self.retry(exc)
                if self.guard:
                    self.guard(self.rel(part))
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, dir_fd=self.fd)
                todo.insert(0, part)
                continue
            except OSError as exc:
                if exc.errno not in LINK_ERRNOS:
                    raise
                target = self.readlink(part, exc)
                todo[:0] = self.jump(target) if target is not None else [part]
                continue
            self.fds.append(fd)
            self.names.append(part)

    def readlink(self, name: str, exc: OSError) -> str | None:
        """The target of the link ``name``; None if it is no link (any more): try again."""
        try:
            return os.readlink(name, dir_fd=self.fd)
        except OSError as missing:
            if missing.errno != errno.EINVAL and not isinstance(missing, FileNotFoundError):
                raise
            if exc.errno == errno.ENOTDIR and missing.errno == errno.EINVAL:
                raise exc from None  # a file where a directory should be
            self.retry(exc)
            return None

    def jump(self, target: str) -> list[str]:
        """The parts of a link's target to walk from here; an absolute one from the root."""
        self.links += 1
        if self.links > MAX_LINKS:
            raise ToolError(f"path {self.shown!r}: too many levels of symbolic links")
        if os.path.isabs(target):
            target = os.path.normpath(target)
            if target != self.root and not target.startswith(self.root.rstrip(os.sep) + os.sep):
                raise self.outside()
            while len(self.fds) > 1:
                os.close(self.fds.pop())
            self.names.clear()
            target = target[len(self.root):]
        return target.split("/")


def _parts(root: str, path: str) -> list[str]:
    rel = os.path.relpath(path, root) if os.path.isabs(path) else path
    return rel.split("/")


@contextlib.contextmanager
def opened_dir(root: str | os.PathLike, path: str) -> Iterator[tuple[int, str]]:
    """A descriptor of the directory ``path`` of the worktree (links inside followed, none
    to outside) and its path relative to the root; closed after the block."""
    walk = _Walk(root, path, None)
    try:
        walk.enter(_parts(walk.root, path))
        yield walk.fd, walk.rel()
    finally:
        walk.close()


@contextlib.contextmanager
def opened_parent(root: str | os.PathLike, path: str, *, make: bool = False,
                  guard: Callable[[str], None] | None = None) -> Iterator[tuple[int, str, str]]:
    """A descriptor of the directory that holds ``path``, the last name (not followed: a
    link there is the link itself), and the path relative to the root. ``make`` creates
    missing directories; ``guard(relative path)`` may refuse each one and the target."""
    walk = _Walk(root, path, guard)
    try:
        *dirs, name = _parts(walk.root, path)
        _enter_parent(walk, dirs, name, make, guard)
        yield walk.fd, name, walk.rel(name)
    finally:
        walk.close()


def _enter_parent(walk: _Walk, dirs: list[str], name: str, make: bool,
                  guard: Callable[[str], None] | None) -> None:
    """Walk into the directory that holds ``name``, which must name a file, not a directory;
    ``guard`` may refuse it."""
    walk.enter(dirs, make)
    if name in ("", ".", ".."):
        walk.enter([name])
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), walk.rel())
    if guard:
        guard(walk.rel(name))


def open_file(root: str | os.PathLike, path: str, flags: int, mode: int = 0o666, *,
              guard: Callable[[str], None] | None = None) -> tuple[int, str]:
    """``os.open`` of the file ``path`` of the worktree, with its path relative to the root.
    A link at the end is followed if it stays inside; ``O_CREAT`` also creates missing
    directories; ``guard(relative path)`` may refuse the target (before it is opened).
    Opened non-blocking, so a FIFO cannot hang the call: check the type with ``fstat``."""
    walk = _Walk(root, path, guard)
    try:
        make = bool(flags & os.O_CREAT)
        *dirs, name = _parts(walk.root, path)
        while True:
            _enter_parent(walk, dirs, name, make, guard)
            try:
                fd = os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, mode,
                             dir_fd=walk.fd)
                return fd, walk.rel(name)
            except OSError as exc:
                if exc.errno not in (errno.ELOOP, errno.EMLINK):
                    raise
                target = walk.readlink(name, exc)
                if target is None:  # swapped back meanwhile: open it again
                    dirs = []
                else:
                    *dirs, name = walk.jump(target)
    finally:
        walk.close()
