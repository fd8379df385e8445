"""The Director: turns the objective into one planner task per component."""

from __future__ import annotations

import asyncio
import os

from ..model import Profile, TaskSpec
from .structured import ask, prompt, tool

SUBMIT_PLAN = tool(
    "submit_plan", "Submit the components of the objective.",
    {"components": {"type": "array", "minItems": 1, "items": {
        "type": "object",
        "properties": {"title": {"type": "string"}, "description": {"type": "string"},
                       "scope": {"type": "string"}},
        "required": ["title", "description"]}}},
    ["components"])


def _components(args: dict) -> list[TaskSpec]:
    comps = args["components"]
    if not isinstance(comps, list) or not comps:
        raise ValueError("components must be a non-empty list")
    specs = []
    for i, c in enumerate(comps, 1):
        title = str(c.get("title", "")).strip()
        if not title:
            raise ValueError(f"component {i} has no title")
        scope = str(c.get("scope") or "").strip()
        description = str(c.get("description") or "").strip() + (f"\n\nScope: {scope}" if scope else "")
        specs.append(TaskSpec(title=f"Plan: {title}", description=description,
                              acceptance_criteria=["the component is split into tasks with "
                                                   "acceptance criteria and dependencies"],
                              profile=Profile.PLAN, phase="plan"))
    return specs


class LLMDirector:
    def __init__(self, llm) -> None:
        self.llm = llm

    async def plan(self, objective: str, ctx) -> list[TaskSpec]:
        files = await asyncio.to_thread(_top_level, ctx.workspace)
        messages = [{"role": "user", "content": prompt("director", objective=objective, files=files)}]
        return await ask(self.llm, role="director", messages=messages, schema=SUBMIT_PLAN,
                         parse=_components, ctx=ctx, title=objective)


def _top_level(workspace) -> str:
    if workspace is None:
        return "(no workspace)"
    names = sorted(n for n in os.listdir(workspace) if not n.startswith("."))
    return ", ".join(names[:50]) or "(empty)"
