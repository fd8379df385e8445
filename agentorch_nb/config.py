"""Run configuration. Every field has a default; pass only what you change.

>>> Config(max_concurrent_workers=2).max_concurrent_workers
2
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from .exceptions import InvalidInput


@dataclass
class Config:
    max_concurrent_workers: int = 5
    worker_timeout: float = 300.0  # seconds for one attempt of a worker
    qa_timeout: float = 300.0  # seconds for the Strategist to judge one attempt
    plan_timeout: float = 300.0  # seconds for the Director to plan the objective
    max_retries: int = 4  # retries after the first failed attempt, before a human is asked
    keep_failed_worktrees: bool = False  # keep failed attempts' worktrees after the run ends
    # Store: how long a batch of writes may wait for company, and how long any store
    # operation waits for another process to let go of the file before StoreBusy.
    flush_interval: float = 0.05
    lock_timeout: float = 30.0

    def __post_init__(self) -> None:
        if self.max_concurrent_workers < 1:
            raise InvalidInput("max_concurrent_workers must be at least 1")
        if self.max_retries < 0:
            raise InvalidInput("max_retries must be 0 or more")
        for name in ("worker_timeout", "qa_timeout", "plan_timeout", "lock_timeout"):
            if getattr(self, name) <= 0:
                raise InvalidInput(f"{name} must be a positive number of seconds")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Config:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})
