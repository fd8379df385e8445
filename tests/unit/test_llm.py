"""The LLM client through litellm with the offline scripted provider: rules, replies in order,
errors, token counts, llm_calls rows in a real DuckDB store, budgets, retries and limits."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import agentorch_nb as ao
from agentorch_nb.llm import (
    LLM,
    BudgetExceeded,
    LLMCallFailed,
    Models,
    RateLimiter,
    ScriptError,
    get_script,
    litellm_module,
    load_env_file,
    load_script,
    register_script,
)
from agentorch_nb.store import Store

RUN = "run-1"


def ask(text: str = "go") -> list[dict]:
    return [{"role": "system", "content": "You are a test."}, {"role": "user", "content": text}]


def llm_for(script: str, store=None, limiter=None, **models) -> LLM:
    """An LLM whose every role uses scripted/<script>; quick retries, a private limiter."""
    settings = {"worker_model": f"scripted/{script}", "backoff_base": 0.0, **models}
    return LLM(Models(**settings), store=store, run_id=RUN if store else None,
               limiter=limiter or RateLimiter(max_concurrent=8))


@pytest.fixture
def store(tmp_path):
    s = Store.open(tmp_path / "llm.duckdb", flush_interval=0.01)
    yield s
    s.close()


def llm_rows(store: Store) -> list[dict]:
    store.flush_sync(timeout=10)
    return store.rows("select * from llm_calls order by ts")


# ----------------------------------------------------------------- matching
TEAM = [
    {"role": "director", "reply": {"content": "plan"}},
    {"role": "worker", "profile": "code", "title": "(?i)parser", "reply": {"content": "code parser"}},
    {"role": "worker", "profile": ["code", "test"], "reply": {"content": "code or test"}},
    {"role": "worker", "attempt": [2, 3], "reply": {"content": "second try"}},
    {"role": "worker", "last_message": r"tests? failed", "reply": {"content": "fixing"}},
    {"role": ["worker", "merger"], "reply": {"content": "generic"}},
]


async def test_rules_match_on_role_profile_title_attempt_and_last_message():
    register_script("team", TEAM)
    llm = llm_for("team")

    async def said(**kw) -> str:
        kw.setdefault("messages", ask())
        return (await llm.complete(**kw)).content

    assert await said(role="director") == "plan"
    assert await said(role="worker", profile="code", title="Write the Parser", task_id="t1") == "code parser"
    assert await said(role="worker", profile="code", title="Write docs", task_id="t2") == "code or test"
    assert await said(role="worker", profile=ao.Profile.TEST, task_id="t3") == "code or test"
    assert await said(role="worker", profile="write", attempt=2, task_id="t4") == "second try"
    assert await said(role="worker", attempt=1, messages=ask("3 tests failed")) == "fixing"
    assert await said(role="worker", attempt=1, task_id="t5") == "generic"
    assert await said(role="merger") == "generic"


async def test_replies_are_consumed_in_order_within_one_conversation():
    register_script("seq", [
        {"role": "worker", "replies": ["one", "two"]},
        {"role": "worker", "reply": "fallback"},
    ])
    llm = llm_for("seq")
    got = [(await llm.complete(role="worker", messages=ask(), task_id="t1", attempt=1)).content
           for _ in range(3)]
    assert got == ["one", "two", "fallback"]  # a used-up rule lets the next rule answer
    # Another attempt of the same task is another conversation: it starts again.
    again = await llm.complete(role="worker", messages=ask(), task_id="t1", attempt=2)
    assert again.content == "one"
    other_task = await llm.complete(role="worker", messages=ask(), task_id="t2", attempt=1)
    assert other_task.content == "one"


async def test_no_matching_rule_names_role_task_and_last_message(store):
    register_script("narrow", [{"role": "worker", "replies": ["only once"]}])
    llm = llm_for("narrow", store=store)
    with pytest.raises(ScriptError) as err:
        await llm.complete(role="director", messages=ask("Plan the CLI"), task_id="t9", attempt=1)
    msg = str(err.value)
    assert "'director'" in msg and "'t9'" in msg and "Plan the CLI" in msg and "catch-all" in msg

    await llm.complete(role="worker", messages=ask(), task_id="t1", attempt=1)
    with pytest.raises(ScriptError, match="used up"):
        await llm.complete(role="worker", messages=ask(), task_id="t1", attempt=1)
    rows = llm_rows(store)
    assert [r["role"] for r in rows] == ["director", "worker", "worker"]  # failed calls too
    assert "no rule for role 'director'" in rows[0]["error"] and rows[1]["error"] is None


async def test_tool_calls_tokens_and_llm_calls_rows(store):
    register_script("tools", [
        {"role": "worker", "replies": [
            {"content": "writing", "tool_calls": [
                {"name": "write_file", "arguments": {"path": "a.py", "content": "x = 1"}},
                {"name": "run", "arguments": "{not json"},
            ]},
            {"content": "done", "tokens_in": 1000, "tokens_out": 250},
        ]},
    ])
    llm = llm_for("tools", store=store)
    tools = [{"type": "function", "function": {"name": "write_file", "parameters": {"type": "object"}}}]
    messages = ask("x" * 400)
    first = await llm.complete(role="worker", messages=messages, tools=tools, task_id="t1", attempt=1,
                               profile="code")
    (cid, name, args), bad = first.tool_calls
    assert (name, args) == ("write_file", {"path": "a.py", "content": "x = 1"}) and cid
    assert bad.name == "run" and bad.arguments == {} and bad.raw_arguments == "{not json"
    assert "not valid JSON" in bad.error and first.bad_tool_calls == [bad]
    assert first.message()["tool_calls"][1]["function"]["arguments"] == "{not json"
    chars = sum(len(m["content"]) for m in messages) + len(json.dumps(tools))
    assert first.tokens_in == chars // 4 and first.tokens_out > 0
    assert first.cost_usd == 0.0 and first.model == "scripted/tools"

    second = await llm.complete(role="worker", messages=ask(), task_id="t1", attempt=1, profile="code")
    assert (second.content, second.tokens_in, second.tokens_out) == ("done", 1000, 250)
    assert llm.spent_tokens == first.tokens_in + first.tokens_out + 1250

    rows = llm_rows(store)
    assert len(rows) == 2
    assert rows[1] | {"ts": None, "latency_ms": None} == {
        "run_id": RUN, "task_id": "t1", "attempt": 1, "role": "worker", "ts": None,
        "model": "scripted/tools", "tokens_in": 1000, "tokens_out": 250, "cost_usd": 0.0,
        "latency_ms": None, "error": None,
    }
    assert all(r["latency_ms"] >= 0 for r in rows)


async def test_budget_in_tokens_stops_further_calls_before_spending(store):
    register_script("spend", [{"role": "worker", "reply": {"content": "ok", "tokens_in": 60, "tokens_out": 0}}])
    llm = llm_for("spend", store=store, budget_tokens=100)
    await llm.complete(role="worker", messages=ask())
    await llm.complete(role="worker", messages=ask())  # 120 >= 100: crossed now
    with pytest.raises(BudgetExceeded, match="120 of 100 tokens") as err:
        await llm.complete(role="worker", messages=ask())
    assert isinstance(err.value, ao.AgentorchError) and err.value.spent_tokens == 120
    assert len(llm_rows(store)) == 2  # the refused call never reached a model


# ------------------------------------------------------------- retries
async def test_scripted_errors_are_retried_and_then_surface_as_llm_call_failed(store):
    register_script("flaky", [
        {"role": "worker", "title": "recovers", "replies": [
            {"error": {"status": 429, "retry_after": 0.2}}, {"error": {"status": 503}}, "fine"]},
        {"role": "worker", "title": "hangs", "reply": {"content": "late", "delay": 5}},
        {"role": "worker", "title": "refused", "reply": {"error": {"status": 400, "message": "bad"}}},
    ])
    llm = llm_for("flaky", store=store, max_retries=2, call_timeout=0.2)
    t0 = time.monotonic()
    reply = await llm.complete(role="worker", messages=ask(), title="recovers", task_id="a")
    assert reply.content == "fine" and reply.tries == 3
    assert time.monotonic() - t0 >= 0.2  # Retry-After was honoured

    with pytest.raises(LLMCallFailed, match="failed 3 times") as err:
        await llm.complete(role="worker", messages=ask(), title="hangs", task_id="b")
    assert err.value.retryable and err.value.attempts == 3 and "timeout" in err.value.last_error

    with pytest.raises(LLMCallFailed, match="not retried") as err:
        await llm.complete(role="worker", messages=ask(), title="refused", task_id="c")
    assert not err.value.retryable and err.value.attempts == 1

    rows = llm_rows(store)
    by_task = {t: [r["error"] for r in rows if r["task_id"] == t] for t in "abc"}
    assert len(by_task["a"]) == 3 and "RateLimitError" in by_task["a"][0]
    assert "503" in by_task["a"][1] and by_task["a"][2] is None
    assert len(by_task["b"]) == 3 and all("timeout" in e for e in by_task["b"])
    assert len(by_task["c"]) == 1 and "400" in by_task["c"][0]


# --------------------------------------------------------------- limits
async def test_max_concurrent_calls_bound_calls_in_flight():
    register_script("slow", [{"reply": {"content": "ok", "delay": 0.1}}])
    limiter = RateLimiter(max_concurrent=2)
    llm = llm_for("slow", limiter=limiter, max_concurrent_calls=2)
    peak = 0

    async def watch():
        nonlocal peak
        while True:
            peak = max(peak, limiter.in_flight)
            await asyncio.sleep(0.005)

    watcher = asyncio.create_task(watch())
    t0 = time.monotonic()
    await asyncio.gather(*(llm.complete(role="worker", messages=ask()) for _ in range(6)))
    watcher.cancel()
    assert peak == 2 and time.monotonic() - t0 >= 0.3 and limiter.in_flight == 0


async def test_requests_and_tokens_per_minute_per_model():
    register_script("fast", [{"reply": {"content": "ok", "tokens_in": 40, "tokens_out": 10}}])
    limiter = RateLimiter(window=0.3)
    llm = llm_for("fast", limiter=limiter, rate_limits={"scripted/fast": {"rpm": 2}})
    t0 = time.monotonic()
    for _ in range(3):
        await llm.complete(role="worker", messages=ask())
    assert time.monotonic() - t0 >= 0.3  # the third waited for the window

    limiter = RateLimiter(window=0.3)
    llm = llm_for("fast", limiter=limiter, rate_limits={"*": {"tpm": 60}})
    t0 = time.monotonic()
    await llm.complete(role="worker", messages=ask())  # 50 tokens used
    await llm.complete(role="worker", messages=ask("y" * 100))  # 50 + estimated 29 > 60: waits
    assert time.monotonic() - t0 >= 0.3


async def test_the_limiter_is_shared_across_event_loops_and_survives_cancellation():
    limiter = RateLimiter(max_concurrent=1)
    held, release = threading.Event(), threading.Event()

    def other_loop():
        async def hold():
            async with limiter.slot("m"):
                held.set()
                await asyncio.to_thread(release.wait)
        asyncio.run(hold())

    thread = threading.Thread(target=other_loop)
    thread.start()
    await asyncio.to_thread(held.wait)

    async def take():
        async with limiter.slot("m"):
            return True

    waiting = asyncio.create_task(take())
    await asyncio.sleep(0.05)
    assert not waiting.done()  # the slot is held by the other thread's loop
    cancelled = asyncio.create_task(take())
    await asyncio.sleep(0.01)
    cancelled.cancel()
    release.set()
    assert await asyncio.wait_for(waiting, 2) is True
    thread.join()
    assert limiter.in_flight == 0


# ------------------------------------------------------ scripts and settings
def test_scripts_load_from_json_yaml_and_model_paths(tmp_path):
    rules = [{"role": "worker", "reply": {"content": "from file"}}]
    (tmp_path / "a.json").write_text(json.dumps({"rules": rules}))
    (tmp_path / "b.yaml").write_text("rules:\n  - role: worker\n    replies:\n      - content: yaml\n")
    assert load_script(tmp_path / "a.json").name == "a" and get_script("a").rules[0].role == {"worker"}
    assert load_script(tmp_path / "b.yaml", name="bee") is get_script("bee")
    path = str(tmp_path / "a.json")
    assert get_script(path).rules[0].replies == [{"content": "from file"}]
    with pytest.raises(ScriptError, match="register_script"):
        get_script("nope")
    with pytest.raises(ScriptError, match="rule 1: unknown keys \\['rol'\\]"):
        register_script("typo", [{"rol": "worker", "reply": "x"}])
    with pytest.raises(ScriptError, match="not a valid regular expression"):
        register_script("regex", [{"title": "(", "reply": "x"}])


async def test_a_script_path_works_as_a_model_name(tmp_path):
    path = tmp_path / "demo.json"
    path.write_text(json.dumps([{"role": "worker", "reply": "by path"}]))
    llm = llm_for(str(path))
    assert (await llm.complete(role="worker", messages=ask())).content == "by path"


def test_models_fall_back_to_worker_model_and_redact_keys(monkeypatch):
    m = Models(worker_model="w", tester_model="t", strategist_model="s",
               temperatures={"strategist": 0.0, "code": 0.7},
               endpoints={"w": {"api_base": "http://x/v1", "api_key_env": "AO_TEST_KEY"},
                          "s": {"api_key": "secret"}})
    assert m.model_for("worker", "test_architect") == "t"
    assert m.model_for("worker", "code") == m.model_for("planner") == m.model_for("merger") == "w"
    assert m.model_for("strategist") == "s"
    assert (m.temperature_for("strategist"), m.temperature_for("worker", "code"),
            m.temperature_for("worker")) == (0.0, 0.7, 0.2)
    with pytest.raises(ao.InvalidInput, match="AO_TEST_KEY"):
        m.endpoint_for("w")
    monkeypatch.setenv("AO_TEST_KEY", "k")
    assert m.endpoint_for("w") == {"api_base": "http://x/v1", "api_key": "k"}
    assert m.to_dict()["endpoints"]["s"] == {"api_key": "***"}
    assert Models.from_dict(m.to_dict() | {"unknown": 1}).tester_model == "t"
    with pytest.raises(ao.InvalidInput, match="unknown LLM role"):
        m.model_for("boss")
    with pytest.raises(ao.InvalidInput, match="rpm"):
        Models(rate_limits={"w": {"rps": 3}})


def test_env_file_is_read_without_overriding(tmp_path, monkeypatch):
    (tmp_path / ".env").write_text("AO_T1=from_file\nexport AO_T2='quoted value'\n# AO_T3=no\n")
    monkeypatch.setenv("AO_T1", "from_env")
    monkeypatch.delenv("AO_T2", raising=False)
    loaded = load_env_file(tmp_path)
    assert loaded == {"AO_T2": "quoted value"} and os.environ["AO_T1"] == "from_env"
    monkeypatch.delenv("AO_T2")  # undo what load_env_file set


def test_env_file_quotes_and_comments_are_read_as_dotenv_does(tmp_path, monkeypatch):
    (tmp_path / ".env").write_text("AO_T4='secret value' # my key\nAO_T5=\"a # b\"\n"
                                   "AO_T6=plain # note\n")
    for name in ("AO_T4", "AO_T5", "AO_T6"):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)  # absent now, removed again when the test ends
    assert load_env_file(tmp_path) == {"AO_T4": "secret value", "AO_T5": "a # b", "AO_T6": "plain"}
    assert os.environ["AO_T4"] == "secret value"


def test_litellm_runs_offline_with_the_local_cost_map():
    litellm = litellm_module()
    from litellm.litellm_core_utils.get_model_cost_map import get_model_cost_map_source_info

    info = get_model_cost_map_source_info()
    assert os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] == "True"
    assert info["source"] == "local" and info["is_env_forced"], info
    assert litellm.callbacks == [] and litellm.success_callback == [] and litellm.suppress_debug_info
    assert any(p["provider"] == "scripted" for p in litellm.custom_provider_map)


def test_importing_the_package_does_not_import_litellm():
    code = "import sys, agentorch_nb, agentorch_nb.llm; print('litellm' in sys.modules)"
    root = Path(ao.__file__).resolve().parent.parent  # this checkout, whatever is installed
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=root, env={**os.environ, "PYTHONPATH": str(root)})
    assert out.stdout.strip() == "False"


QUIET_EXIT = '''
import asyncio, sys
from agentorch_nb import _loop
from agentorch_nb.llm import LLM, Models, litellm_module, register_script

register_script("quiet", [{"reply": "a few words to stream"}])

async def calls():
    llm = LLM(Models(worker_model="scripted/quiet"))
    ask = [{"role": "user", "content": "x"}]
    await llm.complete(role="worker", messages=ask)
    await llm.complete(role="worker", messages=ask, on_chunk=lambda text: None)

# Calls on several loops, as a test suite or a script beside a kernel's runs makes them.
asyncio.run(calls())
asyncio.run_coroutine_threadsafe(calls(), _loop.background_loop()).result()
loop = asyncio.new_event_loop()
loop.run_until_complete(calls())
loop.close()

# A callback someone sets still gets every success log.
from litellm.integrations.custom_logger import CustomLogger

class Seen(CustomLogger):
    async def async_log_success_event(self, kwargs, response_obj, start_time, end_time):
        seen.set()

async def logged():
    global seen
    seen = asyncio.Event()
    litellm_module().callbacks = [Seen()]
    await LLM(Models(worker_model="scripted/quiet")).complete(
        role="worker", messages=[{"role": "user", "content": "x"}])
    await asyncio.wait_for(seen.wait(), 30)
    litellm_module().callbacks = []

asyncio.run(logged())
print("logged")
'''


@pytest.mark.slow  # a fresh interpreter imports litellm
def test_calls_on_several_loops_leave_no_pending_task_behind():
    root = Path(ao.__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "-c", QUIET_EXIT], capture_output=True, text=True,
                         cwd=root, env={**os.environ, "PYTHONPATH": str(root)}, timeout=240)
    assert out.returncode == 0 and out.stdout.strip() == "logged", out.stderr
    assert "Task was destroyed" not in out.stderr and "never awaited" not in out.stderr, out.stderr
