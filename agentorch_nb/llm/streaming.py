"""Streamed calls: a reply's text reaches a watcher while the model is still writing it.

``LLM.complete(on_chunk=...)`` asks litellm for a stream, hands each piece of text to
``on_chunk`` as it arrives and assembles the chunks (litellm's ``stream_chunk_builder``) into
the response a plain call would have returned, so the ``Reply``, the ``llm_calls`` row, the
budget and the rate limits do not depend on whether anyone watched. Models that cannot
stream are called the plain way.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from .scripted import PROVIDER as SCRIPTED

log = logging.getLogger("agentorch_nb.llm")

_stream_params: dict[str, dict[str, Any] | None] = {}


def stream_params(litellm: Any, model: str) -> dict[str, Any] | None:
    """The arguments that make a call to ``model`` stream (with token usage in the stream
    where the provider takes ``stream_options``), or None when it cannot stream."""
    if model not in _stream_params:
        _stream_params[model] = _params_for(litellm, model)
    return _stream_params[model]


def _params_for(litellm: Any, model: str) -> dict[str, Any] | None:
    usage = {"stream": True, "stream_options": {"include_usage": True}}
    provider = model.split("/", 1)[0]
    if provider == SCRIPTED:
        return usage
    for entry in litellm.custom_provider_map:
        if entry.get("provider") == provider:  # someone's own litellm provider
            from litellm import CustomLLM

            handler = entry.get("custom_handler")
            overrides = type(handler).astreaming is not CustomLLM.astreaming
            return usage if overrides else None
    try:
        supported = litellm.get_supported_openai_params(model=model)
    except Exception:  # noqa: BLE001 - a model litellm cannot place: the plain call will say why
        return None
    if not supported or "stream" not in supported:
        return None
    return usage if "stream_options" in supported else {"stream": True}


class ChunkRelay:
    """Passes text to ``on_chunk``. A callback that raises is logged and not called again:
    watching a call must never break it."""

    def __init__(self, on_chunk: Callable[[str], None], model: str, role: str) -> None:
        self.on_chunk: Callable[[str], None] | None = on_chunk
        self.model = model
        self.role = role

    def __call__(self, text: str | None) -> None:
        if not text or self.on_chunk is None:
            return
        try:
            self.on_chunk(text)
        except Exception:
            log.exception("%s: the %s's on_chunk callback %r failed; no more chunks go to it",
                          self.model, self.role, self.on_chunk)
            self.on_chunk = None


async def read_stream(call: Awaitable[Any], relay: ChunkRelay) -> list[Any]:
    """Every chunk of the stream ``call`` (a streamed ``litellm.acompletion``) opens, relaying
    text deltas as they come. The stream is closed however this ends (a timeout or a
    cancellation lands in the middle of it)."""
    stream = await call
    chunks: list[Any] = []
    try:
        async for chunk in stream:
            chunks.append(chunk)
            choices = getattr(chunk, "choices", None)
            if choices:
                relay(getattr(choices[0].delta, "content", None))
    finally:
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()
    return chunks


def assemble(litellm: Any, chunks: list[Any], messages: list[dict[str, Any]]) -> Any:
    """The chat completion the chunks make up: content, tool calls with their arguments joined
    across chunks, and usage (litellm counts tokens itself when the stream reported none)."""
    resp = litellm.stream_chunk_builder(chunks, messages=messages)
    if resp is None or not getattr(resp, "choices", None):
        raise ValueError("the stream ended without a reply")
    msg = resp.choices[0].message
    if msg.content == "" and getattr(msg, "tool_calls", None):
        msg.content = None  # as a plain call reports a reply that is only tool calls
    return resp
