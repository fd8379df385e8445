"""notebooks/postmortem.ipynb executed by papermill, and the charts of agentorch_nb.charts on
a real store: every chart carries both the interactive Vega-Lite bundle and a static PNG."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import nbformat
import pytest

from agentorch_nb import charts
from agentorch_nb.render import PALETTE

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = REPO / "notebooks"
PNG = b"\x89PNG\r\n\x1a\n"
CHARTS = ("gantt", "costs", "retries", "slowest_tools", "human_waits", "critical_path")


def chart_outputs(nb) -> list[dict]:
    return [o["data"] for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
            if charts.VEGALITE_MIME in o.get("data", {})]


def assert_both_kinds(data: dict) -> None:
    assert data[charts.VEGALITE_MIME]["$schema"].startswith("https://vega.github.io/schema/vega-lite/v5")
    assert base64.b64decode(data["image/png"]).startswith(PNG)


@pytest.mark.slow
def test_postmortem_notebook_makes_the_demo_run_and_draws_every_chart(tmp_path, monkeypatch,
                                                                      demo_store):
    import papermill

    # The kernel imports this checkout's agentorch_nb, whichever one is installed.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    out = tmp_path / "postmortem.ipynb"
    papermill.execute_notebook(str(NOTEBOOKS / "postmortem.ipynb"), str(out), cwd=str(tmp_path),
                               kernel_name="python3", progress_bar=False)
    nb = nbformat.read(out, as_version=4)
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert errors == []
    shown = chart_outputs(nb)
    assert [d["text/plain"].split(":")[0] for d in shown] == [f"<Chart {n}" for n in CHARTS]
    for data in shown:
        assert_both_kinds(data)
    # Each chart is shown with the SQL behind it, and the demo's escalation is drawn.
    sql = [o["data"]["text/markdown"] for c in nb.cells for o in c.get("outputs", [])
           if "text/markdown" in o.get("data", {})]
    assert len(sql) == len(CHARTS) and all(s.startswith("```sql\nselect") for s in sql)
    waits = next(d for d in shown if d["text/plain"].startswith("<Chart human_waits"))
    assert "t4 Write pytest tests" in str(waits[charts.VEGALITE_MIME]) and "then retry" in str(
        waits[charts.VEGALITE_MIME])

    # The same notebook over a given store and run (a copy, as the notebook advises).
    again = tmp_path / "again.ipynb"
    papermill.execute_notebook(str(NOTEBOOKS / "postmortem.ipynb"), str(again),
                               cwd=str(tmp_path), kernel_name="python3", progress_bar=False,
                               parameters={"store": str(demo_store)})
    shown = chart_outputs(nbformat.read(again, as_version=4))
    assert len(shown) == len(CHARTS)
    for data in shown:
        assert_both_kinds(data)


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory) -> Path:
    """A store holding one offline demo run (no escalation: the tests task is retried once),
    as a snapshot."""
    tmp_path = tmp_path_factory.mktemp("demo")
    import agentorch_nb as ao
    from agentorch_nb.agents import LLMTeam, demo_models
    from agentorch_nb.testing import DEMO_OBJECTIVE

    workspace = tmp_path / "ws"
    ao.init_workspace(workspace)
    orch = ao.Orchestrator(workspace, config=ao.Config(models=demo_models()), agents=LLMTeam())
    assert orch.start(DEMO_OBJECTIVE).wait_sync(timeout=240).value == "completed"
    return orch.snapshot(tmp_path / "demo.duckdb")


@pytest.mark.slow
def test_charts_of_a_demo_run(demo_store):
    store = demo_store
    (run_id,) = charts.query(store, "select run_id from runs").run_id
    assert charts.run_id_of(store) == run_id

    gantt = charts.gantt(store)
    bundle = gantt._repr_mimebundle_()
    assert_both_kinds(bundle)
    assert set(gantt.data.status) <= set(PALETTE) and "active" in set(gantt.data.status)
    assert (gantt.data.end_s >= gantt.data.start_s).all()
    # The status colours are the dashboard's.
    scale = bundle[charts.VEGALITE_MIME]["encoding"]["color"]["scale"]
    assert dict(zip(scale["domain"], scale["range"])) == PALETTE

    retried = charts.retries(store, run_id).data
    assert list(retried.attempt_label) == ["t4 #1", "t4 #2"]
    assert retried.outcome.tolist() == ["rejected", "approved"] and "empty input" in retried.why[0]

    costs = charts.costs(store, run_id).data
    assert {"director", "planner", "worker", "strategist"} == set(costs.role)
    assert "(run)" in set(costs.task_id)

    assert charts.slowest_tools(store, run_id).data.tool[0] == "run_shell"
    waits = charts.human_waits(store, run_id)
    assert len(waits.data) == 0 and "No task waited" in str(waits.spec())

    path = charts.critical_path(store, run_id)
    assert path.data.dropna(subset=["position"]).sort_values("position").task_id.tolist() == \
        ["t2", "t3", "t4"]
    assert "t2 → t3 → t4" in str(path.spec()["title"])
    assert path.svg().startswith("<svg")
