"""Preflight: can each model a run will call be called? Checked before the run exists.

For every model the run's roles use, what can be known without calling it:

- ``scripted/<name>``: the script is registered (or is a script file); no key, no network;
- the provider resolves (``litellm.get_llm_provider``);
- its keys are present (``litellm.validate_environment``), after the workspace's ``.env``
  and the current directory's are read, with ``api_key_env`` / ``api_key`` applied;
- an ``api_base`` given for it (and Ollama's, given or default) accepts a connection.

:func:`preflight` raises :class:`~agentorch_nb.exceptions.ModelNotReady` naming the roles,
the models, the missing variables and the fixes; :func:`check_models` returns every check,
passed or not, for ``agentorch doctor``. litellm is imported for the first real model (seconds,
once per process); scripted models never need it.

>>> from agentorch_nb.llm import Models, register_script
>>> _ = register_script("hello", [{"reply": "hi"}])
>>> [(c.model, c.ok, c.used_by) for c in check_models(Models(worker_model="scripted/hello"))]
[('scripted/hello', True, 'every role')]
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from ..exceptions import ModelNotReady
from .errors import ScriptError
from .script import get_script
from .scripted import PROVIDER as SCRIPTED
from .settings import REDACTED_KEY, ROLE_FIELDS, Models, load_env_file

CONNECT_TIMEOUT = 3.0  # seconds an api_base has to accept a connection
OLLAMA = ("ollama", "ollama_chat")
DEMO = ("use the offline demo model (--model demo; in Python "
        "Config(models=agentorch_nb.agents.demo_models()))")
SKIP = ("Config(preflight=False) skips this check (e.g. behind a proxy that adds the keys); "
        "`agentorch doctor` checks everything a run needs.")


@dataclass
class ModelCheck:
    """What preflight found about one model: ``ok``, what it saw (``detail``), and when it
    is not ok, the variables that are missing and what to do (``fix``)."""

    model: str
    roles: list[str]
    ok: bool
    detail: str
    fix: str = ""
    missing: list[str] = field(default_factory=list)
    used_by: str = ""  # the roles in words: "every role", "the coder", "every role but the coder"


def in_words(roles: list[str], every: list[str]) -> str:
    """Which of the run's roles (``every``) use a model (``roles``), in words.

    >>> in_words(["director", "worker", "coder"], ["director", "worker", "coder", "tester"])
    'every role but the tester'
    """
    def listed(names: list[str]) -> str:
        return "the " + (names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}")

    others = [r for r in every if r not in roles]
    if not others:
        return "every role"
    return f"every role but {listed(others)}" if len(others) < len(roles) else listed(roles)


def roles_by_model(models: Models, guardian: bool = False) -> dict[str, list[str]]:
    """Each model a run calls, with the roles (and worker profiles) that call it."""
    out: dict[str, list[str]] = {}
    for role in ROLE_FIELDS:
        if role != "guardian" or guardian:
            out.setdefault(models.model_for(role), []).append(role)
    return out


def check_models(models: Models, *, workspace: str | os.PathLike | None = None,
                 guardian: bool = False, timeout: float = CONNECT_TIMEOUT) -> list[ModelCheck]:
    """One check per model the run's roles use (the Guardian's with ``guardian=True``)."""
    load_env_file(*(d for d in (workspace, Path.cwd()) if d is not None))
    env_file = Path(workspace or Path.cwd()) / ".env"
    by_model = roles_by_model(models, guardian)
    every = [r for roles in by_model.values() for r in roles]
    checks = []
    for model, roles in by_model.items():
        check = check_model(models, model, env_file, timeout)
        check.roles, check.used_by = roles, in_words(roles, every)
        checks.append(check)
    return checks


def preflight(models: Models, *, workspace: str | os.PathLike | None = None,
              guardian: bool = False, doing: str = "started") -> list[ModelCheck]:
    """Raise ModelNotReady unless every model the run calls passes :func:`check_models`."""
    checks = check_models(models, workspace=workspace, guardian=guardian)
    bad = [c for c in checks if not c.ok]
    if bad:
        raise ModelNotReady(refusal(bad, doing), bad)
    return checks


def refusal(bad: list[ModelCheck], doing: str = "started") -> str:
    what = "a model it needs" if len(bad) == 1 else f"{len(bad)} models it needs"
    lines = [f"the run was not {doing}: {what} cannot be called, so nothing was created."]
    for c in bad:
        lines += [f"- {c.model} (used by {c.used_by}): {c.detail}.", f"  fix: {c.fix}."]
    return "\n".join([*lines, SKIP])


def check_model(models: Models, model: str, env_file: Path,
                timeout: float = CONNECT_TIMEOUT) -> ModelCheck:
    """The checks of one model (its ``roles`` are filled in by the caller)."""

    def failed(detail: str, fix: str, missing: list[str] | None = None) -> ModelCheck:
        return ModelCheck(model, [], False, detail, fix, missing or [])

    spec = models.endpoints.get(model) or {}
    if model.startswith(SCRIPTED + "/"):
        try:
            get_script(model.split("/", 1)[1])
        except ScriptError as exc:
            return failed(str(exc).rstrip("."), "register the script first, or " + DEMO)
        return ModelCheck(model, [], True, "offline scripted model: no key, no network")
    key, env = spec.get("api_key"), spec.get("api_key_env")
    where = f"Models.endpoints[{model!r}]"
    if key == REDACTED_KEY:
        return failed(f"its key was given literally ({where}['api_key']) and is not stored with "
                      "the run", "pass config= with the key again, or keep the key in a variable "
                      "named by api_key_env")
    if env and not key:
        if not os.environ.get(env):
            return failed(f"its key is read from {env} ({where}['api_key_env']), which is not set",
                          key_fix([env], env_file), [env])
        key = os.environ[env]
    from .client import litellm_module

    litellm = litellm_module()
    api_base = spec.get("api_base")
    try:
        _, provider, _, default_base = litellm.get_llm_provider(model, api_base=api_base)
    except Exception as exc:  # noqa: BLE001 - litellm's BadRequestError, or anything it raises
        said = str(exc).replace("litellm.BadRequestError: ", "").split("\n")[0].strip()
        return failed(f"litellm does not know its provider ({said})",
                      "name the provider first, as litellm does: openai/gpt-4o-mini, "
                      "anthropic/claude-sonnet-4-5, gemini/..., ollama/..., or openai/<model> with "
                      f"an api_base in {where} for an OpenAI-compatible server; or {DEMO}")
    missing = litellm.validate_environment(model, api_key=key, api_base=api_base)["missing_keys"]
    if provider in OLLAMA:  # without OLLAMA_API_BASE, Ollama is looked for at its default address
        missing = [k for k in missing if k != "OLLAMA_API_BASE"]
    if missing:
        said = (f"{missing[0]} is not set" if len(missing) == 1 else
                f"it needs {', '.join(missing)} (litellm's names for {provider}), not set")
        fix = key_fix(missing, env_file)
        if api_base:
            fix += (f" (for a server that needs no key any value will do; or give the key in "
                    f"{where}['api_key'] or name its variable in ['api_key_env'])")
        return failed(said, fix, missing)
    base = api_base or ((os.environ.get("OLLAMA_API_BASE") or default_base)
                        if provider in OLLAMA else None)
    if base:
        problem = unreachable(base, timeout)
        if problem:
            return failed(f"nothing answers at {base} ({problem})",
                          f"start the server there, or correct {where}['api_base']; or {DEMO}")
    found = (f"key from {env}" if env else "key given in Models.endpoints" if spec.get("api_key")
             else "keys found" if provider not in OLLAMA else "no key needed")
    return ModelCheck(model, [], True, f"provider {provider}, {found}"
                      + (f", {base} accepts connections" if base else ""))


def key_fix(names: list[str], env_file: Path) -> str:
    name, shown = names[0], " / ".join(names)  # several: litellm's list, which may ask for one
    return (f"set {shown} in the environment (export {name}=...), or add the line {name}=... to "
            f"{env_file}, or {DEMO}")


def unreachable(base: str, timeout: float = CONNECT_TIMEOUT) -> str | None:
    """None when ``base`` (a URL) accepts a TCP connection, else why not."""
    parts = urlsplit(base if "://" in base else f"http://{base}")
    try:
        host, port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:  # a port that is not a number
        return f"not a URL: {exc}"
    if not host:
        return "not a URL"
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except TimeoutError:
        return f"{host}:{port} did not accept a connection within {timeout:g} s"
    except OSError as exc:
        return f"{host}:{port}: {(exc.strerror or str(exc)).lower()}"


def credential_advice(models: Models, model: str) -> str:
    """What to do when ``model``'s provider refused its credentials (said after the call)."""
    spec = models.endpoints.get(model) or {}
    env = spec.get("api_key_env")
    if spec.get("api_key"):
        given = f"the key given in Models.endpoints[{model!r}]['api_key']"
    elif env:
        given = f"the key in {env}"
        if not os.environ.get(env):
            return f"{env} (api_key_env) is not set: set it in the environment or .env, or {DEMO}"
    else:
        given = "the provider's key"
        from .client import litellm_module

        try:
            missing = litellm_module().validate_environment(
                model, api_base=spec.get("api_base"))["missing_keys"]
        except Exception:  # noqa: BLE001 - advice only: say it in general terms
            missing = []
        if missing:
            return (f"{missing[0]} is not set: set it in the environment or the workspace's "
                    f".env, or {DEMO}")
    return f"{given} was refused: check that it is valid for this provider, or {DEMO}"
