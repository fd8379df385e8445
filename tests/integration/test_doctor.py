"""``agentorch doctor`` / ``ao.doctor``: the table on a healthy workspace, and on a broken one
(no key, a dirty tree, a store another process holds, no Chromium), each problem with its fix.
Real git repositories, a real DuckDB file and a real second process holding it."""

from __future__ import annotations

import os
import re
import subprocess

import pytest

import agentorch_nb as ao
from agentorch_nb.agents import demo_models
from agentorch_nb.cli import main
from agentorch_nb.store import SCHEMA_VERSION
from agentorch_nb.testing import Agents, TestDirector, TestStrategist, TestWorker

from .holder import hold

GIT = ["-c", "user.name=t", "-c", "user.email=t@localhost"]


@pytest.fixture(autouse=True)
def no_keys(monkeypatch, tmp_path):
    for name in ("OPENAI_API_KEY", "OPENAI_ADMIN_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no .env of the current directory


@pytest.fixture
def used_repo(repo):
    """A repository with a tracked file and a completed run in its store."""
    (repo / "README.md").write_text("hello\n")
    subprocess.run(["git", "-C", str(repo), "add", "README.md"], check=True)
    subprocess.run(["git", "-C", str(repo), *GIT, "commit", "-q", "-m", "readme"], check=True)
    orch = ao.Orchestrator(repo, agents=Agents(TestDirector([ao.TaskSpec("one")]), TestWorker(),
                                               TestStrategist()))
    assert orch.start("x").wait_sync(60) == ao.RunStatus.COMPLETED
    orch.store.close()
    return repo


def doctor_cli(capsys, *args: str) -> tuple[int, str, str]:
    """(exit code, the table with its whitespace collapsed, the table as printed)."""
    code = main(["doctor", *args])
    out = capsys.readouterr().out
    return code, " ".join(out.split()), out


def test_a_healthy_workspace(used_repo, capsys):
    store = used_repo / ".agentorch" / "agentorch.duckdb"
    branch = ao.Workspace(used_repo).target
    code, text, table = doctor_cli(capsys, "--workspace", str(used_repo), "--model", "demo")
    assert code == 0, table
    assert table.splitlines()[0].split() == ["check", "status", "found"]
    assert re.search(r"^git\s+ok\s+git version \d", table, re.M)
    assert f"workspace ok {used_repo} on {branch}, clean" in text
    assert re.search(rf"store ok {re.escape(str(store))} \(\d+\.\d MB\), schema "
                     rf"{SCHEMA_VERSION}, free", text)
    assert "model scripted/demo ok every role: offline scripted model: no key, no network" in text
    for row in ("jupyter server extension", "jupyter lab extension", "chromium"):
        assert re.search(rf"^{row}\s+(ok|warn)\s", table, re.M), table  # a feature, not a run

    found = ao.doctor(used_repo, ao.Config(models=demo_models()), quiet=True)
    assert found.ok and repr(found) == "<Checkup: ready>" and str(found) == table.rstrip("\n")
    assert all(c.level == "ok" for c in found.checks[:4])  # git, workspace, store, model


@pytest.mark.slow  # another process holds the store; doctor waits 3 s for it
def test_a_broken_workspace_gets_a_fix_per_problem(used_repo, capsys, monkeypatch):
    (used_repo / "README.md").write_text("changed, not committed\n")
    monkeypatch.setenv("CHROMIUM_PATH", str(used_repo / "no-chromium"))
    store = used_repo / ".agentorch" / "agentorch.duckdb"
    holder = hold(store)
    try:
        assert holder.stdout.readline().strip() == "holding"
        code, text, table = doctor_cli(capsys, "--workspace", str(used_repo))
        found = ao.doctor(used_repo, quiet=True)
    finally:
        holder.stdin.write("\n")
        holder.stdin.flush()
        holder.wait(30)
    assert code == 1, table
    assert (f"workspace error {used_repo} on {ao.Workspace(used_repo).target}: uncommitted "
            "changes (README.md) fix: commit or stash them: a run starts from a clean tree"
            ) in text
    assert (f"store error {store} (") in text and (
        f"held by process {holder.pid} (python") in text
    assert "fix: close that process's DuckDB session" in text
    assert ("model openai/gpt-4o-mini error every role: OPENAI_API_KEY is not set fix: set "
            "OPENAI_API_KEY in the environment (export OPENAI_API_KEY=...), or add the line "
            f"OPENAI_API_KEY=... to {used_repo / '.env'}, or use the offline demo model") in text
    assert (f"chromium warn no Chromium at {used_repo / 'no-chromium'}: only the browser tests "
            "(tests/browser) need it fix: apt-get install chromium, or set CHROMIUM_PATH") in text
    assert re.search(r"^git\s+ok\s", table, re.M)

    assert [c.name for c in found.problems] == ["workspace", "store", "model openai/gpt-4o-mini"]
    assert all(c.fix for c in found.checks if c.level != "ok")
    assert repr(found) == "<Checkup: 3 problems: workspace, store, model openai/gpt-4o-mini>"
    assert found.check("chromium").level == "warn" and not found.ok


def test_not_a_repository_and_a_missing_store(tmp_path, capsys):
    plain = tmp_path / "plain"
    plain.mkdir()
    code, text, _ = doctor_cli(capsys, "--workspace", str(plain), "--model", "demo")
    assert code == 1
    assert (f"workspace error workspace {plain} is not a git repository fix: run `git init` and "
            "commit once, or use agentorch_nb.init_workspace(path)") in text
    assert (f"store ok {plain / '.agentorch' / 'agentorch.duckdb'}: not created yet (the first "
            "run creates it)") in text
    assert not os.path.exists(plain / ".agentorch")  # the doctor created nothing
