"""What a tool is, what it receives, what it answers, and the one registry of tools.

A tool is registered once with ``@tool(...)``: its name, the description and JSON schema the
model sees, the profiles allowed to call it, and a function ``fn(env, **arguments)``: async
when it awaits (subprocesses), plain when it does blocking work such as file I/O, which the
validation layer then runs in a thread.
Nothing dispatches on tool names elsewhere; :mod:`.call` looks tools up here.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Iterable, Mapping  # noqa: F401 - Awaitable in a string annotation
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..model import Profile

if TYPE_CHECKING:
    from ..store import Store

ALL_PROFILES: frozenset[str] = frozenset(p.value for p in Profile)
DEFAULT_TIMEOUT = 120.0
MAX_TIMEOUT = 600.0
OUTPUT_LIMIT = 20_000
GIT_AUTHOR = ("agentorch", "agentorch@localhost")


class ToolError(Exception):
    """A failure the model can act on; its message becomes the tool's error result."""


@dataclass
class ToolResult:
    """A tool's answer. ``content`` is what the model reads; ``error`` is set when the call
    failed (the model reads it too, prefixed ``error:``). ``action`` names an effect the
    caller must carry out (``finish``, ``create_subtasks``, ``request_tools``) and ``data``
    its structured payload. ``omitted`` counts characters already dropped from the middle of
    ``content`` (a command's output beyond what was kept of it): the cut that bounds the
    answer states them in its note."""

    content: str = ""
    error: str | None = None
    data: dict[str, Any] | None = None
    action: str | None = None
    truncated: bool = False
    omitted: int = 0

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def text(self) -> str:
        """The answer as the model should read it."""
        if self.error is None:
            return self.content
        return f"error: {self.error}" + (f"\n{self.content}" if self.content else "")

    @classmethod
    def fail(cls, message: str, content: str = "") -> ToolResult:
        return cls(content=content, error=message)


@dataclass
class ToolEnv:
    """Where and for whom a tool call runs: the worktree it is confined to, the profile
    whose allow-list applies, the ids its ``tool_calls`` row carries, and its bounds."""

    root: Path
    profile: Profile | str = Profile.CODE
    run_id: str = ""
    task_id: str | None = None
    attempt: int = 0
    store: Store | None = None
    timeout: float = DEFAULT_TIMEOUT
    max_timeout: float = MAX_TIMEOUT
    output_limit: int = OUTPUT_LIMIT
    granted: frozenset[str] = frozenset()  # tools allowed beyond the profile's list
    git_author: tuple[str, str] = GIT_AUTHOR

    def __post_init__(self) -> None:
        self.root = Path(os.path.realpath(self.root))
        self.granted = frozenset(self.granted)

    @classmethod
    def from_context(cls, ctx: Any, root: str | os.PathLike, profile: Profile | str,
                     **overrides: Any) -> ToolEnv:
        """The env of one attempt, from the engine's ``Context`` (ids and the run's store)."""
        return cls(root=Path(root), profile=profile, run_id=ctx.run_id, task_id=ctx.task_id,
                   attempt=ctx.attempt, store=getattr(ctx, "store", None), **overrides)

    def allows(self, tool: Tool) -> bool:
        return str(self.profile) in tool.profiles or tool.name in self.granted


ToolFn = Callable[..., "Awaitable[ToolResult | str] | ToolResult | str"]


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    parameters: dict[str, Any]  # JSON schema of the arguments object
    profiles: frozenset[str]
    fn: ToolFn = field(repr=False)
    paths: tuple[str, ...] = ()  # arguments that name files: confined before the call

    def schema(self) -> dict[str, Any]:
        """The OpenAI-style function schema the model is given."""
        return {"type": "function",
                "function": {"name": self.name, "description": self.description,
                             "parameters": self.parameters}}


REGISTRY: dict[str, Tool] = {}


def tool(name: str, description: str, parameters: Mapping[str, Any], *,
         profiles: Iterable[str] = ALL_PROFILES, paths: Iterable[str] = ()) -> Callable[[ToolFn], ToolFn]:
    """Register ``fn(env, **arguments)`` as a tool. ``paths`` names the arguments (strings
    or lists of strings) that are paths in the worktree: they arrive resolved and confined."""
    allowed = frozenset(str(p) for p in profiles)
    unknown = allowed - ALL_PROFILES
    if unknown:
        raise ValueError(f"tool {name!r}: unknown profiles {sorted(unknown)}")
    params = {"type": "object", "additionalProperties": False, **parameters}

    def register(fn: ToolFn) -> ToolFn:
        if name in REGISTRY:
            raise ValueError(f"tool {name!r} is already registered")
        REGISTRY[name] = Tool(name, description.strip(), params, allowed, fn, tuple(paths))
        return fn

    return register


def tools_for(profile: Profile | str, granted: Iterable[str] = ()) -> list[Tool]:
    """The tools a profile may call (plus ``granted`` ones), in registration order."""
    extra = set(granted)
    return [t for t in REGISTRY.values() if str(profile) in t.profiles or t.name in extra]
