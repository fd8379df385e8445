"""The notebooks under notebooks/, executed top to bottom in a real kernel by nbclient, and
the magics in a real IPython shell."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from agentorch_nb.notebooks import RUN_OBJECTIVE

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
WIDGET = "application/vnd.jupyter.widget-view+json"


def execute(name: str, tmp_path: Path, timeout: int = 600) -> nbformat.NotebookNode:
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(nb, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    nbformat.write(nb, tmp_path / name)  # kept for a look when a test fails
    return nb


def outputs(cell) -> list[dict]:
    return [o for o in cell.get("outputs", []) if o.get("output_type") in ("execute_result", "display_data")]


@pytest.mark.slow
def test_demo_notebook_escalates_and_the_api_cell_answers(tmp_path):
    nb = execute("demo.ipynb", tmp_path)
    code = [c for c in nb.cells if c.cell_type == "code"]
    errors = [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert errors == []
    by_source = {c.source.splitlines()[0]: c for c in code}

    # The run displays as the live dashboard, with a static fallback for nbconvert and GitHub.
    (shown,) = outputs(by_source["run = orch.start(DEMO_OBJECTIVE)"])
    assert WIDGET in shown["data"] and shown["data"]["text/plain"].startswith("<Run run-")
    (final,) = outputs(by_source["run"])
    assert final["data"][WIDGET] == shown["data"][WIDGET]  # one dashboard per run
    assert final["data"]["text/html"].count("<rect") == 5 and "| t4 | Write pytest tests | complete" \
        in final["data"]["text/markdown"]

    paused = outputs(by_source["status = await run.wait(timeout=300)"])[0]["data"]["text/plain"]
    assert paused == "<RunStatus.PAUSED: 'paused'>"
    waiting = outputs(by_source["run.interrupts()"])[0]["data"]["text/plain"]
    assert "retries_exhausted" in waiting and "'t4'" in waiting

    done = outputs(by_source["for waiting in run.interrupts():"])[0]["data"]["text/plain"]
    assert done == "<RunStatus.COMPLETED: 'completed'>"

    # The %%agentsql cell: the tests task took three attempts, the third with the human's words.
    table = outputs(by_source["%%agentsql"])[0]["data"]["text/html"]
    assert table.count("Write pytest tests") == 3 and "count_words('')" in table
    assert outputs(by_source["orch.dashboard()"])[0]["data"][WIDGET]

    # At its end, the run in SQL over the task_timeline view, and as a Gantt chart that keeps
    # both the interactive Vega-Lite and a static PNG (for GitHub and nbconvert).
    timeline = outputs(by_source["# Where the time went: seconds in each status, per task"])
    assert "awaiting_qa" in timeline[0]["data"]["text/html"] and "waiting_human" in \
        timeline[0]["data"]["text/html"]
    (gantt,) = outputs(by_source["from agentorch_nb import charts"])
    assert gantt["data"]["text/plain"].startswith("<Chart gantt")
    assert "application/vnd.vegalite.v5+json" in gantt["data"] and gantt["data"]["image/png"]


@pytest.mark.slow
def test_magics_start_inspect_and_query_runs(tmp_path, repo):
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    try:
        shell.run_line_magic("load_ext", "agentorch_nb")
        run = shell.run_line_magic(
            "agentorch", f'start "Add a --json flag" --workspace {repo} --model demo --workers 2')
        assert run.wait_sync(120).value == "completed"
        assert shell.run_line_magic("agentorch", "status") is run
        runs = shell.run_line_magic("agentorch", "runs")
        assert list(runs.run_id) == [run.id] and runs.status[0] == "completed"
        frame = shell.run_cell_magic("agentsql", "", "select count(*) as n from tasks")
        assert frame.n[0] == len(run.tasks) > 1
        store = repo / ".agentorch" / "agentorch.duckdb"
        frame = shell.run_cell_magic("agentsql", f"--store {store}",
                                     "select status from runs where run_id = 'x'")
        assert len(frame) == 0
        with pytest.raises(Exception, match="usage: %%agentsql"):
            shell.run_cell_magic("agentsql", "--stor x", "select 1")
        with pytest.raises(Exception, match="invalid choice: 'stat'"):
            shell.run_line_magic("agentorch", "stat")
    finally:
        InteractiveShell.clear_instance()


def test_every_notebook_is_executed_by_a_test():
    """Each notebook under notebooks/ is run top to bottom by some integration test."""
    tests = "".join(p.read_text() for p in Path(__file__).parent.glob("test_*.py"))
    untested = [nb.name for nb in sorted(NOTEBOOKS.glob("*.ipynb")) if f'"{nb.name}"' not in tests]
    assert len(list(NOTEBOOKS.glob("*.ipynb"))) >= 2 and untested == []


def test_importing_the_package_does_not_patch_asyncio():
    """nest_asyncio is never applied: a synchronous call that would have to wait inside the
    running loop refuses instead, naming the async call to use (see README)."""
    import subprocess
    import sys

    probe = ("import asyncio, agentorch_nb, agentorch_nb.widgets, agentorch_nb.magics;"
             "print(asyncio.run.__module__, hasattr(asyncio, '_nest_patched'),"
             "'nest_asyncio' in __import__('sys').modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["asyncio.runners", "False", "False"]


@pytest.mark.slow
def test_papermill_runs_an_objective_as_a_batch_job(tmp_path, repo):
    import papermill

    out = tmp_path / "out.ipynb"
    papermill.execute_notebook(str(RUN_OBJECTIVE), str(out), kernel_name="python3",
                               parameters={"workspace": str(repo), "workers": 2}, progress_bar=False)
    nb = nbformat.read(out, as_version=4)
    assert "run run-" in nb.cells[-1].outputs[0]["text"] and "completed" in nb.cells[-1].outputs[0]["text"]
    assert (repo / "wordstats" / "__init__.py").exists()  # the work was merged into the repository
    # A run that does not complete fails the job, naming what waits.
    with pytest.raises(papermill.PapermillExecutionError, match="waiting for a human"):
        papermill.execute_notebook(str(RUN_OBJECTIVE), str(tmp_path / "f.ipynb"),
                                   kernel_name="python3", progress_bar=False,
                                   parameters={"max_retries": 0, "workers": 2})
