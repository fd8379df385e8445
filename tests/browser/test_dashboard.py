"""The run dashboard in a real JupyterLab: the DAG view draws what the engine holds, a click
on a task opens it in the inspector, link mode adds a dependency, and the HITL panel's Retry
button completes a task that waited for a human.

The kernel is the truth the page is checked against: the tests read the run's tasks through
the notebook's own kernel and compare them with what the DAG view draws.
"""

from __future__ import annotations

import json
import re
import time

import pytest

from .lab import REPO, Notebook

expect = pytest.importorskip("playwright.sync_api").expect

# The status colours as agreed with the dashboard, spelled out rather than imported: changing
# one is a decision this test should notice.
PALETTE = {"planned": "#9ca3af", "ready": "#64748b", "active": "#3b82f6",
           "awaiting_qa": "#f97316", "complete": "#22c55e", "failed": "#ef4444",
           "waiting_human": "#eab308", "abandoned": "#d1d5db"}
DEMO = REPO / "notebooks" / "demo.ipynb"


def rgb(hex_colour: str) -> str:
    """'#22c55e' as getComputedStyle() spells a fill: 'rgb(34, 197, 94)'."""
    r, g, b = (int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgb({r}, {g}, {b})"


def kernel_tasks(nb: Notebook) -> dict[str, dict]:
    """The run's tasks as the engine in the kernel holds them."""
    out = nb.execute("import json as _j; print(_j.dumps([{'id': t.id, 'title': t.title, "
                     "'status': t.status.value, 'depends_on': list(t.depends_on)} "
                     "for t in run.tasks]))")
    return {t["id"]: t for t in json.loads(out)}


def wait_for_run(nb: Notebook, *statuses: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while (status := nb.execute("print(run.status.value)").strip()) not in statuses:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the run is {status}, not {' or '.join(statuses)}, "
                               f"after {timeout:.0f} s")
        nb.page.wait_for_timeout(200)
    return status


def drawn_nodes(dag) -> dict[str, tuple[str, str]]:
    """What the DAG view draws: task id -> (data-status, the rect's computed fill)."""
    rows = dag.locator("g.ao-node").evaluate_all(
        "gs => gs.map(g => [g.dataset.id, g.dataset.status,"
        " getComputedStyle(g.querySelector('rect')).fill])")
    return {i: (status, fill) for i, status, fill in rows}


def assert_dag_shows(nb: Notebook, dag, timeout: float = 10) -> dict[str, dict]:
    """Every task of the run is one node, in its status and its status's colour. The view
    follows the engine a moment later, so wait for it to catch up before judging."""
    deadline = time.monotonic() + timeout
    while True:
        tasks = kernel_tasks(nb)
        expected = {i: (t["status"], rgb(PALETTE[t["status"]])) for i, t in tasks.items()}
        drawn = drawn_nodes(dag)
        if drawn == expected:
            return tasks
        if time.monotonic() > deadline:
            assert drawn == expected, "the DAG view does not show the run's tasks"
        nb.page.wait_for_timeout(200)


def drawn_edges(dag) -> set[tuple[str, str]]:
    rows = dag.locator("path.ao-edge").evaluate_all(
        "ps => ps.map(p => [p.dataset.from, p.dataset.to])")
    return {(a, b) for a, b in rows}


def kernel_edges(tasks: dict[str, dict]) -> set[tuple[str, str]]:
    return {(d, i) for i, t in tasks.items() for d in t["depends_on"]}


def click_node(dag, task_id: str) -> None:
    dag.locator(f'g.ao-node[data-id="{task_id}"]').click()


def retry_in_hitl_panel(dashboard, task_id: str, title: str, guidance: str = "") -> None:
    """Type ``guidance`` into the HITL card of ``task_id`` and press its Retry button."""
    card = dashboard.locator(".ao-hitl .ao-hitl-card").filter(has_text=f"{task_id}: {title}")
    expect(card).to_have_count(1)
    if guidance:
        card.get_by_label("Guidance").fill(guidance)
    card.get_by_role("button", name="Retry").click()


def expect_inspector_shows(dashboard, task: dict) -> None:
    inspector = dashboard.locator(".ao-inspector")
    expect(inspector).to_contain_text(f"{task['id']}: {task['title']}")
    # A missing field must show as nothing, not as JavaScript's "null" or "undefined".
    expect(inspector).not_to_contain_text(re.compile("null|undefined"))


# A run that waits for a human at once: "Blocker" fails its only attempt, so "Left" and
# "Right" (both waiting for it) have not started when the test edits the graph.
WAITING_RUN = [
    "import tempfile\n"
    "import agentorch_nb as ao\n"
    "from agentorch_nb.testing import Agents, TestDirector, TestStrategist, TestWorker",
    "specs = [ao.TaskSpec('Blocker', key='b', max_retries=0),\n"
    "         ao.TaskSpec('Left', key='l', depends_on=['b']),\n"
    "         ao.TaskSpec('Right', key='r', depends_on=['b'])]\n"
    "def fail_once(task, ctx):\n"
    "    return 'needs a human' if task.title == 'Blocker' and ctx.attempt == 1 else None\n"
    "orch = ao.Orchestrator(ao.init_workspace(tempfile.mkdtemp()).root,\n"
    "                       agents=Agents(TestDirector(specs), TestWorker(fail=fail_once),\n"
    "                                     TestStrategist()))\n"
    "run = orch.start('wait for a human')\n"
    "await run.wait()",
    "run",  # a run displays as its dashboard
]


def test_dashboard_follows_a_run_and_steers_it(lab, open_notebook):
    lab.write_notebook("waiting.ipynb", WAITING_RUN)
    nb = open_notebook("waiting.ipynb")
    nb.run_all()
    assert wait_for_run(nb, "paused") == "paused"
    dashboard = nb.outputs(2).locator(".ao-dashboard")
    dag = dashboard.locator(".ao-dag")

    tasks = assert_dag_shows(nb, dag)
    by_title = {t["title"]: t for t in tasks.values()}
    blocker, left, right = by_title["Blocker"], by_title["Left"], by_title["Right"]
    assert (blocker["status"], left["status"], right["status"]) == (
        "waiting_human", "planned", "planned")
    expect(dag.locator("path.ao-edge")).to_have_count(2)
    assert drawn_edges(dag) == kernel_edges(tasks)

    click_node(dag, left["id"])
    expect_inspector_shows(dashboard, left)
    click_node(dag, blocker["id"])
    expect_inspector_shows(dashboard, blocker)

    # Link mode: the dependency first, then the task that waits for it.
    dag.locator(".ao-link-toggle").click()
    expect(dag.locator(".ao-link-toggle")).to_have_attribute("aria-pressed", "true")
    click_node(dag, left["id"])
    click_node(dag, right["id"])
    new_edge = dag.locator(f'path.ao-edge[data-from="{left["id"]}"][data-to="{right["id"]}"]')
    expect(new_edge).to_have_count(1)
    assert left["id"] in kernel_tasks(nb)[right["id"]]["depends_on"]
    # The reverse edge would close a cycle: refused, and said so in the view.
    click_node(dag, right["id"])
    click_node(dag, left["id"])
    expect(dag.locator(".ao-dag-error")).to_be_visible()
    expect(dag.locator(".ao-dag-error")).to_contain_text(left["id"])
    assert right["id"] not in kernel_tasks(nb)[left["id"]]["depends_on"]
    dag.locator(".ao-link-toggle").click()

    retry_in_hitl_panel(dashboard, blocker["id"], blocker["title"])
    assert wait_for_run(nb, "completed") == "completed"
    tasks = assert_dag_shows(nb, dag)
    assert {t["status"] for t in tasks.values()} == {"complete"}
    assert drawn_edges(dag) == kernel_edges(tasks)
    dag.scroll_into_view_if_needed()  # for the screenshot taken when the test ends
    assert nb.page_errors == []


def test_demo_notebook_escalates_and_the_hitl_panel_retries(lab, open_notebook):
    """notebooks/demo.ipynb, as a newcomer would run it: every cell before the one that
    resolves the escalation through the API (the first containing ``.resolve(``) runs; then
    the waiting task is retried from the HITL panel instead."""
    lab.copy_notebook(DEMO)
    nb = open_notebook(DEMO.name)
    nb.run_cells(range(nb.index_of(".resolve(")))
    assert wait_for_run(nb, "paused", timeout=120) == "paused"
    dashboard = nb.page.locator(".jp-NotebookPanel:visible .ao-dashboard").first
    dag = dashboard.locator(".ao-dag")

    tasks = assert_dag_shows(nb, dag)
    assert drawn_edges(dag) == kernel_edges(tasks)
    waiting = [t for t in tasks.values() if t["status"] == "waiting_human"]
    assert len(waiting) == 1, f"the demo should wait for a human on one task: {tasks}"
    task = waiting[0]

    click_node(dag, task["id"])
    expect_inspector_shows(dashboard, task)

    # Link mode on the demo's graph: the waiting task is also made to wait for the plan task
    # t1 (complete, upstream of everything, so no cycle); the kernel's graph agrees.
    assert "t1" not in task["depends_on"]
    dag.locator(".ao-link-toggle").click()
    click_node(dag, "t1")
    click_node(dag, task["id"])
    expect(dag.locator(f'path.ao-edge[data-from="t1"][data-to="{task["id"]}"]')).to_have_count(1)
    assert "t1" in kernel_tasks(nb)[task["id"]]["depends_on"]
    dag.locator(".ao-link-toggle").click()

    guidance = "Add a test that count_words('') is {}."
    retry_in_hitl_panel(dashboard, task["id"], task["title"], guidance)
    wait_for_run(nb, "completed", timeout=120)
    tasks = assert_dag_shows(nb, dag)
    assert tasks[task["id"]]["status"] == "complete"
    # The human's words were recorded with the resolution, as coming from the widget.
    rows = json.loads(nb.execute(
        "import json as _j; print(_j.dumps(ao.sql('select source, payload from resolutions "
        f"where run_id = ? and task_id = ?', [run.id, {task['id']!r}]).to_dict('records')))"))
    assert [r["source"] for r in rows] == ["widget"]
    assert guidance in rows[0]["payload"]

    # The inspector loads the approved attempt's conversation (with the worker's tool calls)
    # and its diff from the store when asked.
    inspector = dashboard.locator(".ao-inspector")
    expect(inspector.locator("tr[data-attempt]")).to_have_count(3, timeout=10_000)
    inspector.locator("tr[data-attempt='3'] .ao-open-conversation").click()
    expect(inspector.locator(".ao-conversation .ao-toolcall").first).to_contain_text(
        "write_file", timeout=10_000)
    inspector.locator("tr[data-attempt='3'] .ao-open-diff").click()
    expect(inspector.locator(".ao-diff")).to_contain_text("+def test_empty_input_has_no_words",
                                                          timeout=10_000)
    dag.scroll_into_view_if_needed()
    assert nb.page_errors == []
