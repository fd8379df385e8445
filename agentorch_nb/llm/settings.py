"""Which model each role uses, and the knobs of the calls: limits, retries, timeouts, budget.

``Models`` is kept apart from :class:`agentorch_nb.config.Config` for now and is meant to be
merged into it; like Config, every field has a default and ``to_dict``/``from_dict`` round-trip
(API keys are redacted by ``to_dict``, since a run's config is stored in DuckDB).

>>> m = Models(worker_model="openai/gpt-4o-mini", coder_model="anthropic/claude-sonnet-4-5")
>>> m.model_for("worker", "code"), m.model_for("worker", "research"), m.model_for("director")
('anthropic/claude-sonnet-4-5', 'openai/gpt-4o-mini', 'openai/gpt-4o-mini')
"""

from __future__ import annotations

import io
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..exceptions import InvalidInput

REDACTED_KEY = "***"  # what to_dict() stores instead of a literal key

# Which field a role (or a worker's profile) reads; None means "worker_model".
ROLE_FIELDS: dict[str, str] = {
    "director": "director_model",
    "planner": "planner_model",
    "worker": "worker_model",
    "strategist": "strategist_model",
    "merger": "merger_model",
    "coder": "coder_model",
    "tester": "tester_model",
    "researcher": "researcher_model",
    "guardian": "guardian_model",
    "writer": "writer_model",
}
PROFILE_FIELDS: dict[str, str] = {
    "plan": "planner_model",
    "code": "coder_model",
    "test": "tester_model",
    "test_architect": "tester_model",
    "research": "researcher_model",
    "write": "writer_model",
    "merge": "merger_model",
}


@dataclass
class Models:
    """The models of a run and how they are called.

    Every ``*_model`` but ``worker_model`` may be None: it then falls back to ``worker_model``.
    A worker's model is chosen by its task's profile (``code`` -> ``coder_model``, ``test`` and
    ``test_architect`` -> ``tester_model``, ``research``, ``write``, ``merge``, ``plan``).
    Model names are litellm's (``openai/gpt-4o-mini``, ``scripted/<script>`` offline).
    """

    worker_model: str = "openai/gpt-4o-mini"
    director_model: str | None = None
    planner_model: str | None = None
    strategist_model: str | None = None
    merger_model: str | None = None
    coder_model: str | None = None
    tester_model: str | None = None
    researcher_model: str | None = None
    writer_model: str | None = None
    guardian_model: str | None = None  # a cheap model is enough to judge drift
    # Sampling temperature: the default, then overrides keyed by role or profile name
    # (a profile's entry wins over its role's). None sends no temperature at all.
    temperature: float | None = 0.2
    temperatures: dict[str, float] = field(default_factory=dict)
    # Per model: {"api_base": ..., "api_key": ... or "api_key_env": "NAME_OF_ENV_VAR"}.
    endpoints: dict[str, dict[str, str]] = field(default_factory=dict)
    # Per model (or "*" for every model without its own entry): {"rpm": n, "tpm": n}.
    # Shared by every LLM client of the process.
    rate_limits: dict[str, dict[str, int]] = field(default_factory=dict)
    max_concurrent_calls: int = 8  # LLM calls in flight in the process at once
    call_timeout: float = 120.0  # seconds for one HTTP attempt
    max_retries: int = 4  # retries after a failed attempt (429, 5xx, timeout, connection)
    backoff_base: float = 1.0  # first backoff in seconds; doubles per retry, with jitter
    backoff_max: float = 60.0
    max_retry_after: float = 120.0  # a longer Retry-After fails the call instead of waiting
    budget_usd: float | None = None  # per LLM instance (a run); None = no limit
    budget_tokens: int | None = None  # tokens in + out, per LLM instance

    def __post_init__(self) -> None:
        if not isinstance(self.worker_model, str) or not self.worker_model.strip():
            raise InvalidInput("worker_model must name a model, e.g. 'openai/gpt-4o-mini'")
        for name in set(ROLE_FIELDS.values()) - {"worker_model"}:
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise InvalidInput(f"{name} must be a model name or None (None uses worker_model)")
        if self.max_concurrent_calls < 1:
            raise InvalidInput("max_concurrent_calls must be at least 1")
        if self.max_retries < 0:
            raise InvalidInput("max_retries must be 0 or more")
        for name in ("call_timeout", "backoff_max", "max_retry_after"):
            if getattr(self, name) <= 0:
                raise InvalidInput(f"{name} must be a positive number of seconds")
        if self.backoff_base < 0:
            raise InvalidInput("backoff_base must be 0 or more seconds")
        for name in ("budget_usd", "budget_tokens"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise InvalidInput(f"{name} must be positive, or None for no budget")
        for model, limits in self.rate_limits.items():
            unknown = set(limits) - {"rpm", "tpm"}
            if unknown:
                raise InvalidInput(
                    f"rate_limits[{model!r}] has unknown keys {sorted(unknown)}; "
                    "use 'rpm' and 'tpm'"
                )
            if any(v is not None and v < 1 for v in limits.values()):
                raise InvalidInput(f"rate_limits[{model!r}] values must be at least 1")

    def model_for(self, role: str, profile: str | None = None) -> str:
        """The model a role uses; a worker's profile may pick a more specific one."""
        role = _s(role)
        if role not in ROLE_FIELDS:
            raise InvalidInput(f"unknown LLM role {role!r}; use one of {', '.join(ROLE_FIELDS)}")
        if role == "worker" and profile is not None:
            name = PROFILE_FIELDS.get(_s(profile))
            if name and getattr(self, name):
                return getattr(self, name)
        return getattr(self, ROLE_FIELDS[role]) or self.worker_model

    def temperature_for(self, role: str, profile: str | None = None) -> float | None:
        if profile is not None and _s(profile) in self.temperatures:
            return self.temperatures[_s(profile)]
        return self.temperatures.get(_s(role), self.temperature)

    def endpoint_for(self, model: str) -> dict[str, str]:
        """``api_base``/``api_key`` to pass to litellm for ``model`` (keys read from env)."""
        spec = self.endpoints.get(model) or {}
        out = {k: spec[k] for k in ("api_base", "api_key") if spec.get(k)}
        env = spec.get("api_key_env")
        if env and "api_key" not in out:
            if not os.environ.get(env):
                raise InvalidInput(
                    f"the API key of {model} is read from ${env}, which is not set; set it in "
                    "the environment or in the workspace's .env file"
                )
            out["api_key"] = os.environ[env]
        return out

    def secrets(self) -> tuple[list[str], list[str]]:
        """``(variables, keys)``: the environment variables API keys are read from
        (``api_key_env``) and the keys given literally (``api_key``). The LLM client treats
        both as secrets: kept out of tools' subprocesses, redacted from what tools return.
        """
        names = [spec["api_key_env"] for spec in self.endpoints.values() if spec.get("api_key_env")]
        keys = [spec["api_key"] for spec in self.endpoints.values()
                if spec.get("api_key") and spec["api_key"] != REDACTED_KEY]
        return names, keys

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["endpoints"] = {
            m: {k: (REDACTED_KEY if k == "api_key" else v) for k, v in spec.items()}
            for m, spec in self.endpoints.items()
        }
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Models:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def _s(value: object) -> str:
    return str(getattr(value, "value", value))


def load_env_file(*directories: str | os.PathLike | None) -> dict[str, str]:
    """Read ``.env`` from each directory (default: the current one) into ``os.environ``.

    Variables already set are never overridden, so the real environment and the first file
    read win. The files are read by python-dotenv (``export`` prefixes, quotes, ``#``
    comments, ``${VAR}`` expansion). Returns what was set.
    """
    dirs = [d for d in directories if d is not None] or [Path.cwd()]
    loaded: dict[str, str] = {}
    seen: set[Path] = set()
    for directory in dirs:
        path = (Path(directory).expanduser() / ".env").resolve()
        if path in seen or not path.is_file():
            continue
        seen.add(path)
        for key, value in parse_env(path.read_text(encoding="utf-8")).items():
            if key not in os.environ:
                os.environ[key] = value
                loaded[key] = value
    return loaded


def parse_env(text: str) -> dict[str, str]:
    """Parse the text of a ``.env`` file (python-dotenv's syntax; a name without ``=`` sets
    nothing).

    >>> parse_env("# keys\\nexport A=1\\nB = \\"two words\\"\\nC=x # note\\nD='my key' # hers\\nE\\n")
    {'A': '1', 'B': 'two words', 'C': 'x', 'D': 'my key'}
    """
    from dotenv import dotenv_values

    return {k: v for k, v in dotenv_values(stream=io.StringIO(text)).items() if v is not None}
