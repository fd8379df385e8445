"""Streamed calls through the offline scripted provider: pieces as they come, the same Reply
and ``llm_calls`` row as a plain call, retries, a failing watcher, models that cannot stream,
and how a context hands chunks to the engine's loop."""

from __future__ import annotations

import asyncio
import logging
import threading
from types import SimpleNamespace

import pytest

from agentorch_nb.engine.protocols import Context
from agentorch_nb.llm import LLM, LLMCallFailed, Models, RateLimiter, litellm_module, register_script
from agentorch_nb.llm.streaming import stream_params

from .test_llm import llm_rows, store  # noqa: F401 - the same store fixture and reader

RUN = "run-stream"
TOOLS = [{"type": "function", "function": {"name": "write_file", "parameters": {"type": "object"}}}]
SAID = "Reading the task first.\nThen I write the parser, its tests and a short note for the docs."


def ask(text: str = "go") -> list[dict]:
    return [{"role": "system", "content": "You are a test."}, {"role": "user", "content": text}]


def llm_for(script: str, store=None, **models) -> LLM:
    settings = {"worker_model": f"scripted/{script}", "backoff_base": 0.0, **models}
    return LLM(Models(**settings), store=store, run_id=RUN if store else None,
               limiter=RateLimiter(max_concurrent=8))


async def test_a_streamed_scripted_reply_is_the_plain_reply_in_pieces(store):
    register_script("both", [{"role": "worker", "replies": [
        {"content": SAID, "tool_calls": [
            {"name": "write_file", "arguments": {"path": "parser.py", "content": "def parse(): ...\n"}},
            {"name": "write_file", "arguments": "{broken"}]},
        {"tool_calls": [{"name": "write_file", "arguments": {"path": "b.py"}}], "tokens_out": 7},
    ]}])
    llm = llm_for("both", store=store)
    plain = [await llm.complete(role="worker", messages=ask(), tools=TOOLS, task_id="plain", attempt=1)
             for _ in range(2)]
    pieces: list[str] = []
    streamed = [await llm.complete(role="worker", messages=ask(), tools=TOOLS, task_id="streamed",
                                   attempt=1, on_chunk=pieces.append) for _ in range(2)]

    assert len(pieces) > 3 and "".join(pieces) == SAID  # a few words at a time, nothing lost
    for p, s in zip(plain, streamed):
        assert s.to_dict() | {"latency_ms": 0, "tool_calls": None} == p.to_dict() | {
            "latency_ms": 0, "tool_calls": None}
        # ids are made per call; everything else about each tool call is the same
        assert [(c.name, c.arguments, c.raw_arguments, c.error) for c in s.tool_calls] == [
            (c.name, c.arguments, c.raw_arguments, c.error) for c in p.tool_calls]
    assert streamed[0].bad_tool_calls[0].raw_arguments == "{broken"
    assert streamed[1].content is None  # tool calls only, as the plain call says it
    assert llm.spent_tokens == 2 * sum(r.tokens_in + r.tokens_out for r in plain)

    rows = llm_rows(store)
    keep = ("role", "attempt", "model", "tokens_in", "tokens_out", "cost_usd", "error")
    by_task = {t: [{k: r[k] for k in keep} for r in rows if r["task_id"] == t] for t in ("plain", "streamed")}
    assert by_task["streamed"] == by_task["plain"] and len(by_task["plain"]) == 2


async def test_an_error_before_the_first_piece_is_retried_and_timeouts_hold(store):
    register_script("bumpy", [
        {"role": "worker", "title": "bumpy", "replies": [
            {"error": {"status": 429, "retry_after": 0.05}}, {"error": {"status": 503}}, "made it"]},
        {"role": "worker", "title": "late", "reply": {"content": "too late", "delay": 2}},
    ])
    llm = llm_for("bumpy", store=store, max_retries=2, call_timeout=0.2)
    pieces: list[str] = []
    reply = await llm.complete(role="worker", messages=ask(), title="bumpy", task_id="a",
                               on_chunk=pieces.append)
    assert reply.content == "made it" and reply.tries == 3 and pieces == ["made it"]
    with pytest.raises(LLMCallFailed, match="failed 3 times") as err:
        await llm.complete(role="worker", messages=ask(), title="late", task_id="b", on_chunk=pieces.append)
    assert "timeout" in err.value.last_error and pieces == ["made it"]
    errors = [r["error"] for r in llm_rows(store)]
    assert "RateLimitError" in errors[0] and "503" in errors[1] and errors[2] is None
    assert len(errors) == 6 and all("timeout" in e for e in errors[3:])


async def test_a_watcher_that_raises_is_dropped_and_the_call_goes_on(caplog):
    register_script("loud", [{"reply": {"content": "one two three four five six seven eight nine"}}])
    calls = []

    def broken(text: str) -> None:
        calls.append(text)
        raise RuntimeError("the widget is gone")

    with caplog.at_level(logging.ERROR, logger="agentorch_nb.llm"):
        reply = await llm_for("loud").complete(role="worker", messages=ask(), on_chunk=broken)
    assert reply.content == "one two three four five six seven eight nine"
    assert calls == ["one two three four "]  # called once, then left alone
    assert "on_chunk callback" in caplog.text and "the widget is gone" in caplog.text


async def test_a_model_that_cannot_stream_is_called_the_plain_way():
    from litellm import CustomLLM, ModelResponse

    class PlainOnly(CustomLLM):
        async def acompletion(self, model, messages, optional_params, litellm_params=None, **kw):
            assert not optional_params.get("stream")
            return ModelResponse(model=model, choices=[{"index": 0, "finish_reason": "stop", "message": {
                "role": "assistant", "content": "no streaming here"}}])

    litellm = litellm_module()
    entry = {"provider": "plainonly", "custom_handler": PlainOnly()}
    litellm.custom_provider_map.append(entry)
    try:
        pieces: list[str] = []
        llm = LLM(Models(worker_model="plainonly/m"), limiter=RateLimiter())
        reply = await llm.complete(role="worker", messages=ask(), on_chunk=pieces.append)
        assert reply.content == "no streaming here" and pieces == []
    finally:
        litellm.custom_provider_map.remove(entry)
    assert stream_params(litellm, "scripted/x") == {"stream": True, "stream_options": {"include_usage": True}}
    assert stream_params(litellm, "openai/gpt-4o-mini")["stream"] is True
    assert stream_params(litellm, "no-provider-at-all") is None


async def test_a_context_hands_chunks_to_the_engines_loop_from_any_thread():
    loop = asyncio.get_running_loop()
    seen: list[tuple] = []

    def stream_chunk(task_id, attempt, role, text):
        seen.append((task_id, attempt, role, text, threading.current_thread() is threading.main_thread()))

    engine = SimpleNamespace(loop=loop, stream_chunk=stream_chunk)
    ctx = Context(run_id="r", objective="o", workspace=None, task_id="t1", attempt=2, _engine=engine)
    ctx.stream("assistant", "on the loop")
    await asyncio.to_thread(ctx.stream, "assistant", "from a thread")
    await asyncio.sleep(0.01)  # the handed-over call runs on the loop's next turn
    assert seen == [("t1", 2, "assistant", "on the loop", True), ("t1", 2, "assistant", "from a thread", True)]
    Context(run_id="r", objective="o", workspace=None).stream("assistant", "nobody")  # no engine: no-op


def test_litellm_streams_a_script_without_the_client_too():
    """Direct ``litellm.completion(stream=True)`` (the sync path) streams a script as well."""
    litellm = litellm_module()
    register_script("direct", [{"reply": {"content": "a b c d e f", "tool_calls": [
        {"name": "write_file", "arguments": {"path": "x"}}]}}])
    chunks = list(litellm.completion(model="scripted/direct", messages=ask(), stream=True))
    texts = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert texts == ["a b c d ", "e f"]
    message = litellm.stream_chunk_builder(chunks).choices[0].message
    assert message.content == "a b c d e f"
    assert [(c.function.name, c.function.arguments) for c in message.tool_calls] == [
        ("write_file", '{"path": "x"}')]
