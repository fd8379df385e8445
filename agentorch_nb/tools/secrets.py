"""Secrets kept out of subprocesses and out of everything a tool returns or stores.

Two measures: a child process gets an environment without credential variables
(:func:`scrubbed_env`), and every text that leaves a tool call -- the model's answer, the
``tool_calls`` row, insights -- passes :func:`redact`, which replaces the values of such
variables present in this process and strings shaped like well-known API keys.

A credential variable is one whose name says so (``*_API_KEY``, ``*_TOKEN``, ...) or one
named by :func:`add_secrets`, which the LLM client calls with the variables its models read
keys from (``api_key_env``) and the keys given literally (``api_key``), whatever their names.

>>> redact("key=sk-abcdefghijklmnop1234 ok")
'key=[REDACTED] ok'
>>> is_secret_name("GITHUB_TOKEN"), is_secret_name("PATH")
(True, False)
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterable, Mapping
from typing import Any

REDACTED = "[REDACTED]"
SECRET_SUFFIXES = ("_API_KEY", "_APIKEY", "_TOKEN", "_SECRET", "_SECRET_KEY", "_ACCESS_KEY",
                   "_PASSWORD", "_CREDENTIALS")
SECRET_NAMES = frozenset({
    "OPENAI_API_KEY", "ANTHROPIC_API_KEY", "AZURE_OPENAI_API_KEY", "GEMINI_API_KEY",
    "GOOGLE_API_KEY", "MISTRAL_API_KEY", "GROQ_API_KEY", "COHERE_API_KEY", "TAVILY_API_KEY",
    "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "GITHUB_TOKEN", "GH_TOKEN", "GITLAB_TOKEN",
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "NPM_TOKEN",
    "PYPI_TOKEN", "TWINE_PASSWORD", "DATABASE_URL", "PGPASSWORD",
})
# Shapes of keys worth catching even when no variable of this process holds them.
PATTERNS = re.compile("|".join([
    r"sk-[A-Za-z0-9_\-]{16,}",                 # OpenAI, Anthropic (sk-ant-...), many proxies
    r"gh[pousr]_[A-Za-z0-9]{20,}",             # GitHub tokens
    r"github_pat_[A-Za-z0-9_]{20,}",
    r"glpat-[A-Za-z0-9_\-]{20,}",              # GitLab
    r"xox[abposr]-[A-Za-z0-9\-]{10,}",         # Slack
    r"AKIA[0-9A-Z]{16}",                       # AWS access key id
    r"AIza[0-9A-Za-z_\-]{35}",                 # Google
    r"hf_[A-Za-z0-9]{30,}",                    # Hugging Face
    r"tvly-[A-Za-z0-9_\-]{16,}",               # Tavily
    r"(?i:bearer)\s+[A-Za-z0-9._\-]{20,}",     # Authorization headers
]))
MIN_SECRET_LENGTH = 6  # shorter values ("1", "true") would redact ordinary text

# Added for the life of the process: a key once used stays a secret.
_names: set[str] = set()
_values: set[str] = set()
_lock = threading.Lock()


def add_secrets(names: Iterable[str] = (), values: Iterable[str] = ()) -> None:
    """From now on, in this process, treat the variables ``names`` as credentials (kept out
    of children's environments, their values redacted) and the strings ``values`` as secrets
    (redacted, and any variable holding one kept out of children's environments).

    >>> add_secrets(names=["MY_LLM_KEY"]); is_secret_name("MY_LLM_KEY")
    True
    """
    with _lock:
        _names.update(n for n in names if n)
        _values.update(v for v in values if v and len(v) >= MIN_SECRET_LENGTH)


def is_secret_name(name: str) -> bool:
    upper = name.upper()
    return upper in SECRET_NAMES or upper.endswith(SECRET_SUFFIXES) or name in _names


def secret_values(environ: Mapping[str, str] | None = None) -> list[str]:
    """Values of credential variables in ``environ`` (this process's) and the secrets given to
    :func:`add_secrets`, longest first."""
    environ = os.environ if environ is None else environ
    values = {v for k, v in environ.items() if is_secret_name(k) and len(v) >= MIN_SECRET_LENGTH}
    with _lock:
        values |= _values
    return sorted(values, key=len, reverse=True)


def scrubbed_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a tool's subprocess: credentials removed, no pagers or prompts."""
    environ = os.environ if environ is None else environ
    with _lock:
        known = set(_values)
    env = {k: v for k, v in environ.items() if not is_secret_name(k) and v not in known}
    env.update(GIT_TERMINAL_PROMPT="0", GIT_PAGER="cat", PAGER="cat")
    return env


def redact(text: str, secrets: list[str] | None = None) -> str:
    """``text`` with secret values and key-shaped strings replaced by ``[REDACTED]``."""
    if not text:
        return text
    for value in secret_values() if secrets is None else secrets:
        text = text.replace(value, REDACTED)
    return PATTERNS.sub(REDACTED, text)


def redact_value(value: Any, secrets: list[str] | None = None) -> Any:
    """:func:`redact` applied to every string inside a JSON-like value."""
    secrets = secret_values() if secrets is None else secrets
    if isinstance(value, str):
        return redact(value, secrets)
    if isinstance(value, dict):
        return {k: redact_value(v, secrets) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_value(v, secrets) for v in value]
    return value
