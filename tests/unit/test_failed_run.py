"""A run that fails in plain Python says so in one log line, with where to look; its
traceback goes to the debug log and into runs.error, and what people read (the dashboard,
the static HTML) shows the reason alone."""

from __future__ import annotations

import logging

import agentorch_nb as ao
from agentorch_nb.render import run_html
from agentorch_nb.testing import Agents, TestDirector, TestStrategist, TestWorker
from agentorch_nb.widgets import dashboard_for


def explode(objective: str):
    raise RuntimeError("the planner broke:\nno tasks")


async def test_a_failed_run_logs_one_line_and_keeps_its_traceback_in_the_store(repo, caplog):
    caplog.set_level(logging.DEBUG, logger="agentorch_nb")
    agents = Agents(TestDirector(explode), TestWorker(), TestStrategist())
    orch = ao.Orchestrator(repo, agents=agents, config=ao.Config(flush_interval=0.01))
    run = orch.start("x")
    assert await run.wait(30) == ao.RunStatus.FAILED

    loud = [r for r in caplog.records if r.levelno >= logging.WARNING and run.id in r.getMessage()]
    (line,) = loud
    assert line.exc_info is None and "\n" not in line.getMessage()
    assert line.getMessage() == (
        f"run {run.id} failed: RuntimeError: the planner broke: no tasks (the traceback: "
        f"run.summary()['error'], or runs.error in {orch.store.path})")
    (debug,) = [r for r in caplog.records if r.levelno == logging.DEBUG and r.exc_info
                and run.id in r.getMessage()]
    assert debug.exc_info[0] is RuntimeError

    error = run.summary()["error"]
    assert error.startswith("RuntimeError: the planner broke:\nno tasks\n\nTraceback (most "
                            "recent call last):")
    assert "in explode" in error
    await orch.store.flush()
    assert orch.run_row(run.id)["error"] == error
    # What people read shows the reason, not the traceback.
    board = dashboard_for(run)
    assert board.header.status.value.endswith("· error: RuntimeError: the planner broke:\nno tasks")
    assert "run error: RuntimeError: the planner broke:\nno tasks</div>" in board.problems.value
    assert "Traceback" not in board.problems.value + board.header.status.value
    assert "Traceback" not in run_html(run.summary(), run.tasks)
