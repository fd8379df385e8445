"""What a model answered: its text, its tool calls (arguments parsed, or the reason they
could not be), and what the answer cost.

>>> call = ToolCall.parse("c1", "read_file", '{"path": "a.py"}')
>>> call.arguments, call.error
({'path': 'a.py'}, None)
>>> ToolCall.parse("c2", "read_file", "{path: a.py}").error.startswith("the arguments of your call")
True
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, NamedTuple


class _Call(NamedTuple):
    id: str
    name: str
    arguments: dict


class ToolCall(_Call):
    """One tool call of a reply: unpacks as ``(id, name, arguments)``.

    When the model's arguments are not a JSON object, ``arguments`` is ``{}``, ``raw_arguments``
    keeps the text and ``error`` says what is wrong, phrased so that the worker can send it
    back to the model as the tool's result and let it try again.
    """

    raw_arguments: str
    error: str | None

    def __new__(
        cls, id: str, name: str, arguments: dict, raw_arguments: str = "", error: str | None = None
    ) -> ToolCall:
        self = super().__new__(cls, id, name, arguments)
        self.raw_arguments = raw_arguments
        self.error = error
        return self

    def __repr__(self) -> str:
        err = f", error={self.error!r}" if self.error else ""
        return f"ToolCall(id={self.id!r}, name={self.name!r}, arguments={self.arguments!r}{err})"

    @classmethod
    def parse(cls, id: str, name: str, raw: Any) -> ToolCall:
        if isinstance(raw, dict):
            return cls(id, name, raw, json.dumps(raw))
        text = "" if raw is None else str(raw)
        if not text.strip():
            return cls(id, name, {}, text)
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            return cls(id, name, {}, text, (
                f"the arguments of your call to {name!r} are not valid JSON ({exc.msg} at "
                f"character {exc.pos}): {text[:500]!r}. Call {name!r} again with a JSON object."
            ))
        if not isinstance(value, dict):
            return cls(id, name, {}, text, (
                f"the arguments of your call to {name!r} must be a JSON object, not "
                f"{type(value).__name__}: {text[:500]!r}. Call {name!r} again with an object."
            ))
        return cls(id, name, value, text)


@dataclass
class Reply:
    """A model's answer, with what it cost."""

    content: str | None
    tool_calls: list[ToolCall]
    tokens_in: int
    tokens_out: int
    cost_usd: float
    model: str
    latency_ms: float = 0.0
    tries: int = 1  # HTTP attempts this reply took, retries included

    def to_dict(self) -> dict[str, Any]:
        """Plain data (``dataclasses.asdict`` would drop the tool calls' raw text and errors)."""
        return {
            "content": self.content,
            "tool_calls": [
                {"id": c.id, "name": c.name, "arguments": c.arguments,
                 "raw_arguments": c.raw_arguments, "error": c.error}
                for c in self.tool_calls
            ],
            "tokens_in": self.tokens_in, "tokens_out": self.tokens_out, "cost_usd": self.cost_usd,
            "model": self.model, "latency_ms": self.latency_ms, "tries": self.tries,
        }

    @property
    def bad_tool_calls(self) -> list[ToolCall]:
        """Tool calls whose arguments could not be read; answer each with its ``error``."""
        return [c for c in self.tool_calls if c.error]

    def message(self) -> dict[str, Any]:
        """The assistant message to append to the conversation before the tool results."""
        msg: dict[str, Any] = {"role": "assistant", "content": self.content}
        if self.tool_calls:
            msg["tool_calls"] = [
                {"id": c.id, "type": "function",
                 "function": {"name": c.name, "arguments": c.raw_arguments}}
                for c in self.tool_calls
            ]
        return msg
