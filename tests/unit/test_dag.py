import pytest

from agentorch_nb import CycleError, MissingDependency, TaskStatus, UnknownTask
from agentorch_nb.dag import TaskGraph

S = TaskStatus


def graph(edges, nodes=()):
    g = TaskGraph()
    for n in sorted({*nodes, *(x for e in edges for x in e)}):
        g.add_task(n)
    for task, dep in edges:
        g.add_dependency(task, dep)
    return g


def test_cycle_is_refused_and_named_and_the_graph_is_unchanged():
    g = graph([("t2", "t1"), ("t3", "t2")])
    with pytest.raises(CycleError) as err:
        g.add_dependency("t1", "t3")
    assert err.value.cycle == ["t1", "t3", "t2", "t1"]
    assert "t1 -> t3 -> t2 -> t1" in str(err.value)
    assert g.dependencies("t1") == []


def test_self_dependency_is_a_cycle():
    g = graph([], nodes=["t1"])
    with pytest.raises(CycleError):
        g.add_dependency("t1", "t1")


def test_unknown_task_ids_are_named():
    g = graph([], nodes=["t1"])
    with pytest.raises(UnknownTask, match="t9"):
        g.add_dependency("t1", "t9")
    with pytest.raises(UnknownTask, match="t9"):
        g.dependencies("t9")


def test_readiness_needs_every_dependency_complete():
    g = graph([("t3", "t1"), ("t3", "t2"), ("t4", "t3")])
    status = {"t1": S.COMPLETE, "t2": S.ACTIVE, "t3": S.PLANNED, "t4": S.PLANNED}
    assert g.readiness(status) == ([], [])
    status["t2"] = S.COMPLETE
    assert g.readiness(status) == (["t3"], [])


def test_abandoned_dependency_orphans_the_task():
    g = graph([("t3", "t1"), ("t3", "t2")])
    ready, orphaned = g.readiness({"t1": S.ABANDONED, "t2": S.COMPLETE, "t3": S.PLANNED})
    assert ready == [] and orphaned == [("t3", ["t1"])]


def test_topological_order_and_critical_path():
    g = graph([("t2", "t1"), ("t3", "t1"), ("t4", "t2"), ("t4", "t3")])
    order = g.topological_order()
    assert order.index("t1") < order.index("t2") < order.index("t4")
    length, path = g.critical_path({"t1": 1, "t2": 5, "t3": 2, "t4": 1})
    assert (length, path) == (7.0, ["t1", "t2", "t4"])


def test_remove_dependency_unblocks():
    g = graph([("t2", "t1")])
    g.remove_dependency("t2", "t1")
    assert g.readiness({"t1": S.ACTIVE, "t2": S.PLANNED}) == (["t2"], [])
    # A missing edge is named as an edge, not as an unknown task.
    with pytest.raises(MissingDependency, match="'t2' does not depend on 't1'"):
        g.remove_dependency("t2", "t1")
