"""The LLM client against a real HTTP server speaking OpenAI's chat-completions API.

The server runs in this process on 127.0.0.1 (stdlib ``http.server`` in a thread) and
answers each request with the next planned action: a completion, a 429 with Retry-After,
a 500, an answer slower than the client's timeout, or tool calls with broken JSON. A request
with ``"stream": true`` is answered with Server-Sent Events as OpenAI sends them (content
pieces, tool-call arguments split over chunks, a usage chunk, ``[DONE]``), optionally paced
or cut off midway. litellm reaches it as ``openai/<model>`` with ``api_base``, so the real
HTTP path (openai SDK, httpx, litellm's exception mapping) runs; nothing leaves the machine.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import agentorch_nb
from agentorch_nb.llm import (LLM, BudgetExceeded, CredentialsRejected, LLMCallFailed, Models,
                              RateLimiter, litellm_module)
from agentorch_nb.store import Store

ROOT = Path(agentorch_nb.__file__).resolve().parent.parent

RUN = "run-http"
TOOLS = [{"type": "function", "function": {
    "name": "write_file", "description": "Write a file",
    "parameters": {"type": "object", "properties": {"path": {"type": "string"}}}}}]


@dataclass
class FakeOpenAI:
    """Planned answers, consumed one per request; then plain completions."""

    plan: list[dict] = field(default_factory=list)
    requests: list[dict] = field(default_factory=list)  # {"at", "body", "headers"}
    sent: list[tuple[float, dict]] = field(default_factory=list)  # streamed events, when written
    lock: threading.Lock = field(default_factory=threading.Lock)
    port: int = 0

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def next_action(self, body: dict, headers: dict) -> dict:
        with self.lock:
            self.requests.append({"at": time.monotonic(), "body": body, "headers": headers})
            return self.plan.pop(0) if self.plan else {"content": "default"}


def completion(body: dict, action: dict) -> dict:
    message: dict = {"role": "assistant", "content": action.get("content")}
    if action.get("tool_calls"):
        message["tool_calls"] = [
            {"id": f"call_{i}", "type": "function",
             "function": {"name": c["name"], "arguments": c["arguments"] if isinstance(c["arguments"], str)
                          else json.dumps(c["arguments"])}}
            for i, c in enumerate(action["tool_calls"])
        ]
    return {
        "id": "chatcmpl-test", "object": "chat.completion", "created": int(time.time()),
        "model": body.get("model"),
        "choices": [{"index": 0, "message": message,
                     "finish_reason": "tool_calls" if action.get("tool_calls") else "stop"}],
        "usage": {"prompt_tokens": action.get("prompt_tokens", 100),
                  "completion_tokens": action.get("completion_tokens", 20),
                  "total_tokens": action.get("prompt_tokens", 100) + action.get("completion_tokens", 20)},
    }


def stream_events(body: dict, action: dict) -> list[dict]:
    """A completion as OpenAI streams it. ``pieces`` are the content deltas (default: the
    content in one); each tool call's arguments come in three parts after its id and name."""
    head = {"id": "chatcmpl-test", "object": "chat.completion.chunk", "created": int(time.time()),
            "model": body.get("model")}

    def delta(d: dict, finish: str | None = None) -> dict:
        return {**head, "choices": [{"index": 0, "delta": d, "finish_reason": finish}]}

    pieces = action.get("pieces", [action["content"]] if action.get("content") else [])
    events = [delta({"role": "assistant", "content": ""})]
    events += [delta({"content": p}) for p in pieces]
    for i, c in enumerate(action.get("tool_calls") or []):
        args = c["arguments"] if isinstance(c["arguments"], str) else json.dumps(c["arguments"])
        third = max(1, len(args) // 3)
        events.append(delta({"tool_calls": [{"index": i, "id": f"call_{i}", "type": "function",
                                             "function": {"name": c["name"], "arguments": ""}}]}))
        events += [delta({"tool_calls": [{"index": i, "function": {"arguments": part}}]})
                   for part in (args[:third], args[third:2 * third], args[2 * third:])]
    events.append(delta({}, "tool_calls" if action.get("tool_calls") else "stop"))
    if (body.get("stream_options") or {}).get("include_usage"):
        prompt, out = action.get("prompt_tokens", 100), action.get("completion_tokens", 20)
        events.append({**head, "choices": [], "usage": {
            "prompt_tokens": prompt, "completion_tokens": out, "total_tokens": prompt + out}})
    return events


def make_handler(fake: FakeOpenAI):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # keep test output clean
            pass

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
            action = fake.next_action(body, {k.lower(): v for k, v in self.headers.items()})
            try:
                if action.get("sleep"):
                    time.sleep(action["sleep"])
                status = action.get("status", 200)
                if status == 200 and body.get("stream"):
                    return self.stream(body, action)
                if status != 200:
                    payload = {"error": {"message": action.get("message", f"injected {status}"),
                                         "type": "server_error", "code": str(status)}}
                    extra = {"Retry-After": str(action["retry_after"])} if "retry_after" in action else {}
                else:
                    payload, extra = completion(body, action), {}
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in extra.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
                pass

        def stream(self, body: dict, action: dict) -> None:
            """Server-Sent Events, ``pace`` seconds apart; ``drop_after=n`` sends n content
            pieces and hangs up in the middle of the body (it promised more)."""
            events = stream_events(body, action)
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            if "drop_after" in action:
                events = events[:1 + action["drop_after"]]
                self.send_header("Content-Length", "1000000")
            self.end_headers()
            for event in events:
                self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
                self.wfile.flush()
                fake.sent.append((time.monotonic(), event))
                time.sleep(action.get("pace", 0))
            if "drop_after" not in action:
                self.wfile.write(b"data: [DONE]\n\n")
            self.close_connection = True

    return Handler


@pytest.fixture
def fake():
    f = FakeOpenAI()
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(f))
    server.daemon_threads = True
    server.block_on_close = False
    f.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f
    server.shutdown()
    server.server_close()


@pytest.fixture
def store(tmp_path):
    s = Store.open(tmp_path / "http.duckdb", flush_interval=0.01)
    yield s
    s.close()


def client(fake: FakeOpenAI, store: Store, model: str = "openai/test-model", **settings) -> LLM:
    models = Models(worker_model=model, endpoints={model: {"api_base": fake.api_base, "api_key": "sk-dummy"}},
                    backoff_base=0.01, **settings)
    return LLM(models, store=store, run_id=RUN, limiter=RateLimiter())


def rows(store: Store) -> list[dict]:
    store.flush_sync(timeout=10)
    return store.rows("select * from llm_calls order by ts")


def ask(text: str = "write a.py") -> list[dict]:
    return [{"role": "user", "content": text}]


async def test_tool_calls_usage_and_cost_from_the_local_cost_map(fake, store):
    fake.plan = [{"content": "on it", "prompt_tokens": 1000, "completion_tokens": 500,
                  "tool_calls": [{"name": "write_file", "arguments": {"path": "a.py"}}]}]
    llm = client(fake, store, model="openai/gpt-4o-mini")
    reply = await llm.complete(role="worker", messages=ask(), tools=TOOLS, task_id="t1", attempt=1)
    assert reply.content == "on it" and [tuple(c) for c in reply.tool_calls] == [
        ("call_0", "write_file", {"path": "a.py"})]
    assert (reply.tokens_in, reply.tokens_out) == (1000, 500)
    cin, cout = litellm_module().cost_per_token(model="gpt-4o-mini", prompt_tokens=1000,
                                                completion_tokens=500)
    assert reply.cost_usd == pytest.approx(cin + cout) and reply.cost_usd > 0

    (request,) = fake.requests
    body = request["body"]
    assert body["model"] == "gpt-4o-mini" and body["tools"] == TOOLS and body["temperature"] == 0.2
    assert "metadata" not in body  # scripted-provider bookkeeping never reaches a real provider
    assert request["headers"]["authorization"] == "Bearer sk-dummy"
    (row,) = rows(store)
    assert (row["tokens_in"], row["tokens_out"], row["error"]) == (1000, 500, None)
    assert row["cost_usd"] == pytest.approx(reply.cost_usd) and row["task_id"] == "t1"


async def test_429_waits_for_retry_after(fake, store):
    fake.plan = [{"status": 429, "retry_after": 1}, {"content": "after the wait"}]
    llm = client(fake, store)
    reply = await llm.complete(role="worker", messages=ask(), task_id="t1", attempt=1)
    assert reply.content == "after the wait" and reply.tries == 2
    first, second = fake.requests
    assert second["at"] - first["at"] >= 1.0  # backoff alone would have been ~0.01 s
    r429, ok = rows(store)
    assert "429" in r429["error"] and "RateLimitError" in r429["error"] and ok["error"] is None
    assert r429["tokens_in"] == 0 and ok["tokens_in"] == 100


async def test_500_is_retried_then_succeeds(fake, store):
    fake.plan = [{"status": 500}, {"status": 500}, {"content": "third time"}]
    llm = client(fake, store, max_retries=2)
    reply = await llm.complete(role="director", messages=ask())
    assert reply.content == "third time" and reply.tries == 3 and len(fake.requests) == 3
    errors = [r["error"] for r in rows(store)]
    assert len(errors) == 3 and all("500" in e for e in errors[:2]) and errors[2] is None


async def test_timeouts_are_retried_then_surface_as_llm_call_failed(fake, store):
    fake.plan = [{"sleep": 1.5, "content": "too late"}] * 3
    llm = client(fake, store, max_retries=2, call_timeout=0.3)
    t0 = time.monotonic()
    with pytest.raises(LLMCallFailed, match="failed 3 times") as err:
        await llm.complete(role="worker", messages=ask(), task_id="t2", attempt=1)
    assert err.value.retryable and err.value.attempts == 3 and "imeout" in err.value.last_error
    assert time.monotonic() - t0 < 2.5  # each try gave up at its timeout, not the server's pace
    assert len(fake.requests) == 3  # litellm and the openai SDK did not retry on their own
    errs = [r["error"] for r in rows(store)]
    assert len(errs) == 3 and all("imeout" in e for e in errs)


async def test_malformed_tool_call_arguments_come_back_flagged(fake, store):
    fake.plan = [{"content": None, "tool_calls": [
        {"name": "write_file", "arguments": '{"path": "a.py", "content": "unterminated'},
        {"name": "write_file", "arguments": '["not", "an", "object"]'},
        {"name": "write_file", "arguments": '{"path": "b.py"}'},
    ]}]
    llm = client(fake, store)
    reply = await llm.complete(role="worker", messages=ask(), tools=TOOLS)
    broken, listed, good = reply.tool_calls
    assert broken.arguments == {} and broken.raw_arguments.startswith('{"path": "a.py"')
    assert "not valid JSON" in broken.error and "Call 'write_file' again" in broken.error
    assert "must be a JSON object" in listed.error
    assert good.error is None and good.arguments == {"path": "b.py"}
    assert reply.bad_tool_calls == [broken, listed]
    (row,) = rows(store)
    assert row["error"] is None  # the call itself succeeded; the worker answers the bad calls


async def test_client_errors_are_not_retried_and_usd_budget_stops(fake, store):
    fake.plan = [{"status": 401, "message": "invalid api key"}]
    llm = client(fake, store)
    with pytest.raises(LLMCallFailed, match="not retried") as err:
        await llm.complete(role="worker", messages=ask())
    assert not err.value.retryable and len(fake.requests) == 1

    llm = client(fake, store, model="openai/gpt-4o-mini", budget_usd=0.0001)
    fake.plan = [{"content": "pricey", "prompt_tokens": 10_000, "completion_tokens": 1000}]
    await llm.complete(role="worker", messages=ask())
    assert llm.spent_usd > 0.0001
    with pytest.raises(BudgetExceeded, match="budget is spent"):
        await llm.complete(role="worker", messages=ask())
    assert len(fake.requests) == 2
    assert [r["error"] is None for r in rows(store)] == [False, True]


# ------------------------------------------------------------ credentials
MISSING = ("Missing credentials. Please pass an `api_key`, `workload_identity`, or set the "
           "`OPENAI_API_KEY` environment variable.")


@pytest.mark.parametrize("status, message", [(401, "Incorrect API key provided: sk-dummy"),
                                             (500, MISSING)])
async def test_a_rejected_or_missing_key_is_not_retried_whatever_its_status(fake, store, status,
                                                                           message):
    fake.plan = [{"status": status, "message": message}, {"content": "never asked for"}]
    llm = client(fake, store, max_retries=4)
    with pytest.raises(CredentialsRejected) as err:
        await llm.complete(role="director", messages=ask(), task_id="t1", attempt=1)
    text = str(err.value)
    assert text.startswith("openai/test-model could not be called for the director: its "
                           "credentials are missing or refused (") and str(status) in text
    assert "This is not retried: the key given in Models.endpoints['openai/test-model']" \
        "['api_key'] was refused" in text
    assert "Retry later" not in text and not err.value.retryable and err.value.attempts == 1
    assert len(fake.requests) == 1
    (row,) = rows(store)  # exactly one llm_calls row
    assert row["error"].startswith("try 1: ") and str(status) in row["error"]


async def test_a_run_takes_its_key_from_dotenv_and_fails_on_a_rejected_key_in_one_line(
        fake, repo, tmp_path, monkeypatch, caplog):
    """The key is only in the workspace's .env: preflight passes and the calls carry it. The
    server rejects it: the run fails at the Director's first call, with no retry, no "Retry
    later", and one log line."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AO_FAKE_KEY", "unset at the end")
    monkeypatch.delenv("AO_FAKE_KEY")
    (repo / ".env").write_text("AO_FAKE_KEY=sk-from-dotenv\n")
    models = Models(worker_model="openai/test-model", backoff_base=0.01, endpoints={
        "openai/test-model": {"api_base": fake.api_base, "api_key_env": "AO_FAKE_KEY"}})
    fake.plan = [{"status": 401, "message": "Incorrect API key provided"}]
    caplog.set_level(logging.INFO, logger="agentorch_nb")
    orch = agentorch_nb.Orchestrator(repo, config=agentorch_nb.Config(models=models,
                                                                       flush_interval=0.01))
    run = orch.start("Add a README")
    assert await run.wait(60) == agentorch_nb.RunStatus.FAILED
    (request,) = fake.requests
    assert request["headers"]["authorization"] == "Bearer sk-from-dotenv"
    reason = run.summary()["error"].split("\n\nTraceback")[0]
    assert reason.startswith("CredentialsRejected: openai/test-model could not be called for the "
                             "director: its credentials are missing or refused (")
    assert "the key in AO_FAKE_KEY was refused" in reason and "Retry later" not in reason
    await orch.store.flush()
    assert len(orch.sql("select * from llm_calls where run_id = ?", [run.id])) == 1
    (line,) = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert line.getMessage().startswith(f"run {run.id} failed: CredentialsRejected: ") \
        and line.exc_info is None


# -------------------------------------------------------------- streaming
class Watcher:
    """An on_chunk callback that notes each piece and when it came."""

    def __init__(self) -> None:
        self.got: list[tuple[float, str]] = []

    def __call__(self, text: str) -> None:
        self.got.append((time.monotonic(), text))

    @property
    def texts(self) -> list[str]:
        return [t for _, t in self.got]


async def test_a_streamed_reply_arrives_piece_by_piece_and_assembles(fake, store):
    pieces = ["I will ", "write ", "a.py ", "now."]
    fake.plan = [{"pieces": pieces, "pace": 0.05, "prompt_tokens": 1000, "completion_tokens": 500,
                  "tool_calls": [{"name": "write_file", "arguments": {"path": "a.py", "content": "x = 1\n"}},
                                 {"name": "write_file", "arguments": {"path": "b.py"}}]}]
    llm = client(fake, store, model="openai/gpt-4o-mini")
    watch = Watcher()
    reply = await llm.complete(role="worker", messages=ask(), tools=TOOLS, task_id="t1", attempt=1,
                               on_chunk=watch)
    done = time.monotonic()

    assert watch.texts == pieces and reply.content == "".join(pieces)
    # Each piece reached the watcher before the server had even written the last event.
    last_sent = fake.sent[-1][0]
    assert all(at < last_sent for at, _ in watch.got) and watch.got[-1][0] <= done
    assert [t for t, _ in watch.got] == sorted(t for t, _ in watch.got)
    assert [tuple(c) for c in reply.tool_calls] == [
        ("call_0", "write_file", {"path": "a.py", "content": "x = 1\n"}),
        ("call_1", "write_file", {"path": "b.py"})]
    assert not reply.bad_tool_calls
    assert (reply.tokens_in, reply.tokens_out) == (1000, 500)  # from the usage chunk
    cin, cout = litellm_module().cost_per_token(model="gpt-4o-mini", prompt_tokens=1000,
                                                completion_tokens=500)
    assert reply.cost_usd == pytest.approx(cin + cout)

    (request,) = fake.requests
    body = request["body"]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["tools"] == TOOLS and "metadata" not in body
    (row,) = rows(store)
    assert (row["tokens_in"], row["tokens_out"], row["error"], row["task_id"]) == (1000, 500, None, "t1")
    assert row["cost_usd"] == pytest.approx(reply.cost_usd)
    assert llm.spent_tokens == 1500


async def test_a_500_before_the_stream_is_retried_then_streams(fake, store):
    fake.plan = [{"status": 500}, {"pieces": ["second ", "time"]}]
    llm = client(fake, store)
    watch = Watcher()
    reply = await llm.complete(role="worker", messages=ask(), on_chunk=watch)
    assert reply.content == "second time" and reply.tries == 2 and watch.texts == ["second ", "time"]
    assert all(r["body"]["stream"] for r in fake.requests)
    failed, ok = rows(store)
    assert "500" in failed["error"] and failed["tokens_in"] == 0
    assert ok["error"] is None and (ok["tokens_in"], ok["tokens_out"]) == (100, 20)


async def test_a_stream_cut_off_midway_is_retried_and_the_watcher_sees_it_restart(fake, store):
    pieces = ["one ", "two ", "three"]
    fake.plan = [{"pieces": pieces, "drop_after": 2}, {"pieces": pieces}]
    llm = client(fake, store)
    watch = Watcher()
    reply = await llm.complete(role="worker", messages=ask(), on_chunk=watch)
    assert reply.content == "one two three" and reply.tries == 2
    assert watch.texts == ["one ", "two ", "one ", "two ", "three"]  # no marker: it starts again
    cut, ok = rows(store)
    assert cut["error"].startswith("try 1: ") and "onnection" in cut["error"]  # the hang-up
    assert cut["tokens_in"] == 0 and ok["error"] is None


async def test_the_call_timeout_bounds_the_whole_stream(fake, store):
    fake.plan = [{"pieces": ["slow ", "and ", "steady"], "pace": 0.4}]
    llm = client(fake, store, max_retries=0, call_timeout=0.6)
    watch = Watcher()
    with pytest.raises(LLMCallFailed, match="failed 1 times") as err:
        await llm.complete(role="worker", messages=ask(), on_chunk=watch)
    assert "imeout" in err.value.last_error and watch.texts[:1] == ["slow "]
    assert len(watch.texts) < 3
    (row,) = rows(store)
    assert "imeout" in row["error"]


@pytest.mark.slow  # a fresh interpreter that imports litellm: about 6 s
def test_no_connection_leaves_the_machine_but_loopback(tmp_path):
    """Import, set up litellm and make a scripted call with every non-loopback connect and
    DNS lookup refused (the guard does catch litellm's cost-map fetch without our setting)."""
    code = textwrap.dedent("""
        import asyncio, socket, sys
        blocked = []
        real_connect = socket.socket.connect
        def guard(self, address):
            if isinstance(address, tuple) and address[0] not in ("127.0.0.1", "::1", "localhost"):
                blocked.append(address)
                raise OSError("network blocked by test")
            return real_connect(self, address)
        socket.socket.connect = guard
        real_getaddrinfo = socket.getaddrinfo
        def guard_dns(host, *a, **k):
            if host not in ("127.0.0.1", "::1", "localhost", None):
                blocked.append(host)
                raise socket.gaierror("dns blocked by test")
            return real_getaddrinfo(host, *a, **k)
        socket.getaddrinfo = guard_dns

        from agentorch_nb.llm import LLM, Models, register_script
        register_script("offline", [{"reply": "ok"}])
        llm = LLM(Models(worker_model="scripted/offline"))
        reply = asyncio.run(llm.complete(role="worker", messages=[{"role": "user", "content": "hi"}]))
        import time; time.sleep(0.5)  # let any background thread of litellm try its luck
        from litellm.litellm_core_utils.get_model_cost_map import get_model_cost_map_source_info
        print(reply.content, get_model_cost_map_source_info()["source"], blocked)
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # this checkout, whatever is installed
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                         env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[-2] == "ok local []", out.stdout + out.stderr
