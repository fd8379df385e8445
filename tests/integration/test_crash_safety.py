"""Each way a killed engine used to damage a repository or lose a record, made to happen on
purpose: a kill inside ``git worktree add``, an engine-only kill in the middle of a merge, a
merge marker left beside ``index.lock``, a kill between the merge and the store's flush, a
kill right after ``start()`` returns. After each, the run resumes and main holds exactly the
approved work."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import agentorch_nb as ao
from agentorch_nb import RunStatus
from tests.integration import crash_child

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
REAL_GIT = shutil.which("git")


def git(repo: Path, *args: str, check: bool = True) -> str:
    return subprocess.run([REAL_GIT, "-C", str(repo), *args], capture_output=True, text=True,
                          check=check).stdout.strip()


def seed(repo: Path, n: int = 200) -> set[str]:
    """n committed files: a commit that deleted what it never checked out would show."""
    (repo / "src").mkdir()
    for i in range(n):
        (repo / "src" / f"f{i}.txt").write_text(f"{i}\n")
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@x", "commit", "-q", "-m", "seed")
    return files_on_main(repo)


def files_on_main(repo: Path) -> set[str]:
    return set(git(repo, "ls-tree", "-r", "--name-only", "HEAD").splitlines())


def spawn(scenario: str, repo: Path, journal: Path, *extra: str, env: dict | None = None):
    err = open(f"{journal}.stderr", "w")
    proc = subprocess.Popen(
        [sys.executable, str(Path(crash_child.__file__)), scenario, str(repo), str(journal), *extra],
        stdout=subprocess.PIPE, stderr=err, text=True, start_new_session=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})
    return proc


def wait_for(predicate, what: str, timeout: float = 60):
    """A bounded wait for what another process makes true (a file, a process gone)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def resume_to_end(repo: Path, run_id: str, scenario: str, journal: Path):
    orch = ao.Orchestrator(repo)
    run = orch.resume(run_id, agents=crash_child.agents(scenario, str(journal)))
    assert run.wait_sync(120, stop_on_pause=False) == RunStatus.COMPLETED, run.summary()
    orch.cleanup()
    return orch, run


def check_repository(repo: Path, expected: set[str]) -> None:
    assert files_on_main(repo) == expected
    assert git(repo, "status", "--porcelain") == ""
    assert not (repo / ".git" / "MERGE_HEAD").exists()
    assert git(repo, "fsck", "--no-progress") == ""
    assert git(repo, "worktree", "list").count("\n") == 0  # only the main checkout
    assert git(repo, "branch", "--list", "agentorch/*") == ""


def check_records(orch, run_id: str, journal: Path) -> None:
    """Every task ran to completion once, every merge on main has its merges row, and the
    events are numbered without a gap."""
    runs = [line.split()[0] for line in journal.read_text().split("\n") if line]
    tasks = orch.store.rows("select task_id, status from tasks where run_id = ?", [run_id])
    assert {t["status"] for t in tasks} == {"complete"}
    landed = orch.store.rows("select task_id, result_sha from merges where run_id = ? and status "
                             "in ('fast_forward', 'merged')", [run_id])
    assert sorted(m["task_id"] for m in landed) == sorted(t["task_id"] for t in tasks)
    for m in landed:
        git(orch.workspace, "merge-base", "--is-ancestor", m["result_sha"], "HEAD")
    seqs = [r["seq"] for r in orch.store.rows("select seq from events where run_id = ? order by seq",
                                              [run_id])]
    assert seqs == list(range(1, len(seqs) + 1))
    return runs


@pytest.mark.parametrize("head", ["kept", "zeros"])
def test_a_kill_inside_worktree_add_never_deletes_files_from_main(repo, tmp_path, head):
    """The engine dies while git adds the first worktree: git has written the worktree's
    .git file and HEAD but checked out nothing, and the worktree is still locked as
    'initializing' (with HEAD all zeros in the variant). The resumed run must not continue
    in it: committing it would record the deletion of every file."""
    expected = seed(repo)
    shim = tmp_path / "bin"
    shim.mkdir()
    zeros = 'printf "%040d\\n" 0 > "$admin/HEAD"' if head == "zeros" else ":"
    (shim / "git").write_text(f"""#!/bin/sh
if [ "$1" = worktree ] && [ "$2" = add ] && [ ! -e "{tmp_path}/killed" ]; then
    touch "{tmp_path}/killed"
    shift 2
    "{REAL_GIT}" worktree add --no-checkout "$@" || exit 1
    for last; do :; done
    for arg; do [ "$arg" = "$last" ] && break; path="$arg"; done
    admin=$("{REAL_GIT}" -C "$path" rev-parse --absolute-git-dir)
    echo initializing > "$admin/locked"
    {zeros}
    kill -9 "$ENGINE_PID"
    sleep 60
fi
exec "{REAL_GIT}" "$@"
""")
    (shim / "git").chmod(0o755)
    journal = tmp_path / "journal"
    proc = spawn("one", repo, journal, env={"PATH": f"{shim}:{os.environ['PATH']}"})
    run_id = proc.stdout.readline().strip()
    assert run_id.startswith("run-"), Path(f"{journal}.stderr").read_text()
    assert proc.wait(60) == -signal.SIGKILL
    os.killpg(proc.pid, signal.SIGKILL)  # the shim's sleep
    half = next((repo / ".worktrees" / run_id).iterdir())
    assert not (half / "src").exists()  # nothing checked out: the state a kill leaves

    orch, run = resume_to_end(repo, run_id, "one", journal)
    check_repository(repo, expected | {"only.txt"})
    check_records(orch, run_id, journal)
    actions = " ".join(run.events().query("kind == 'reconciled'").payload)
    assert "no attempt recorded whole" in actions


def test_an_adopted_worktree_must_be_whole(repo, tmp_path):
    """Even a worktree its attempt recorded is continued only if git shows it whole, and
    a half-made checkout is never committed."""
    seed(repo, 50)
    ws = ao.Workspace(repo)
    wt = ws.create_worktree("r1", "t1", 1)
    admin = Path(git(wt.path, "rev-parse", "--absolute-git-dir"))
    assert ws.adopt_worktree("r1", "t1", 1, wt.base_sha) is not None  # whole: continued
    (admin / "locked").write_text("initializing\n")
    shutil.rmtree(wt.path / "src")
    with pytest.raises(ao.WorkspaceError, match="checkout never completed"):
        ws.commit_all(wt, "would delete 50 files")
    assert ws.adopt_worktree("r1", "t1", 1, wt.base_sha) is None  # removed instead
    assert not wt.path.exists() and git(repo, "branch", "--list", "agentorch/*") == ""


def merge_hook(repo: Path, tmp_path: Path, body: str) -> tuple[Path, Path]:
    """A pre-merge-commit hook that says it runs (writes git's pid) and then waits for the
    test's go-ahead."""
    started, go = tmp_path / "hook-started", tmp_path / "go"
    hook = repo / ".git" / "hooks" / "pre-merge-commit"
    hook.write_text(f"#!/bin/sh\n[ -e {go} ] && exit 0\necho $PPID > {started}\n{body}\n")
    hook.chmod(0o755)
    return started, go


def test_an_engine_only_kill_mid_merge_leaves_no_merge_state(repo, tmp_path):
    """Only the engine dies while git merges: git makes the merge commit, then dies of
    SIGPIPE writing its summary, leaving MERGE_HEAD. Both a resume and a new run on the
    same workspace go on, and the merge is recorded from git."""
    expected = seed(repo, 20)
    started, go = merge_hook(repo, tmp_path, f"while [ ! -e {tmp_path}/go ]; do sleep 0.02; done")
    journal = tmp_path / "journal"
    proc = spawn("files", repo, journal)
    run_id = proc.stdout.readline().strip()
    wait_for(lambda: started.exists() and started.read_text().strip(), "the merge commit's hook")
    git_pid = int(started.read_text())
    before = git(repo, "rev-parse", "HEAD")
    os.kill(proc.pid, signal.SIGKILL)  # the engine alone: git goes on
    proc.wait()
    go.touch()
    wait_for(lambda: gone(git_pid), "git to finish")
    assert git(repo, "rev-parse", "HEAD") != before  # the merge commit was made...
    assert (repo / ".git" / "MERGE_HEAD").exists()  # ...and git died before cleaning up

    # A new run on the workspace, which does not reconcile, still merges.
    orch = ao.Orchestrator(repo)
    other = orch.start("another", agents=ao.Agents(
        ao.testing.TestDirector([ao.TaskSpec("extra")]),
        ao.testing.FileWorker(lambda t: {"extra.txt": "x\n"}), ao.testing.TestStrategist()))
    assert other.wait_sync(60) == RunStatus.COMPLETED, other.summary()
    assert not (repo / ".git" / "MERGE_HEAD").exists()

    orch, run = resume_to_end(repo, run_id, "files", journal)
    check_repository(repo, expected | {"first.txt", "second.txt", "third.txt", "extra.txt"})
    ran = check_records(orch, run_id, journal)
    assert len(ran) == len(set(ran))  # the merged task was not run again


def test_a_merge_marker_beside_index_lock_is_repaired(repo, tmp_path):
    """A kill of the whole process group mid-merge leaves agentorch's merge marker, git's
    index.lock and half-updated files: the locks go first, then the target is restored."""
    expected = seed(repo, 20)
    ws = ao.Workspace(repo)
    before = ws.tip()
    (repo / ".git" / "agentorch-merging").write_text(f"{before} {'0' * 40}\n")
    (repo / ".git" / "index.lock").write_text("")
    os.utime(repo / ".git" / "index.lock", (time.time() - 5, time.time() - 5))
    (repo / "src" / "f1.txt").write_text("half-merged\n")
    (repo / "src" / "f2.txt").unlink()
    report = ws.reconcile("r1", set())
    assert any("removed stale" in r and "index.lock" in r for r in report), report
    assert any("undid a merge cut off" in r for r in report), report
    check_repository(repo, expected)
    assert (repo / "src" / "f2.txt").exists() and (repo / "src" / "f1.txt").read_text() == "1\n"


def test_a_kill_between_the_merge_and_the_flush_loses_no_record(repo, tmp_path):
    """The engine dies the moment git has merged (a post-merge hook kills it), before the
    store has the merge's outcome: resume finds the commit in git, writes the merges row
    and completes the task without running it again."""
    expected = seed(repo, 20)
    hook = repo / ".git" / "hooks" / "post-merge"
    hook.write_text(f"#!/bin/sh\n[ -e {tmp_path}/killed ] && exit 0\ntouch {tmp_path}/killed\n"
                    "kill -9 $ENGINE_PID\n")
    hook.chmod(0o755)
    journal = tmp_path / "journal"
    proc = spawn("one", repo, journal)
    run_id = proc.stdout.readline().strip()
    assert proc.wait(60) == -signal.SIGKILL
    assert "only.txt" in files_on_main(repo)
    hook.unlink()
    orch, run = resume_to_end(repo, run_id, "one", journal)
    check_repository(repo, expected | {"only.txt"})
    ran = check_records(orch, run_id, journal)
    assert ran == ["t1"]
    (row,) = orch.store.rows("select status, result_sha from merges where run_id = ?", [run_id])
    assert row["status"] == "fast_forward" and row["result_sha"] == git(repo, "rev-parse", "HEAD")


def test_a_kill_right_after_start_returns_leaves_a_resumable_run(repo, tmp_path):
    expected = seed(repo, 5)
    journal = tmp_path / "journal"
    proc = spawn("files", repo, journal, "--die-after-start")
    run_id = proc.stdout.readline().strip()
    assert proc.wait(60) == -signal.SIGKILL
    orch, run = resume_to_end(repo, run_id, "files", journal)
    check_repository(repo, expected | {"first.txt", "second.txt", "third.txt"})
    check_records(orch, run_id, journal)


def half_written_entry(repo: Path, name: str = "t1-a1") -> Path:
    """What a git killed early in `git worktree add` leaves: an entry whose commondir is
    empty, locked as 'initializing', pointing at a worktree that has only its .git file."""
    wt = repo / ".worktrees" / "run-x" / name
    wt.mkdir(parents=True)
    entry = repo / ".git" / "worktrees" / name
    entry.mkdir(parents=True)
    (entry / "locked").write_text("initializing\n")
    (entry / "gitdir").write_text(f"{wt / '.git'}\n")
    (entry / "commondir").write_text("")
    (wt / ".git").write_text(f"gitdir: {entry}\n")
    old = time.time() - 5
    os.utime(entry, (old, old))
    return entry


def test_a_half_written_worktree_entry_no_longer_blocks_git(repo):
    """While such an entry is there, `git worktree list` and `git worktree add` fail for the
    whole repository: resume, cleanup and a new worktree each remove it first."""
    expected = seed(repo, 10)
    ws = ao.Workspace(repo)
    entry = half_written_entry(repo)
    assert subprocess.run([REAL_GIT, "-C", str(repo), "worktree", "list"],
                          capture_output=True).returncode != 0
    report = ws.reconcile("run-x", set())
    assert any("half-written" in r for r in report), report
    assert not entry.exists() and not (repo / ".worktrees" / "run-x" / "t1-a1").exists()
    check_repository(repo, expected)

    half_written_entry(repo, "t2-a1")  # a new run on the workspace, nobody resumed
    wt = ws.create_worktree("run-y", "t1", 1)
    assert (wt.path / "src" / "f1.txt").exists()
    ws.remove_worktree(wt)
    half_written_entry(repo, "t3-a1")
    ws.cleanup()
    check_repository(repo, expected)


def test_a_stale_maintenance_lock_is_removed(repo):
    seed(repo, 3)
    lock = repo / ".git" / "objects" / "maintenance.lock"
    lock.write_text("")
    old = time.time() - 5
    os.utime(lock, (old, old))
    report = ao.Workspace(repo).reconcile("r1", set())
    assert not lock.exists() and any("maintenance.lock" in r for r in report)


def test_files_a_cut_off_merge_wrote_are_removed_but_not_yours(repo):
    """A merge killed mid-checkout leaves the files it had added; reset makes them untracked,
    and the next merge adding them would refuse to overwrite them. Those with the source's
    content go, and so does one git was killed while writing (it holds the start of it); a
    file of the same name with other content is the user's, and stays."""
    expected = seed(repo, 5)
    ws = ao.Workspace(repo)
    before = ws.tip()
    wt = ws.create_worktree("r1", "t1", 1)
    (wt.path / "added").mkdir()
    (wt.path / "added" / "a.txt").write_text("from the task\n")
    (wt.path / "added" / "b.txt").write_text("from the task\n")
    (wt.path / "added" / "c.txt").write_text("a longer file from the task\n" * 50)
    source = ws.commit_all(wt, "adds three files")
    # The state a kill mid-checkout leaves: marker, the new files written, no commit.
    (repo / ".git" / "agentorch-merging").write_text(f"{before} {source}\n")
    (repo / "added").mkdir()
    (repo / "added" / "a.txt").write_text("from the task\n")
    (repo / "added" / "b.txt").write_text("the user's own notes\n")
    (repo / "added" / "c.txt").write_text("a longer file from the task\na lon")  # cut off
    report = ws.reconcile("r1", {wt.branch})
    assert any("removed 2 files" in r and "added/a.txt" in r for r in report), report
    assert not (repo / "added" / "a.txt").exists() and not (repo / "added" / "c.txt").exists()
    assert (repo / "added" / "b.txt").read_text() == "the user's own notes\n"
    (repo / "added" / "b.txt").unlink()
    result = ws.merge(source, "merge")  # nothing in the way any more
    assert result.ok and files_on_main(repo) == expected | {
        "added/a.txt", "added/b.txt", "added/c.txt"}


def test_a_merge_clears_its_own_leftovers_even_without_a_marker(repo):
    """Whatever left them (an earlier attempt's merge cut off and undone), files that hold
    exactly what this merge writes no longer make git refuse to merge; others still do."""
    expected = seed(repo, 5)
    ws = ao.Workspace(repo)
    wt = ws.create_worktree("r1", "t1", 2)
    (wt.path / "k26.txt").write_text("k26\n")
    (wt.path / "k27.txt").write_text("k27\n")
    source = ws.commit_all(wt, "adds k26 and k27")
    (repo / "k26.txt").write_text("k26\n")  # the leftover: what the merge writes anyway
    assert ws.merge(source, "merge").ok
    assert files_on_main(repo) == expected | {"k26.txt", "k27.txt"}
    assert git(repo, "status", "--porcelain") == ""
    wt2 = ws.create_worktree("r1", "t2", 1)
    (wt2.path / "mine.txt").write_text("from the task\n")
    source2 = ws.commit_all(wt2, "adds mine.txt")
    (repo / "mine.txt").write_text("the user's\n")  # not ours: git's refusal stands
    with pytest.raises(ao.WorkspaceError, match="untracked files where this work adds files: mine.txt"):
        ws.merge(source2, "merge")
    assert (repo / "mine.txt").read_text() == "the user's\n"
