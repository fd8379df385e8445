"""The batch notebook (run_objective.ipynb) run by papermill in its own process under each
HITL policy, one of them answered by ``agentorch resolve`` from another process while the
job waits; the machine-readable outcome it leaves; and the notebook progress's throttle."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from agentorch_nb.notebooks import RUN_OBJECTIVE
from agentorch_nb.unattended import MIME, NotebookProgress, Snapshot

ROOT = Path(__file__).resolve().parents[2]
AGENTS = f"{Path(__file__).with_name('unattended_agents.py')}:escalating"
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}  # the kernel imports this checkout


def papermill(out: Path, repo: Path, *params: str) -> subprocess.Popen:
    """The job as the Jupyter server starts it (-r for strings, -p for the rest)."""
    args = [sys.executable, "-m", "papermill", str(RUN_OBJECTIVE), str(out), "--no-progress-bar",
            "-r", "workspace", str(repo), "-r", "model", "demo", "-p", "workers", "2",
            "-p", "max_retries", "0", "-r", "agents", AGENTS, *params]
    return subprocess.Popen(args, cwd=out.parent, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def result(out: Path) -> dict:
    nb = nbformat.read(out, as_version=4)
    (cell,) = [c for c in nb.cells if "agentorch-result" in c.metadata.get("tags", [])]
    (output,) = cell.outputs
    assert output["data"]["text/plain"].startswith(output["data"][MIME]["message"])
    return output["data"][MIME]


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agentorch_nb", *args], cwd=cwd, env=ENV,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_hitl_wait_job_is_unblocked_by_agentorch_resolve_from_another_process(tmp_path, repo):
    out = tmp_path / "wait.ipynb"
    job = papermill(out, repo, "-r", "objective", "waits", "-r", "run_id", "run-nbwait",
                    "-r", "hitl", "wait", "-p", "hitl_timeout", "120")
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            shown = cli("status", "run-nbwait", "--json", cwd=repo)
            if shown.returncode == 0 and json.loads(shown.stdout)["waiting"]:
                break
            time.sleep(0.3)
        answered = cli("resolve", "run-nbwait", "t2", "retry", "--guidance", "take design A",
                       cwd=repo)
        assert (answered.returncode, answered.stdout.strip()) == (0, "applied"), answered.stderr
        log, _ = job.communicate(timeout=120)
    finally:
        job.kill()
    assert job.returncode == 0, log
    outcome = result(out)
    assert outcome["run_id"] == "run-nbwait" and outcome["status"] == "completed"
    assert outcome["exit_code"] == 0 and outcome["cost_usd"] == 0.0 and outcome["hitl"] == "wait"
    (esc,) = outcome["escalations"]
    assert esc["task_id"] == "t2" and esc["action"] == "retry" and esc["source"].startswith("cli:")
    assert esc["waited_s"] > 0
    nb = nbformat.read(out, as_version=4)
    # The static record stays readable without widgets: the run's table, the attempts, the cost.
    shown = [o for c in nb.cells for o in c.get("outputs", []) if "text/html" in o.get("data", {})]
    assert any("Run run-nbwait: completed" in o["data"]["text/html"] for o in shown)
    assert nb.cells[-1].outputs[0]["text"].startswith("run run-nbwait completed")


@pytest.mark.slow
def test_hitl_abandon_job_succeeds_and_fail_job_fails_both_recording_the_outcome(tmp_path, repo):
    abandon, fail = tmp_path / "abandon.ipynb", tmp_path / "fail.ipynb"
    job = papermill(abandon, repo, "-r", "objective", "abandons", "-r", "hitl", "abandon")
    log, _ = job.communicate(timeout=120)
    assert job.returncode == 0, log
    outcome = result(abandon)
    assert outcome["status"] == "completed" and outcome["abandoned"] == ["t2"]
    assert {t["task_id"] for t in outcome["unfinished"]} == {"t2", "t3"}
    assert outcome["escalations"][0]["source"] == "policy:abandon"
    assert outcome["actions"][0]["action"] == "abandon"

    job = papermill(fail, repo, "-r", "objective", "fails")  # hitl defaults to fail
    log, _ = job.communicate(timeout=120)
    assert job.returncode != 0 and "waiting for a human: t2" in log, log
    outcome = result(fail)  # written before the job failed
    assert outcome["status"] == "cancelled" and outcome["exit_code"] == 1
    assert outcome["actions"][0] == {**outcome["actions"][0], "action": "cancel",
                                     "task_id": "t2", "source": "policy:fail"}
    nb = nbformat.read(fail, as_version=4)
    (error,) = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert error["ename"] == "RunNotCompleted" and "'fail': waiting for a human: t2" in error["evalue"]


def test_notebook_progress_updates_one_display_at_most_twice_a_second(monkeypatch):
    import IPython.display

    shown = []

    class Handle:
        def update(self, view):
            shown.append(view)

    monkeypatch.setattr(IPython.display, "display",
                        lambda view, display_id: shown.append(view) or Handle())
    progress = NotebookProgress()
    started = time.monotonic()
    for i in range(200):  # 200 changes in about a second
        progress.update(Snapshot("run-x", "running", {"active": 1, "complete": i}, [("t1", "a")],
                                 [], 0.0, time.monotonic() - started))
        if i % 50 == 0:
            progress.note(f"t{i} waits for a human")
        time.sleep(0.005)
    progress.close()
    elapsed = time.monotonic() - started
    assert 2 <= len(shown) <= 2 * elapsed + 2
    last = shown[-1]._repr_mimebundle_()
    assert "199/200 done" in last["text/plain"] and "t150 waits for a human" in last["text/plain"]
