"""The offline ``scripted`` provider: replies come from a script of rules, through litellm.

It is registered with litellm as a custom provider, so ``model="scripted/<name>"`` goes
through ``litellm.acompletion`` like any other model and the client's retry, rate-limit,
cost and recording paths all run in tests and in the offline demo.

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

**Streaming.** ``stream=True`` works too: the reply comes in pieces of a few words, each
tool call's arguments in two halves, and the token counts in the last chunk, so the client's
streaming path and the live log view run offline (the demo streams when someone watches).

**Conversations.** A conversation is one (run, role, task, attempt). The LLM client passes
them to litellm as ``metadata={"agentorch": {"run_id", "role", "task_id", "attempt",
"profile", "title"}}``; a direct ``litellm.acompletion`` call may pass the same. With no
metadata the request has no role, so only rules without conditions match it.

Scripts are found by name (``register_script``/``load_script``); a model name that is a path
to a ``.json``/``.yaml``/``.yml`` file (``scripted/tests/demo.json``) is loaded on first use.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ScriptError

PROVIDER = "scripted"
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


_call_ids = itertools.count(1)


def response_fields(reply: Mapping[str, Any], messages: list, tools: Any) -> dict[str, Any]:
    """The parts of a chat-completion response for ``reply``, with its token counts."""
    content = reply.get("content")
    calls = []
    for call in reply.get("tool_calls") or []:
        args = call.get("arguments", {})
        calls.append({
            "id": call.get("id") or f"call_{next(_call_ids)}",
            "type": "function",
            "function": {
                "name": call["name"],
                "arguments": args if isinstance(args, str) else json.dumps(args),
            },
        })
    prompt_chars = sum(len(message_text(m)) for m in messages) + len(json.dumps(tools or []))
    out_chars = len(content or "") + len(json.dumps(calls)) * bool(calls)
    tokens_in = int(reply.get("tokens_in", max(1, prompt_chars // 4)))
    tokens_out = int(reply.get("tokens_out", max(1, out_chars // 4)))
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if calls:
        message["tool_calls"] = calls
    return {
        "choices": [
            {"index": 0, "message": message, "finish_reason": "tool_calls" if calls else "stop"}
        ],
        "usage": {"prompt_tokens": tokens_in, "completion_tokens": tokens_out,
                  "total_tokens": tokens_in + tokens_out},
    }


WORDS_PER_CHUNK = 4


def stream_chunks(fields: Mapping[str, Any]) -> list[dict[str, Any]]:
    """``response_fields`` as litellm's ``GenericStreamingChunk`` dicts: the content in pieces of
    a few words, each tool call's arguments split in two (so they must be assembled), then a
    last chunk with the finish reason and the token counts."""
    choice = fields["choices"][0]
    message = choice["message"]

    def chunk(text: str = "", tool_use: Any = None, **last: Any) -> dict[str, Any]:
        return {"text": text, "tool_use": tool_use, "is_finished": False, "finish_reason": "",
                "usage": None, "index": 0, **last}

    words = re.split(r"(?<=\s)(?=\S)", message.get("content") or "")
    chunks = [chunk("".join(words[i:i + WORDS_PER_CHUNK]))
              for i in range(0, len(words), WORDS_PER_CHUNK) if any(words[i:i + WORDS_PER_CHUNK])]
    for index, call in enumerate(message.get("tool_calls") or []):
        args = call["function"]["arguments"]
        half = len(args) // 2
        chunks.append(chunk(tool_use={"id": call["id"], "type": "function", "index": index,
                                      "function": {"name": call["function"]["name"],
                                                   "arguments": args[:half]}}))
        chunks.append(chunk(tool_use={"id": None, "type": "function", "index": index,
                                      "function": {"name": None, "arguments": args[half:]}}))
    chunks.append(chunk(is_finished=True, finish_reason=choice["finish_reason"],
                        usage=dict(fields["usage"])))
    return chunks


def _raise_scripted_error(error: Any, model: str) -> None:
    import httpx
    import litellm

    if error == "timeout":
        raise litellm.Timeout("scripted timeout", model=model, llm_provider=PROVIDER)
    status = int(error["status"])
    message = str(error.get("message") or f"scripted error {status}")
    request = httpx.Request("POST", f"http://{PROVIDER}/{model}")
    retry_after = error.get("retry_after")
    headers = {"retry-after": str(retry_after)} if retry_after is not None else {}
    if status == 429:
        exc = litellm.RateLimitError(
            message, llm_provider=PROVIDER, model=model,
            response=httpx.Response(429, headers=headers, request=request),
        )
        if error.get("retry_after") is not None:
            exc.retry_after = float(error["retry_after"])
        raise exc
    from litellm.llms.custom_llm import CustomLLMError

    raise CustomLLMError(status_code=status, message=message)  # litellm maps it by status


# ------------------------------------------------------------ litellm glue
_handler: Any = None


def install() -> None:
    """Register the ``scripted`` provider with litellm (once; litellm must be importable)."""
    global _handler
    import litellm

    with _registry_lock:
        if _handler is None:
            _handler = _make_handler()
        if not any(item.get("provider") == PROVIDER for item in litellm.custom_provider_map):
            litellm.custom_provider_map.append({"provider": PROVIDER, "custom_handler": _handler})


def _make_handler() -> Any:
    import litellm
    from litellm import CustomLLM

    def answer(model: str, messages: list, optional_params: dict, litellm_params: dict) -> tuple:
        req = request_of(messages, litellm_params)
        reply = get_script(model).reply_for(req)
        return reply, response_fields(reply, messages, optional_params.get("tools"))

    class ScriptedLLM(CustomLLM):
        """litellm's handler for ``scripted/<script>`` models."""

        async def acompletion(self, model, messages, optional_params, litellm_params=None, **kw):
            reply, fields = answer(model, messages, optional_params, litellm_params or {})
            if reply.get("delay"):
                await asyncio.sleep(float(reply["delay"]))
            if reply.get("error") is not None:
                _raise_scripted_error(reply["error"], model)
            return litellm.ModelResponse(model=f"{PROVIDER}/{model}", **fields)

        def completion(self, model, messages, optional_params, litellm_params=None, **kw):
            reply, fields = answer(model, messages, optional_params, litellm_params or {})
            if reply.get("delay"):
                time.sleep(float(reply["delay"]))
            if reply.get("error") is not None:
                _raise_scripted_error(reply["error"], model)
            return litellm.ModelResponse(model=f"{PROVIDER}/{model}", **fields)

        async def astreaming(self, model, messages, optional_params, litellm_params=None, **kw):
            # A generator: the reply is chosen (and an injected error raised) when the caller
            # starts reading, as a provider's would fail on the first read.
            reply, fields = answer(model, messages, optional_params, litellm_params or {})
            if reply.get("delay"):
                await asyncio.sleep(float(reply["delay"]))
            if reply.get("error") is not None:
                _raise_scripted_error(reply["error"], model)
            for piece in stream_chunks(fields):
                yield piece
                await asyncio.sleep(0)  # one piece per turn of the loop, like a network read

        def streaming(self, model, messages, optional_params, litellm_params=None, **kw):
            reply, fields = answer(model, messages, optional_params, litellm_params or {})
            if reply.get("delay"):
                time.sleep(float(reply["delay"]))
            if reply.get("error") is not None:
                _raise_scripted_error(reply["error"], model)
            yield from stream_chunks(fields)

    return ScriptedLLM()
