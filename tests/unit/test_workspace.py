"""Worktrees and merges on real git repositories."""

import subprocess
from pathlib import Path

import pytest

import agentorch_nb as ao
from agentorch_nb.workspace import Workspace, init_workspace


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, text=True,
                          check=True).stdout.strip()


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture
def ws(tmp_path) -> Workspace:
    return init_workspace(tmp_path / "proj")


def test_init_workspace_makes_a_repository_with_one_commit(ws):
    assert ws.target == "main"
    assert git(ws.root, "log", "--format=%s") == "Initial commit"
    assert ".worktrees/" in (ws.root / ".git" / "info" / "exclude").read_text()


def test_refuses_what_it_cannot_work_on(tmp_path):
    with pytest.raises(ao.WorkspaceError, match="not a git repository"):
        Workspace(tmp_path)
    subprocess.run(["git", "init", "-q", str(tmp_path / "empty")], check=True)
    with pytest.raises(ao.WorkspaceError, match="no commit yet"):
        Workspace(tmp_path / "empty")


def test_a_dirty_target_is_refused_and_left_alone(ws):
    write(ws.root / "README.md", "my own edit\n")
    with pytest.raises(ao.WorkspaceError, match="uncommitted changes on main .*README.md"):
        ws.require_clean()
    assert (ws.root / "README.md").read_text() == "my own edit\n"


def test_attempts_work_in_separate_worktrees_from_the_current_tip(ws):
    a = ws.create_worktree("run-1", "t1", 1)
    b = ws.create_worktree("run-1", "t2", 1)
    assert a.path == ws.root / ".worktrees" / "run-1" / "t1-a1"
    assert a.branch == "agentorch/run-1/t1/a1" and a.base_sha == ws.tip()
    write(a.path / "a.txt", "from a\n")
    assert not (b.path / "a.txt").exists()
    assert git(ws.root, "status", "--porcelain") == ""  # nothing shows in the main checkout


def test_parallel_work_on_different_files_merges_cleanly(ws):
    a = ws.create_worktree("run-1", "t1", 1)
    b = ws.create_worktree("run-1", "t2", 1)
    write(a.path / "a.txt", "a\n")
    write(b.path / "b.txt", "b\n")
    sha_a = ws.commit_all(a, "t1")
    sha_b = ws.commit_all(b, "t2")
    first = ws.merge(sha_a, "agentorch: run-1 t1: a")
    assert first.status == "fast_forward" and first.files_changed == ["a.txt"]
    second = ws.merge(sha_b, "agentorch: run-1 t2: b")
    assert second.status == "merged" and second.files_changed == ["b.txt"]
    assert git(ws.root, "log", "-1", "--format=%s") == "agentorch: run-1 t2: b"
    assert (ws.root / "a.txt").exists() and (ws.root / "b.txt").exists()


def test_conflict_is_aborted_and_main_is_untouched(ws):
    write(ws.root / "shared.txt", "base\n")
    git(ws.root, "add", "shared.txt")
    git(ws.root, "-c", "user.name=t", "-c", "user.email=t@x", "commit", "-q", "-m", "shared")
    a = ws.create_worktree("run-1", "t1", 1)
    b = ws.create_worktree("run-1", "t2", 1)
    write(a.path / "shared.txt", "from a\n")
    write(b.path / "shared.txt", "from b\n")
    assert ws.merge(ws.commit_all(a, "a"), "m1").ok
    tip = ws.tip()
    result = ws.merge(ws.commit_all(b, "b"), "m2")
    assert result.status == "conflict" and result.conflicts == ["shared.txt"]
    assert ws.tip() == tip
    assert not (ws.git_dir / "MERGE_HEAD").exists()
    assert git(ws.root, "status", "--porcelain") == ""
    assert (ws.root / "shared.txt").read_text() == "from a\n"


def test_the_approved_commit_is_merged_not_later_branch_content(ws):
    a = ws.create_worktree("run-1", "t1", 1)
    write(a.path / "a.txt", "approved\n")
    approved = ws.commit_all(a, "approved")
    write(a.path / "a.txt", "written after approval\n")
    ws.commit_all(a, "later")
    ws.merge(approved, "merge approved")
    assert (ws.root / "a.txt").read_text() == "approved\n"


def test_cleanup_removes_worktrees_and_branches_but_keeps_what_is_asked(ws):
    a = ws.create_worktree("run-1", "t1", 1)
    b = ws.create_worktree("run-1", "t2", 1)
    other = ws.create_worktree("run-2", "t1", 1)
    removed = ws.cleanup("run-1", keep=frozenset({b.branch}))
    assert removed == [a.branch]
    assert not a.path.exists() and b.path.exists() and other.path.exists()
    assert git(ws.root, "branch", "--list", "agentorch/*", "--format=%(refname:short)").split() == [
        b.branch, other.branch]


def test_reconcile_removes_unknown_worktrees_and_stale_locks_and_reports_them(ws):
    import os
    import time

    known = ws.create_worktree("run-1", "t1", 1)
    stray = ws.create_worktree("run-1", "t9", 1)
    stale = ws.git_dir / "index.lock"
    stale.write_text("")
    os.utime(stale, (time.time() - 600, time.time() - 600))
    held = ws.git_dir / "worktrees" / known.path.name / "index.lock"
    orphan = ws.git_dir / "packed-refs.lock"  # just made, but nobody holds it: a killed git's
    orphan.write_text("")
    with open(held, "w"):  # a running git keeps its lock file open
        report = ws.reconcile("run-1", {known.branch})
        assert any("removed worktree" in r and stray.branch in r for r in report)
        assert any("removed stale" in r and "index.lock" in r for r in report) and not stale.exists()
        assert not orphan.exists()
        assert any("left alone" in r for r in report) and held.exists()
        assert known.path.exists() and not stray.path.exists()
    held.unlink()
    assert ws.reconcile("run-1", {known.branch}) == []
