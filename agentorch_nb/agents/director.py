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


SUBMIT_REVIEW = tool(
    "submit_review", "Dependencies to add between tasks of different components.",
    {"add_dependencies": {"type": "array", "items": {"type": "object", "properties": {
        "task": {"type": "string"}, "depends_on": {"type": "string"}},
        "required": ["task", "depends_on"]}},
     "notes": {"type": "string"}},
    ["add_dependencies"])


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


    async def review(self, objective: str, tasks: list[dict], ctx) -> list[tuple[str, str]]:
        """After planning: dependencies between components that the planners could not see."""
        known = {t["id"] for t in tasks}

        def parse(args: dict) -> list[tuple[str, str]]:
            edges = [(str(e["task"]), str(e["depends_on"])) for e in args["add_dependencies"]]
            unknown = sorted({x for e in edges for x in e} - known)
            if unknown:
                raise ValueError(f"unknown task ids {unknown}; use the ids listed")
            return edges

        listing = "\n".join(f"- {t['id']} ({t['profile']}) {t['title']}"
                            + (f" <- {', '.join(t['depends_on'])}" if t["depends_on"] else "")
                            for t in tasks)
        messages = [{"role": "user", "content": prompt("director_review", objective=objective,
                                                        tasks=listing)}]
        return await ask(self.llm, role="director", messages=messages, schema=SUBMIT_REVIEW,
                         parse=parse, ctx=ctx, title=objective)


def _top_level(workspace) -> str:
    if workspace is None:
        return "(no workspace)"
    names = sorted(n for n in os.listdir(workspace) if not n.startswith("."))
    return ", ".join(names[:50]) or "(empty)"
