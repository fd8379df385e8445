"""The worker: a ReAct loop (reason -> act -> observe) built as a LangGraph ``StateGraph``.

Each attempt is one graph thread (``<run>/<task>/a<n>``) checkpointed in the run's DuckDB
store after every step. The model proposes tool calls; the toolbox (the validation layer)
executes them and answers each one; the loop ends when the model calls ``finish``, or fails
the attempt when it runs out of iterations. An attempt whose process died mid-way is
continued by the next attempt from the last checkpoint, in the same worktree.
"""

from __future__ import annotations

import json
import operator
from typing import Annotated, Any, Protocol, TypedDict

from ..model import Interruption, WorkResult
from .structured import live_chunks, profile_guidance, prompt


class Toolbox(Protocol):
    """What the worker needs of the tool layer (``agentorch_nb.tools.Toolbox``)."""

    def schemas(self) -> list[dict[str, Any]]: ...

    def grant(self, names: list[str]) -> None: ...

    async def call(self, call_id: str, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        """``{"content": text}`` plus ``{action: data}`` (``finish``, ``request_tools``)."""


class WorkerState(TypedDict):
    messages: Annotated[list[dict[str, Any]], operator.add]
    steps: int
    finish: dict[str, Any] | None
    tool_calls: int


class ReActWorker:
    """``toolbox_for(task, ctx, root)`` builds the toolbox of one attempt in its worktree."""

    def __init__(self, llm, toolbox_for, *, checkpointer=None, max_iterations: int = 10,
                 guardian=None) -> None:
        self.llm = llm
        self.toolbox_for = toolbox_for
        self.checkpointer = checkpointer
        self.max_iterations = max_iterations
        self.guardian = guardian

    async def run(self, task, ctx) -> WorkResult:
        root = await ctx.worktree()
        toolbox = self.toolbox_for(task, ctx, root)
        graph = self._graph(task, ctx, toolbox)
        config = {"configurable": {"thread_id": thread_id(ctx.run_id, task.id, ctx.attempt)},
                  "recursion_limit": 4 * self.max_iterations + 10}
        start: dict[str, Any] | None = {
            "messages": [{"role": "user", "content": self._brief(task, ctx)}], "steps": 0,
            "finish": None, "tool_calls": 0}
        previous = ctx.history[-1] if ctx.history else None
        if (self.checkpointer is not None and previous is not None
                and previous.interruption == Interruption.ENGINE_DIED):
            # The last attempt was cut off by a dead process, not judged: go on where it was.
            old = thread_id(ctx.run_id, task.id, previous.number)
            if await self.checkpointer.aget_tuple({"configurable": {"thread_id": old}}):
                await self.checkpointer.acopy_thread(old, config["configurable"]["thread_id"])
                start = None
                ctx.log("system", f"continuing attempt {previous.number} from its last checkpoint")
        else:
            ctx.log("user", start["messages"][0]["content"])
        state = await graph.ainvoke(start, config)
        done = state.get("finish")
        if done is None:
            return WorkResult(summary=f"stopped after {state['steps']} steps without calling finish",
                              ok=False, error=f"ran out of iterations ({self.max_iterations}) "
                                              "without calling finish")
        return WorkResult(summary=str(done.get("summary", "")), ok=bool(done.get("success", True)),
                          error=None if done.get("success", True) else str(done.get("summary", "")),
                          artifacts=[str(a) for a in done.get("artifacts", [])])

    def _brief(self, task, ctx) -> str:
        history = ctx.phoenix_brief()
        return prompt(
            "worker", profile=task.profile.value, task_id=task.id, title=task.title,
            profile_guidance=profile_guidance().get(task.profile.value, ""),
            description=task.description or "(no description)",
            criteria="\n".join(f"- {c}" for c in task.acceptance_criteria) or "- (none given)",
            history=f"\nEarlier attempts at this task (do better than they did):\n{history}" if history else "")

    def _graph(self, task, ctx, toolbox: Toolbox):
        from langgraph.graph import END, START, StateGraph

        llm, limit, guardian = self.llm, self.max_iterations, self.guardian

        async def reason(state: WorkerState) -> dict:
            reply = await llm.complete(role="worker", messages=state["messages"],
                                       tools=toolbox.schemas(), task_id=task.id,
                                       attempt=ctx.attempt, profile=task.profile, title=task.title,
                                       on_chunk=live_chunks(ctx))
            message = reply.message()
            ctx.log("assistant", reply.content or "", **({"tool_calls": message["tool_calls"]}
                                                        if reply.tool_calls else {}))
            new = [message]
            if not reply.tool_calls:
                nudge = "Use the tools to do the work; call `finish` when the task is done."
                new.append({"role": "user", "content": nudge})
                ctx.log("user", nudge)
            return {"messages": new, "steps": state["steps"] + 1}

        async def act(state: WorkerState) -> dict:
            calls = state["messages"][-1].get("tool_calls") or []
            answers, finish = [], None
            for call in calls:
                fn = call["function"]
                try:
                    arguments = json.loads(fn["arguments"] or "{}")
                    if not isinstance(arguments, dict):
                        raise ValueError("arguments must be a JSON object")
                except (ValueError, TypeError) as exc:
                    outcome = {"content": f"error: the arguments of `{fn['name']}` are not "
                                                       f"a JSON object ({exc}); call it again"}
                else:
                    outcome = await toolbox.call(call["id"], fn["name"], arguments)
                answers.append({"role": "tool", "tool_call_id": call["id"], "content": outcome.get("content", "")})
                ctx.log("tool", outcome.get("content", ""), tool_call_id=call["id"], name=fn["name"])
                if outcome.get("finish") is not None:
                    finish = outcome["finish"]
                if outcome.get("request_tools"):
                    # Progressive disclosure: granted for the rest of the attempt, and logged.
                    wanted = list(outcome["request_tools"].get("tools", []))
                    toolbox.grant(wanted)
                    ctx.log("system", f"granted tools: {', '.join(wanted)}")
            before = state.get("tool_calls", 0)
            after = before + len(calls)
            if guardian is not None and finish is None and guardian.due(before, after):
                nudge = await guardian.check(task, ctx, state["messages"] + answers, after)
                if nudge:
                    answers.append({"role": "user", "content": f"Guardian: {nudge}"})
                    ctx.log("guardian", nudge)
            return {"messages": answers, "finish": finish, "tool_calls": after}

        def after_reason(state: WorkerState) -> str:
            last = state["messages"][-1]
            if last.get("role") == "assistant" and last.get("tool_calls"):
                return "act"
            return END if state["steps"] >= limit else "reason"

        def after_act(state: WorkerState) -> str:
            return END if state["finish"] is not None or state["steps"] >= limit else "reason"

        g = StateGraph(WorkerState)
        g.add_node("reason", reason)
        g.add_node("act", act)
        g.add_edge(START, "reason")
        g.add_conditional_edges("reason", after_reason, ["act", "reason", END])
        g.add_conditional_edges("act", after_act, ["reason", END])
        return g.compile(checkpointer=self.checkpointer)


def thread_id(run_id: str, task_id: str, attempt: int) -> str:
    return f"{run_id}/{task_id}/a{attempt}"
