"""API keys a run's models use are secrets whatever their names: the variables named by
``api_key_env`` and the keys given literally never reach a tool's subprocess, and what a
tool's output carries of them is redacted, in the answer, the ``tool_calls`` row and the
stored conversation. Real subprocesses, a real git repository, a real DuckDB store."""

from __future__ import annotations

import json
import subprocess

import agentorch_nb as ao
from agentorch_nb.agents import LLMTeam
from agentorch_nb.llm import LLM, Models, register_script
from agentorch_nb.model import Profile
from agentorch_nb.store import Store
from agentorch_nb.tools import ToolEnv, call_tool
from agentorch_nb.tools.secrets import REDACTED

from tests.conftest import make_repo

# Shaped like no well-known key, so only their being the models' keys gets them redacted.
ENV_KEY = "plain-model-credential-4411"
LITERAL_KEY = "literal-model-credential-4422"


def models(var: str) -> Models:
    return Models(worker_model="scripted/secrets", endpoints={
        "scripted/secrets": {"api_key_env": var},
        "openai/gpt-4o-mini": {"api_base": "http://127.0.0.1:9/v1", "api_key": LITERAL_KEY}})


async def test_a_models_keys_stay_out_of_a_childs_environment_and_output(tmp_path, monkeypatch):
    monkeypatch.setenv("AO_MODEL_AUTH_1", ENV_KEY)  # a name no pattern calls secret
    monkeypatch.setenv("AO_SOME_SETTING_1", LITERAL_KEY)  # the literal key, under any name
    monkeypatch.setenv("AO_HARMLESS_1", "stays")
    LLM(models("AO_MODEL_AUTH_1"))  # a run's client: from here on, its keys are secrets
    root = make_repo(tmp_path / "wt")
    (root / "keys.txt").write_text(f"env={ENV_KEY}\nliteral={LITERAL_KEY}\n")
    store = Store.open(tmp_path / "store.duckdb", flush_interval=0.01)
    try:
        env = ToolEnv(root=root, profile=Profile.CODE, run_id="r1", task_id="t1", attempt=1,
                      store=store)
        shown = await call_tool("run_shell", {"command": "env"}, env=env)
        assert shown.ok and "AO_HARMLESS_1=stays" in shown.content
        assert "AO_MODEL_AUTH_1" not in shown.content and "AO_SOME_SETTING_1" not in shown.content
        assert ENV_KEY not in shown.content and LITERAL_KEY not in shown.content

        printed = await call_tool("run_shell", {"command": "cat keys.txt"}, env=env)
        assert f"env={REDACTED}" in printed.content and f"literal={REDACTED}" in printed.content
        store.flush_sync(timeout=10)
        rows = json.dumps(store.rows("select * from tool_calls"), default=str)
        assert REDACTED in rows and ENV_KEY not in rows and LITERAL_KEY not in rows
    finally:
        store.close()


def call(name, **arguments):
    return {"name": name, "arguments": arguments}


async def test_a_run_stores_no_key_its_worker_came_across(tmp_path, monkeypatch):
    monkeypatch.setenv("AO_MODEL_AUTH_2", ENV_KEY)
    repo = make_repo(tmp_path / "repo")
    (repo / "notes.txt").write_text(f"the staging key is {ENV_KEY}\n")
    subprocess.run(["git", "-C", str(repo), "add", "notes.txt"], check=True)
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@localhost",
                    "commit", "-q", "-m", "notes"], check=True)
    register_script("secrets", [
        {"role": "director", "last_message": "Review\\s+the task graph",
         "reply": {"tool_calls": [call("submit_review", add_dependencies=[])]}},
        {"role": "director", "reply": {"tool_calls": [call("submit_plan", components=[
            {"title": "all", "description": "everything"}])]}},
        {"role": "planner", "reply": {"tool_calls": [call("create_subtasks", tasks=[
            {"key": "a", "title": "Read the notes", "description": "d",
             "acceptance_criteria": ["read"], "profile": "code"}])]}},
        {"role": "worker", "replies": [
            {"tool_calls": [call("run_shell", command="cat notes.txt; env")]},
            {"tool_calls": [call("finish", summary="read the notes")]}]},
        {"role": "strategist", "reply": {"tool_calls": [call(
            "submit_verdict", approved=True, criteria=[{"criterion": "read", "met": True}])]}},
    ])
    m = models("AO_MODEL_AUTH_2")
    m.backoff_base = 0.01
    orch = ao.Orchestrator(repo, config=ao.Config(models=m, flush_interval=0.01),
                           agents=LLMTeam(checks=[]))
    run = orch.start("read the notes")
    assert await run.wait(60) == ao.RunStatus.COMPLETED, run.summary()
    await orch.store.flush()
    (shown,) = [r["content"] for r in orch.sql("select content from messages where role = 'tool'")
                .to_dict("records") if "staging key" in r["content"]]
    assert f"the staging key is {REDACTED}" in shown and "AO_MODEL_AUTH_2" not in shown
    stored = json.dumps(orch.sql("select * from messages").to_dict("records"), default=str)
    stored += json.dumps(orch.sql("select * from tool_calls").to_dict("records"), default=str)
    assert ENV_KEY not in stored and LITERAL_KEY not in stored
