from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

import agentorch_nb as ao
from agentorch_nb.testing import Agents, TestDirector, TestStrategist, TestWorker


def make_repo(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    git = ["git", "-C", str(path), "-c", "user.name=t", "-c", "user.email=t@localhost"]
    subprocess.run(git[:3] + ["init", "-q"], check=True)
    subprocess.run(git + ["commit", "-q", "--allow-empty", "-m", "init"], check=True)
    return path


@pytest.fixture(autouse=True)
def _forget_runs():
    """Runs a test leaves paused stay in the process's table of live engines (as they would in
    a kernel); drop them so one test's objects do not slow the next one's garbage collection."""
    yield
    from agentorch_nb import live

    live.clear()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "repo")


@pytest.fixture
def orch_factory(repo: Path):
    """orch_factory(specs, worker=..., strategist=..., **config) -> Orchestrator on a real
    git repository and a real DuckDB file."""

    def make(specs, worker=None, strategist=None, store=None, **config):
        agents = Agents(TestDirector(specs), worker or TestWorker(), strategist or TestStrategist())
        cfg = ao.Config(**{"flush_interval": 0.01, **config})
        return ao.Orchestrator(repo, store=store, config=cfg, agents=agents)

    return make


def chain(*titles: str, **kw) -> list[ao.TaskSpec]:
    """t1 <- t2 <- t3 ... : each task depends on the one before."""
    return [ao.TaskSpec(title=t, key=t, depends_on=[titles[i - 1]] if i else [], **kw)
            for i, t in enumerate(titles)]
