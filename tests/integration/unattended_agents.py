"""Offline agents for the unattended-run tests, loaded by ``agentorch run --agents
tests/integration/unattended_agents.py:NAME`` and the batch notebook's ``agents`` parameter.

``escalating``: t1 "build" and t4 "docs" succeed; t2 "needs a human" (after t1) fails until
someone gives guidance, with no retry, so it waits for a human at once; t3 "after" depends
on t2. ``completing``: four quick tasks, one depending on two others. ``slow``: like
``completing``, with tasks that take a few seconds (for the progress display). ``long``:
a task that takes a minute, to be interrupted.
"""

import agentorch_nb as ao
from agentorch_nb.testing import Agents, TestDirector, TestStrategist, TestWorker

LATENCY = 0.1


def needs_human(task, ctx):
    if task.title == "needs a human" and not ctx.guidance:
        return "cannot choose between the two designs alone"
    return None


def escalating() -> Agents:
    specs = [ao.TaskSpec("build", key="build"),
             ao.TaskSpec("needs a human", key="hitl", depends_on=["build"], max_retries=0),
             ao.TaskSpec("after", key="after", depends_on=["hitl"]),
             ao.TaskSpec("docs", key="docs")]
    return Agents(TestDirector(specs), TestWorker(latency=LATENCY, fail=needs_human), TestStrategist())


def completing(latency: float = LATENCY) -> Agents:
    specs = [ao.TaskSpec("one", key="a"), ao.TaskSpec("two", key="b"),
             ao.TaskSpec("three", key="c", depends_on=["a", "b"]), ao.TaskSpec("four", key="d")]
    return Agents(TestDirector(specs), TestWorker(latency=latency), TestStrategist())


def slow() -> Agents:
    return completing(latency=1.2)


def long() -> Agents:
    """t1 "long" takes a minute (time to interrupt it from another shell); t2 waits for it."""
    specs = [ao.TaskSpec("long", key="long"), ao.TaskSpec("after long", key="after", depends_on=["long"]),
             ao.TaskSpec("quick", key="quick")]
    worker = TestWorker(latency=lambda task, ctx: 60.0 if task.title == "long" else LATENCY)
    return Agents(TestDirector(specs), worker, TestStrategist())
