"""Run configuration. Every field has a default; pass only what you change.

>>> Config(max_concurrent_workers=2).max_concurrent_workers
2
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from .exceptions import InvalidInput
from .llm.settings import Models


@dataclass
class Config:
    max_concurrent_workers: int = 5
    worker_timeout: float = 300.0  # seconds for one attempt of a worker
    qa_timeout: float = 300.0  # seconds for the Strategist to judge one attempt
    plan_timeout: float = 300.0  # seconds for the Director to plan the objective
    max_retries: int = 4  # retries after the first failed attempt, before a human is asked
    keep_failed_worktrees: bool = False  # keep failed attempts' worktrees after the run ends
    keep_worktrees: bool = False  # keep every worktree and branch of the run (no cleanup at all)
    max_iterations_per_task: int = 10  # reason/act rounds of one worker attempt
    # The Guardian: every guardian_every tool calls a (cheap) model judges whether the worker
    # drifts from its task and may inject a nudge. Its checks are guardian_verdicts rows.
    enable_guardian: bool = False
    guardian_every: int = 5
    # Which model each role uses, rate limits, retries, budget: see agentorch_nb.llm.Models.
    models: Models = field(default_factory=Models)
    # Store: how long a batch of writes may wait for company, and how long any store
    # operation waits for another process to let go of the file before StoreBusy.
    flush_interval: float = 0.05
    lock_timeout: float = 30.0

    def __post_init__(self) -> None:
        if self.max_concurrent_workers < 1:
            raise InvalidInput("max_concurrent_workers must be at least 1")
        if self.max_retries < 0:
            raise InvalidInput("max_retries must be 0 or more")
        if self.guardian_every < 1:
            raise InvalidInput("guardian_every must be at least 1")
        if self.max_iterations_per_task < 1:
            raise InvalidInput("max_iterations_per_task must be at least 1")
        for name in ("worker_timeout", "qa_timeout", "plan_timeout", "lock_timeout"):
            if getattr(self, name) <= 0:
                raise InvalidInput(f"{name} must be a positive number of seconds")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, with API keys redacted (the run's row keeps its config)."""
        return {**asdict(self), "models": self.models.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Config:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        if isinstance(values.get("models"), dict):
            values["models"] = Models.from_dict(values["models"])
        return cls(**values)
