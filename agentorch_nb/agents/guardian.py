"""The Guardian (optional, ``Config.enable_guardian``): every ``guardian_every`` tool calls a
model judges whether the worker drifts from its task, and a nudge is injected when it does.
Each check is a ``guardian_verdicts`` row."""

from __future__ import annotations

from typing import Any

from ..model import utcnow
from .structured import ask, prompt, tool

SUBMIT_DRIFT_CHECK = tool(
    "submit_drift_check", "Say whether the worker is on track; give a nudge if it is not.",
    {"on_track": {"type": "boolean"}, "nudge": {"type": "string"}}, ["on_track"])


def _parse(args: dict) -> tuple[bool, str]:
    on_track = bool(args["on_track"])
    nudge = str(args.get("nudge") or "").strip()
    if not on_track and not nudge:
        raise ValueError("a worker that is off track needs a nudge")
    return on_track, nudge


class Guardian:
    def __init__(self, llm, every: int = 5) -> None:
        self.llm = llm
        self.every = every

    def due(self, before: int, after: int) -> bool:
        """True when the tool-call count crossed a multiple of ``every``."""
        return after // self.every > before // self.every

    async def check(self, task, ctx, messages: list[dict[str, Any]], tool_calls: int) -> str | None:
        """The nudge to inject, or None when the worker is on track."""
        steps = "\n".join(f"[{m['role']}] {(m.get('content') or '')[:500]}"
                          + (" -> " + ", ".join(c["function"]["name"] for c in m["tool_calls"])
                             if m.get("tool_calls") else "")
                          for m in messages[-12:])
        on_track, nudge = await ask(
            self.llm, role="guardian", schema=SUBMIT_DRIFT_CHECK, parse=_parse,
            messages=[{"role": "user", "content": prompt(
                "guardian", task_id=task.id, title=task.title, description=task.description,
                criteria="\n".join(f"- {c}" for c in task.acceptance_criteria) or "- (none)",
                steps=steps)}],
            task_id=task.id, attempt=ctx.attempt, profile=task.profile, title=task.title)
        store = getattr(ctx, "store", None)
        if store is not None:
            store.append("guardian_verdicts", {
                "run_id": ctx.run_id, "task_id": task.id, "attempt": ctx.attempt, "ts": utcnow(),
                "tool_calls": tool_calls, "on_track": on_track, "nudge": nudge or None})
        return None if on_track else nudge
