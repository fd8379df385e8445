"""The git workspace: one worktree per attempt, and merges into the target branch.

Every attempt works in ``<workspace>/.worktrees/<run>/<task>-a<n>`` on its own branch
``agentorch/<run>/<task>/a<n>``, cut from the target branch's current tip (which already
holds the work of every dependency), so parallel workers never see each other's half-done
work. Approved work is merged into the target branch one merge at a time, also across
processes (a lock file in the git directory), and the target branch is never left
mid-merge: a conflict or any other failure aborts and restores it.

Everything here blocks on git; the engine calls it through ``asyncio.to_thread``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .exceptions import WorkspaceError

AUTHOR = ["-c", "user.name=agentorch", "-c", "user.email=agentorch@localhost"]
_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


@dataclass
class Worktree:
    path: Path
    branch: str
    base_sha: str


@dataclass
class MergeResult:
    status: str  # fast_forward, merged, up_to_date, conflict
    source_sha: str
    target_branch: str
    result_sha: str | None = None
    files_changed: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status != "conflict"


def _git(cwd: Path, *args: str, check: bool = True) -> str:
    import git  # GitPython: its command wrapper gives one error type with status and stderr

    try:
        return git.Git(str(cwd)).execute(["git", *args], with_extended_output=False,
                                         strip_newline_in_stdout=True)
    except git.GitCommandError as exc:
        if check:
            raise
        return exc.stdout or ""


class Workspace:
    """A git repository that runs work on its ``target`` branch (default: the current one).

    Refused with advice when the path is not a repository, has no commit, is not on a
    branch, or has uncommitted changes to tracked files (they are the user's, and a merge
    would mix them up with agents' work).
    """

    def __init__(self, path: str | os.PathLike, target_branch: str | None = None) -> None:
        import git

        root = Path(path).expanduser().resolve()
        if not root.is_dir():
            raise WorkspaceError(f"workspace {root} does not exist: create it, or point at a git "
                                 "repository (agentorch_nb.init_workspace(path) makes one)")
        try:
            top = _git(root, "rev-parse", "--show-toplevel")
        except git.GitCommandError:
            raise WorkspaceError(f"workspace {root} is not a git repository: run `git init` and "
                                 "commit once, or use agentorch_nb.init_workspace(path)") from None
        self.root = Path(top).resolve()
        if not _git(self.root, "rev-parse", "--verify", "-q", "HEAD", check=False):
            raise WorkspaceError(f"the repository at {self.root} has no commit yet: commit once "
                                 "(agentorch_nb.init_workspace(path) does it for a new project)")
        current = _git(self.root, "branch", "--show-current")
        self.target = target_branch or current
        if not self.target:
            raise WorkspaceError(f"{self.root} is on a detached HEAD: check out the branch the "
                                 "work should land on, or pass target_branch=")
        if self.target != current:
            raise WorkspaceError(f"{self.root} has {current or 'a detached HEAD'} checked out, "
                                 f"not the target branch {self.target!r}: `git switch {self.target}`")
        common = Path(_git(self.root, "rev-parse", "--git-common-dir"))
        self.git_dir = (self.root / common).resolve() if not common.is_absolute() else common
        self.worktrees_dir = self.root / ".worktrees"
        self._marker = self.git_dir / "agentorch-merging"
        # git's worktree bookkeeping is not safe against a concurrent prune: adds, removes
        # and prunes of this process take turns.
        with _locks_guard:
            self._wt_lock = _locks.setdefault(f"worktrees:{self.git_dir}", threading.Lock())
        exclude(self.root, ".worktrees/")
        exclude(self.root, ".agentorch/")

    def __repr__(self) -> str:
        return f"Workspace({str(self.root)!r}, target={self.target!r})"

    # ---------------------------------------------------------------- checks
    def dirty_files(self) -> list[str]:
        """Tracked files with uncommitted changes in the main checkout."""
        out = _git(self.root, "status", "--porcelain", "--untracked-files=no")
        return [line[3:] for line in out.splitlines() if line.strip()]

    def require_clean(self) -> None:
        dirty = self.dirty_files()
        if dirty:
            shown = ", ".join(dirty[:5]) + (" ..." if len(dirty) > 5 else "")
            raise WorkspaceError(
                f"{self.root} has uncommitted changes on {self.target} ({shown}): commit or "
                "stash them first; agentorch_nb never touches or commits your own changes")

    def tip(self) -> str:
        return _git(self.root, "rev-parse", self.target)

    # ------------------------------------------------------------- worktrees
    def worktree_for(self, run_id: str, task_id: str, attempt: int) -> Worktree:
        path = self.worktrees_dir / run_id / f"{task_id}-a{attempt}"
        return Worktree(path, f"agentorch/{run_id}/{task_id}/a{attempt}", "")

    def create_worktree(self, run_id: str, task_id: str, attempt: int) -> Worktree:
        """A fresh worktree and branch for one attempt, from the target's current tip."""
        wt = self.worktree_for(run_id, task_id, attempt)
        if wt.path.exists() or _git(self.root, "branch", "--list", wt.branch):
            self.remove_worktree(wt)  # left over from a crashed process
        wt.path.parent.mkdir(parents=True, exist_ok=True)
        wt.base_sha = self.tip()
        with self._wt_lock:
            _git(self.root, "worktree", "add", "-q", "-b", wt.branch, str(wt.path), wt.base_sha)
        return wt

    def adopt_worktree(self, run_id: str, task_id: str, attempt: int) -> Worktree | None:
        """The worktree an earlier attempt left, to continue in it; None if it is gone."""
        wt = self.worktree_for(run_id, task_id, attempt)
        if not (wt.path / ".git").exists():
            return None
        wt.base_sha = _git(self.root, "merge-base", wt.branch, self.target)
        return wt

    def remove_worktree(self, wt: Worktree, delete_branch: bool = True) -> None:
        with self._wt_lock:
            if wt.path.exists():
                # Twice --force: also a worktree left locked by a git killed while adding it.
                _git(self.root, "worktree", "remove", "--force", "--force", str(wt.path), check=False)
                shutil.rmtree(wt.path, ignore_errors=True)
            _git(self.root, "worktree", "prune", check=False)
            if delete_branch:
                _git(self.root, "branch", "-D", wt.branch, check=False)

    def commit_all(self, wt: Worktree, message: str) -> str | None:
        """Commit everything in the worktree; the new SHA, or None when nothing changed."""
        _git(wt.path, "add", "-A")
        if not _git(wt.path, "status", "--porcelain"):
            return None
        _git(wt.path, *AUTHOR, "commit", "-q", "-m", message)
        return _git(wt.path, "rev-parse", "HEAD")

    def merge_target_into(self, wt: Worktree) -> list[str]:
        """Merge the target branch into the worktree's branch; conflicts stay in the worktree
        (markers and all) for an agent to resolve. Returns the conflicted files."""
        try:
            _git(wt.path, *AUTHOR, "merge", "--no-edit", "-m",
                 f"Merge {self.target} into {wt.branch}", self.target)
        except Exception:  # noqa: BLE001 - a conflict is the expected outcome
            pass
        return _git(wt.path, "diff", "--name-only", "--diff-filter=U", check=False).splitlines()

    def head(self, wt: Worktree) -> str:
        return _git(wt.path, "rev-parse", "HEAD")

    def diff(self, wt: Worktree, limit: int = 200_000) -> str:
        """What the attempt changed against where it started (committed or not)."""
        _git(wt.path, "add", "-A")
        text = _git(wt.path, "diff", "--cached", wt.base_sha)
        return text if len(text) <= limit else text[:limit] + f"\n[diff truncated at {limit} characters]"

    # ----------------------------------------------------------------- merge
    @contextlib.contextmanager
    def merge_lock(self) -> Iterator[None]:
        """One merge at a time per repository: a thread lock in this process and a
        ``flock`` on a file in the git directory across processes."""
        with _locks_guard:
            lock = _locks.setdefault(str(self.git_dir), threading.Lock())
        with lock, open(self.git_dir / "agentorch-merge.lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def merge(self, source_sha: str, message: str) -> MergeResult:
        """Merge ``source_sha`` (the approved commit, not whatever its branch holds later) into
        the target branch: fast-forward when possible, else a merge commit with ``message``.
        A conflict is aborted and reported; the target is never left mid-merge."""
        with self.merge_lock():
            self.require_clean()
            before = self.tip()
            result = MergeResult("up_to_date", source_sha, self.target)
            if self._is_ancestor(source_sha, before):
                result.result_sha = before
                return result
            # Says "a merge is under way from <before>" to a process that finds it after a crash.
            self._marker.write_text(f"{before} {source_sha}\n")
            try:
                _git(self.root, *AUTHOR, "merge", "--no-edit", "-m", message, source_sha)
            except Exception:  # noqa: BLE001 - any failure: restore the target, then report
                conflicts = _git(self.root, "diff", "--name-only", "--diff-filter=U", check=False)
                self.abort_merge(before)
                if conflicts:
                    result.status = "conflict"
                    result.conflicts = conflicts.splitlines()
                    return result
                raise
            finally:
                self._marker.unlink(missing_ok=True)
            after = self.tip()
            result.result_sha = after
            result.status = "fast_forward" if after == self._sha(source_sha) else "merged"
            result.files_changed = _git(self.root, "diff", "--name-only", before, after).splitlines()
            return result

    def _sha(self, rev: str) -> str:
        return _git(self.root, "rev-parse", f"{rev}^{{commit}}")

    def _is_ancestor(self, a: str, b: str) -> bool:
        import git

        try:
            _git(self.root, "merge-base", "--is-ancestor", a, b)
            return True
        except git.GitCommandError:
            return False

    def abort_merge(self, restore_to: str | None = None) -> None:
        """Leave no merge half-done on the target branch."""
        if (self.git_dir / "MERGE_HEAD").exists():
            _git(self.root, "merge", "--abort", check=False)
        if restore_to and self.tip() != restore_to:
            _git(self.root, "reset", "--hard", "-q", restore_to)

    # --------------------------------------------------------------- hygiene
    def run_worktrees(self, run_id: str | None = None) -> list[Worktree]:
        """agentorch worktrees git knows of (of one run, or all)."""
        found, path, branch = [], None, None
        for line in _git(self.root, "worktree", "list", "--porcelain").splitlines() + [""]:
            if line.startswith("worktree "):
                path = Path(line[9:])
            elif line.startswith("branch refs/heads/"):
                branch = line[18:]
            elif not line and path is not None:
                prefix = f"agentorch/{run_id}/" if run_id else "agentorch/"
                if branch and branch.startswith(prefix):
                    found.append(Worktree(path, branch, ""))
                path = branch = None
        return found

    def cleanup(self, run_id: str | None = None, keep: frozenset[str] = frozenset()) -> list[str]:
        """Remove the worktrees and branches of a run (or of all runs), except the branches
        in ``keep``; prune git's worktree list. Returns the branches removed."""
        removed = set()
        for wt in self.run_worktrees(run_id):
            if wt.branch not in keep:
                self.remove_worktree(wt)
                removed.add(wt.branch)
        prefix = f"agentorch/{run_id}/" if run_id else "agentorch/"
        for branch in _git(self.root, "branch", "--list", f"{prefix}*",
                           "--format=%(refname:short)").split():
            if branch not in keep:
                with self._wt_lock:
                    _git(self.root, "worktree", "prune", check=False)
                    _git(self.root, "branch", "-D", branch)  # a refusal is an error, not silence
                removed.add(branch)
        with self._wt_lock:
            _git(self.root, "worktree", "prune", check=False)
        return sorted(removed)


    def reconcile(self, run_id: str, known: set[str], lock_age: float = 60.0) -> list[str]:
        """After a crash: make the repository agree with the store, and say what was done.

        A merge left half-done on the target is aborted (the target goes back to its last
        commit); worktrees of this run whose branch the store does not know are removed;
        git's lock files that no process holds open (a git that died with the engine) are
        removed, as are, where that cannot be told, those older than ``lock_age`` seconds;
        the others are reported, not touched."""
        import time

        report = []
        with self.merge_lock():
            if self._marker.exists():
                before = self._marker.read_text().split()[0]
                tip = self.tip()
                if tip == before:  # the merge commit was not made: restore index and files
                    self.abort_merge(before)
                    _git(self.root, "reset", "--hard", "-q", before)
                    report.append(f"aborted a merge left half-done on {self.target}; "
                                  f"it is back at {before[:10]}")
                else:
                    report.append(f"a merge into {self.target} was cut off after its commit "
                                  f"({tip[:10]}); kept")
                self._marker.unlink(missing_ok=True)
            elif (self.git_dir / "MERGE_HEAD").exists():
                report.append(f"{self.target} is in the middle of a merge agentorch did not "
                              "start: left alone (git merge --abort undoes it)")
        for wt in self.run_worktrees(run_id):
            if wt.branch not in known:
                self.remove_worktree(wt)
                report.append(f"removed worktree {wt.path} (branch {wt.branch}) that the store does not know")
        # packed-refs.new is the half-written file that goes with packed-refs.lock.
        locks = [*self.git_dir.glob("*.lock"), *self.git_dir.glob("refs/**/*.lock"),
                 *self.git_dir.glob("worktrees/*/*.lock"), *self.git_dir.glob("packed-refs.new")]
        for lock in locks:
            if lock.name == "agentorch-merge.lock" or not lock.exists():
                continue  # our own flock file lives there for good
            age = time.time() - lock.stat().st_mtime
            held = _held_open(lock)
            if held is False or (held is None and age > lock_age):
                lock.unlink(missing_ok=True)
                report.append(f"removed stale {lock} ({age:.0f} s old, no process holds it)")
            else:
                report.append(f"{lock} is {age:.0f} s old and may be held by a running git; left alone")
        return report


def _held_open(path: Path) -> bool | None:
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


def exclude(root: Path, pattern: str) -> None:
    """Keep a path out of git without committing anything: ``.git/info/exclude``."""
    out = _git(root, "rev-parse", "--git-path", "info/exclude")
    path = Path(out) if os.path.isabs(out) else root / out
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = path.read_text().splitlines() if path.exists() else []
    if pattern not in lines:
        with path.open("a") as f:
            f.write(("\n" if lines and lines[-1] else "") + pattern + "\n")


def init_workspace(path: str | os.PathLike, branch: str = "main") -> Workspace:
    """Make ``path`` a git repository with one commit on ``branch``, ready for runs."""
    root = Path(path).expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    if not (root / ".git").exists():
        _git(root, "init", "-q", "-b", branch)
    if not _git(root, "rev-parse", "--verify", "-q", "HEAD", check=False):
        readme = root / "README.md"
        if not readme.exists():
            readme.write_text(f"# {root.name}\n")
        _git(root, "add", "README.md")
        _git(root, *AUTHOR, "commit", "-q", "-m", "Initial commit")
    return Workspace(root)
