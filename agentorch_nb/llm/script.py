"""Scripts of the offline ``scripted`` provider: what a script may say, checked when it is
read, and which reply a request gets. The provider itself (litellm's side) is
:mod:`agentorch_nb.llm.scripted`.

A script is a list of rules (or ``{"rules": [...]}``), given as a Python value, a JSON file or
a YAML file. The first rule that matches a request answers it::

    rules:
      - role: worker            # director, planner, worker, strategist, merger (or a list)
        profile: code           # the task's profile (or a list)
        title: "parser|CLI"     # regex searched in the task title
        last_message: "failed"  # regex searched in the last message's text
        attempt: [2, 3]         # the task's attempt number (int or list)
        replies:                # consumed in order within one conversation; once used up,
          - tool_calls:         #   the rule stops matching that conversation
              - name: write_file
                arguments: {path: app.py, content: "print(1)"}
          - content: "Done."
      - role: strategist
        reply: {content: '{"approved": true}'}   # one reply, given every time

A reply has ``content`` and/or ``tool_calls`` (``name``, ``arguments`` as an object, or as a
string passed on verbatim, e.g. to test malformed JSON). Optional: ``tokens_in`` and
``tokens_out`` (default: text length // 4), ``delay`` (seconds before answering), and
``error`` (``{"status": 429, "retry_after": 0.1}``, ``{"status": 500}``, or ``"timeout"``) to
make the call fail the way a provider would.

**Conversations.** A conversation is one (run, role, task, attempt). The LLM client passes
them to litellm as ``metadata={"agentorch": {"run_id", "role", "task_id", "attempt",
"profile", "title"}}``; a direct ``litellm.acompletion`` call may pass the same. With no
metadata the request has no role, so only rules without conditions match it.

Scripts are found by name (``register_script``/``load_script``); a model name that is a path
to a ``.json``/``.yaml``/``.yml`` file (``scripted/tests/demo.json``) is loaded on first use.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ScriptError

_RULE_KEYS = {"name", "role", "profile", "title", "last_message", "attempt", "reply", "replies"}
_REPLY_KEYS = {"content", "tool_calls", "tokens_in", "tokens_out", "delay", "error"}


@dataclass
class Request:
    """What a rule can look at."""

    role: str | None
    profile: str | None
    task_id: str | None
    title: str | None
    attempt: int | None
    last_message: str
    run_id: str | None = None

    @property
    def conversation(self) -> tuple:
        return (self.run_id, self.role, self.task_id, self.attempt)


@dataclass
class Rule:
    index: int
    name: str
    replies: list[dict[str, Any]]
    repeat: bool  # a single ``reply`` answers every time
    role: frozenset[str] | None = None
    profile: frozenset[str] | None = None
    attempt: frozenset[int] | None = None
    title: re.Pattern | None = None
    last_message: re.Pattern | None = None

    def matches(self, req: Request) -> bool:
        return (
            (self.role is None or req.role in self.role)
            and (self.profile is None or req.profile in self.profile)
            and (self.attempt is None or req.attempt in self.attempt)
            and (self.title is None or bool(req.title and self.title.search(req.title)))
            and (self.last_message is None or bool(self.last_message.search(req.last_message)))
        )


@dataclass
class Script:
    """Rules plus, per conversation, how many replies of each rule were used."""

    name: str
    rules: list[Rule]
    _used: dict[tuple, int] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __reduce__(self):
        # Sent to another process (a cluster node) as its rules; conversations start afresh.
        return (Script, (self.name, self.rules))

    def reset(self) -> None:
        """Forget every conversation, so replies are consumed from the start again."""
        with self._lock:
            self._used.clear()

    def reply_for(self, req: Request) -> dict[str, Any]:
        """The next reply for ``req``; ScriptError naming the request if no rule has one."""
        spent: list[str] = []
        with self._lock:
            for rule in self.rules:
                if not rule.matches(req):
                    continue
                if rule.repeat:
                    return rule.replies[0]
                key = (req.conversation, rule.index)
                n = self._used.get(key, 0)
                if n < len(rule.replies):
                    self._used[key] = n + 1
                    return rule.replies[n]
                spent.append(rule.name)
        last = req.last_message if len(req.last_message) <= 300 else req.last_message[:300] + "..."
        used_up = (
            f" Rules {', '.join(spent)} matched but their replies are used up in this conversation."
            if spent
            else ""
        )
        raise ScriptError(
            f"script {self.name!r} has no rule for role {req.role!r}, task {req.task_id!r}"
            f" (title {req.title!r}, profile {req.profile!r}, attempt {req.attempt!r});"
            f" last message: {last!r}.{used_up} Add a rule that matches this request, or a "
            "catch-all rule at the end of the script."
        )


# ------------------------------------------------------------------ parsing
def parse_script(name: str, data: Any) -> Script:
    """Check a script (list of rules or ``{"rules": [...]}``) and compile its regexes."""
    if isinstance(data, Mapping):
        if set(data) - {"rules", "name"}:
            raise ScriptError(
                f"script {name!r}: unknown top-level keys {sorted(set(data) - {'rules', 'name'})};"
                " a script is a list of rules or {'rules': [...]}"
            )
        data = data.get("rules")
    if not isinstance(data, Sequence) or isinstance(data, (str, bytes)):
        raise ScriptError(f"script {name!r} must be a list of rules or {{'rules': [...]}}")
    return Script(name, [_rule(name, i, r) for i, r in enumerate(data, 1)])


def _rule(script: str, index: int, raw: Any) -> Rule:
    where = f"script {script!r}, rule {index}"
    if not isinstance(raw, Mapping):
        raise ScriptError(f"{where}: a rule is a mapping with 'reply' or 'replies'")
    unknown = set(raw) - _RULE_KEYS
    if unknown:
        raise ScriptError(f"{where}: unknown keys {sorted(unknown)}; known: {sorted(_RULE_KEYS)}")
    if ("reply" in raw) == ("replies" in raw):
        raise ScriptError(f"{where}: give exactly one of 'reply' (always) or 'replies' (in order)")
    replies = [raw["reply"]] if "reply" in raw else raw["replies"]
    if not isinstance(replies, list) or not replies:
        raise ScriptError(f"{where}: 'replies' must be a non-empty list")
    name = str(raw.get("name") or index)
    return Rule(
        index=index,
        name=name,
        replies=[_reply(f"{where}, reply {k}", r) for k, r in enumerate(replies, 1)],
        repeat="reply" in raw,
        role=_names(where, "role", raw.get("role")),
        profile=_names(where, "profile", raw.get("profile")),
        attempt=_attempts(where, raw.get("attempt")),
        title=_regex(where, "title", raw.get("title")),
        last_message=_regex(where, "last_message", raw.get("last_message")),
    )


def _reply(where: str, raw: Any) -> dict[str, Any]:
    if isinstance(raw, str):
        raw = {"content": raw}
    if not isinstance(raw, Mapping):
        raise ScriptError(f"{where}: a reply is a mapping with 'content' and/or 'tool_calls'")
    unknown = set(raw) - _REPLY_KEYS
    if unknown:
        raise ScriptError(f"{where}: unknown keys {sorted(unknown)}; known: {sorted(_REPLY_KEYS)}")
    if not any(k in raw for k in ("content", "tool_calls", "error")):
        raise ScriptError(f"{where}: a reply needs 'content', 'tool_calls' or 'error'")
    calls = raw.get("tool_calls") or []
    if not isinstance(calls, list) or not all(
        isinstance(c, Mapping) and c.get("name") for c in calls
    ):
        raise ScriptError(f"{where}: 'tool_calls' is a list of {{name, arguments}}")
    error = raw.get("error")
    if error is not None and error != "timeout" and not (
        isinstance(error, Mapping) and isinstance(error.get("status"), int)
    ):
        raise ScriptError(f"{where}: 'error' is 'timeout' or {{status: 429, retry_after: 1}}")
    return dict(raw)


def _names(where: str, key: str, value: Any) -> frozenset[str] | None:
    if value is None:
        return None
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise ScriptError(f"{where}: '{key}' is a name or a list of names")
    return frozenset(values)


def _attempts(where: str, value: Any) -> frozenset[int] | None:
    if value is None:
        return None
    values = [value] if isinstance(value, int) else value
    if not isinstance(values, list) or not all(isinstance(v, int) for v in values):
        raise ScriptError(f"{where}: 'attempt' is a number or a list of numbers")
    return frozenset(values)


def _regex(where: str, key: str, value: Any) -> re.Pattern | None:
    if value is None:
        return None
    try:
        return re.compile(value)
    except (re.error, TypeError) as exc:
        raise ScriptError(f"{where}: '{key}' is not a valid regular expression: {exc}") from None


# ----------------------------------------------------------------- registry
_scripts: dict[str, Script] = {}
_registry_lock = threading.Lock()


def register_script(name: str, rules: Any) -> Script:
    """Register ``rules`` (a list, ``{"rules": [...]}`` or a :class:`Script`) as
    ``scripted/<name>``, replacing any script of that name (and its conversations)."""
    script = rules if isinstance(rules, Script) else parse_script(name, rules)
    with _registry_lock:
        _scripts[name] = script
    return script


def load_script(path: str | os.PathLike, name: str | None = None) -> Script:
    """Read a JSON or YAML script file and register it (by default under its file stem)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScriptError(f"cannot read script {p}: {exc}") from None
    if p.suffix.lower() in (".yaml", ".yml"):
        import yaml  # PyYAML comes with litellm

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ScriptError(f"script {p} is not valid YAML: {exc}") from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ScriptError(f"script {p} is not valid JSON: {exc}") from None
    script = parse_script(str(p), data)  # errors name the file
    script.name = name or p.stem
    return register_script(script.name, script)


def get_script(name: str) -> Script:
    """The script registered as ``name``; a path to a script file is loaded and registered."""
    with _registry_lock:
        script = _scripts.get(name)
    if script is not None:
        return script
    if Path(name).suffix.lower() in (".json", ".yaml", ".yml") and Path(name).is_file():
        return load_script(name, name=name)
    raise ScriptError(
        f"no script named {name!r} for model 'scripted/{name}'; registered: "
        f"{sorted(_scripts) or 'none'}. Call agentorch_nb.llm.register_script({name!r}, rules) "
        "or load_script(path), or use scripted/<path to a .json or .yaml script>."
    )


# ---------------------------------------------------------- request / reply
def request_of(messages: list[dict], litellm_params: Mapping | None) -> Request:
    meta = ((litellm_params or {}).get("metadata") or {}).get("agentorch") or {}
    return Request(
        role=meta.get("role"),
        profile=meta.get("profile"),
        task_id=meta.get("task_id"),
        title=meta.get("title"),
        attempt=meta.get("attempt"),
        run_id=meta.get("run_id"),
        last_message=message_text(messages[-1]) if messages else "",
    )


def message_text(message: Any) -> str:
    """The text of one chat message, whether its content is a string or a list of parts."""
    if isinstance(message, Mapping):
        content = message.get("content")
    else:
        content = getattr(message, "content", None)
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            p.get("text", "") if isinstance(p, Mapping) else str(p) for p in content
        )
    return str(content)
