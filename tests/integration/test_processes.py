"""Two real processes on one store: reading a live run, steering it, and surviving a kill."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import agentorch_nb as ao
from agentorch_nb import RunStatus
from agentorch_nb.testing import Agents, TestDirector, TestStrategist
from tests.integration import child_run

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
# How long to wait for the other process before giving up: a bound for a hang to show, not
# an expectation of speed (a loaded machine is slow).
DEADLINE = 120


def spawn(scenario: str, repo: Path, journal: Path, **popen) -> tuple[subprocess.Popen, str]:
    """Start child_run.py; its stderr goes to ``<journal>.stderr`` (a pipe nobody reads
    could fill up and stall the child)."""
    with open(f"{journal}.stderr", "w") as err:
        proc = subprocess.Popen(
            [sys.executable, str(Path(child_run.__file__)), scenario, str(repo), str(journal)],
            stdout=subprocess.PIPE, stderr=err, text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)}, **popen)
    run_id = proc.stdout.readline().strip()
    assert run_id.startswith("run-"), stderr_of(journal)
    return proc, run_id


def stderr_of(journal: Path) -> str:
    return Path(f"{journal}.stderr").read_text()


def until(predicate, timeout: float, what: str):
    """Poll what another process makes true (a file, the store), up to a deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_second_process_reads_a_live_run_and_resolves_it(repo, tmp_path):
    proc, run_id = spawn("hitl", repo, tmp_path / "journal")
    try:
        orch = ao.Orchestrator(repo)  # this process: no engine, only the store
        until(lambda: run_id in [r.id for r in orch.runs()], DEADLINE, "the run to reach the store")
        run = orch.run(run_id)
        assert [r.id for r in orch.runs()] == [run_id]
        until(lambda: any(i.task_id == "t1" for i in run.interrupts()), DEADLINE,
              "t1 to wait for a human")

        # While the other process keeps writing, this one reads everything, over and over.
        reads, until_t = 0, time.monotonic() + 2.0
        while time.monotonic() < until_t or reads < 3:
            assert run.status in (RunStatus.RUNNING, RunStatus.PAUSED)
            assert len(run.tasks) == child_run.BUSY + 1
            assert len(run.messages("t1")) >= 2
            assert len(ao.sql("select * from events where run_id = ?", [run_id],
                              store=orch.store.path)) > 0
            reads += 1
        assert run.task("t1").status == ao.TaskStatus.WAITING_HUMAN

        # "applied": the other process's engine took the resolution before resolve() returned.
        assert run.resolve("t1", "retry", guidance="take the simpler design") == "applied"
        assert run.task("t1").status != ao.TaskStatus.WAITING_HUMAN

        with pytest.raises(ao.ResolutionError, match="only waiting_human"):
            run.resolve("t2", "retry")

        assert proc.wait(DEADLINE) == 0, stderr_of(tmp_path / "journal")
        assert proc.stdout.read().strip() == "completed"
        t1 = run.task("t1")
        assert t1.status == ao.TaskStatus.COMPLETE and t1.attempts == 2
        (res,) = run.store.rows("select * from resolutions where run_id = ?", [run_id])
        assert res["source"] == f"process:{os.getpid()}@{os.uname().nodename}"
        assert "Guidance from a human: take the simpler design" in "".join(
            run.messages("t1").content.tolist())
    finally:
        proc.kill()
        proc.wait()


def test_a_killed_run_resumes_in_a_new_process_without_losing_or_redoing_work(repo, tmp_path):
    journal = tmp_path / "journal"
    proc, run_id = spawn("crash", repo, journal)
    orch = ao.Orchestrator(repo)
    complete = lambda: {r["task_id"] for r in orch.store.rows(  # noqa: E731
        "select task_id from tasks where run_id = ? and status = 'complete'", [run_id])}
    active = lambda: {r["task_id"] for r in orch.store.rows(  # noqa: E731
        "select task_id from tasks where run_id = ? and status in ('active', 'awaiting_qa')", [run_id])}
    # The child's worker holds every call after the first HELD_AFTER: once those are complete
    # in the store and the held ones active, the run stands still mid-way, and is killed so.
    held = child_run.held_marker(str(journal))
    until(lambda: held.exists() and len(complete()) == child_run.HELD_AFTER and active(), DEADLINE,
          f"{child_run.HELD_AFTER} tasks done and more under way")
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    done_before, active_before = complete(), active()
    assert len(done_before) == child_run.HELD_AFTER and active_before

    specs, worker, config = child_run.scenario("crash", str(journal))
    run = orch.resume(run_id, agents=Agents(TestDirector(specs), worker, TestStrategist()))
    assert run.wait_sync(DEADLINE) == RunStatus.COMPLETED
    assert len(complete()) == 30

    calls: dict[str, int] = {}
    for line in journal.read_text().splitlines():
        tid, _ = line.split()
        calls[tid] = calls.get(tid, 0) + 1
    for tid in done_before:  # nothing completed is redone
        assert calls[tid] == 1, f"{tid} was completed before the kill but ran again"
    for tid in active_before:  # cut-off attempts are counted and retried
        rows = orch.store.rows("select attempt, outcome from attempts where run_id = ? and task_id = ? "
                               "order by attempt", [run_id, tid])
        assert [r["outcome"] for r in rows] == ["interrupted", "approved"]
        assert "engine process ended" in orch.store.rows(
            "select failure_reason from attempts where run_id = ? and task_id = ? and attempt = 1",
            [run_id, tid])[0]["failure_reason"]
    assert orch.runs()[0].status == RunStatus.COMPLETED


def test_resume_refuses_a_run_another_live_process_drives(repo, tmp_path):
    proc, run_id = spawn("hitl", repo, tmp_path / "journal")
    try:
        orch = ao.Orchestrator(repo)
        until(lambda: run_id in [r.id for r in orch.runs()] and orch.run(run_id).tasks, DEADLINE,
              "the run to be planned")
        with pytest.raises(ao.RunBusyElsewhere, match=str(proc.pid)):
            orch.resume(run_id)
    finally:
        proc.kill()
        proc.wait()


def test_a_process_killed_mid_merge_leaves_main_intact_and_the_merge_is_redone(repo, tmp_path):
    hook = repo / ".git" / "hooks" / "pre-merge-commit"
    marker = tmp_path / "merging"
    hook.write_text(f"#!/bin/sh\ntouch {marker}\nsleep 60\n")
    hook.chmod(0o755)
    tip = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True,
                         text=True).stdout.strip()
    proc, run_id = spawn("merge-crash", repo, tmp_path / "j", start_new_session=True)
    until(marker.exists, DEADLINE, "the second merge to be under way")
    os.killpg(proc.pid, signal.SIGKILL)  # the engine and its git merge, mid-merge
    proc.wait()
    dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain"], capture_output=True,
                           text=True).stdout
    # git was stopped mid-merge (whichever task merged second): files merged, no commit yet.
    assert "first.txt" in dirty or "second.txt" in dirty
    hook.unlink()

    orch = ao.Orchestrator(repo)
    specs, worker, _ = child_run.scenario("merge-crash", str(tmp_path / "j"))
    run = orch.resume(run_id, agents=Agents(TestDirector(specs), worker, TestStrategist()))
    reconciled = run.events().query("kind == 'reconciled'").payload.tolist()
    assert any("undid a merge cut off" in p for p in reconciled), reconciled
    assert run.wait_sync(DEADLINE) == RunStatus.COMPLETED
    git = lambda *a: subprocess.run(["git", "-C", str(repo), *a], capture_output=True,  # noqa: E731
                                    text=True).stdout.strip()
    assert git("status", "--porcelain") == ""
    assert (repo / "first.txt").exists() and (repo / "second.txt").exists()
    assert git("merge-base", "--is-ancestor", tip, "HEAD") == "" and tip != git("rev-parse", "HEAD")
    merges = orch.store.rows("select task_id, status from merges where run_id = ? order by ts", [run_id])
    # The intent of the merge cut off is settled from git as interrupted; the retry merged.
    assert sorted(m["task_id"] for m in merges if m["status"] in ("fast_forward", "merged")) == ["t1", "t2"]
    assert all(m["status"] in ("fast_forward", "merged", "interrupted") for m in merges), merges
    assert git("branch", "--list", "agentorch/*") == ""
