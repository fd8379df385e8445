"""The Strategist: judges an attempt against its acceptance criteria from the diff and the
output of real checks run in the attempt's worktree, and summarizes failed attempts for the
next one (the Phoenix context)."""

from __future__ import annotations

import asyncio
import shlex
from pathlib import Path

from ..model import Verdict
from .structured import ask, prompt, tool

SUBMIT_VERDICT = tool(
    "submit_verdict", "Approve or reject the attempt, criterion by criterion.",
    {"approved": {"type": "boolean"},
     "criteria": {"type": "array", "items": {"type": "object", "properties": {
         "criterion": {"type": "string"}, "met": {"type": "boolean"}, "comment": {"type": "string"}},
         "required": ["criterion", "met"]}},
     "feedback": {"type": "string", "description": "what the next attempt must change"}},
    ["approved", "criteria"])

DIFF_LIMIT = 30_000
OUTPUT_LIMIT = 8_000


def parse_verdict(args: dict) -> Verdict:
    items = args.get("criteria") or []
    unmet = [i for i in items if not i.get("met")]
    approved = bool(args["approved"])
    if approved and unmet:
        raise ValueError("approved is true but some criteria are not met; approve only when all are")
    lines = [f"- {'met' if i.get('met') else 'NOT met'}: {i.get('criterion')}"
             + (f" ({i['comment']})" if i.get("comment") else "") for i in items]
    feedback = "\n".join(filter(None, [str(args.get("feedback") or "").strip(), *lines]))
    return Verdict(approved=approved, feedback=feedback)


def default_checks(root: Path | None) -> list[str]:
    """Run pytest when the worktree has tests."""
    if root is None:
        return []
    has_tests = (root / "tests").is_dir() or any(root.glob("test_*.py")) or any(root.glob("*/test_*.py"))
    return ["python -m pytest -q -p no:cacheprovider"] if has_tests else []


class LLMStrategist:
    def __init__(self, llm, checks: list[str] | None = None, check_timeout: float = 120.0,
                 summary_words: int = 150) -> None:
        self.llm = llm
        self.checks = checks  # None: default_checks(); [] runs none
        self.check_timeout = check_timeout
        self.summary_words = summary_words

    async def review(self, task, result, ctx) -> Verdict:
        root = await ctx.worktree(create=False)
        diff = await ctx.diff()
        checks = self.checks if self.checks is not None else await asyncio.to_thread(default_checks, root)
        outputs = []
        for command in checks:
            ran = await ctx.run_command(shlex.split(command), cwd=root, timeout=self.check_timeout)
            text = (ran.stdout + ran.stderr)[-OUTPUT_LIMIT:]
            status = "timed out" if ran.timed_out else f"exit {ran.returncode}"
            outputs.append(f"$ {command}  ({status})\n{text}")
        messages = [{"role": "user", "content": prompt(
            "strategist", task_id=task.id, title=task.title, description=task.description,
            criteria="\n".join(f"- {c}" for c in task.acceptance_criteria) or "- (none given)",
            summary=result.summary or "(none)",
            diff=(diff[:DIFF_LIMIT] + "\n[diff truncated]" if len(diff) > DIFF_LIMIT else diff) or "(no changes)",
            checks="\n\n".join(outputs) or "(no checks were run)")}]
        return await ask(self.llm, role="strategist", messages=messages, schema=SUBMIT_VERDICT,
                         parse=parse_verdict, ctx=ctx, task_id=task.id, attempt=ctx.attempt,
                         profile=task.profile, title=task.title)

    async def summarize(self, task, reason: str, conversation: list[dict], ctx) -> str:
        """A bounded summary of a failed attempt for the next one."""
        text = "\n".join(f"[{m['role']}] {m.get('content') or ''}"[:2000] for m in conversation)[-20_000:]
        reply = await self.llm.complete(
            role="strategist", task_id=task.id, attempt=ctx.attempt, profile=task.profile,
            title=task.title, messages=[{"role": "user", "content": prompt(
                "summarize", limit=self.summary_words, task_id=task.id, title=task.title,
                reason=reason, conversation=text or "(empty)")}])
        words = (reply.content or "").split()
        return " ".join(words[: self.summary_words * 2])
