"""The LLM agents: Director, planner, ReAct workers and Strategist, through ``agentorch_nb.llm``.

``LLMTeam(models)`` is what an Orchestrator uses by default: for each run it builds the
agents around one LLM client (whose calls, budget and ``llm_calls`` rows are the run's), the
run's DuckDB checkpointer and the tool layer.

    orch = ao.Orchestrator("repo", config=ao.Config(models=ao.Models(worker_model="openai/gpt-4o-mini")))
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from ..engine.protocols import Agents
from ..model import Profile
from .director import LLMDirector
from .guardian import Guardian
from .planner import LLMPlanner
from .strategist import LLMStrategist
from .worker import ReActWorker

__all__ = ["Guardian", "LLMDirector", "LLMPlanner", "LLMStrategist", "LLMTeam", "ReActWorker", "ByProfile",
           "DEMO_SCRIPT", "demo_models"]

DEMO_SCRIPT = Path(str(resources.files(__package__).joinpath("scripts", "demo.yaml")))


class ByProfile:
    """A worker that hands each task to the worker registered for its profile."""

    def __init__(self, workers: dict[Profile, Any], default: Any) -> None:
        self.workers = workers
        self.default = default

    async def run(self, task, ctx):
        return await self.workers.get(task.profile, self.default).run(task, ctx)


def _toolbox(task, ctx, root: Path):
    from ..tools import Toolbox, ToolEnv

    return Toolbox(ToolEnv.from_context(ctx, root, task.profile))


class LLMTeam:
    """Builds a run's agents. ``checks``: the commands QA runs in a worktree (None: pytest
    when the worktree has tests)."""

    def __init__(self, models=None, *, checks: list[str] | None = None) -> None:
        self.models = models
        self.checks = checks

    def for_run(self, engine) -> Agents:
        from ..llm import LLM
        from ..store.checkpoint import DuckDBSaver

        # The executor's session says who keeps the rate limits and the budget (on a
        # cluster: one keeper for every node) and whether the store can hold checkpoints
        # (on a node it cannot: only the engine writes the store).
        session = engine.executor
        llm = LLM(self.models or engine.config.models, store=engine.store, run_id=engine.run_id,
                  workspace=engine.workspace, limiter=session.limiter())
        guardian = Guardian(llm, engine.config.guardian_every) if engine.config.enable_guardian else None
        saver = DuckDBSaver(engine.store) if session.uses_checkpoints() else None
        worker = ReActWorker(llm, _toolbox, checkpointer=saver,
                             max_iterations=engine.config.max_iterations_per_task, guardian=guardian)
        return Agents(LLMDirector(llm), ByProfile({Profile.PLAN: LLMPlanner(llm)}, worker),
                      LLMStrategist(llm, self.checks))


def demo_models(*, escalate: bool = False):
    """Models that play the offline demo script for every role.

    ``escalate=True`` plays a variant for showing the human-in-the-loop path: the tests task
    writes the same incomplete tests and is rejected on its first two attempts, so with
    ``Config(max_retries=1)`` it waits for a human; the attempt after a human's retry adds
    the missing test and is approved."""
    import yaml

    from ..llm import Models, load_script, register_script
    from ..llm.script import parse_script

    if not escalate:
        load_script(DEMO_SCRIPT, name="demo")
        return Models(worker_model="scripted/demo")
    data = yaml.safe_load(DEMO_SCRIPT.read_text(encoding="utf-8"))
    for rule in data["rules"]:
        if rule["name"] in ("tests, first attempt", "tests lack empty input"):
            rule["attempt"] = [1, 2]
    script = parse_script(f"{DEMO_SCRIPT} (escalating variant)", data)
    script.name = "demo-escalate"
    register_script(script.name, script)
    return Models(worker_model="scripted/demo-escalate")
