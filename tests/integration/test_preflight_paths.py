"""Preflight on the unattended paths, in real processes: ``agentorch run`` and the batch
notebook refuse a run whose model has no key, with the message and no traceback or run row."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import agentorch_nb as ao
from agentorch_nb.notebooks import RUN_OBJECTIVE

ROOT = Path(__file__).resolve().parents[2]
KEYS = ("OPENAI_API_KEY", "OPENAI_ADMIN_KEY")


def keyless_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in KEYS}
    return {**env, "PYTHONPATH": str(ROOT)}  # this checkout, whatever is installed


def no_runs(repo: Path) -> bool:
    store = repo / ".agentorch" / "agentorch.duckdb"
    return not store.exists() or len(ao.sql("select * from runs", store=store)) == 0


@pytest.mark.slow  # a fresh interpreter that imports litellm
def test_the_cli_refuses_a_run_without_a_key(repo):
    out = subprocess.run([sys.executable, "-m", "agentorch_nb", "run", "--objective", "Add a README",
                          "--model", "openai/gpt-4o-mini"], cwd=repo, env=keyless_env(),
                         capture_output=True, text=True, timeout=180)
    assert out.returncode == 2, out.stderr  # refused before anything started
    assert out.stderr.startswith("agentorch: error: the run was not started: a model it needs "
                                 "cannot be called, so nothing was created.\n"
                                 "- openai/gpt-4o-mini (used by every role): OPENAI_API_KEY is "
                                 "not set."), out.stderr
    assert "--model demo" in out.stderr and "Traceback" not in out.stderr
    assert no_runs(repo)


@pytest.mark.slow  # a kernel
def test_the_batch_notebook_refuses_a_run_without_a_key(repo, tmp_path, monkeypatch):
    import papermill

    for name in KEYS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(papermill.PapermillExecutionError) as err:
        papermill.execute_notebook(str(RUN_OBJECTIVE), str(tmp_path / "out.ipynb"),
                                   kernel_name="python3", progress_bar=False, parameters={
                                       "workspace": str(repo), "model": "openai/gpt-4o-mini"})
    assert err.value.ename == "ModelNotReady"
    assert "openai/gpt-4o-mini (used by every role): OPENAI_API_KEY is not set" in err.value.evalue
    assert no_runs(repo)
