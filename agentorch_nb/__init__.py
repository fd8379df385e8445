"""agentorch_nb: multi-agent LLM software workflows, run from a Jupyter notebook.

    import agentorch_nb as ao
    orch = ao.Orchestrator(workspace="my-repo")
    run = orch.start("Add a --json flag")
    await run.wait()
"""

from .config import Config
from .engine.protocols import Agents, Context
from .llm.settings import Models
from .exceptions import (
    AgentorchError,
    CycleError,
    InvalidInput,
    InvalidTransition,
    ResolutionError,
    RunBusyElsewhere,
    StoreBusy,
    UnknownRun,
    UnknownTask,
    WorkspaceError,
    WrongLoop,
)
from .model import Outcome, Profile, RunStatus, Task, TaskSpec, TaskStatus, Verdict, WorkResult
from .orchestrator import Orchestrator, Run, sql
from .workspace import Workspace, init_workspace

__version__ = "0.1.0"

__all__ = [
    "AgentorchError", "Agents", "Config", "Context", "CycleError", "InvalidInput",
    "InvalidTransition", "Models", "Orchestrator", "Outcome", "Profile", "ResolutionError", "Run",
    "RunBusyElsewhere", "RunStatus", "StoreBusy", "Task", "TaskSpec", "TaskStatus",
    "UnknownRun", "UnknownTask", "Verdict", "WorkResult", "Workspace", "WorkspaceError",
    "WrongLoop", "init_workspace", "sql",
]


def load_ipython_extension(ipython) -> None:
    """``%load_ext agentorch_nb``: the ``%agentorch`` and ``%%agentsql`` magics."""
    from .magics import load_ipython_extension as load

    load(ipython)
