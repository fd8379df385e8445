"""The channel's pieces that need no second process: refusals rebuilt as their own errors,
records encoded and rebuilt equal, and a pending command queued at most once."""

import pytest

import agentorch_nb as ao
from agentorch_nb import remote
from agentorch_nb.engine.inbox import refusal
from agentorch_nb.model import Interrupt, Task, TaskStatus, utcnow
from agentorch_nb.store import Store


@pytest.mark.parametrize("exc", [
    ao.CycleError(["t2", "t3", "t2"]), ao.UnknownTask("t9", "run-1"),
    ao.ResolutionError("cannot resolve task 't4': it is complete"),
])
def test_a_refusal_is_raised_again_as_the_same_error(exc):
    with pytest.raises(type(exc)) as raised:
        remote.outcome(refusal(exc), "run-1")
    assert str(raised.value) == str(exc)
    assert getattr(raised.value, "cycle", None) == getattr(exc, "cycle", None)


def test_any_other_refusal_is_a_resolution_error_naming_it():
    with pytest.raises(ao.ResolutionError, match="InvalidInput: unknown resolution"):
        remote.outcome(refusal(ao.InvalidInput("unknown resolution 'x'")), "run-1")
    assert remote.outcome({"status": "applied", "error": None}, "run-1") == "applied"


def test_records_travel_unchanged():
    task = Task(id="t1", run_id="r", title="x", acceptance_criteria=["a"], depends_on=["t0"],
                status=TaskStatus.WAITING_HUMAN, guidance="g")
    it = Interrupt(id="i-1", run_id="r", task_id="t1", reason="why", kind="human",
                   context={"n": 1, "names": ["a"]})
    for record in (task, it):
        fields = remote.fields_of(type(record))
        assert remote.record_of(type(record), fields, remote.values_of(record, fields)) == record


def test_a_pending_command_is_queued_at_most_once(tmp_path):
    store = Store.open(tmp_path / "s.duckdb")
    row = {"run_id": "r", "command_id": "cmd-1", "ts": utcnow(), "kind": "cancel",
           "payload": "{}", "source": "test", "status": "pending"}
    assert store.call_sync(lambda con: remote.queue_once(con, row)) is None
    store.upsert("commands", {**row, "status": "applied", "error": None, "applied_at": utcnow()})
    store.flush_sync()
    assert store.call_sync(lambda con: remote.queue_once(con, row)) == {"status": "applied",
                                                                       "error": None}
    assert store.rows("select count(*) as n from commands")[0]["n"] == 1
    store.close()
