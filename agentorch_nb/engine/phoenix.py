"""The Phoenix protocol: what happens after a failed attempt.

A failed attempt (worker error, timeout, QA rejection, interruption) is retried while the
task has retries left in its budget; the next attempt sees every earlier attempt's summary,
failure reason and QA feedback, in order. With the budget spent the task waits for a human.
A human's retry starts the budget afresh. This module is the one place that decides.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..model import Attempt, Task


def should_retry(task: Task) -> bool:
    """True while the task has retries left; ``max_retries=4`` allows five attempts."""
    return task.retries_used < task.max_retries


def phoenix_brief(history: Sequence[Attempt], guidance: str | None = None) -> str:
    """Earlier attempts, oldest first, as the text the next attempt is given."""
    lines: list[str] = []
    for a in history:
        if a.outcome is None:
            continue
        lines.append(f"Attempt {a.number}: {a.outcome}")
        if a.summary:
            lines.append(f"  summary: {a.summary}")
        if a.failure_reason:
            lines.append(f"  failure: {a.failure_reason}")
        if a.qa_feedback:
            lines.append(f"  QA feedback: {a.qa_feedback}")
    if guidance:
        lines.append(f"Guidance from a human: {guidance}")
    return "\n".join(lines)
