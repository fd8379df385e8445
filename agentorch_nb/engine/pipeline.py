"""The part of an attempt an executor carries out: the worker under its timeout, the commit
of its worktree, and the Strategist's judgement. The same code runs in the engine's process
(:class:`agentorch_nb.engine.executor.LocalExecutor`) and on a cluster node
(:mod:`agentorch_nb.distributed`), so an attempt means the same wherever it runs.

Every way it can fail is an :class:`AttemptFailed`, which the engine turns into the
attempt's outcome and the Phoenix context.
"""

from __future__ import annotations

import asyncio
import traceback
from collections.abc import Callable
from typing import Any

from ..llm.errors import BudgetExceeded
from ..model import Attempt, Interruption, Outcome, Task, WorkResult


class AttemptFailed(Exception):
    """How an attempt failed; becomes the attempt's outcome and the Phoenix context.
    ``escalate`` sends the task straight to a human (an interrupt of that kind), no retry;
    ``interruption`` says who stopped an ``interrupted`` attempt (a lost node, say)."""

    def __init__(self, outcome: Outcome, reason: str, feedback: str | None = None,
                 escalate: str | None = None, interruption: Interruption | None = None) -> None:
        super().__init__(reason)
        self.outcome, self.reason, self.feedback = outcome, reason, feedback
        self.escalate = escalate
        self.interruption = interruption

    def __reduce__(self):  # travels from a node to the engine whole
        return (AttemptFailed, (self.outcome, self.reason, self.feedback, self.escalate,
                                self.interruption))


async def bounded(coro, timeout: float, who: str):
    """Await an agent's coroutine: running over ``timeout`` or raising is a failed attempt,
    never an error of the loop. Cancellation passes through."""
    try:
        async with asyncio.timeout(timeout):
            return await coro
    except TimeoutError:
        raise AttemptFailed(Outcome.TIMEOUT, f"{who} gave no result within {timeout:g} s") from None
    except AttemptFailed:
        raise
    except BudgetExceeded as exc:
        raise AttemptFailed(Outcome.ERROR, str(exc), escalate="budget") from None
    except Exception as exc:  # noqa: BLE001 - an agent's bug is a failed attempt
        prefix = "" if who == "worker" else f"{who} failed: "
        raise AttemptFailed(Outcome.ERROR, prefix + describe(exc)) from None


def describe(exc: BaseException) -> str:
    tb = traceback.extract_tb(exc.__traceback__)
    where = f" (at {tb[-1].filename.rsplit('/', 1)[-1]}:{tb[-1].lineno})" if tb else ""
    return f"{type(exc).__name__}: {exc}{where}"


async def work_and_judge(agents: Any, integration: Any, task: Task, attempt: Attempt, ctx: Any,
                         config: Any, on_judging: Callable[[], None]) -> tuple[WorkResult, str | None]:
    """Run the worker, commit what it left in its worktree, and have the Strategist judge
    it. Returns the worker's result and the commit to merge (None: nothing to merge). Fills
    in ``attempt`` (summary, commit, diff, QA feedback) and ``task`` (result summary, QA
    verdict and feedback) as it goes; raises :class:`AttemptFailed`. ``on_judging`` is
    called once the work is committed and QA begins."""
    result = await bounded(agents.worker.run(task.copy(), ctx), config.worker_timeout, "worker")
    if not isinstance(result, WorkResult):
        raise AttemptFailed(Outcome.ERROR, f"worker returned {type(result).__name__}, not WorkResult")
    attempt.summary = task.result_summary = result.summary
    if not result.ok:
        raise AttemptFailed(Outcome.ERROR, result.error or "worker reported failure")
    sha = await integration.commit(task, attempt) if integration is not None else None
    on_judging()
    verdict = await bounded(agents.strategist.review(task.copy(), result, ctx),
                            config.qa_timeout, "QA")
    task.qa_verdict = "approved" if verdict.approved else "rejected"
    task.qa_feedback = attempt.qa_feedback = verdict.feedback or None
    if not verdict.approved:
        raise AttemptFailed(Outcome.REJECTED, "QA rejected the work", verdict.feedback)
    return result, sha
