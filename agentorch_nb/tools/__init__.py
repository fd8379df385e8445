"""The tool layer: what worker agents can do in their task's worktree.

Tools are registered in one registry (:mod:`.base`); every call goes through
:func:`call_tool` (:mod:`.call`), which checks the profile and the arguments, confines
paths to the worktree, bounds time and output, redacts secrets and records the call.
:class:`Toolbox` is that layer as the ReAct worker uses it.
"""

# Registration order is the order the model sees the tools in.
from . import fs, execution, git, search, framework  # noqa: F401, I001 - they register the tools
from .base import REGISTRY, Tool, ToolEnv, ToolError, ToolResult, tool, tools_for
from .call import call_tool
from .paths import confine
from .secrets import redact, scrubbed_env
from .toolbox import Toolbox

__all__ = ["REGISTRY", "Tool", "ToolEnv", "ToolError", "ToolResult", "Toolbox", "call_tool",
           "confine", "redact", "scrubbed_env", "tool", "tools_for"]
