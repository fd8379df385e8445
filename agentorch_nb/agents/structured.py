"""Structured answers from a model: one required tool call, validated, with bounded retries.

A model that answers in prose, calls the wrong tool, or gives arguments that do not pass
validation is told exactly what was wrong and asked again, up to ``retries`` times.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from importlib import resources
from typing import Any, TypeVar

from ..exceptions import AgentorchError

T = TypeVar("T")


class AgentAnswerError(AgentorchError):
    """A model did not give a usable structured answer within its retries."""


def prompt(name: str, **values: Any) -> str:
    """A prompt from ``agents/prompts/<name>.md`` with ``{placeholders}`` filled in."""
    text = resources.files(__package__).joinpath("prompts", f"{name}.md").read_text()
    return text.format(**values)


def profile_guidance() -> dict[str, str]:
    return json.loads(resources.files(__package__).joinpath("prompts", "profiles.json").read_text())


def tool(name: str, description: str, properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    """An OpenAI-style function tool schema."""
    return {"type": "function", "function": {
        "name": name, "description": description,
        "parameters": {"type": "object", "properties": properties, "required": required}}}


async def ask(llm, *, role: str, messages: list[dict[str, Any]], schema: dict[str, Any],
              parse: Callable[[dict[str, Any]], T], ctx=None, retries: int = 2,
              **where: Any) -> T:
    """Call the model until it calls ``schema``'s tool with arguments ``parse`` accepts.

    ``parse`` raises ValueError with a message for the model when the arguments are wrong.
    Each message of the exchange is logged through ``ctx.log`` when ``ctx`` is given, and
    the model's replies stream to whoever watches the task (``live_chunks``).
    """
    name = schema["function"]["name"]
    messages = list(messages)
    for m in messages:
        _log(ctx, m)
    problem = ""
    on_chunk = live_chunks(ctx)
    for _ in range(retries + 1):
        reply = await llm.complete(role=role, messages=messages, tools=[schema], on_chunk=on_chunk,
                                   **where)
        messages.append(reply.message())
        _log(ctx, reply.message())
        call = next((c for c in reply.tool_calls if c.name == name), None)
        if call is None:
            problem = (f"You must answer by calling the tool `{name}`; you "
                       + ("called " + ", ".join(c.name for c in reply.tool_calls)
                          if reply.tool_calls else "answered in text") + ".")
        elif call.error:
            problem = call.error
        else:
            try:
                return parse(call.arguments)
            except (ValueError, KeyError, TypeError) as exc:
                problem = f"The arguments of `{name}` were refused: {exc}. Call `{name}` again, corrected."
        feedback = ({"role": "tool", "tool_call_id": call.id, "content": problem} if call is not None
                    else {"role": "user", "content": problem})
        # Every tool call needs an answer before the next user turn.
        for other in reply.tool_calls:
            if call is None or other.id != call.id:
                messages.append({"role": "tool", "tool_call_id": other.id,
                                 "content": f"`{other.name}` is not available here. {problem}"})
        messages.append(feedback)
        _log(ctx, feedback)
    raise AgentAnswerError(f"the {role} gave no usable `{name}` answer after {retries + 1} tries: {problem}")


def live_chunks(ctx, role: str = "assistant") -> Callable[[str], None] | None:
    """``on_chunk`` for ``LLM.complete``: the reply's text goes to the run's observers as it
    arrives, as chunks of the ``role`` message that ``ctx.log`` records once it is complete.
    None (the call is not streamed) when nobody watches the run, or when the call is not
    for a task (the Director's: a live log view shows tasks)."""
    if not getattr(ctx, "watched", False) or getattr(ctx, "task_id", None) is None:
        return None
    return lambda text: ctx.stream(role, text)


def _log(ctx, message: dict[str, Any]) -> None:
    if ctx is None:
        return
    content = message.get("content") or ""
    meta = {}
    if message.get("tool_calls"):
        meta["tool_calls"] = message["tool_calls"]
    if message.get("tool_call_id"):
        meta["tool_call_id"] = message["tool_call_id"]
    ctx.log(message["role"], content, **meta)
