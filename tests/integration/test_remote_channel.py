"""The engine's channel between real processes: commands applied and committed before the
answer, the same refusals as before, strangers ignored, reads equal to the engine's own view,
and the store's road when the engine is gone, without ever applying a command twice."""

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import agentorch_nb as ao
from agentorch_nb import remote
from tests.integration import remote_child
from tests.integration.test_processes import until

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
DEADLINE = 120  # a bound for a hang to show, not an expectation of speed

class Child:
    def __init__(self, repo: Path, folder: Path):
        self.folder = folder
        self.err = open(folder / "child.stderr", "w")
        self.proc = subprocess.Popen(
            [sys.executable, remote_child.__file__, str(repo), str(folder)],
            stdout=subprocess.PIPE, stderr=self.err, text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)})
        self.run_id = self.proc.stdout.readline().strip()
        assert self.run_id.startswith("run-"), self.stderr()

    def stderr(self) -> str:
        return (self.folder / "child.stderr").read_text()

    def view(self) -> dict:
        (self.folder / "view.json").unlink(missing_ok=True)
        (self.folder / "dump").touch()
        path = until(lambda: (self.folder / "view.json").exists() and self.folder / "view.json",
                     DEADLINE, "the engine's own view")
        return json.loads(path.read_text())

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.err.close()


def plain_read(path: str, sql: str, params: list) -> list:
    """Rows read by a plain DuckDB client in a process of its own (it retries while the
    engine's process holds the file)."""
    code = textwrap.dedent(f"""
        import duckdb, json, time
        for _ in range(2400):
            try:
                con = duckdb.connect({path!r}, read_only=True)
            except duckdb.IOException:
                time.sleep(0.05)
                continue
            print(json.dumps(con.execute({sql!r}, {params!r}).fetchall(), default=str))
            con.close()
            break
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=DEADLINE)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def settled(run) -> bool:
    """t1, t2 wait for a human, t4 and t5 are complete: nothing moves until someone answers."""
    status = {t.id: t.status for t in run.tasks}
    return (status.get("t1") == status.get("t2") == ao.TaskStatus.WAITING_HUMAN
            and status.get("t4") == status.get("t5") == ao.TaskStatus.COMPLETE)


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    from tests.conftest import make_repo

    folder = tmp_path_factory.mktemp("channel")
    repo = make_repo(folder / "repo")
    child = Child(repo, folder)
    orch = ao.Orchestrator(repo)  # this process: no engine
    run = orch.run(child.run_id)
    until(lambda: settled(run), DEADLINE, "t1 and t2 to wait for a human")
    yield child, orch, run
    child.stop()


def as_dicts(items) -> list:
    return json.loads(json.dumps([dataclasses.asdict(x) for x in items], default=str))


def test_reads_from_another_process_equal_the_engines_own_view(live):
    child, orch, run = live
    own = child.view()
    remote.last_answer.engine_ms = None
    assert as_dicts(run.tasks) == own["tasks"]
    assert remote.last_answer.engine_ms is not None  # the engine answered, not the file
    assert as_dicts(run.interrupts()) == own["interrupts"]
    assert sorted(i.task_id for i in run.interrupts()) == ["t1", "t2"]
    assert run.status == ao.RunStatus.PAUSED
    counts = {k: n for k, n in run.summary()["counts"].items() if n}
    assert counts == {"complete": 2, "waiting_human": 2, "planned": 1}


def test_refusals_are_the_same_as_before_and_change_nothing(live):
    child, orch, run = live
    with pytest.raises(ao.ResolutionError, match="it is complete, and only waiting_human"):
        run.resolve("t4", "retry")
    with pytest.raises(ao.UnknownTask, match="no task 't99'"):
        run.resolve("t99", "retry")
    with pytest.raises(ao.CycleError) as cycle:
        run.add_dependency("t2", "t3")  # t3 waits for t2 already
    assert cycle.value.cycle == ["t2", "t3", "t2"]
    with pytest.raises(ao.ResolutionError, match="InvalidInput: unknown resolution 'maybe'"):
        run.resolve("t1", "maybe")
    assert settled(run) and run.task("t2").depends_on == []
    # What only the engine's own checks refused is on record, as a refusal in its inbox was.
    assert run.store.rows("select kind, status from commands where run_id = ? order by ts",
                          [child.run_id]) == [{"kind": "add_dependency", "status": "rejected"},
                                              {"kind": "resolve", "status": "rejected"}]
    assert sorted(i.task_id for i in run.interrupts()) == ["t1", "t2"]


def test_a_stranger_gets_no_answer_and_changes_nothing(live):
    child, orch, run = live
    row = orch.run_row(child.run_id)
    host, _, port = row["engine_address"].rpartition(":")

    def say(data: bytes) -> bytes:
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.settimeout(10)
            try:
                sock.sendall(data)
                return sock.recv(100)
            except ConnectionError:
                return b""

    command = {"run": child.run_id, "op": "command", "command_id": "cmd-stranger",
               "kind": "resolve", "payload": {"task_id": "t2", "action": "abandon"}, "source": "x"}
    assert say(json.dumps({**command, "token": "0" * 64}).encode() + b"\n") == b""
    assert say(json.dumps(command).encode() + b"\n") == b""  # no token at all
    assert say(json.dumps({**command, "run": "run-other", "token": "0" * 64}).encode() + b"\n") == b""
    assert say(b"hello engine\n") == b""
    assert say(b"{" + b"x" * (2 << 20) + b"\n") == b""  # over the size bound
    assert say(json.dumps({"op": "tasks", "run": child.run_id, "token": "no"}).encode() + b"\n") == b""
    assert settled(run)
    assert not run.store.rows("select * from commands where command_id = 'cmd-stranger'")


def test_a_resolve_is_committed_before_the_answer(live):
    child, orch, run = live
    remote.last_answer.engine_ms = None
    assert run.resolve("t1", "retry", guidance="take the first design") == "applied"
    assert remote.last_answer.engine_ms is not None  # the channel carried it
    rows = plain_read(orch.store.path, "select status, source, kind from commands where run_id = ? "
                      "and status <> 'rejected'", [child.run_id])
    assert rows == [["applied", remote.default_source(), "resolve"]]
    (res,) = plain_read(orch.store.path, "select task_id, action, source from resolutions "
                        "where run_id = ?", [child.run_id])
    assert res == ["t1", "retry", remote.default_source()]


def test_a_command_whose_connection_broke_after_sending_applies_once(live, monkeypatch):
    child, orch, run = live
    sent = []

    def hang_up_after_sending(found, run_id, op, timeout, **fields):
        address, token = found
        host, _, port = address.rpartition(":")
        with socket.create_connection((host, int(port))) as sock:
            sock.sendall(json.dumps({"run": run_id, "token": token, "op": op, **fields}).encode()
                         + b"\n")
        sent.append(fields["command_id"])
        raise remote.NoAnswer(sent=True)

    monkeypatch.setattr(remote, "request", hang_up_after_sending)
    assert run.resolve("t2", "abandon", drop_dependency=True) == "applied"
    monkeypatch.undo()
    (cid,) = sent
    # The store's road ran too (a pending row unless the engine's was there first): either
    # way one row, applied, and one resolution.
    assert run.store.rows("select status from commands where command_id = ?", [cid]) == [
        {"status": "applied"}]
    rows = run.store.rows("select action from resolutions where run_id = ? and task_id = 't2'",
                          [child.run_id])
    assert rows == [{"action": "abandon"}]
    events = run.store.rows("select count(*) as n from events where run_id = ? and task_id = 't2' "
                            "and kind = 'resolution'", [child.run_id])
    assert events[0]["n"] == 1
    assert child.proc.wait(DEADLINE) == 0, child.stderr()
    assert child.proc.stdout.read().strip() == "completed"


def test_with_the_engine_killed_a_command_waits_and_resume_applies_it_once(tmp_path):
    from tests.conftest import make_repo

    repo = make_repo(tmp_path / "repo")
    child = Child(repo, tmp_path)
    try:
        orch = ao.Orchestrator(repo)
        run = orch.run(child.run_id)
        until(lambda: settled(run), DEADLINE, "t1 and t2 to wait for a human")
        assert [t.id for t in run.tasks]  # the channel is known to this process now
        # The engine's memory (the channel) may be one commit ahead of its file: the kill
        # must come once the file has it too, as this test is about what comes after.
        until(lambda: len(run.store.rows(
            "select 1 from tasks where run_id = ? and status = 'waiting_human'",
            [child.run_id])) == 2, DEADLINE, "the store to hold both waiting tasks")
        child.proc.send_signal(signal.SIGKILL)
        child.proc.wait()
        assert run.resolve("t1", "retry", guidance="go") == "pending"
        assert run.store.rows("select status from commands where run_id = ?", [child.run_id]) == [
            {"status": "pending"}]
        assert settled(run)  # read from the file now that nobody answers

        resumed = orch.resume(child.run_id, agents=remote_child.agents())
        assert resumed.wait_sync(DEADLINE) == ao.RunStatus.PAUSED  # t2 still waits
        assert run.store.rows("select status from commands where run_id = ?", [child.run_id]) == [
            {"status": "applied"}]
        assert run.store.rows("select action from resolutions where run_id = ?",
                              [child.run_id]) == [{"action": "retry"}]
        assert run.task("t1").status == ao.TaskStatus.COMPLETE
        resumed.cancel()
        resumed.wait_sync(DEADLINE)
    finally:
        child.stop()
