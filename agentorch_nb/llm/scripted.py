"""The offline ``scripted`` provider: replies come from a script of rules, through litellm.

It is registered with litellm as a custom provider, so ``model="scripted/<name>"`` goes
through ``litellm.acompletion`` like any other model and the client's retry, rate-limit,
cost and recording paths all run in tests and in the offline demo. What a script says and
which reply a request gets is :mod:`agentorch_nb.llm.script`; this module turns that reply
into what a provider would send: a chat completion, a stream, or an error.

**Streaming.** ``stream=True`` works too: the reply comes in pieces of a few words, each
tool call's arguments in two halves, and the token counts in the last chunk, so the client's
streaming path and the live log view run offline (the demo streams when someone watches).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import threading
import time
from collections.abc import Mapping
from typing import Any

from .script import get_script, message_text, request_of

PROVIDER = "scripted"
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
_install_lock = threading.Lock()


def install() -> None:
    """Register the ``scripted`` provider with litellm (once; litellm must be importable)."""
    global _handler
    import litellm

    with _install_lock:
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
