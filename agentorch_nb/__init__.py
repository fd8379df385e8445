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
    ModelNotReady,
    ResolutionError,
    RunBusyElsewhere,
    MissingDependency,
    SchemaTooNew,
    StoreBusy,
    StoreError,
    UnknownRun,
    UnknownTask,
    WorkspaceError,
    WrongLoop,
)
from .model import Outcome, Profile, RunStatus, Task, TaskSpec, TaskStatus, Verdict, WorkResult
from .checkup import doctor
from .orchestrator import Orchestrator, snapshot, sql
from .run import Run
from .workspace import Workspace, init_workspace

__version__ = "0.1.0"

__all__ = [
    "AgentorchError", "Agents", "Config", "Context", "CycleError", "InvalidInput",
    "InvalidTransition", "ModelNotReady", "Models", "Orchestrator", "Outcome", "Profile", "ResolutionError", "Run",
    "MissingDependency", "RunBusyElsewhere", "RunStatus", "SchemaTooNew", "StoreBusy", "StoreError", "Task", "TaskSpec", "TaskStatus",
    "UnknownRun", "UnknownTask", "Verdict", "WorkResult", "Workspace", "WorkspaceError",
    "WrongLoop", "doctor", "init_workspace", "snapshot", "sql",
]


def load_ipython_extension(ipython) -> None:
    """``%load_ext agentorch_nb``: the ``%agentorch`` and ``%%agentsql`` magics."""
    from .magics import load_ipython_extension as load

    load(ipython)


def _jupyter_server_extension_points() -> list[dict]:
    """The Jupyter server extension: the REST API under ``<base_url>/agentorch/api/v1``."""
    from .server import AgentorchApp

    return [{"module": "agentorch_nb.server", "app": AgentorchApp}]


def _jupyter_labextension_paths() -> list[dict]:
    """The prebuilt JupyterLab extension (the "Agent runs" sidebar)."""
    return [{"src": "labextension", "dest": "agentorch-nb"}]
