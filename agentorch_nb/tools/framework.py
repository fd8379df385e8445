"""Framework tools: how an agent speaks to the orchestrator rather than to the worktree.

Their effects on the run (new tasks, granted tools, the end of the attempt) belong to the
engine: each returns a :class:`ToolResult` whose ``action`` names the effect and whose
``data`` carries its payload, for the caller to carry out. Insights and design decisions
are only records, written here when the env has a store.
"""

from __future__ import annotations

from ..model import Profile
from .base import REGISTRY, ToolEnv, ToolError, ToolResult, tool
from .secrets import redact

PROFILE_NAMES = [p.value for p in Profile]
SUBTASK = {
    "type": "object",
    "properties": {
        "title": {"type": "string", "minLength": 1},
        "description": {"type": "string"},
        "acceptance_criteria": {"type": "array", "items": {"type": "string"}},
        "profile": {"type": "string", "enum": PROFILE_NAMES},
        "key": {"type": "string", "description": "A name other subtasks can list in depends_on."},
        "depends_on": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["title", "description"],
    "additionalProperties": False,
}


@tool("create_subtasks",
      "Propose new tasks for other agents. depends_on lists keys (or titles) of other subtasks "
      "in this call or ids of existing tasks.",
      {"properties": {"subtasks": {"type": "array", "items": SUBTASK, "minItems": 1, "maxItems": 50}},
       "required": ["subtasks"]},
      profiles={Profile.PLAN})
async def create_subtasks(env: ToolEnv, subtasks: list[dict]) -> ToolResult:
    names = [s.get("key") or s["title"] for s in subtasks]
    if len(set(names)) != len(names):
        raise ToolError("two subtasks share a key or title; give each a distinct key")
    specs = [{"profile": Profile.CODE.value, "acceptance_criteria": [], "depends_on": [], **s}
             for s in subtasks]
    listing = "\n".join(f"- {n} ({s['profile']})" for n, s in zip(names, specs))
    return ToolResult(content=f"proposed {len(specs)} subtasks:\n{listing}",
                      data={"subtasks": specs}, action="create_subtasks")


@tool("post_insight", "Share a finding other agents of this run should know (a convention, a pitfall, "
                      "where something lives).",
      {"properties": {"content": {"type": "string", "minLength": 1}, "topic": {"type": "string"}},
       "required": ["content"]})
async def post_insight(env: ToolEnv, content: str, topic: str | None = None) -> ToolResult:
    if env.store is not None:
        env.store.append("insights", {"run_id": env.run_id, "task_id": env.task_id,
                                      "topic": redact(topic) if topic else topic, "content": redact(content)})
    return ToolResult(content="insight recorded", data={"topic": topic, "content": content})


@tool("log_design_decision", "Record a design decision and why it was taken, for later tasks and reviewers.",
      {"properties": {"decision": {"type": "string", "minLength": 1}, "rationale": {"type": "string"},
                      "area": {"type": "string"}},
       "required": ["decision"]})
async def log_design_decision(env: ToolEnv, decision: str, rationale: str | None = None,
                              area: str | None = None) -> ToolResult:
    if env.store is not None:
        env.store.append("design_decisions", {
            "run_id": env.run_id, "task_id": env.task_id, "area": redact(area) if area else area,
            "decision": redact(decision), "rationale": redact(rationale) if rationale else rationale})
    return ToolResult(content="design decision recorded",
                      data={"decision": decision, "rationale": rationale, "area": area})


@tool("request_tools", "Ask for tools your profile does not have, saying why. The orchestrator decides; "
                       "you are told whether they were granted.",
      {"properties": {"tools": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                      "reason": {"type": "string", "minLength": 1}},
       "required": ["tools", "reason"]})
async def request_tools(env: ToolEnv, tools: list[str], reason: str) -> ToolResult:
    unknown = [t for t in tools if t not in REGISTRY]
    if unknown:
        raise ToolError(f"unknown tools {unknown}; the tools that exist are: {', '.join(REGISTRY)}")
    wanted = [t for t in tools if not env.allows(REGISTRY[t])]
    if not wanted:
        return ToolResult(content=f"you already have {', '.join(tools)}")
    return ToolResult(content=f"requested {', '.join(wanted)}; the orchestrator will decide",
                      data={"tools": wanted, "reason": reason}, action="request_tools")


@tool("finish", "End your work on this task: a summary of what you did and how you checked it, the "
                "files you produced, and whether you succeeded.",
      {"properties": {"summary": {"type": "string", "minLength": 1},
                      "artifacts": {"type": "array", "items": {"type": "string"}},
                      "success": {"type": "boolean"}},
       "required": ["summary"]})
async def finish(env: ToolEnv, summary: str, artifacts: list[str] | None = None,
                 success: bool = True) -> ToolResult:
    return ToolResult(content="finished", action="finish",
                      data={"summary": summary, "artifacts": list(artifacts or []), "success": success})
