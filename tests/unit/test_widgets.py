"""The widgets' models, driven by real runs: what state they hold after events, what they send
to the front end, and that their actions reach the run through the public API."""

from __future__ import annotations

import asyncio
import json
import random
import re

import pytest

import agentorch_nb as ao
from agentorch_nb import RunStatus, TaskSpec, TaskStatus
from agentorch_nb.testing import TestWorker
from agentorch_nb.widgets import DagView, OrchestratorDashboard, RunDashboard, dashboard_for
from agentorch_nb.render import PALETTE, dag_svg, layout, run_html, run_markdown

from ..conftest import chain


def capture(widget) -> list[dict]:
    """Record the custom messages ``widget`` sends to its views."""
    sent: list[dict] = []
    widget.send = lambda content, buffers=None: sent.append(content)
    return sent


async def until(condition, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)


async def settle(board: RunDashboard) -> None:
    """Let the run's pending events reach the widgets."""
    await asyncio.sleep(0.05)
    await board.run.store.flush()
    board.feed.flush()


# ---------------------------------------------------------------------- layout and static
def test_layout_puts_every_dependency_left_of_its_dependent():
    rng = random.Random(3)
    nodes = [f"t{i}" for i in range(1, 301)]
    edges = {(nodes[j], nodes[i]) for i in range(1, 300) for j in rng.sample(range(i), min(i, 2))}
    pos = layout(nodes, edges)
    assert all(pos[d].layer < pos[t].layer for d, t in edges)
    assert {p.layer for p in pos.values()} == set(range(max(p.layer for p in pos.values()) + 1))
    rows = {}
    for n, p in pos.items():
        rows.setdefault(p.layer, []).append(p.order)
    assert all(len(set(r)) == len(r) for r in rows.values())  # no two tasks on one spot


def test_layout_refuses_a_cycle():
    with pytest.raises(ValueError, match="cycle"):
        layout(["a", "b"], [("a", "b"), ("b", "a")])


def test_static_fallback_draws_each_task_in_its_status_colour():
    tasks = [ao.Task("t1", "r", "build <it>", status=TaskStatus.COMPLETE),
             ao.Task("t2", "r", "test it", depends_on=["t1"], status=TaskStatus.WAITING_HUMAN),
             ao.Task("t3", "r", "ship", depends_on=["t2"], status=TaskStatus.ABANDONED)]
    svg = dag_svg(tasks)
    fills = re.findall(r'<rect [^>]*fill="([^"]+)"', svg)
    assert fills == [PALETTE["complete"], PALETTE["waiting_human"], PALETTE["abandoned"]]
    assert svg.count("marker-end") == 2 and "build &lt;it&gt;" in svg
    summary = {"run_id": "run-1", "status": "paused", "objective": "o | x", "tasks": 3,
               "counts": {"complete": 1, "waiting_human": 1, "abandoned": 1}, "error": None}
    page = run_html(summary, tasks)
    assert page.count("<tr>") == 4 and "<svg" in page
    md = run_markdown(summary, tasks)
    assert "| t2 | test it | waiting_human | t1 | 0 |" in md and "o \\| x" in md
    assert "waiting_human" in tasks[1]._repr_html_() and tasks[1]._repr_markdown_().startswith("**t2")


# ---------------------------------------------------------------------- the DAG view
def test_a_status_change_sends_only_that_task():
    tasks = [ao.Task(f"t{i}", "r", f"task {i}", depends_on=[f"t{i - 1}"] if i > 1 else [])
             for i in range(1, 2001)]
    view = DagView(tasks=tasks)
    sent = capture(view)
    snapshot = view.snapshot()
    assert len(snapshot["nodes"]) == 2000 and len(snapshot["edges"]) == 1999
    tasks[41].status = TaskStatus.ACTIVE
    diff = view.refresh(tasks)
    assert diff == {"kind": "diff", "version": snapshot["version"] + 1, "base": snapshot["version"],
                    "nodes": [{"id": "t42", "status": "active"}], "add_edges": [], "remove_edges": []}
    assert sent == [diff]
    assert len(json.dumps(diff)) * 1000 < len(json.dumps(snapshot))
    assert view.refresh(tasks) is None  # nothing changed, nothing sent
    # A new task changes the layout: the views get a snapshot.
    tasks.append(ao.Task("t2001", "r", "late", depends_on=["t5"]))
    assert view.refresh(tasks)["kind"] == "snapshot" and len(sent) == 2


def test_a_view_that_asks_gets_the_whole_graph():
    view = DagView(tasks=[ao.Task("t1", "r", "a"), ao.Task("t2", "r", "b", depends_on=["t1"])])
    sent = capture(view)
    view._on_msg(view, {"kind": "sync"}, [])
    (msg,) = sent
    assert msg["kind"] == "snapshot" and msg["edges"] == [("t1", "t2")]
    assert [(n["id"], n["layer"]) for n in msg["nodes"]] == [("t1", 0), ("t2", 1)]


async def test_link_mode_edits_go_through_the_run_and_refusals_show(orch_factory):
    specs = chain("a", "b", "c")
    gate = asyncio.Event()

    class Held(TestWorker):
        async def run(self, task, ctx):
            await gate.wait()
            return await super().run(task, ctx)

    run = orch_factory(specs, worker=Held()).start("link")
    board = RunDashboard(run)
    sent = capture(board.dag)
    await until(lambda: len(board.dag._nodes) == 3)
    # t1 runs; t3 waits for t2 which waits for t1. Ask, as a click pair in link mode does,
    # for t3 to wait for t1 directly too.
    board.dag._on_msg(board.dag, {"kind": "add_dependency", "task": "t3", "depends_on": "t1"}, [])
    assert board.dag.error == ""
    assert run.task("t3").depends_on == ["t1", "t2"]
    assert ("t1", "t3") in board.dag._edges and any(
        ("t1", "t3") in m.get("add_edges", []) or ("t1", "t3") in m.get("edges", []) for m in sent)
    # A cycle is refused by the engine and named in the view.
    board.dag._on_msg(board.dag, {"kind": "add_dependency", "task": "t2", "depends_on": "t3"}, [])
    assert "t2 -> t3 -> t2" in board.dag.error
    board.dag._on_msg(board.dag, {"kind": "remove_dependency", "task": "t3", "depends_on": "t2"}, [])
    assert run.task("t3").depends_on == ["t1"] and board.dag.error == ""
    gate.set()
    assert await run.wait(10) == RunStatus.COMPLETED


# ---------------------------------------------------------------------- the run dashboard
async def test_the_dashboard_follows_the_run_and_batches_updates(orch_factory):
    specs = [TaskSpec(f"task {i}", key=str(i)) for i in range(40)]
    run = orch_factory(specs, worker=TestWorker(latency=0.01), max_concurrent_workers=8).start("many")
    board = dashboard_for(run)
    assert dashboard_for(run) is board  # one dashboard per run per kernel
    batches = []
    board.feed.subscribe(batches.append)
    sent = capture(board.dag)
    assert await run.wait(20) == RunStatus.COMPLETED
    await settle(board)
    # Hundreds of events reached the widgets in a handful of batches.
    events = sum(len(b.events) for b in batches)
    assert events > 200 and len(batches) < events / 10
    statuses = {n["status"] for n in board.dag._nodes.values()}
    assert statuses == {"complete"} and len(board.dag._nodes) == 40
    assert all("messages" not in m for m in sent)  # histories never travel with the graph
    assert board.header.progress.value == 40 and board.header.progress.bar_style == "success"
    assert board.header.status.value.startswith("completed · 40/40 done")
    assert board.header.cancel.disabled and not board.header.restart.disabled
    bundle = run._repr_mimebundle_()
    assert "<svg" in bundle["text/html"] and bundle["text/markdown"].count("| complete |") == 40


async def test_hitl_panel_retries_an_escalated_task_with_the_humans_changes(orch_factory):
    seen = {}

    def fail(task, ctx):
        seen[(task.id, ctx.attempt)] = (task.description, ctx.guidance)
        return None if task.id == "t2" or ctx.guidance == "use the fast path" else "tests fail"

    run = orch_factory(chain("a", "b"), worker=TestWorker(fail=fail), max_retries=1).start("hitl")
    board = RunDashboard(run)
    assert await run.wait(10) == RunStatus.PAUSED
    await settle(board)
    panel = board.hitl
    assert "Waiting for a human: 1" in panel.heading.value and list(panel.forms) == ["t1"]
    card = panel.cards.children[0]
    assert "ao-hitl-card" in card._dom_classes
    labels = [b.description for b in _walk(card) if hasattr(b, "on_click")]
    assert {"Retry", "Abandon", "Spawn"} <= set(labels)
    # A refused action shows why, next to the buttons.
    panel.forms["t1"]["spawn_title"].value = ""
    assert not panel.spawn("t1")
    assert panel.message.value.startswith("refused:") and "title" in panel.message.value
    form = panel.forms["t1"]
    form["description"].value = "do a, quickly"
    form["guidance"].value = "use the fast path"
    retry = next(b for b in _walk(card) if getattr(b, "description", "") == "Retry")
    retry.click()
    assert panel.message.value == "t1: retrying"
    assert await run.wait(10) == RunStatus.COMPLETED
    assert seen[("t1", 3)] == ("do a, quickly", "use the fast path")
    await settle(board)
    assert "Nothing waits" in panel.heading.value and panel.cards.children == ()
    rows = run.store.rows("select source from resolutions where run_id = ?", [run.id])
    assert [r["source"] for r in rows] == ["widget"]


async def test_force_interrupt_and_cancel_from_the_widgets(orch_factory):
    started = asyncio.Event()

    class Slow(TestWorker):
        async def run(self, task, ctx):
            started.set()
            await asyncio.sleep(30)

    run = orch_factory(chain("a", "b"), worker=Slow()).start("stop")
    board = RunDashboard(run)
    await started.wait()
    await until(lambda: board.hitl.active.options == ("t1",))
    board.hitl.interrupt.click()
    assert board.hitl.message.value == "t1: interrupted"
    assert await run.wait(10) == RunStatus.PAUSED
    assert run.task("t1").status == TaskStatus.WAITING_HUMAN
    board.header.cancel.click()
    assert board.header.message.value == "cancel requested"
    assert await run.wait(10, stop_on_pause=False) == RunStatus.CANCELLED
    await settle(board)
    assert board.header.cancel.disabled and not board.header.restart.disabled
    assert board.header.status.value.startswith("cancelled")


async def test_inspector_shows_attempts_and_loads_conversations_and_diffs_on_demand(orch_factory):
    def fail(task, ctx):
        return "first try fails" if ctx.attempt == 1 else None

    class Writer(TestWorker):
        async def run(self, task, ctx):
            root = await ctx.worktree()
            (root / "out.txt").write_text(f"attempt {ctx.attempt}\n")
            for i in range(50):
                ctx.log("tool", f"line {i}")
            return await super().run(task, ctx)

    run = orch_factory([TaskSpec("write", acceptance_criteria=["out.txt exists"])],
                       worker=Writer(fail=fail)).start("inspect")
    board = RunDashboard(run)
    assert await run.wait(10) == RunStatus.COMPLETED
    await settle(board)
    board.select("t1")
    assert board.dag.selected == "t1"
    await board.inspector.loading
    t = board.inspector.task
    assert t["title"] == "write" and t["acceptance_criteria"] == ["out.txt exists"]
    assert [(a["number"], a["outcome"], a["failure_reason"]) for a in t["attempts"]] == [
        (1, "error", "first try fails"), (2, "approved", "")]
    board.inspector._on_msg(board.inspector, {"kind": "conversation", "attempt": 2, "page": 1}, [])
    await board.inspector.loading
    conv = board.inspector.conversation
    assert conv["total"] == 53 and conv["pages"] == 2 and conv["page"] == 1
    assert [m["content"] for m in conv["messages"]][:2] == ["line 40", "line 41"]
    board.inspector._on_msg(board.inspector, {"kind": "diff", "attempt": 2}, [])
    await board.inspector.loading
    assert "+attempt 2" in board.inspector.diff["text"]


async def test_log_view_streams_messages_and_reply_chunks_of_the_selected_task(orch_factory):
    release = asyncio.Event()

    class Chatty(TestWorker):
        async def run(self, task, ctx):
            ctx.log("user", "hello")
            await release.wait()
            for part in ("Wor", "king", "..."):
                ctx._engine.stream_chunk(task.id, ctx.attempt, "assistant", part)
            ctx.log("assistant", "Working...")
            return ao.WorkResult("ok")

    run = orch_factory([TaskSpec("talk")], worker=Chatty()).start("log")
    board = RunDashboard(run)
    await until(lambda: run.store.rows("select 1 from messages where content = 'hello'"))
    sent = capture(board.live_log)
    board.select("t1")
    await board.live_log.loading
    assert [m["content"] for m in board.live_log.messages] == ["hello"]
    release.set()
    assert await run.wait(10) == RunStatus.COMPLETED
    await settle(board)
    kinds = [m["kind"] for m in sent]
    assert kinds[:2] == ["reset", "reset"] and "chunk" in kinds
    chunks = [c["text"] for m in sent if m["kind"] == "chunk" for c in m["chunks"]]
    assert "".join(chunks) == "Working..."
    appended = [x["content"] for m in sent if m["kind"] == "append" for x in m["messages"]]
    assert appended[0] == "Working..." and kinds.index("chunk") < kinds.index("append")


async def test_store_dashboard_lists_runs_and_queues_humans_across_runs(orch_factory):
    orch = orch_factory(chain("a"), worker=TestWorker(fail=lambda t, c: "no"))
    waiting = orch.start("needs a human", config=ao.Config(max_retries=0, flush_interval=0.01))
    assert await waiting.wait(10) == RunStatus.PAUSED
    board = orch.dashboard()
    await until(lambda: len(board.queue_box.children) == 1
                and "ao-queue-row" in board.queue_box.children[0]._dom_classes)
    texts = [[c.value for c in row.children if isinstance(getattr(c, "value", None), str)]
             for row in board.runs_box.children]
    assert texts[0][:2] == [waiting.id, "paused"]
    (queued,) = board.queue_box.children
    assert any("t1: a" in getattr(c, "value", "") for c in queued.children)
    opened = board.open_run(waiting.id)
    assert board.opened.children == (opened,) and opened is dashboard_for(waiting)
    retry = next(b for b in queued.children if getattr(b, "description", "") == "Retry")
    retry.click()  # fails again (the worker always does) and comes back to the queue
    assert board.message.value == f"t1 of {waiting.id}: retrying"
    assert await waiting.wait(10) == RunStatus.PAUSED
    assert waiting.task("t1").attempts == 2


@pytest.mark.slow
async def test_new_run_form_starts_an_offline_demo_run(orch_factory):
    board = orch_factory(chain("a")).dashboard()
    board.objective.value = "Add a --json flag"
    board.model.value = "demo"
    board.concurrency.value = 2
    run = board.start()
    assert run is not None and board.opened.children[0].run.id == run.id
    assert await run.wait(120) == RunStatus.COMPLETED
    (row,) = run.store.rows("select config from runs where run_id = ?", [run.id])
    assert json.loads(row["config"])["max_concurrent_workers"] == 2
    assert len(run.tasks) > 1  # the scripted Director planned the demo, not the test director
    board.objective.value = ""
    assert board.start() is None and board.message.value.startswith("refused:")


def _walk(widget):
    yield widget
    for child in getattr(widget, "children", ()):
        yield from _walk(child)


async def test_a_failure_behind_the_widgets_is_shown_and_stored(orch_factory, monkeypatch):
    run = orch_factory(chain("a"), worker=TestWorker(fail=lambda t, c: "no"), max_retries=0).start("x")
    board = RunDashboard(run)
    assert await run.wait(10) == RunStatus.PAUSED
    board.select("t1")
    await asyncio.gather(board.inspector.loading, board.live_log.loading)

    async def broken(*args, **kwargs):
        raise OSError("the disk went away")

    monkeypatch.setattr(run.store, "arows", broken)
    with pytest.raises(OSError):
        await board.inspector.open_diff(1)
    await asyncio.sleep(0)  # the task's done callback
    assert "the disk went away" in board.problems.value
    monkeypatch.undo()
    events = run.events()
    (stored,) = events[events.kind == "dashboard_error"].payload
    assert "reading the store for a widget failed: OSError: the disk went away" in stored


async def test_restart_from_the_header_follows_the_new_engine(orch_factory):
    started = asyncio.Event()

    class FirstTimeSlow(TestWorker):
        async def run(self, task, ctx):
            if task.id == "t2" and ctx.attempt == 1:
                started.set()
                await asyncio.sleep(30)
            return await super().run(task, ctx)

    run = orch_factory(chain("a", "b", "c"), worker=FirstTimeSlow()).start("restart")
    board = RunDashboard(run)
    await started.wait()
    board.header.cancel.click()
    assert await run.wait(10, stop_on_pause=False) == RunStatus.CANCELLED
    await settle(board)
    assert board.header.restart.disabled is False and board.header.cancel.disabled
    first = board.feed.engine
    board.header.restart.click()
    assert board.header.message.value == "restarted" and board.feed.engine is not first
    assert await run.wait(10) == RunStatus.COMPLETED
    await settle(board)
    assert {n["status"] for n in board.dag._nodes.values()} == {"complete"}
    assert board.header.status.value.startswith("completed · 3/3 done")


async def test_a_run_no_engine_drives_here_is_read_from_the_store(orch_factory):
    from agentorch_nb import live
    from agentorch_nb.store.records import task_row

    orch = orch_factory(chain("a", "b"))
    run = orch.start("stored")
    assert await run.wait(10) == RunStatus.COMPLETED
    await asyncio.sleep(0.1)
    live.clear()  # as in another kernel: only the store knows the run
    board = RunDashboard(orch.run(run.id))
    assert not board.feed.live and board.header.reload.layout.display is None
    assert [n["status"] for n in board.dag._nodes.values()] == ["complete", "complete"]
    assert board.header.status.value.startswith("completed · 2/2 done")
    # What happens to the run elsewhere shows after a Reload (read on a thread).
    run.store.upsert("tasks", {**task_row(run.task("t2")), "status": "abandoned"})
    board.header.reload.click()
    await until(lambda: board.dag._nodes["t2"]["status"] == "abandoned")
    assert board.header.message.value == "reloading from the store"
