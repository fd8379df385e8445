"""Run configuration. Every field has a default; pass only what you change.

>>> Config(max_concurrent_workers=2).max_concurrent_workers
2

A value of the wrong type or out of range is refused at once, with the field named:

>>> Config(max_concurrent_workers="4")
Traceback (most recent call last):
...
agentorch_nb.exceptions.InvalidInput: Config.max_concurrent_workers must be a whole number of at least 1, not '4' (a str)
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field, fields
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
    # start() and resume() check first that every model the run's roles use can be called
    # (provider known, keys set, api_base answering: agentorch_nb.llm.preflight) and refuse
    # the run otherwise. False skips it, e.g. behind a proxy that adds the keys.
    preflight: bool = True
    # Where attempts run: None, in this process (the default); or an executor such as
    # agentorch_nb.distributed.RayExecutor(), which runs them on a Ray cluster.
    executor: Any = None

    def __post_init__(self) -> None:
        for name, least in WHOLE.items():
            setattr(self, name, _whole(name, getattr(self, name), least))
        for name, positive in SECONDS.items():
            setattr(self, name, _seconds(name, getattr(self, name), positive))
        for name in SWITCHES:
            value = getattr(self, name)
            if not isinstance(value, bool):
                raise InvalidInput(f"Config.{name} must be True or False, not {_given(value)}")
        if self.executor is not None and not callable(getattr(self.executor, "describe", None)):
            raise InvalidInput(
                f"Config.executor must be None (attempts run in this process) or an executor "
                f"such as agentorch_nb.distributed.RayExecutor(), not {_given(self.executor)}")
        if not isinstance(self.models, Models):
            raise InvalidInput(
                f"Config.models must be an agentorch_nb.Models, not {_given(self.models)}; "
                "e.g. Config(models=Models(worker_model='openai/gpt-4o-mini'))")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, with API keys redacted (the run's row keeps its config)."""
        plain = {f.name: getattr(self, f.name) for f in fields(self)
                 if f.name not in ("models", "executor")}
        return {**plain, "models": self.models.to_dict(),
                "executor": None if self.executor is None else self.executor.describe()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Config:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        if isinstance(values.get("models"), dict):
            values["models"] = Models.from_dict(values["models"])
        if isinstance(values.get("executor"), dict):  # as describe() wrote it
            from .engine.executor import executor_from_dict

            values["executor"] = executor_from_dict(values["executor"])
        return cls(**values)


# The rules of the fields, checked in this order: whole numbers with their least value,
# seconds (True: must be more than 0; False: 0 is allowed), and switches.
WHOLE = {"max_concurrent_workers": 1, "max_retries": 0, "max_iterations_per_task": 1,
         "guardian_every": 1}
SECONDS = {"worker_timeout": True, "qa_timeout": True, "plan_timeout": True,
           "lock_timeout": True, "flush_interval": False}
SWITCHES = ("keep_failed_worktrees", "keep_worktrees", "enable_guardian", "preflight")


def _given(value: object) -> str:
    return f"{value!r} (a {type(value).__name__})"


def _whole(name: str, value: object, least: int) -> int:
    # bool is an int to Python, but True workers or retries is a mistake, not a number.
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InvalidInput(f"Config.{name} must be a whole number of at least {least}, "
                           f"not {_given(value)}")
    if value < least:
        raise InvalidInput(f"Config.{name} must be a whole number of at least {least}, "
                           f"not {value!r}")
    return int(value)


def _seconds(name: str, value: object, positive: bool) -> float:
    expected = "a finite number of seconds, " + ("more than 0" if positive else "0 or more")
    # Stored configs may hold 300 for 300.0 (JSON keeps no difference): ints are welcome.
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidInput(f"Config.{name} must be {expected}, not {_given(value)}")
    number = float(value)
    if not math.isfinite(number) or number < 0 or (positive and number == 0):
        raise InvalidInput(f"Config.{name} must be {expected}, not {value!r}")
    return number
