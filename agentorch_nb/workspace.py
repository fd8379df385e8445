"""The git workspace: one worktree per attempt, and merges into the target branch.

Every attempt works in ``<workspace>/.worktrees/<run>/<task>-a<n>`` on its own branch
``agentorch/<run>/<task>/a<n>``, cut from the target branch's current tip (which already
holds the work of every dependency), so parallel workers never see each other's half-done
work. Approved work is merged into the target branch one merge at a time, also across
processes (a lock file in the git directory), and the target branch is never left
mid-merge: a conflict or any other failure aborts and restores it.

Each git step is checked before it is trusted and can be redone after a crash: a worktree
is used only when git shows it whole (:meth:`Workspace.check_worktree`), a merge is
announced by a marker file before it starts, and :meth:`Workspace.reconcile` repairs what a
kill left. The steps and their repairs are kept in one module (a little over 400 lines) so
that each can be read beside its undo; git's files themselves are read in ``gitfiles.py``.

Everything here blocks on git; the engine calls it through ``asyncio.to_thread``.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .exceptions import WorkspaceError
from .gitfiles import admin_dir, broken_worktree_entries, remove_stale_locks, scan, write_durably

AUTHOR = ["-c", "user.name=agentorch", "-c", "user.email=agentorch@localhost"]
# What a merge leaves in the git directory until it is concluded or aborted.
MERGE_STATE = ("MERGE_HEAD", "MERGE_MSG", "MERGE_MODE", "MERGE_RR", "AUTO_MERGE")
log = logging.getLogger("agentorch_nb.workspace")
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


def _in_the_way(stderr: str) -> list[str]:
    """The files git names when it refuses to overwrite untracked files."""
    if "untracked working tree files would be overwritten" not in stderr:
        return []
    lines = stderr.split("overwritten by merge:", 1)[-1].splitlines()
    return [ln.strip() for ln in lines if ln.startswith(("\t", "    ")) and ln.strip()]


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

    def create_worktree(self, run_id: str, task_id: str, attempt: int,
                        start: str | None = None) -> Worktree:
        """A fresh worktree and branch for one attempt, from ``start`` (default: the
        target's current tip), proven whole before it is handed out."""
        wt = self.worktree_for(run_id, task_id, attempt)
        if wt.path.exists() or _git(self.root, "branch", "--list", wt.branch):
            self.remove_worktree(wt)  # left over from a crashed process
        wt.path.parent.mkdir(parents=True, exist_ok=True)
        wt.base_sha = self._sha(start) if start else self.tip()
        with self._wt_lock:
            try:
                _git(self.root, "worktree", "add", "-q", "-b", wt.branch, str(wt.path), wt.base_sha)
            except Exception:  # noqa: BLE001 - a half-written entry of a killed add blocks every add
                if not self._drop_broken_entries():
                    raise
                _git(self.root, "branch", "-D", wt.branch, check=False)
                _git(self.root, "worktree", "add", "-q", "-b", wt.branch, str(wt.path), wt.base_sha)
        problem = self.check_worktree(wt)
        if problem:
            self.remove_worktree(wt)
            raise WorkspaceError(f"git made an incomplete worktree at {wt.path}: {problem}")
        return wt

    def create_merge_worktree(self, run_id: str, task_id: str, attempt: int,
                              source_sha: str) -> Worktree:
        """A worktree for a merge task's attempt: the approved commit ``source_sha`` with
        the target's current tip merged in, conflicts (markers and all) left to resolve."""
        wt = self.create_worktree(run_id, task_id, attempt, start=source_sha)
        self.merge_target_into(wt)
        return wt

    def check_worktree(self, wt: Worktree) -> str | None:
        """Why ``wt`` is not a whole checkout of its branch, or None. git locks a worktree
        as 'initializing' until its checkout is complete; HEAD must name a commit on the
        worktree's own branch that descends from where the attempt started."""
        dot_git = wt.path / ".git"
        if not dot_git.is_file():
            return "no .git file"
        admin = admin_dir(wt.path)
        if admin is None:
            return "git does not list it as a worktree"
        if (admin / "locked").exists():
            return "its checkout never completed (git left it locked)"
        head = _git(wt.path, "rev-parse", "--verify", "-q", "HEAD^{commit}", check=False)
        if not head:
            return "its HEAD names no commit"
        branch = _git(wt.path, "symbolic-ref", "-q", "--short", "HEAD", check=False)
        if branch != wt.branch:
            return f"it has {branch or 'a detached HEAD'} checked out, not {wt.branch}"
        if wt.base_sha and not self._is_ancestor(wt.base_sha, head):
            return f"its branch does not descend from {wt.base_sha[:10]}"
        return None

    def adopt_worktree(self, run_id: str, task_id: str, attempt: int,
                       base_sha: str) -> Worktree | None:
        """The worktree an earlier attempt left, to continue in it: only if git shows it
        whole (:meth:`check_worktree`); otherwise it is removed and None is returned."""
        wt = self.worktree_for(run_id, task_id, attempt)
        wt.base_sha = base_sha
        if not wt.path.exists():
            return None
        if self.check_worktree(wt):
            self.remove_worktree(wt)
            return None
        return wt

    def remove_worktree(self, wt: Worktree, delete_branch: bool = True) -> None:
        """Remove a worktree whatever state a crash left it in (locked, half checked out,
        HEAD unborn), its administrative files in the git directory, and its branch."""
        with self._wt_lock:
            if wt.path.exists():
                # Twice --force: also a worktree left locked by a git killed while adding it.
                _git(self.root, "worktree", "remove", "--force", "--force", str(wt.path), check=False)
                shutil.rmtree(wt.path, ignore_errors=True)
            admin = admin_dir(wt.path, self.git_dir)
            if admin is not None:  # git refuses to prune a locked entry: drop it ourselves
                shutil.rmtree(admin, ignore_errors=True)
            _git(self.root, "worktree", "prune", check=False)
            if delete_branch:
                _git(self.root, "branch", "-D", wt.branch, check=False)

    def commit_all(self, wt: Worktree, message: str) -> str | None:
        """Commit everything in the worktree; the new SHA, or None when nothing changed.
        A worktree git does not show whole is refused: committing a half-made checkout
        would record the deletion of every file it lacks."""
        problem = self.check_worktree(wt)
        if problem:
            raise WorkspaceError(f"refusing to commit {wt.path}: {problem}")
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
        A conflict is aborted and reported; the target is never left mid-merge. Whatever an
        earlier crash left on the target (a merge cut off, git's stale locks) is repaired
        first, so a new run on a workspace nobody resumed still merges."""
        with self.merge_lock():
            for line in self._repair_target():
                log.warning("%s: %s", self.root, line)
            self.require_clean()
            before = self.tip()
            # Files an earlier merge cut off mid-checkout left untracked would make git refuse
            # to merge; those that hold exactly what this merge writes go first.
            self._drop_files_added_by(source_sha, before)
            result = MergeResult("up_to_date", source_sha, self.target)
            if self._is_ancestor(source_sha, before):
                result.result_sha = before
                return result
            # Says "a merge is under way from <before>" to a process that finds it after a crash.
            write_durably(self._marker, f"{before} {source_sha}\n")
            try:
                _git(self.root, *AUTHOR, "merge", "--no-edit", "-m", message, source_sha)
            except Exception as exc:  # noqa: BLE001 - any failure: restore the target, then report
                conflicts = _git(self.root, "diff", "--name-only", "--diff-filter=U", check=False)
                self.abort_merge(before)
                if conflicts:
                    result.status = "conflict"
                    result.conflicts = conflicts.splitlines()
                    return result
                in_the_way = _in_the_way(str(getattr(exc, "stderr", "")))
                if in_the_way:
                    raise WorkspaceError(
                        f"{self.target}'s checkout has untracked files where this work adds "
                        f"files: {', '.join(in_the_way[:5])}; move them away, then retry the "
                        "task") from None
                raise
            finally:
                self._marker.unlink(missing_ok=True)
            after = self.tip()
            result.result_sha = after
            result.status = "fast_forward" if after == self._sha(source_sha) else "merged"
            result.files_changed = _git(self.root, "diff", "--name-only", before, after).splitlines()
            return result

    def landed(self, source_sha: str, since: str) -> MergeResult | None:
        """Where git has ``source_sha`` in the target: the first commit on the target's
        first-parent history after ``since`` that contains it (the merge commit, or the
        source itself for a fast-forward); None when the target does not contain it."""
        tip = self.tip()
        if not self._is_ancestor(source_sha, tip):
            return None
        source = self._sha(source_sha)
        if self._is_ancestor(source, since):
            return MergeResult("up_to_date", source, self.target, since)
        for commit in _git(self.root, "rev-list", "--first-parent", "--reverse",
                           f"{since}..{tip}").split():
            if self._is_ancestor(source, commit):
                files = _git(self.root, "diff", "--name-only", since, commit).splitlines()
                status = "fast_forward" if commit == source else "merged"
                return MergeResult(status, source, self.target, commit, files)
        return MergeResult("merged", source, self.target, tip)

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
        self._clear_merge_state()
        if restore_to and self.tip() != restore_to:
            _git(self.root, "reset", "--hard", "-q", restore_to)

    def _drop_files_added_by(self, source: str, before: str, cut_off: bool = False) -> list[str]:
        """``git reset --hard`` leaves untracked the files a merge cut off mid-checkout had
        added, and the next merge that adds them refuses to overwrite them. Remove those
        whose content is exactly what ``source`` has there (git wrote them). With
        ``cut_off`` (``source`` is the merge the marker says was cut off), a file holding the
        start of that content is one git was writing when it was killed, and goes too. A
        file with other content is somebody's, and stays."""
        if not _git(self.root, "rev-parse", "--verify", "-q", f"{source}^{{commit}}", check=False):
            return []
        # What the source added since it left the target: what the merge would have written.
        added = _git(self.root, "diff", "--name-only", "--no-renames", "--diff-filter=A",
                     f"{before}...{source}", check=False).splitlines()
        if not added:
            return []
        untracked = _git(self.root, "ls-files", "--others", "--", *added,
                         check=False).splitlines()
        dropped = []
        for path in untracked:
            wanted = _git(self.root, "rev-parse", f"{source}:{path}", check=False)
            if not wanted:
                continue
            if _git(self.root, "hash-object", "--", path, check=False) == wanted:
                (self.root / path).unlink(missing_ok=True)
                dropped.append(path)
            elif cut_off and self._written_in_part(path, wanted):
                (self.root / path).unlink(missing_ok=True)
                dropped.append(path)
        return dropped

    def _written_in_part(self, path: str, blob: str) -> bool:
        """Does the file at ``path`` hold the start of ``blob`` (what a merge killed while
        writing it leaves)?"""
        import git

        try:
            written = (self.root / path).read_bytes()
            whole = git.Git(str(self.root)).execute(
                ["git", "cat-file", "blob", blob], stdout_as_string=False,
                strip_newline_in_stdout=False)
        except (OSError, git.GitCommandError):
            return False
        return whole.startswith(written)

    def _clear_merge_state(self) -> None:
        for name in MERGE_STATE:
            (self.git_dir / name).unlink(missing_ok=True)

    def _repair_target(self, lock_age: float = 60.0) -> list[str]:
        """Undo what a crash in the middle of a merge left on the target, in the order that
        can always go on: git's stale locks first (every repair below needs the index),
        then the merge our marker names. Call with the merge lock held."""
        report = remove_stale_locks(self.git_dir, lock_age)
        if not self._marker.exists():
            if (self.git_dir / "MERGE_HEAD").exists():
                report.append(f"{self.target} is in the middle of a merge agentorch did not "
                              "start: left alone (git merge --abort undoes it)")
            return report
        parts = self._marker.read_text().split()
        before, source = (parts + ["", ""])[:2]
        tip = self.tip()
        if not before or tip == before:
            # The merge commit was never made: back to where the target was, index and files.
            self._clear_merge_state()
            if before:
                _git(self.root, "reset", "--hard", "-q", before)
            report.append(f"undid a merge cut off on {self.target}; it is back at {before[:10]}")
            dropped = (self._drop_files_added_by(source, before, cut_off=True)
                       if before and source else [])
            if dropped:
                report.append(f"removed {len(dropped)} files the cut-off merge had written and "
                              f"reset left untracked: {', '.join(dropped[:5])}")
        elif source and self._is_ancestor(source, tip):
            # git made the merge commit and died before cleaning up: keep the commit, drop
            # the merge state it left, and make index and files match it.
            self._clear_merge_state()
            _git(self.root, "reset", "--hard", "-q", tip)
            report.append(f"a merge into {self.target} was cut off after its commit "
                          f"({tip[:10]}); kept it and cleared the merge state")
        else:
            report.append(f"{self.target} moved to {tip[:10]} during a merge agentorch started "
                          f"from {before[:10]}, without that merge: left alone")
        self._marker.unlink(missing_ok=True)
        return report

    # --------------------------------------------------------------- hygiene
    def run_worktrees(self, run_id: str | None = None) -> list[Worktree]:
        """agentorch worktrees (of one run, or all): those git lists on an agentorch branch,
        and the directories under ``.worktrees/`` that a crash left in any state (HEAD
        unborn, unknown to git), named after the branch their path stands for."""
        found: dict[Path, Worktree] = {}
        path, branch = None, None
        prefix = f"agentorch/{run_id}/" if run_id else "agentorch/"
        for line in _git(self.root, "worktree", "list", "--porcelain").splitlines() + [""]:
            if line.startswith("worktree "):
                path = Path(line[9:])
            elif line.startswith("branch refs/heads/"):
                branch = line[18:]
            elif not line and path is not None:
                if branch and branch.startswith(prefix):
                    found[path] = Worktree(path, branch, "")
                path = branch = None
        runs = [self.worktrees_dir / run_id] if run_id else scan(self.worktrees_dir, "*/")
        for run_dir in runs:
            for wt_dir in scan(run_dir, "*-a*"):
                task, _, attempt = wt_dir.name.rpartition("-a")
                if wt_dir not in found and attempt.isdigit():
                    found[wt_dir] = self.worktree_for(run_dir.name, task, int(attempt))
        return list(found.values())

    def cleanup(self, run_id: str | None = None, keep: frozenset[str] = frozenset()) -> list[str]:
        """Remove the worktrees and branches of a run (or of all runs), except the branches
        in ``keep``; prune git's worktree list. Returns the branches removed."""
        removed = set()
        with self._wt_lock:
            self._drop_broken_entries()  # git worktree list fails while one is there
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

        Stale git locks go first (a git that died with the engine leaves them, and every
        other repair needs them gone); then a merge left half-done on the target is undone,
        or kept if git made its commit, and its merge state cleared; then worktrees of this
        run whose branch ``known`` does not list (no attempt recorded them whole) are
        removed, with their branches. A lock that may still be held (a process has it open,
        or where that cannot be told, one younger than ``lock_age`` seconds) is reported,
        not touched."""
        with self.merge_lock():
            report = self._repair_target(lock_age)
        with self._wt_lock:
            report += self._drop_broken_entries()
        for wt in self.run_worktrees(run_id):
            if wt.branch not in known:
                self.remove_worktree(wt)
                report.append(f"removed worktree {wt.path} (branch {wt.branch}) that no "
                              "attempt recorded whole")
        for branch in self._branches(f"agentorch/{run_id}/"):
            if branch not in known and not any(w.branch == branch for w in self.run_worktrees(run_id)):
                with self._wt_lock:
                    _git(self.root, "branch", "-D", branch, check=False)
                report.append(f"removed branch {branch} that no attempt recorded whole")
        return report

    def _drop_broken_entries(self) -> list[str]:
        """Remove the half-written worktree entries a killed ``git worktree add`` left (see
        :func:`gitfiles.broken_worktree_entries`); say which."""
        report = []
        for entry in broken_worktree_entries(self.git_dir, self.worktrees_dir):
            shutil.rmtree(entry, ignore_errors=True)
            report.append(f"removed {entry}, which a git killed while adding a worktree left "
                          "half-written")
        return report

    def _branches(self, prefix: str) -> list[str]:
        return _git(self.root, "branch", "--list", f"{prefix}*",
                    "--format=%(refname:short)").split()

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
