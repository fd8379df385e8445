"""DuckDBSaver: LangGraph's public conformance suite, and real graphs on real DuckDB files."""

from __future__ import annotations

import asyncio
import operator
from typing import Annotated, TypedDict

import pytest
from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.capabilities import (
    BASE_CAPABILITIES,
    EXTENDED_CAPABILITIES,
)
from langgraph.graph import END, START, StateGraph

import agentorch_nb as ao
from agentorch_nb.store import Store
from agentorch_nb.store.checkpoint import DuckDBSaver


async def test_conformance_base_5_of_5_and_extended_3_of_3(tmp_path):
    stores: list[Store] = []

    @checkpointer_test(name="DuckDBSaver")
    async def duckdb_saver():
        # A fresh file per capability suite, as the suite expects a fresh checkpointer.
        store = Store.open(tmp_path / f"conformance-{len(stores)}.duckdb")
        stores.append(store)
        yield DuckDBSaver(store)
        store.close()

    report = await validate(duckdb_saver)

    def passed(caps) -> list[str]:
        return sorted(c.value for c in caps if report.results[c.value].passed is True)

    failures = {name: r.failures for name, r in report.results.items() if r.failures}
    assert passed(BASE_CAPABILITIES) == sorted(c.value for c in BASE_CAPABILITIES), failures
    assert passed(EXTENDED_CAPABILITIES) == ["copy_thread", "delete_for_runs", "prune"], failures
    assert len(BASE_CAPABILITIES) == 5 and report.conformance_level() == "FULL"


class State(TypedDict):
    steps: Annotated[list[str], operator.add]
    total: int


def build_graph() -> StateGraph:
    def plan(state: State) -> dict:
        return {"steps": ["plan"], "total": state["total"] + 1}

    def act(state: State) -> dict:
        return {"steps": ["act"], "total": state["total"] * 10}

    graph = StateGraph(State)
    graph.add_node("plan", plan)
    graph.add_node("act", act)
    graph.add_edge(START, "plan")
    graph.add_edge("plan", "act")
    graph.add_edge("act", END)
    return graph


async def test_a_new_saver_over_the_same_file_resumes_the_graph(tmp_path):
    path = tmp_path / "graph.duckdb"
    config = {"configurable": {"thread_id": "t-1"}}

    first_store = Store.open(path)
    first = build_graph().compile(checkpointer=DuckDBSaver(first_store), interrupt_before=["act"])
    out = await first.ainvoke({"steps": ["start"], "total": 1}, config)
    assert out == {"steps": ["start", "plan"], "total": 2}
    first_store.close()  # nothing of the first saver survives but the file

    async with DuckDBSaver.from_path(path) as saver:
        assert saver.store is not first_store
        second = build_graph().compile(checkpointer=saver, interrupt_before=["act"])
        state = await second.aget_state(config)
        assert state.values == {"steps": ["start", "plan"], "total": 2}
        assert state.next == ("act",)

        # Resuming runs only what was left: "act", on the stored state.
        resumed = await second.ainvoke(None, config)
        assert resumed == {"steps": ["start", "plan", "act"], "total": 20}
        history = [s async for s in second.aget_state_history(config)]
        assert [s.metadata["step"] for s in history] == [2, 1, 0, -1]

        # The checkpoints are plain rows next to the run data.
        rows = saver.store.rows(
            "select metadata->>'source' as source, count(*) as n from checkpoints "
            "where thread_id = 't-1' group by all order by source"
        )
        assert rows == [{"source": "input", "n": 1}, {"source": "loop", "n": 3}]


async def test_a_fork_from_an_old_checkpoint_leaves_the_other_branch_intact(tmp_path):
    """Values are stored per channel version; versions must not repeat across branches."""
    async with DuckDBSaver.from_path(tmp_path / "fork.duckdb") as saver:
        graph = build_graph().compile(checkpointer=saver)
        config = {"configurable": {"thread_id": "t-fork"}}
        await graph.ainvoke({"steps": ["start"], "total": 1}, config)
        latest = await graph.aget_state(config)
        after_plan = [s async for s in graph.aget_state_history(config)][1]
        assert after_plan.next == ("act",)

        forked = await graph.aupdate_state(after_plan.config, {"total": 7, "steps": ["edit"]})
        assert (await graph.aget_state(forked)).values == {
            "steps": ["start", "plan", "edit"], "total": 7}
        assert (await graph.aget_state(latest.config)).values == {
            "steps": ["start", "plan", "act"], "total": 20}


async def test_sync_methods_refuse_the_running_loop_and_work_from_a_thread(tmp_path):
    async with DuckDBSaver.from_path(tmp_path / "sync.duckdb") as saver:
        config = {"configurable": {"thread_id": "t-sync"}}
        with pytest.raises(ao.WrongLoop, match=r"await saver\.aget_tuple"):
            saver.get_tuple(config)
        with pytest.raises(ao.WrongLoop, match=r"saver\.alist"):
            saver.list(config)

        graph = build_graph().compile(checkpointer=saver)
        # graph.invoke drives the sync methods; from a worker thread that is allowed.
        out = await asyncio.to_thread(graph.invoke, {"steps": [], "total": 0}, config)
        assert out == {"steps": ["plan", "act"], "total": 10}
        assert (await saver.aget_tuple(config)).checkpoint["channel_values"]["total"] == 10
        listed = await asyncio.to_thread(lambda: list(saver.list(config, filter={"step": 2})))
        assert [t.metadata["source"] for t in listed] == ["loop"]


async def test_metadata_filters_compare_values_by_type(tmp_path):
    async with DuckDBSaver.from_path(tmp_path / "filter.duckdb") as saver:
        graph = build_graph().compile(checkpointer=saver)
        base = {"configurable": {"thread_id": "t-meta"}}
        for i, who in enumerate(["zoë", "7"]):
            cfg = {**base, "metadata": {"who": who, "score": 1.5 + i, "flag": i == 0}}
            await graph.ainvoke({"steps": [], "total": i}, cfg)

        async def sources(**filter) -> list[int]:
            return [t.metadata["step"] async for t in saver.alist(base, filter=filter)]

        assert await sources(who="zoë", step=2) == [2]
        assert await sources(who=7) == []  # the string "7" is not the number 7
        assert len(await sources(score=2.5)) == 4
        assert len(await sources(flag=True)) == 4
        assert len(await sources(parents={})) == 8  # dicts are compared in Python
        assert len(await sources(missing=None)) == 8
        assert len([t async for t in saver.alist(base, limit=3)]) == 3


async def test_keep_latest_refuses_to_cut_a_delta_channel_history(tmp_path):
    async with DuckDBSaver.from_path(tmp_path / "delta.duckdb") as saver:
        graph = build_graph().compile(checkpointer=saver)
        config = {"configurable": {"thread_id": "t-delta"}}
        await graph.ainvoke({"steps": [], "total": 0}, config)
        latest = await saver.aget_tuple(config)
        # As LangGraph records a DeltaChannel written since its last snapshot.
        metadata = {**latest.metadata, "counters_since_delta_snapshot": {"steps": [2, 2]}}
        parent = {"configurable": {**latest.config["configurable"]}}
        checkpoint = {**latest.checkpoint, "id": "ffffffff-" + latest.checkpoint["id"][9:]}
        await saver.aput(parent, checkpoint, metadata, {})

        with pytest.raises(ao.InvalidInput, match="nothing was deleted"):
            await saver.aprune(["t-delta"], strategy="keep_latest")
        assert len([t async for t in saver.alist(config)]) == 5
        await saver.aprune(["t-delta"], strategy="delete")
        assert await saver.aget_tuple(config) is None


async def test_a_graph_run_makes_the_calls_the_bench_measures(tmp_path):
    """bench/checkpoint_bench.py times aget_tuple, aput and aput_writes because a compiled
    graph (the ReAct worker's) makes those and no others while it runs."""
    calls: list[str] = []

    class Recording(DuckDBSaver):
        async def aget_tuple(self, config):
            calls.append("aget_tuple")
            return await super().aget_tuple(config)

        async def aput(self, *args):
            calls.append("aput")
            return await super().aput(*args)

        async def aput_writes(self, *args, **kwargs):
            calls.append("aput_writes")
            return await super().aput_writes(*args, **kwargs)

        def alist(self, *args, **kwargs):
            calls.append("alist")
            return super().alist(*args, **kwargs)

    store = Store.open(tmp_path / "calls.duckdb")
    graph = build_graph().compile(checkpointer=Recording(store))
    await graph.ainvoke({"steps": [], "total": 1}, {"configurable": {"thread_id": "t-calls"}})
    assert calls[0] == "aget_tuple" and set(calls) == {"aget_tuple", "aput", "aput_writes"}
    assert calls.count("aput") == 4 and calls.count("aput_writes") == 3
    store.close()
