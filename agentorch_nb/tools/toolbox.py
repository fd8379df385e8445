"""The toolbox of one attempt: the tool layer as the ReAct worker sees it
(``schemas()`` for the model, ``call()`` for each tool call it proposes)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .base import ToolEnv, ToolResult, tools_for
from .call import call_tool


class Toolbox:
    """The tools of ``env.profile`` (and granted ones) for one attempt, every call going
    through :func:`call_tool`. ``last`` is the result of the latest call."""

    def __init__(self, env: ToolEnv) -> None:
        self.env = env
        self.last: ToolResult | None = None

    def schemas(self) -> list[dict[str, Any]]:
        return [t.schema() for t in tools_for(self.env.profile, self.env.granted)]

    def grant(self, names: Iterable[str]) -> None:
        """Allow more tools for the rest of the attempt (a granted ``request_tools``)."""
        self.env.granted = self.env.granted | frozenset(names)

    async def call(self, call_id: str, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        """``{"content": text}``, plus ``{action: data}`` when the tool asks the caller to act
        (``finish`` -> its summary, artifacts and success)."""
        result = await call_tool(name, arguments, env=self.env, call_id=call_id)
        self.last = result
        outcome: dict[str, Any] = {"content": result.text}
        if result.ok and result.action:
            outcome[result.action] = result.data
        return outcome
