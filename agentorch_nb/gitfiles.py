"""Git's own files as a crash leaves them: lock files a killed git did not remove, a
worktree's administrative directory, and small files that must reach the disk before the
step they announce. The workspace reads and repairs them through these functions."""

from __future__ import annotations

import os
from pathlib import Path


def remove_stale_locks(git_dir: Path, lock_age: float) -> list[str]:
    """Remove git's lock files that no process holds (see :func:`settle_lock`); say what was
    removed and what was left."""
    report = []
    for lock in lock_files(git_dir):
        if lock.name == "agentorch-merge.lock":
            continue  # our own flock file lives there for good
        state, age = settle_lock(lock, lock_age)
        if state == "removed":
            report.append(f"removed stale {lock} ({age:.0f} s old, no process holds it)")
        elif state == "held":
            report.append(f"{lock} is {age:.0f} s old and may be held by a running git; left alone")
    return report


# Where git leaves lock files: objects/maintenance.lock is left by git's auto-maintenance
# killed with the engine; packed-refs.new is the half-written file of packed-refs.lock.
LOCK_PATTERNS = ("*.lock", "refs/**/*.lock", "worktrees/*/*.lock", "packed-refs.new",
                 "objects/*.lock", "objects/pack/*.lock", "objects/info/**/*.lock")


def lock_files(git_dir: Path) -> list[Path]:
    """git's lock files in ``git_dir``."""
    return [p for pattern in LOCK_PATTERNS for p in scan(git_dir, pattern)]


def scan(base: Path, pattern: str) -> list[Path]:
    """``base.glob(pattern)``, sorted, while other threads remove worktrees and branches: a
    directory that vanishes under the scan is looked at again, never an error."""
    for _ in range(5):
        try:
            return sorted(base.glob(pattern))
        except FileNotFoundError:
            continue
    return []


def broken_worktree_entries(git_dir: Path, ours: Path, grace: float = 1.0) -> list[Path]:
    """Entries of ``<git-dir>/worktrees/`` that a git killed early in ``git worktree add``
    left half-written (``commondir``, ``gitdir`` or ``HEAD`` missing or empty): while one is
    there, ``git worktree list`` and ``git worktree add`` fail for the whole repository. Only
    entries for worktrees under ``ours`` (or naming none at all) are returned, and only once
    they have stayed half-written for ``grace`` seconds: an add in progress writes them in
    milliseconds."""
    import time

    def broken() -> dict[Path, float]:
        found = {}
        for entry in scan(git_dir / "worktrees", "*/"):
            texts = {}
            for name in ("commondir", "gitdir", "HEAD"):
                try:
                    texts[name] = (entry / name).read_text().strip()
                except OSError:
                    texts[name] = ""
            target = texts["gitdir"]
            if all(texts.values()) or (target and not Path(target).is_relative_to(ours)):
                continue
            try:
                found[entry] = time.time() - entry.stat().st_mtime
            except OSError:
                continue
        return found

    candidates = broken()
    youngest = min(candidates.values(), default=grace)
    if youngest < grace:
        time.sleep(grace - youngest)
        candidates = {e: age for e, age in broken().items() if e in candidates}
    return sorted(candidates)


def settle_lock(lock: Path, lock_age: float, grace: float = 1.0,
                wait: float = 10.0) -> tuple[str, float]:
    """Remove ``lock`` if no process holds it: ``("removed" | "gone" | "held", age)``.

    A git still at work (a child that outlived its engine) holds its lock open, and is
    given ``wait`` seconds to finish. A lock nobody holds must also be ``grace`` seconds
    old: git closes a lock file a moment before it renames it into place. Where /proc
    cannot tell who holds what, only a lock older than ``lock_age`` is removed."""
    import time

    deadline = time.monotonic() + wait
    while True:
        try:
            age = time.time() - lock.stat().st_mtime
        except FileNotFoundError:
            return "gone", 0.0
        held = held_open(lock)
        if (held is False and age >= grace) or (held is None and age > lock_age):
            lock.unlink(missing_ok=True)
            return "removed", age
        if time.monotonic() >= deadline:
            return "held", age
        time.sleep(0.05 if held else min(max(grace - age, 0.05), 0.5))


def held_open(path: Path) -> bool | None:
    """Whether any process has ``path`` open (git keeps its lock files open while it holds
    them); None where /proc cannot tell (then only the lock's age can)."""
    proc = Path("/proc")
    if not proc.is_dir():
        return None
    target = str(path)
    for fd_dir in proc.glob("[0-9]*/fd"):
        try:
            for fd in fd_dir.iterdir():
                if os.readlink(fd) == target:
                    return True
        except OSError:
            continue  # a process that ended, or one we may not look into
    return False


def admin_dir(path: Path, git_dir: Path | None = None) -> Path | None:
    """The administrative directory git keeps for the worktree at ``path``
    (``<git-dir>/worktrees/<name>``): named by its ``.git`` file, or, when a crash left no
    such file, found by the ``gitdir`` entry that points back at ``path``."""
    try:
        text = (path / ".git").read_text().strip()
    except OSError:
        text = ""
    if text.startswith("gitdir:"):
        admin = Path(text[7:].strip())
        admin = admin if admin.is_absolute() else (path / admin).resolve()
        return admin if admin.is_dir() else None
    if git_dir is None:
        return None
    target = str(path / ".git")
    for entry in (git_dir / "worktrees").glob("*/gitdir"):
        try:
            if entry.read_text().strip() == target:
                return entry.parent
        except OSError:
            continue
    return None


def write_durably(path: Path, text: str) -> None:
    """Write a small file and fsync it: it must be on disk before the step it announces."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
