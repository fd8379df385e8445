"""The one way a tool is called: :func:`call_tool`.

Every call, whoever makes it, passes here and in this order: the tool must exist and be
allowed for the profile (or granted), its arguments must match its schema, its path
arguments are confined to the worktree; then it runs under a time limit, its answer is
bounded and redacted, and the call is recorded as a ``tool_calls`` row. A failure at any
step is an error *result* the model can act on, never an exception -- except cancellation,
which is recorded and then goes on (the attempt is being stopped).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
import uuid
from typing import Any

from .base import REGISTRY, ToolEnv, ToolError, ToolResult
from .paths import confine
from .schema import validate
from .secrets import redact, redact_value, secret_values

log = logging.getLogger("agentorch_nb.tools")
# Beyond a tool's own limits (subprocesses kill their group at the timeout), this guard
# stops any tool that overruns, e.g. a network call that hangs.
GUARD_SLACK = 10.0


async def call_tool(name: str, arguments: Any, *, env: ToolEnv, call_id: str | None = None) -> ToolResult:
    """Check, run, bound, redact and record one tool call; always returns a result."""
    call_id = call_id or uuid.uuid4().hex[:12]
    started = time.monotonic()
    result: ToolResult | None = None
    try:
        result = await _checked_call(name, arguments, env)
    except asyncio.CancelledError:
        result = ToolResult.fail("cancelled: the attempt was stopped while this tool ran")
        raise
    finally:
        if result is None:  # a BaseException other than cancellation; record, let it go
            result = ToolResult.fail("interrupted")
        result = _finish(result, env)
        _record(env, call_id, name, arguments, result, (time.monotonic() - started) * 1000)
    return result


async def _checked_call(name: str, arguments: Any, env: ToolEnv) -> ToolResult:
    tool = REGISTRY.get(name) if isinstance(name, str) else None
    if tool is None:
        known = ", ".join(sorted(t.name for t in REGISTRY.values() if env.allows(t)))
        return ToolResult.fail(f"unknown tool {name!r}; the tools you can call are: {known}")
    if not env.allows(tool):
        return ToolResult.fail(
            f"tool {name!r} is not available to the {env.profile!s} profile; "
            "call `request_tools` with a reason if you need it")
    if arguments is None:
        arguments = {}
    problems = validate(arguments, tool.parameters)
    if problems:
        return ToolResult.fail(f"invalid arguments for {name!r}: " + "; ".join(problems)
                               + f". Expected schema: {_brief_schema(tool.parameters)}")
    kwargs = dict(arguments)
    guard = None
    try:
        for key in tool.paths:
            if key in kwargs and kwargs[key] is not None:
                value = kwargs[key]
                kwargs[key] = ([confine(env.root, v) for v in value] if isinstance(value, list)
                               else confine(env.root, value))
        async with asyncio.timeout(env.max_timeout + GUARD_SLACK) as guard:
            if inspect.iscoroutinefunction(tool.fn):
                answer = await tool.fn(env, **kwargs)
            else:  # plain functions do blocking work (file I/O): off the event loop
                answer = await asyncio.to_thread(tool.fn, env, **kwargs)
    except ToolError as exc:
        return ToolResult.fail(str(exc))
    except TimeoutError as exc:
        if guard is None or not guard.expired():
            return ToolResult.fail(f"{name} failed: timed out ({exc or 'no answer in time'})")
        return ToolResult.fail(f"{name} did not finish within {env.max_timeout + GUARD_SLACK:.0f} s "
                               "and was stopped")
    except Exception as exc:  # noqa: BLE001 - the model gets it as a result, the log gets the trace
        log.warning("tool %s failed", name, exc_info=True)
        return ToolResult.fail(f"{name} failed: {type(exc).__name__}: {exc}")
    return answer if isinstance(answer, ToolResult) else ToolResult(content=str(answer))


def _finish(result: ToolResult, env: ToolEnv) -> ToolResult:
    """Redact what leaves the call and bound the model's text to ``env.output_limit``."""
    secrets = secret_values()
    result.content = redact(result.content, secrets)
    if result.error is not None:
        result.error = redact(result.error, secrets)
    if result.data is not None:
        result.data = redact_value(result.data, secrets)
    content, cut = truncate(result.content, env.output_limit, result.omitted)
    if cut:
        result.content, result.truncated, result.omitted = content, True, 0
    return result


def truncate(text: str, limit: int, omitted: int = 0) -> tuple[str, bool]:
    """``text`` bounded to about ``limit`` characters, its head and tail kept, the cut stated.
    ``omitted`` characters were already dropped from its middle (the note counts them too;
    they must lie in the part cut here, as they do when each side of them is longer than
    ``limit``).

    >>> truncate("a" * 10 + "b" * 10, 10)[0]
    'aaaaa\\n[... output truncated: 10 of 20 characters omitted ...]\\nbbbbb'
    >>> truncate("a" * 10 + "b" * 10, 10, omitted=100)[0]
    'aaaaa\\n[... output truncated: 110 of 120 characters omitted ...]\\nbbbbb'
    """
    if len(text) <= limit and not omitted:
        return text, False
    head = text[:limit - limit // 2]
    tail = text[len(head):][-(limit // 2):] if limit // 2 else ""
    total = len(text) + omitted
    dropped = total - len(head) - len(tail)
    return (f"{head}\n[... output truncated: {dropped} of {total} characters omitted ...]\n"
            f"{tail}"), True


def _record(env: ToolEnv, call_id: str, name: Any, arguments: Any, result: ToolResult,
            duration_ms: float) -> None:
    if env.store is None:
        return
    try:
        env.store.append("tool_calls", {
            "run_id": env.run_id,
            "task_id": env.task_id,
            "attempt": env.attempt,
            "call_id": call_id,
            "tool": str(name),
            "arguments": redact_value(arguments if isinstance(arguments, dict) else {"_raw": arguments}),
            "result": result.content,
            "error": result.error,
            "duration_ms": duration_ms,
        })
    except Exception:  # noqa: BLE001 - recording must not turn a result into a failure
        log.exception("could not record tool call %s", call_id)


def _brief_schema(schema: dict[str, Any]) -> str:
    props = schema.get("properties", {})
    required = set(schema.get("required", []))
    parts = [f"{k}: {v.get('type', 'any')}{'' if k in required else ' (optional)'}"
             for k, v in props.items()]
    return "{" + ", ".join(parts) + "}"
