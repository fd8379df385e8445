"""``agentorch`` in real processes, with the offline agents of unattended_agents.py: exit
codes of unattended runs under each HITL policy, progress on a terminal and in a pipe, every
subcommand, and the messages of refused arguments."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

import agentorch_nb as ao

ROOT = Path(__file__).resolve().parents[2]
AGENTS = Path(__file__).with_name("unattended_agents.py")
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}  # this checkout, whatever is installed


def cli(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agentorch_nb", *args], cwd=cwd, env=ENV,
                          capture_output=True, text=True, timeout=timeout)


def agents(name: str) -> str:
    return f"{AGENTS}:{name}"


def start(*args: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "agentorch_nb", *args], cwd=cwd, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def until(check, cwd: Path, run_id: str, timeout: float = 60) -> dict:
    """Poll ``agentorch status RUN --json`` from this shell until ``check(status)``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = cli("status", run_id, "--json", cwd=cwd)
        if out.returncode == 0:
            status = json.loads(out.stdout)
            if check(status):
                return status
        time.sleep(0.2)
    raise AssertionError(f"{run_id} never reached the state: {out.stdout or out.stderr}")


def task_status(status: dict, task_id: str) -> str | None:
    return next((t["status"] for t in status["tasks"] if t["task_id"] == task_id), None)


def no_traceback(out: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in out.stderr, out.stderr


@pytest.mark.slow
def test_a_run_that_completes_exits_0_with_one_json_object(repo):
    out = cli("run", "--objective", "four tasks", "--agents", agents("completing"), "--json",
              cwd=repo)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)  # stdout is the JSON object alone; progress went to stderr
    assert result["status"] == "completed" and result["run_id"].startswith("run-")
    assert result["counts"] == {"complete": 4} and result["unfinished"] == []
    assert result["cost_usd"] == 0.0 and result["exit_code"] == 0 and result["hitl"] == "fail"
    assert f"run {result['run_id']}" in out.stderr

    listed = cli("runs", cwd=repo)
    assert listed.returncode == 0 and result["run_id"] in listed.stdout and "four tasks" in listed.stdout
    # With only --store, from anywhere: the store says where the run's workspace is.
    store = repo / ".agentorch" / "agentorch.duckdb"
    elsewhere = repo.parent
    assert result["run_id"] in cli("runs", "--store", str(store), cwd=elsewhere).stdout
    shown = cli("status", result["run_id"], "--store", str(store), cwd=elsewhere)
    assert shown.returncode == 0, shown.stderr
    assert f"run {result['run_id']}: completed" in shown.stdout
    assert re.search(r"t3\s+complete\s+1\s+three\s+t1, t2", shown.stdout)
    cleaned = cli("cleanup", result["run_id"], cwd=repo)
    assert cleaned.returncode == 0 and cleaned.stdout.strip()
    refused = cli("cancel", result["run_id"], cwd=repo)
    assert refused.returncode == 1 and "is completed: there is nothing to cancel" in refused.stderr


@pytest.mark.slow
def test_hitl_fail_cancels_at_the_escalation_and_a_resolution_then_resume_finishes(repo):
    out = cli("run", "--objective", "escalates", "--agents", agents("escalating"),
              "--hitl", "fail", cwd=repo)
    assert out.returncode == 1, out.stdout + out.stderr
    run_id = re.search(r"run (run-[0-9a-f]+)", out.stdout).group(1)
    assert f"agentorch: run {run_id} cancelled by the hitl policy 'fail': waiting for a human: t2" \
        in out.stderr
    assert re.search(r"t2\s+waiting_human\s+needs a human", out.stdout)  # the unfinished, named
    assert "policy fail: cancelling" in out.stdout
    events = ao.sql("select payload from events where run_id = ? and kind = 'cancel_requested'",
                    [run_id], store=repo / ".agentorch" / "agentorch.duckdb")
    assert json.loads(events.payload[0])["source"] == "policy:fail"

    shown = cli("status", run_id, cwd=repo)
    assert f"run {run_id}: cancelled" in shown.stdout and "waiting for a human: t2" in shown.stdout
    # No process drives it: the answer waits in the store, and resume applies it first.
    answered = cli("resolve", run_id, "t2", "retry", "--guidance", "take design A", cwd=repo)
    assert answered.returncode == 0 and answered.stdout.startswith("pending"), answered.stderr
    resumed = cli("resume", run_id, "--agents", agents("escalating"), "--json", cwd=repo)
    assert resumed.returncode == 0, resumed.stderr
    result = json.loads(resumed.stdout)
    assert result["status"] == "completed" and result["counts"] == {"complete": 4}
    (esc,) = result["escalations"]
    assert esc["task_id"] == "t2" and esc["action"] == "retry" and esc["source"].startswith("cli:")


@pytest.mark.slow
def test_hitl_abandon_finishes_the_rest_and_names_what_it_abandoned(repo):
    out = cli("run", "--objective", "escalates", "--agents", agents("escalating"),
              "--hitl", "abandon", "--json", cwd=repo)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["status"] == "completed" and result["abandoned"] == ["t2"]
    assert {t["task_id"]: t["status"] for t in result["unfinished"]} == {"t2": "abandoned",
                                                                         "t3": "abandoned"}
    assert "2 abandoned (t2, t3)" in result["message"]
    assert result["escalations"][0]["source"] == "policy:abandon"
    assert "policy abandon: abandoned t2" in out.stderr
    rows = ao.sql("select task_id, action, source from resolutions where run_id = ?",
                  [result["run_id"]], store=repo / ".agentorch" / "agentorch.duckdb")
    assert rows.to_dict("records") == [{"task_id": "t2", "action": "abandon", "source": "policy:abandon"}]
    why = ao.sql("select status_reason from tasks where run_id = ? and task_id = 't2'",
                 [result["run_id"]], store=repo / ".agentorch" / "agentorch.duckdb")
    assert why.status_reason[0] == "abandoned by the abandon policy"


@pytest.mark.slow
def test_hitl_wait_is_answered_from_another_shell_while_the_run_waits(repo):
    job = start("run", "--objective", "waits", "--agents", agents("escalating"), "--hitl", "wait",
                "--hitl-timeout", "60", "--run-id", "run-waiting", "--json", cwd=repo)
    try:
        until(lambda s: task_status(s, "t2") == "waiting_human", repo, "run-waiting")
        wrong = cli("resolve", "run-waiting", "t1", "retry", cwd=repo)
        assert wrong.returncode == 1 and "cannot resolve task 't1': it is complete" in wrong.stderr
        no_traceback(wrong)
        answered = cli("resolve", "run-waiting", "t2", "retry", "--guidance", "design A",
                       "--criteria", "A is used", "--criteria", "B is not", cwd=repo)
        assert (answered.returncode, answered.stdout.strip()) == (0, "applied"), answered.stderr
        stdout, stderr = job.communicate(timeout=60)
    finally:
        job.kill()
    assert job.returncode == 0, stderr
    result = json.loads(stdout)
    assert result["status"] == "completed" and result["hitl"] == "wait"
    (esc,) = result["escalations"]
    assert esc["action"] == "retry" and esc["source"].startswith("cli:") and esc["waited_s"] > 0


@pytest.mark.slow
def test_hitl_wait_gives_up_after_its_timeout_and_leaves_the_run_resumable(repo):
    out = cli("run", "--objective", "waits", "--agents", agents("escalating"), "--hitl", "wait",
              "--hitl-timeout", "1", "--run-id", "run-givesup", cwd=repo)
    assert out.returncode == 3, out.stdout + out.stderr
    assert "run run-givesup is paused, waiting for a human: t2 (needs a human)" in out.stderr
    assert "agentorch resolve run-givesup t2 retry" in out.stderr
    events = ao.sql("select task_id, payload from events where run_id = 'run-givesup' and "
                    "kind = 'hitl_timeout'", store=repo / ".agentorch" / "agentorch.duckdb")
    assert list(events.task_id) == ["t2"] and json.loads(events.payload[0])["source"] == "policy:wait"
    resumed = cli("resume", "run-givesup", "--agents", agents("escalating"), "--hitl", "abandon",
                  cwd=repo)
    assert resumed.returncode == 0, resumed.stderr
    assert "run run-givesup completed: 4 tasks, 2 abandoned (t2, t3)" in resumed.stdout


@pytest.mark.slow
def test_interrupt_from_another_shell_meets_the_policy_and_timeout_cancels(repo):
    job = start("run", "--objective", "long", "--agents", agents("long"), "--hitl", "abandon",
                "--run-id", "run-slow", "--json", cwd=repo)
    try:
        until(lambda s: task_status(s, "t1") == "active", repo, "run-slow")
        stopped = cli("interrupt", "run-slow", "t1", cwd=repo)
        assert (stopped.returncode, stopped.stdout.strip()) == (0, "applied"), stopped.stderr
        stdout, stderr = job.communicate(timeout=60)
    finally:
        job.kill()
    result = json.loads(stdout)
    assert job.returncode == 0 and result["abandoned"] == ["t1"], stderr
    assert result["escalations"][0]["kind"] == "human" and result["counts"] == {"complete": 1,
                                                                                "abandoned": 2}

    out = cli("run", "--objective", "too slow", "--agents", agents("slow"), "--timeout", "0.5",
              "--run-id", "run-late", cwd=repo)
    assert out.returncode == 4, out.stdout + out.stderr
    assert "run run-late did not finish within 0.5 s: it was cancelled" in out.stderr
    assert "run run-late: cancelled" in cli("status", "run-late", cwd=repo).stdout


@pytest.mark.slow
def test_progress_is_plain_lines_in_a_pipe_and_one_redrawn_line_on_a_terminal(repo):
    piped = cli("run", "--objective", "slow", "--agents", agents("slow"), cwd=repo)
    assert piped.returncode == 0 and "\r" not in piped.stdout and "\x1b[" not in piped.stdout
    lines = [line for line in piped.stdout.splitlines() if re.match(r"run-\w+ (running|paused)", line)]
    elapsed = float(re.search(r"; ([0-9.]+) s; store", piped.stdout).group(1))
    assert 1 <= len(lines) <= elapsed + 2, piped.stdout  # at most about one a second
    assert any("active: " in line for line in lines)

    primary, secondary = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "agentorch_nb", "run", "--objective", "slow",
                             "--agents", agents("slow")], cwd=repo, env=ENV, stdin=secondary,
                            stdout=secondary, stderr=secondary, close_fds=True)
    os.close(secondary)
    seen = b""
    try:
        while True:
            ready, _, _ = select.select([primary], [], [], 60)
            if not ready:
                break
            try:
                chunk = os.read(primary, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            seen += chunk
    finally:
        os.close(primary)
        proc.wait(timeout=60)
    text = seen.decode()
    assert proc.returncode == 0, text
    redraws = re.findall(r"\r(run-\w+ running[^\r\n]*)\x1b\[K", text)
    assert len(redraws) >= 2 and any("active: " in r for r in redraws), text
    assert "completed: 4 tasks" in text


def test_bad_arguments_are_refused_with_clear_messages(repo, tmp_path):
    cases = [
        (["status", "run-nope"], 2, "agentorch: error: no run 'run-nope' in"),
        (["run", "--objective", "x", "--model", "demo", "--hitl", "maybe"], 2,
         "argument --hitl: invalid choice: 'maybe'"),
        (["runs", "--workspace", str(tmp_path / "missing")], 2, "does not exist"),
        (["runs", "--workspace", str(tmp_path)], 2, "is not a git repository"),
        (["run", "--objective", "x"], 2, "--model is required"),
        (["run", "--objective", "x", "--agents", "no_such_module:f"], 2, "cannot be loaded"),
        (["run", "--objective", " ", "--model", "demo"], 2, "the objective is empty"),
        (["run", "--objective", "x", "--model", "demo", "--workers", "0"], 2, "must be at least 1"),
        (["resolve", "run-nope", "t1", "retry"], 2, "no run 'run-nope'"),
        (["resolve", "run-nope", "t1", "maybe"], 2, "invalid choice: 'maybe'"),
        (["runs", "--store", str(tmp_path / "none.duckdb")], 2, "there is no agentorch store"),
    ]
    for args, code, message in cases:
        out = cli(*args, cwd=repo)
        assert out.returncode == code and message in out.stderr, (args, out.returncode, out.stderr)
        no_traceback(out)
    # An unknown task of a known run.
    done = cli("run", "--objective", "x", "--agents", agents("completing"), "--run-id", "run-known",
               cwd=repo)
    assert done.returncode == 0, done.stderr
    out = cli("resolve", "run-known", "t9", "retry", cwd=repo)
    assert out.returncode == 2 and "no task 't9' in run 'run-known'" in out.stderr
    out = cli("interrupt", "run-known", "t1", cwd=repo)
    assert out.returncode == 1 and "cannot interrupt task 't1': it is complete" in out.stderr
    out = cli("run", "--objective", "x", "--agents", agents("completing"), "--run-id", "run-known",
              cwd=repo)
    assert out.returncode == 2 and "is taken" in out.stderr


@pytest.mark.slow
def test_snapshot_and_prune(repo, tmp_path):
    for name in ("run-old", "run-new"):
        done = cli("run", "--objective", name, "--agents", agents("completing"), "--run-id", name,
                   cwd=repo)
        assert done.returncode == 0, done.stderr
    copy = tmp_path / "copy.duckdb"
    made = cli("snapshot", str(copy), cwd=repo)
    assert made.returncode == 0 and made.stdout.strip() == str(copy) and copy.exists(), made.stderr
    listed = cli("runs", "--store", str(copy), cwd=tmp_path)
    assert "run-old" in listed.stdout and "run-new" in listed.stdout

    dry = cli("prune", "--keep-last", "1", "--dry-run", cwd=repo)
    assert dry.stdout.strip() == "would remove run-old", dry.stderr
    assert "run-old" in cli("runs", cwd=repo).stdout
    gone = cli("prune", "--keep-last", "1", cwd=repo)
    assert gone.stdout.strip() == "removed run-old", gone.stderr
    listed = cli("runs", cwd=repo).stdout
    assert "run-old" not in listed and "run-new" in listed
    assert "run-old" in cli("runs", "--store", str(copy), cwd=tmp_path).stdout  # the copy keeps it

    for args, message in ((["prune"], "say which runs to remove"),
                          (["prune", "--older-than", "soon"], "is not an age"),
                          (["snapshot", str(copy)], "a snapshot is written to a new file only")):
        out = cli(*args, cwd=repo)
        assert out.returncode == 2 and message in out.stderr, (args, out.stderr)
        no_traceback(out)


@pytest.mark.slow
def test_ctrl_c_cancels_the_run_cleanly_and_exits_130(repo):
    import signal

    job = subprocess.Popen([sys.executable, "-m", "agentorch_nb", "run", "--objective", "long",
                            "--agents", agents("long"), "--run-id", "run-ctrlc"], cwd=repo, env=ENV,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        for line in job.stdout:  # plain progress lines: wait until the long task runs
            if "active: t1 long" in line:
                break
        job.send_signal(signal.SIGINT)
        _, stderr = job.communicate(timeout=60)
    finally:
        job.kill()
    assert job.returncode == 130, stderr
    assert "run run-ctrlc cancelled (Ctrl-C); `agentorch resume run-ctrlc` continues it" in stderr
    assert "Traceback" not in stderr
    assert "run run-ctrlc: cancelled" in cli("status", "run-ctrlc", cwd=repo).stdout
