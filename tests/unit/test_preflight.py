"""Preflight: a run whose models cannot be called is refused at start() and resume(), before
anything exists, with a message naming the roles, the models, the missing variables and the
fixes.

Real git repositories and DuckDB files; the only network is a refused connect on 127.0.0.1."""

from __future__ import annotations

import os
import socket
import subprocess

import pytest

import agentorch_nb as ao
from agentorch_nb.agents import LLMTeam, demo_models
from agentorch_nb.llm import check_models, register_script
from agentorch_nb.testing import Agents, TestDirector, TestStrategist, TestWorker

# Variables that would let a provider's model pass; none may leak in from the machine.
PROVIDER_KEYS = ("OPENAI_API_KEY", "OPENAI_ADMIN_KEY", "ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN",
                 "AO_TEST_MODEL_KEY", "OLLAMA_API_BASE")


@pytest.fixture(autouse=True)
def no_keys(monkeypatch, tmp_path):
    """No provider key in the environment, no .env in the current directory, and whatever a
    workspace's .env put into os.environ is gone after the test."""
    saved = dict(os.environ)
    for name in PROVIDER_KEYS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    yield
    os.environ.clear()
    os.environ.update(saved)


def refused_port() -> int:
    """A port on 127.0.0.1 where nothing listens (bound, then let go)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def refusal(repo, config: ao.Config | None = None) -> ao.ModelNotReady:
    """start() on ``repo`` with the LLM team is refused; nothing was created."""
    orch = ao.Orchestrator(repo, config=config)
    with pytest.raises(ao.ModelNotReady) as err:
        orch.start("Add a README")
    assert isinstance(err.value, ao.InvalidInput)
    assert orch.store.rows("select count(*) as n from runs")[0]["n"] == 0  # no run row
    assert orch.store.rows("select count(*) as n from events")[0]["n"] == 0
    assert not (repo / ".worktrees").exists()  # no worktree, no branch
    git = ["git", "-C", str(repo)]
    assert subprocess.run(git + ["worktree", "list"], capture_output=True, text=True,
                          check=True).stdout.count("\n") == 1
    assert subprocess.run(git + ["branch", "--list", "agentorch/*"], capture_output=True,
                          text=True, check=True).stdout == ""
    return err.value


FIXES = ("--model demo", "Config(models=agentorch_nb.agents.demo_models())",
         "Config(preflight=False) skips this check")


def test_no_openai_key_refuses_the_default_model_with_the_three_fixes(repo):
    err = refusal(repo)
    text = str(err)
    assert text.startswith("the run was not started: a model it needs cannot be called, so "
                           "nothing was created.")
    assert "- openai/gpt-4o-mini (used by every role): OPENAI_API_KEY is not set." in text
    assert "set OPENAI_API_KEY in the environment (export OPENAI_API_KEY=...)" in text
    assert f"add the line OPENAI_API_KEY=... to {repo / '.env'}" in text
    assert all(fix in text for fix in FIXES)
    (problem,) = err.problems
    assert problem.missing == ["OPENAI_API_KEY"] and problem.used_by == "every role"


def test_no_anthropic_key_names_the_one_role_that_uses_it(repo):
    register_script("pf-ok", [{"reply": "fine"}])
    models = ao.Models(worker_model="scripted/pf-ok", director_model="anthropic/claude-sonnet-4-5")
    text = str(refusal(repo, ao.Config(models=models)))
    assert ("- anthropic/claude-sonnet-4-5 (used by the director): ANTHROPIC_API_KEY is not set."
            in text)
    assert "export ANTHROPIC_API_KEY=..." in text and "scripted/pf-ok" not in text  # it passed


def test_a_key_named_by_api_key_env_but_unset(repo):
    models = ao.Models(endpoints={"openai/gpt-4o-mini": {"api_key_env": "AO_TEST_MODEL_KEY"}},
                       coder_model="scripted/demo")
    demo_models()  # registers scripted/demo
    text = str(refusal(repo, ao.Config(models=models)))
    assert ("- openai/gpt-4o-mini (used by every role but the coder): its key is read from "
            "AO_TEST_MODEL_KEY (Models.endpoints['openai/gpt-4o-mini']['api_key_env']), which "
            "is not set.") in text
    assert "export AO_TEST_MODEL_KEY=..." in text and "OPENAI_API_KEY" not in text


def test_an_unknown_provider_string(repo):
    text = str(refusal(repo, ao.Config(models=ao.Models(worker_model="gpt4-typo/turbo"))))
    assert ("- gpt4-typo/turbo (used by every role): litellm does not know its provider (LLM "
            "Provider NOT provided.") in text
    assert "fix: name the provider first, as litellm does: openai/gpt-4o-mini" in text


def test_an_api_base_that_refuses_connections(repo):
    port = refused_port()
    base = f"http://127.0.0.1:{port}/v1"
    models = ao.Models(worker_model="openai/local-llama",
                       endpoints={"openai/local-llama": {"api_base": base, "api_key": "sk-local"}})
    err = refusal(repo, ao.Config(models=models))
    assert (f"- openai/local-llama (used by every role): nothing answers at {base} "
            f"(127.0.0.1:{port}: connection refused).") in str(err)
    assert ("fix: start the server there, or correct "
            "Models.endpoints['openai/local-llama']['api_base']") in str(err)


def test_a_guardian_model_is_checked_only_when_the_guardian_is_on(repo):
    demo_models()
    models = ao.Models(worker_model="scripted/demo", guardian_model="nowhere/judge")
    assert [c.model for c in check_models(models)] == ["scripted/demo"]
    text = str(refusal(repo, ao.Config(models=models, enable_guardian=True)))
    assert "- nowhere/judge (used by the guardian): litellm does not know its provider" in text


def test_an_unknown_script_is_refused_and_the_demo_model_passes_offline(repo):
    text = str(refusal(repo, ao.Config(models=ao.Models(worker_model="scripted/no-such-script"))))
    assert "- scripted/no-such-script (used by every role): no script named 'no-such-script'" in text
    (demo,) = check_models(demo_models())
    assert demo.ok and demo.detail == "offline scripted model: no key, no network"


def test_keys_in_the_workspaces_env_file_pass(repo):
    (repo / ".env").write_text("OPENAI_API_KEY=sk-from-dotenv\nexport AO_TEST_MODEL_KEY='sk-2'\n")
    (default,) = check_models(ao.Models(), workspace=repo)
    assert default.ok and default.detail == "provider openai, keys found"
    named = ao.Models(worker_model="anthropic/claude-sonnet-4-5", endpoints={
        "anthropic/claude-sonnet-4-5": {"api_key_env": "AO_TEST_MODEL_KEY"}})
    (check,) = check_models(named, workspace=repo)
    assert check.ok and check.detail == "provider anthropic, key from AO_TEST_MODEL_KEY"
    assert os.environ["OPENAI_API_KEY"] == "sk-from-dotenv"  # as a run's LLM client reads it


def test_agents_that_call_no_model_check_nothing(repo):
    """The default model has no key here, yet deterministic agents run: they call no model."""
    agents = Agents(TestDirector([ao.TaskSpec("one")]), TestWorker(), TestStrategist())
    run = ao.Orchestrator(repo, agents=agents).start("x")
    assert run.wait_sync(60) == ao.RunStatus.COMPLETED


def local_model(base: str, **settings) -> ao.Models:
    return ao.Models(worker_model="openai/local-llama", max_retries=0, backoff_base=0.01, endpoints={
        "openai/local-llama": {"api_base": base, "api_key": "sk-literal"}}, **settings)


async def test_preflight_off_lets_the_run_start(repo):
    """Config(preflight=False), for a proxy that adds the keys: the run starts; here its calls
    then fail on the refused connection, a transient failure, so the advice is to retry."""
    models = local_model(f"http://127.0.0.1:{refused_port()}/v1")
    orch = ao.Orchestrator(repo, config=ao.Config(models=models, preflight=False,
                                                  flush_interval=0.01), agents=LLMTeam(checks=[]))
    run = orch.start("Add a README")
    assert await run.wait(60) == ao.RunStatus.FAILED
    error = run.summary()["error"]
    assert "Connection error" in error and "Retry later" in error


async def test_resume_is_checked_too(repo):
    """A server that accepts connections but never answers passes preflight; the run fails on
    its timeout. Its stored config keeps the literal key as "***": resume() without config=
    is refused, and with a config whose api_base refuses connections too; nothing moves."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # the kernel accepts connections; nobody ever answers them
        base = f"http://127.0.0.1:{silent.getsockname()[1]}/v1"
        orch = ao.Orchestrator(repo, config=ao.Config(
            models=local_model(base, call_timeout=0.5), flush_interval=0.01),
            agents=LLMTeam(checks=[]))
        run = orch.start("Add a README")
        assert await run.wait(60) == ao.RunStatus.FAILED
    await orch.store.flush()
    events = len(run.events())

    with pytest.raises(ao.ModelNotReady) as err:
        orch.resume(run.id)
    assert str(err.value).startswith("the run was not resumed:")
    assert ("- openai/local-llama (used by every role): its key was given literally "
            "(Models.endpoints['openai/local-llama']['api_key']) and is not stored with the run."
            ) in str(err.value)
    assert "fix: pass config= with the key again" in str(err.value)
    with pytest.raises(ao.ModelNotReady, match="nothing answers at http://127.0.0.1:"):
        orch.resume(run.id, config=ao.Config(models=local_model(
            f"http://127.0.0.1:{refused_port()}/v1")))
    assert len(run.events()) == events and run.status == ao.RunStatus.FAILED  # nothing moved
