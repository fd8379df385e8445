"""The planner: a ``plan``-profile task's worker. It splits its component into worker tasks
with dependencies, criteria and profiles; the engine adds them to the graph when the plan
task is approved. Malformed answers go back to the model with the error (``structured.ask``);
unknown dependencies and cycles are refused by the engine and come back as a failed attempt
whose reason the next attempt sees."""

from __future__ import annotations

from ..model import Profile, TaskSpec, WorkResult
from .structured import ask, prompt, tool

WORKER_PROFILES = [p.value for p in Profile if p not in (Profile.PLAN, Profile.MERGE)]

CREATE_SUBTASKS = tool(
    "create_subtasks", "Create the worker tasks of this component.",
    {"tasks": {"type": "array", "minItems": 1, "items": {
        "type": "object",
        "properties": {
            "key": {"type": "string", "description": "short unique name other tasks can depend on"},
            "title": {"type": "string"}, "description": {"type": "string"},
            "acceptance_criteria": {"type": "array", "items": {"type": "string"}, "minItems": 1},
            "profile": {"type": "string", "enum": WORKER_PROFILES},
            "depends_on": {"type": "array", "items": {"type": "string"}}},
        "required": ["key", "title", "description", "acceptance_criteria", "profile"]}}},
    ["tasks"])


def parse_subtasks(args: dict, phase: str = "", existing: set[str] = frozenset()) -> list[TaskSpec]:
    """Check a planner's answer; ``existing`` task ids may be depended on too. Unknown
    dependencies and cycles are refused here, so the planner can fix them in the same attempt."""
    tasks = args["tasks"]
    if not isinstance(tasks, list) or not tasks:
        raise ValueError("tasks must be a non-empty list")
    keys = [str(t.get("key", "")).strip() for t in tasks]
    if any(not k for k in keys) or len(set(keys)) != len(keys):
        raise ValueError("every task needs a unique, non-empty key")
    specs = []
    for t, key in zip(tasks, keys):
        criteria = [str(c).strip() for c in t.get("acceptance_criteria") or [] if str(c).strip()]
        if not criteria:
            raise ValueError(f"task {key!r} has no acceptance criteria")
        profile = t.get("profile")
        if profile not in WORKER_PROFILES:
            raise ValueError(f"task {key!r} has profile {profile!r}; use one of {WORKER_PROFILES}")
        deps = [str(d) for d in t.get("depends_on") or []]
        unknown = [d for d in deps if d not in keys and d not in existing]
        if unknown:
            raise ValueError(f"task {key!r} depends on unknown {unknown}: use keys of this list "
                             "or ids of existing tasks")
        specs.append(TaskSpec(title=str(t["title"]).strip(), description=str(t.get("description", "")),
                              acceptance_criteria=criteria, profile=profile, depends_on=deps,
                              key=key, phase=phase))
    _refuse_cycles(specs)
    return specs


def _refuse_cycles(specs: list[TaskSpec]) -> None:
    import networkx as nx

    g = nx.DiGraph((d, s.key) for s in specs for d in s.depends_on)
    try:
        cycle = nx.find_cycle(g)
    except nx.NetworkXNoCycle:
        return
    raise ValueError("the dependencies form a cycle: " + " -> ".join([cycle[0][0]] + [b for _, b in cycle]))


class LLMPlanner:
    def __init__(self, llm) -> None:
        self.llm = llm

    async def run(self, task, ctx) -> WorkResult:
        history = ctx.phoenix_brief()
        existing = ctx.task_ids() if hasattr(ctx, "task_ids") else set()
        messages = [{"role": "user", "content": prompt(
            "planner", profiles=", ".join(WORKER_PROFILES), objective=ctx.objective,
            title=task.title, description=task.description,
            history=f"\nEarlier attempts:\n{history}" if history else "")}]
        specs = await ask(self.llm, role="planner", messages=messages, schema=CREATE_SUBTASKS,
                          parse=lambda a: parse_subtasks(a, task.phase or "build", existing), ctx=ctx,
                          task_id=task.id, attempt=ctx.attempt, profile=task.profile, title=task.title)
        return WorkResult(summary=f"planned {len(specs)} tasks: " + ", ".join(s.title for s in specs),
                          new_tasks=specs)
